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
/// <see cref="Gif.Read(string, int, int, int, string)"/>'s sampling and resizing, on every call (no
/// cache); <see cref="Get"/> may be called from several threads at once.
/// </summary>
public sealed class GifFolderClips : IClipSource
{
    /// <summary>The name of the captions file in the folder.</summary>
    public const string CaptionsFileName = "captions.jsonl";

    private readonly GifEntry[] _entries;

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
        var entry = _entries[index];
        string path = Path.Combine(Folder, entry.File);
        try
        {
            return Gif.Read(path, FrameCount, Height, Width, entry.Caption);
        }
        catch (DataFormatException e)
        {
            throw new DataFormatException(path, $"{e.Problem} (listed on line {entry.Line} of {CaptionsFileName})", e);
        }
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
