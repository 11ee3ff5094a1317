using Mobius.Data;
using Xunit;

namespace Mobius.Tests.Data;

public sealed class GifFolderClipsTests : IDisposable
{
    private readonly TempFolder _dir = new();
    private readonly EmojiClips _emoji = new(new EmojiClipsOptions { Seed = Seeds.One, Count = 3 });

    public void Dispose() => _dir.Dispose();

    private string Captions => _dir.File(GifFolderClips.CaptionsFileName);

    /// <summary>Writes clip i as name (upscaled x2, so reading resizes) and returns its captions line.</summary>
    private string AddGif(string name, int i)
    {
        Gif.Write(_dir.File(name), _emoji.Get(i), new GifWriteOptions { Upscale = 2 });
        return $"{{\"file\": \"{name}\", \"caption\": \"{_emoji.Get(i).Caption}\"}}";
    }

    [Fact]
    public void A_folder_of_gifs_with_captions_reads_as_clips()
    {
        string a = AddGif("a.gif", 0), b = AddGif("b.gif", 1);
        Directory.CreateDirectory(_dir.File("sub"));
        string c = AddGif(Path.Combine("sub", "c.gif"), 2);
        File.WriteAllLines(Captions, [a, "", b, "   ", c]);

        var source = new GifFolderClips(_dir.Path, 8, 32, 32);
        Assert.Equal(3, source.Count);
        Assert.Equal([1, 3, 5], source.Entries.Select(e => e.Line));
        Assert.Equal((8, 32, 32), (source.FrameCount, source.Height, source.Width));
        for (int i = 0; i < 3; i++)
        {
            var clip = source.Get(i);
            Assert.Equal(_emoji.Get(i).Caption, clip.Caption);
            Close.All(clip.Frames, _emoji.Get(i).Frames, 1.0 / 255 + 1e-6, 0, $"seed {Seeds.One}: folder clip {i}");
        }
    }

    [Fact]
    public void A_missing_folder_is_named()
    {
        string folder = _dir.File("nowhere");
        var e = Assert.Throws<DataFormatException>(() => new GifFolderClips(folder, 8, 32, 32));
        Assert.Equal($"{folder}: GIF folder not found.", e.Message);
    }

    [Fact]
    public void A_missing_captions_file_is_named()
    {
        AddGif("a.gif", 0);
        var e = Assert.Throws<DataFormatException>(() => new GifFolderClips(_dir.Path, 8, 32, 32));
        Assert.Equal(Captions, e.File);
        Assert.Null(e.Line);
        Assert.StartsWith($"{Captions}: captions file not found", e.Message);
    }

    [Fact]
    public void An_empty_captions_file_is_refused()
    {
        File.WriteAllLines(Captions, ["", "  "]);
        var e = Assert.Throws<DataFormatException>(() => new GifFolderClips(_dir.Path, 8, 32, 32));
        Assert.Equal($"{Captions}: captions file lists no GIFs.", e.Message);
    }

    [Theory]
    [InlineData("{\"file\": \"a.gif\", \"caption\": \"a red heart\"", "not valid JSON")]
    [InlineData("a.gif, a red heart", "not valid JSON")]
    [InlineData("[\"a.gif\", \"a red heart\"]", "expected an object")]
    [InlineData("{\"file\": \"a.gif\"}", "expected an object")]
    [InlineData("{\"file\": \"\", \"caption\": \"x\"}", "expected an object")]
    [InlineData("{\"file\": 3, \"caption\": \"x\"}", "expected an object")]
    [InlineData("{\"file\": \"a.gif\", \"caption\": null}", "expected an object")]
    [InlineData("{\"file\": \"missing.gif\", \"caption\": \"x\"}", "GIF \"missing.gif\" not found")]
    [InlineData("{\"file\": \"/abs/a.gif\", \"caption\": \"x\"}", "GIF path \"/abs/a.gif\" must be relative to the folder")]
    public void A_bad_captions_line_is_named_with_its_number(string line, string problem)
    {
        string good = AddGif("a.gif", 0);
        File.WriteAllLines(Captions, [good, "", line, good]);
        var e = Assert.Throws<DataFormatException>(() => new GifFolderClips(_dir.Path, 8, 32, 32));
        Assert.Equal(Captions, e.File);
        Assert.Equal(3, e.Line);
        Assert.StartsWith($"{Captions}:3: {problem}", e.Message);
    }

    [Fact]
    public void A_corrupt_gif_is_named_with_its_captions_line_when_read()
    {
        string good = AddGif("a.gif", 0);
        File.WriteAllBytes(_dir.File("bad.gif"), [.. "GIF89a"u8, 1, 2, 3]);
        File.WriteAllLines(Captions, [good, "{\"file\": \"bad.gif\", \"caption\": \"broken\"}"]);
        var source = new GifFolderClips(_dir.Path, 8, 32, 32);
        source.Get(0);
        var e = Assert.Throws<DataFormatException>(() => source.Get(1));
        Assert.Equal(_dir.File("bad.gif"), e.File);
        Assert.Contains("truncated", e.Message);
        Assert.EndsWith($"(listed on line 2 of {GifFolderClips.CaptionsFileName})", e.Message);
    }

    [Theory]
    [InlineData(2, new[] { 1 })]
    [InlineData(9, new[] { 8 })]
    [InlineData(10, new[] { 9 })]
    [InlineData(25, new[] { 9, 19 })]
    public void Every_tenth_gif_is_held_out_and_the_splits_partition_the_folder(int count, int[] heldOut)
    {
        Assert.Equal(heldOut, Enumerable.Range(0, count).Where(i => GifFolderClips.IsHeldOut(i, count)));

        // The splits of a folder of that many GIFs (one image file listed under several captions) read those entries.
        string gif = AddGif("a.gif", 0);
        File.WriteAllLines(Captions, Enumerable.Range(0, count).Select(i => gif.Replace(_emoji.Get(0).Caption, $"caption {i}")));
        var source = new GifFolderClips(_dir.Path, 8, 32, 32);
        var train = source.Subset(Split.Train);
        var validation = source.Subset(Split.Validation);
        Assert.Equal(count - heldOut.Length, train.Count);
        Assert.Equal(heldOut.Select(i => $"caption {i}"), Enumerable.Range(0, validation.Count).Select(i => validation.Get(i).Caption));
        Assert.Equal(Enumerable.Range(0, count).Where(i => !heldOut.Contains(i)).Select(i => $"caption {i}"),
            Enumerable.Range(0, train.Count).Select(i => train.Get(i).Caption));
        Assert.Equal((8, 32, 32), (validation.FrameCount, validation.Height, validation.Width));
    }

    [Fact]
    public void A_folder_of_one_gif_trains_on_it_and_refuses_to_validate()
    {
        File.WriteAllLines(Captions, [AddGif("a.gif", 0)]);
        var source = new GifFolderClips(_dir.Path, 8, 32, 32);
        Assert.Equal(1, source.Subset(Split.Train).Count);
        var e = Assert.Throws<DataFormatException>(() => source.Subset(Split.Validation));
        Assert.Equal(Captions, e.File);
        Assert.Contains("needs at least 2", e.Message);
    }

    [Fact]
    public void Decoded_clips_are_kept_up_to_the_cache_budget_and_equal_a_fresh_read()
    {
        File.WriteAllLines(Captions, [AddGif("a.gif", 0), AddGif("b.gif", 1)]);
        var cached = new GifFolderClips(_dir.Path, 8, 32, 32);
        var uncached = new GifFolderClips(_dir.Path, 8, 32, 32) { CacheBytes = 0 };
        long oneClip = 8L * 3 * 32 * 32 * sizeof(float);
        var oneOnly = new GifFolderClips(_dir.Path, 8, 32, 32) { CacheBytes = oneClip };
        for (int i = 0; i < 2; i++)
        {
            Assert.Same(cached.Get(i), cached.Get(i));
            Assert.NotSame(uncached.Get(i), uncached.Get(i));
            Assert.Equal(uncached.Get(i).Frames, cached.Get(i).Frames);
            Assert.Equal(uncached.Get(i).Caption, cached.Get(i).Caption);
        }

        Assert.Same(oneOnly.Get(0), oneOnly.Get(0));
        Assert.NotSame(oneOnly.Get(1), oneOnly.Get(1));
    }

    [Fact]
    public void Verify_reads_every_gif_up_front_and_names_the_first_damaged_one_and_counts_the_rest()
    {
        string good = AddGif("a.gif", 0);
        File.WriteAllBytes(_dir.File("bad1.gif"), [.. "GIF89a"u8, 1, 2, 3]);
        File.WriteAllBytes(_dir.File("bad2.gif"), [1, 2, 3]);
        File.WriteAllLines(Captions, [good, good, "{\"file\": \"bad1.gif\", \"caption\": \"x\"}", good, "{\"file\": \"bad2.gif\", \"caption\": \"y\"}"]);
        var source = new GifFolderClips(_dir.Path, 8, 32, 32);
        var e = Assert.Throws<DataFormatException>(() => source.Verify());
        Assert.Equal(_dir.File("bad1.gif"), e.File);
        Assert.Contains("(listed on line 3 of captions.jsonl)", e.Message);
        Assert.EndsWith("; 1 more GIF cannot be read either (line 5 of captions.jsonl)", e.Message);

        File.WriteAllLines(Captions, [good, good]);
        int heard = 0;
        new GifFolderClips(_dir.Path, 8, 32, 32).Verify(new InlineCount(() => Interlocked.Increment(ref heard)));
        Assert.Equal(2, heard);
    }

    [Fact]
    public void Exported_clips_read_back_as_the_same_clips_and_an_existing_folder_is_left_alone()
    {
        var emoji = new EmojiClips(new EmojiClipsOptions { Seed = Seeds.One, Count = 12 });
        var clips = Enumerable.Range(0, 12).Select(emoji.Get).ToList();
        string folder = _dir.File("export");
        int written = 0;
        GifFolderClips.Export(folder, clips, progress: new InlineCount(() => written++));
        Assert.Equal(12, written);
        var source = new GifFolderClips(folder, 8, 32, 32);
        Assert.Equal(12, source.Count);
        Assert.Equal("clip-0001.gif", source.Entries[0].File);
        for (int i = 0; i < 12; i++)
        {
            Assert.Equal(clips[i].Caption, source.Get(i).Caption);
            Close.All(source.Get(i).Frames, clips[i].Frames, 1.0 / 255 + 1e-6, 0, $"exported clip {i}");
        }

        // A second export into the same folder is refused before anything is written.
        var before = Directory.GetFiles(folder).ToDictionary(f => f, File.GetLastWriteTimeUtc);
        Assert.Throws<IOException>(() => GifFolderClips.Export(folder, clips.Take(2).ToList()));
        Assert.Equal(before, Directory.GetFiles(folder).ToDictionary(f => f, File.GetLastWriteTimeUtc));
    }

    private sealed class InlineCount(Action onReport) : IProgress<int>
    {
        public void Report(int value) => onReport();
    }
}
