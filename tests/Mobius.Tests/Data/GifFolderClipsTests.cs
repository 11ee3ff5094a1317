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
}
