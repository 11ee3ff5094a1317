using System.Collections.Concurrent;
using System.Text.Json;

namespace Mobius.Data;

/// <summary>One line of a captions file: a GIF and its caption.</summary>
/// <param name="File">The GIF's path relative to the folder.</param>
/// <param name="Caption">Its caption.</param>
/// <param name="Line">The 1-based line of the captions file that lists it.</param>
public sealed record GifEntry(string File, string Caption, int Line);

/// <summary>
/// Clips from a folder of animated GIFs listed in <c>captions.jsonl</c>: one JSON object per line,
/// <c>{"file": "name.gif", "caption": "..."}</c> (blank lines are skipped; the file path is relative
/// to the folder). The folder, the captions file, every line and the presence of every GIF are checked
/// when the source is created; a GIF's content is checked when it is read. Every problem throws
/// <see cref="DataFormatException"/> naming the file and line. Clips are read with
/// <see cref="Gif.Read(string, int, int, int, string)"/>'s sampling and resizing, once: decoded clips are
/// kept (at their training size) up to <see cref="CacheBytes"/>, those beyond it read again on every call.
/// <see cref="Get"/> may be called from several threads at once. <see cref="Subset"/> splits the folder into
/// clips to train on and held-out clips; <see cref="Export"/> writes clips as such a folder.
/// </summary>
public sealed class GifFolderClips : IClipSource
{
    /// <summary>The name of the captions file in the folder.</summary>
    public const string CaptionsFileName = "captions.jsonl";

    /// <summary>Every <see cref="HoldOutEvery"/>-th GIF of a folder (the 10th, 20th, ...) is held out for validation.</summary>
    public const int HoldOutEvery = 10;

    private readonly GifEntry[] _entries;
    private readonly ConcurrentDictionary<int, Clip> _cache = new();
    private long _cachedBytes;

    /// <summary>Opens <paramref name="folder"/>; clips come out as <paramref name="frames"/> frames of <paramref name="height"/> x <paramref name="width"/>.</summary>
    public GifFolderClips(string folder, int frames, int height, int width)
    {
        ArgumentNullException.ThrowIfNull(folder);
        if (frames <= 0 || height <= 0 || width <= 0)
        {
            throw new ArgumentException($"Clips need a positive size, got {frames} frames of {height} x {width}.");
        }

        if (!Directory.Exists(folder))
        {
            throw new DataFormatException(folder, "GIF folder not found.");
        }

        string captions = Path.Combine(folder, CaptionsFileName);
        if (!File.Exists(captions))
        {
            throw new DataFormatException(captions, $"captions file not found; it should list one {{\"file\": \"name.gif\", \"caption\": \"...\"}} per line.");
        }

        Folder = folder;
        FrameCount = frames;
        Height = height;
        Width = width;
        _entries = [.. ReadCaptions(folder, captions)];
        if (_entries.Length == 0)
        {
            throw new DataFormatException(captions, "captions file lists no GIFs.");
        }
    }

    /// <summary>The folder.</summary>
    public string Folder { get; }

    /// <summary>The captions file.</summary>
    public string CaptionsPath => Path.Combine(Folder, CaptionsFileName);

    /// <summary>Bytes of decoded clips kept in memory at most (default 256 MiB; 0: read every clip on every call).</summary>
    public long CacheBytes { get; init; } = 256L << 20;

    /// <summary>The GIFs and captions, in file order.</summary>
    public IReadOnlyList<GifEntry> Entries => Array.AsReadOnly(_entries);

    /// <inheritdoc />
    public int Count => _entries.Length;

    /// <inheritdoc />
    public int FrameCount { get; }

    /// <inheritdoc />
    public int Height { get; }

    /// <inheritdoc />
    public int Width { get; }

    /// <inheritdoc />
    public Clip Get(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        if (_cache.TryGetValue(index, out var cached))
        {
            return cached;
        }

        var entry = _entries[index];
        string path = Path.Combine(Folder, entry.File);
        Clip clip;
        try
        {
            clip = Gif.Read(path, FrameCount, Height, Width, entry.Caption);
        }
        catch (DataFormatException e)
        {
            throw new DataFormatException(path, $"{e.Problem.TrimEnd('.')} (listed on line {entry.Line} of {CaptionsFileName})", e);
        }

        long bytes = clip.Frames.LongLength * sizeof(float);
        if (Interlocked.Add(ref _cachedBytes, bytes) <= CacheBytes)
        {
            // Two threads reading the same clip at once keep one copy and count both: the budget errs low.
            return _cache.GetOrAdd(index, clip);
        }

        Interlocked.Add(ref _cachedBytes, -bytes);
        return clip;
    }

    /// <summary>
    /// Checks, before any training, that every caption encodes with <paramref name="tokenizer"/>: its words known
    /// and not too many. Throws <see cref="DataFormatException"/> at the first line that does not, saying how many
    /// more lines have the same problem and which words the model lacks.
    /// </summary>
    public void CheckCaptions(Tokenizer tokenizer)
    {
        ArgumentNullException.ThrowIfNull(tokenizer);
        var unknownLines = new List<(GifEntry Entry, string[] Words)>();
        var longLines = new List<(GifEntry Entry, int Words)>();
        foreach (var entry in _entries)
        {
            string[] words = Tokenizer.SplitWords(entry.Caption);
            string[] unknown = tokenizer.UnknownWords(words);
            if (unknown.Length > 0)
            {
                unknownLines.Add((entry, unknown));
            }
            else if (words.Length > tokenizer.MaxWords)
            {
                longLines.Add((entry, words.Length));
            }
        }

        if (unknownLines.Count > 0)
        {
            var (entry, words) = unknownLines[0];
            var all = unknownLines.SelectMany(l => l.Words).Distinct().ToList();
            string more = unknownLines.Count > 1 ? $"; {unknownLines.Count - 1} more line(s) too, {all.Count} unknown word(s) in all ({string.Join(", ", all.Take(12).Select(w => $"\"{w}\""))}{(all.Count > 12 ? ", ..." : "")})" : "";
            throw new DataFormatException(CaptionsPath, entry.Line,
                $"caption \"{entry.Caption}\" has words the model does not know: {string.Join(", ", words.Select(w => $"\"{w}\""))}{more}. " +
                $"Its tokenizer knows {tokenizer.VocabularySize - Tokenizer.Specials.Count} words; a text-to-image model pretrained on the folder (mobius pretrain --data) knows its captions' words.");
        }

        if (longLines.Count > 0)
        {
            var (entry, count) = longLines[0];
            throw new DataFormatException(CaptionsPath, entry.Line,
                $"caption has {count} words; the model's text encoder takes at most {tokenizer.MaxWords}{(longLines.Count > 1 ? $" ({longLines.Count - 1} more line(s) too long)" : "")}.");
        }
    }

    /// <summary>
    /// Reads every GIF once (on all cores; into the cache, as far as it reaches), so that a damaged one fails before
    /// training instead of at the step that first draws it. Throws <see cref="DataFormatException"/> for the first
    /// damaged GIF in file order, counting the others. <paramref name="progress"/> hears the number read so far,
    /// from the reading threads (a handler that throws stops the reading, and its exception comes out of Verify).
    /// </summary>
    public void Verify(IProgress<int>? progress = null)
    {
        var failures = new ConcurrentDictionary<int, DataFormatException>();
        int done = 0;
        try
        {
            Parallel.For(0, Count, i =>
            {
                try
                {
                    Get(i);
                }
                catch (DataFormatException e)
                {
                    failures[i] = e;
                }

                progress?.Report(Interlocked.Increment(ref done));
            });
        }
        catch (AggregateException e) when (e.InnerExceptions.Count > 0)
        {
            // A progress handler that cancels, or a failure other than a damaged GIF: as if thrown here.
            System.Runtime.ExceptionServices.ExceptionDispatchInfo.Capture(e.InnerExceptions[0]).Throw();
        }
        if (!failures.IsEmpty)
        {
            var first = failures.MinBy(kv => kv.Key);
            var rest = failures.Keys.Where(k => k != first.Key).Order().ToList();
            string lines = string.Join(", ", rest.Take(10).Select(k => _entries[k].Line)) + (rest.Count > 10 ? ", ..." : "");
            string others = rest.Count switch
            {
                0 => "",
                1 => $"; 1 more GIF cannot be read either (line {lines} of {CaptionsFileName})",
                _ => $"; {rest.Count} more GIFs cannot be read either (lines {lines} of {CaptionsFileName})",
            };
            throw new DataFormatException(first.Value.File, first.Value.Problem + others, first.Value);
        }
    }

    /// <summary>
    /// True when GIF <paramref name="index"/> of <paramref name="count"/> is held out for validation: every
    /// <see cref="HoldOutEvery"/>-th one, or the last of a folder of 2 to <see cref="HoldOutEvery"/> - 1 GIFs
    /// (a folder of one holds none out). Adding GIFs at the end of the captions file moves no GIF between the
    /// splits, once the folder has <see cref="HoldOutEvery"/> of them.
    /// </summary>
    public static bool IsHeldOut(int index, int count) =>
        count >= HoldOutEvery ? index % HoldOutEvery == HoldOutEvery - 1 : count >= 2 && index == count - 1;

    /// <summary>
    /// The clips of one split (<see cref="IsHeldOut"/>), sharing this source's cache. A folder too small to hold
    /// any out throws <see cref="DataFormatException"/> for the validation split.
    /// </summary>
    public IClipSource Subset(Split split)
    {
        int[] indices = [.. Enumerable.Range(0, Count).Where(i => IsHeldOut(i, Count) == (split == Split.Validation))];
        if (indices.Length == 0)
        {
            throw new DataFormatException(CaptionsPath, $"lists {Count} GIF; a run that validates needs at least 2: the last one is held out.");
        }

        return new ClipSubset(this, indices);
    }

    /// <summary>
    /// Writes <paramref name="clips"/> into <paramref name="folder"/> (created if need be) as
    /// <c>clip-0001.gif</c>, ... at their own size, and lists them with their captions in
    /// <see cref="CaptionsFileName"/>, written last (to a temporary name, then renamed), so a folder that has one
    /// is complete. A folder that already has a captions file is refused, and nothing is written.
    /// <paramref name="progress"/> hears the number of clips written so far.
    /// </summary>
    public static void Export(string folder, IReadOnlyList<Clip> clips, GifWriteOptions? options = null, IProgress<int>? progress = null)
    {
        ArgumentNullException.ThrowIfNull(folder);
        ArgumentNullException.ThrowIfNull(clips);
        string captions = Path.Combine(folder, CaptionsFileName);
        if (File.Exists(captions))
        {
            throw new IOException($"{captions} already exists; write the clips to a new folder.");
        }

        Directory.CreateDirectory(folder);
        int digits = Math.Max(4, clips.Count.ToString(System.Globalization.CultureInfo.InvariantCulture).Length);
        var lines = new List<string>(clips.Count);
        for (int i = 0; i < clips.Count; i++)
        {
            string name = $"clip-{(i + 1).ToString(System.Globalization.CultureInfo.InvariantCulture).PadLeft(digits, '0')}.gif";
            Gif.Write(Path.Combine(folder, name), clips[i], options);
            lines.Add(JsonSerializer.Serialize(new Dictionary<string, string> { ["file"] = name, ["caption"] = clips[i].Caption }));
            progress?.Report(i + 1);
        }

        string temp = captions + ".tmp";
        File.WriteAllLines(temp, lines);
        File.Move(temp, captions, overwrite: true);
    }

    private static IEnumerable<GifEntry> ReadCaptions(string folder, string captions)
    {
        int line = 0;
        foreach (string text in File.ReadLines(captions))
        {
            line++;
            if (string.IsNullOrWhiteSpace(text))
            {
                continue;
            }

            JsonDocument doc;
            try
            {
                doc = JsonDocument.Parse(text);
            }
            catch (JsonException e)
            {
                throw new DataFormatException(captions, line, $"not valid JSON ({e.Message})", e);
            }

            using (doc)
            {
                var root = doc.RootElement;
                if (root.ValueKind != JsonValueKind.Object
                    || !root.TryGetProperty("file", out var file) || file.ValueKind != JsonValueKind.String || string.IsNullOrWhiteSpace(file.GetString())
                    || !root.TryGetProperty("caption", out var caption) || caption.ValueKind != JsonValueKind.String)
                {
                    throw new DataFormatException(captions, line, "expected an object with a non-empty string \"file\" and a string \"caption\".");
                }

                string name = file.GetString()!;
                if (Path.IsPathRooted(name))
                {
                    throw new DataFormatException(captions, line, $"GIF path \"{name}\" must be relative to the folder.");
                }

                if (!File.Exists(Path.Combine(folder, name)))
                {
                    throw new DataFormatException(captions, line, $"GIF \"{name}\" not found in {folder}.");
                }

                yield return new GifEntry(name, caption.GetString()!, line);
            }
        }
    }
}

/// <summary>Some clips of another source, by index (a split of a <see cref="GifFolderClips"/>).</summary>
internal sealed class ClipSubset(IClipSource source, int[] indices) : IClipSource
{
    /// <inheritdoc />
    public int Count => indices.Length;

    /// <inheritdoc />
    public int FrameCount => source.FrameCount;

    /// <inheritdoc />
    public int Height => source.Height;

    /// <inheritdoc />
    public int Width => source.Width;

    /// <inheritdoc />
    public Clip Get(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        return source.Get(indices[index]);
    }
}
