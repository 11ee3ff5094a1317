using Mobius.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace Mobius.Tests.Data;

/// <summary>
/// GIF reading and writing. Tolerance of a round trip: 1/255 (+ 1e-6), the rounding of [-1, 1] to a byte;
/// emoji frames have fewer than 256 colours, so the per-frame octree palette keeps every colour exactly.
/// </summary>
public sealed class GifTests
{
    private const double Tolerance = 1.0 / 255 + 1e-6;

    private static Clip Emoji(int seed, int index = 0) => new EmojiClips(new EmojiClipsOptions { Seed = seed, Count = index + 1 }).Get(index);

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Emoji_clips_round_trip_within_byte_rounding(int seed)
    {
        using var dir = new TempFolder();
        for (int i = 0; i < 4; i++)
        {
            var clip = Emoji(seed, i);
            string path = dir.File($"clip{i}.gif");
            Gif.Write(path, clip);
            var back = Gif.Read(path, clip.FrameCount, clip.Height, clip.Width, clip.Caption);
            Close.All(back.Frames, clip.Frames, Tolerance, 0, $"seed {seed} clip {i} ({clip.Caption}) after a GIF round trip");
            Assert.Equal(clip.Caption, back.Caption);
            Assert.Null(back.Label);
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Written_gifs_loop_forever_with_the_frame_delay_and_upscaling(int seed)
    {
        var r = new Rng(seed);
        var clip = Emoji(seed);
        int upscale = r.Int(2, 4), delayMs = 10 * r.Int(5, 20);
        using var stream = new MemoryStream();
        Gif.Write(stream, clip.Frames, clip.FrameCount, clip.Height, clip.Width, new GifWriteOptions { Upscale = upscale, FrameDelayMs = delayMs });

        stream.Position = 0;
        using (var image = Image.Load<Rgba32>(stream))
        {
            Assert.Equal((clip.Width * upscale, clip.Height * upscale, clip.FrameCount), (image.Width, image.Height, image.Frames.Count));
            Assert.Equal(0, image.Metadata.GetGifMetadata().RepeatCount);
            for (int f = 0; f < image.Frames.Count; f++)
            {
                Assert.Equal(delayMs / 10, image.Frames[f].Metadata.GetGifMetadata().FrameDelay);
            }
        }

        stream.Position = 0;
        var back = Gif.Read(stream, "upscaled", clip.FrameCount, clip.Height, clip.Width);
        Close.All(back.Frames, clip.Frames, Tolerance, 0, $"{r}: clip upscaled x{upscale}, read back at its own size");
    }

    [Fact]
    public void Frames_are_sampled_evenly_and_a_short_gif_repeats_its_last_frame()
    {
        const int frames = 12, size = 4;
        var data = new float[frames * 3 * size * size];
        float Level(int f) => -0.9f + 0.15f * f;
        for (int f = 0; f < frames; f++)
        {
            data.AsSpan(f * 3 * size * size, 3 * size * size).Fill(Level(f));
        }

        using var stream = new MemoryStream();
        Gif.Write(stream, data, frames, size, size);
        int[] Levels(int count)
        {
            stream.Position = 0;
            var clip = Gif.Read(stream, "levels", count, size, size);
            return [.. Enumerable.Range(0, count).Select(f => (int)Math.Round((clip.Frame(f)[0] + 0.9f) / 0.15f))];
        }

        Assert.Equal([0, 3, 6, 9], Levels(4));
        Assert.Equal([.. Enumerable.Range(0, 12), 11, 11, 11, 11], Levels(16));
        Assert.Equal(Enumerable.Range(0, 12), Levels(12));
    }

    [Fact]
    public void Sampling_follows_frame_delays_and_counts_a_zero_delay_as_a_tenth_of_a_second()
    {
        // Times 0, 20, 40, 60 of 80 hundredths fall in frames 0, 1, 2, 4 (equal delays would give 0, 1, 3, 4).
        Assert.Equal([0, 1, 2, 4], Gif.SampleFrames([10, 30, 10, 10, 10, 10], 4));
        Assert.Equal([0, 0], Gif.SampleFrames([30, 10, 10], 2));
        Assert.Equal([0, 1], Gif.SampleFrames([0, 0], 2));
        Assert.Equal([0, 1, 1], Gif.SampleFrames([50, 10], 3));
    }

    [Fact]
    public void Other_sizes_are_centre_cropped_and_resized()
    {
        // 64 x 32: red left quarter, green middle half, blue right quarter. Centre crop to square keeps the green.
        using var image = new Image<Rgba32>(64, 32);
        for (int y = 0; y < 32; y++)
        {
            for (int x = 0; x < 64; x++)
            {
                image[x, y] = x < 16 ? new Rgba32(255, 0, 0) : x < 48 ? new Rgba32(0, 255, 0) : new Rgba32(0, 0, 255);
            }
        }

        using var stream = new MemoryStream();
        image.SaveAsGif(stream);
        foreach (int size in new[] { 16, 48 })
        {
            stream.Position = 0;
            var clip = Gif.Read(stream, "wide", 2, size, size);
            int plane = size * size;
            for (int i = 0; i < plane; i++)
            {
                // Shrinking (box filter) stays inside the crop; enlarging (bicubic) blends a little of the cropped-off edge into the outer columns.
                double tolerance = size < 32 || i % size is >= 3 and < 45 ? 0.02 : 0.5;
                Assert.True(Math.Abs(clip.Frames[i] + 1) < tolerance && Math.Abs(clip.Frames[plane + i] - 1) < tolerance && Math.Abs(clip.Frames[2 * plane + i] + 1) < tolerance,
                    $"{size} x {size}: pixel {i} is ({clip.Frames[i]}, {clip.Frames[plane + i]}, {clip.Frames[2 * plane + i]}), not green.");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void A_grid_tiles_the_clips_and_lists_their_captions_beside_it(int seed)
    {
        using var dir = new TempFolder();
        var clips = Enumerable.Range(0, 5).Select(i => Emoji(seed, i)).ToList();
        string path = dir.File("grid.gif");
        Gif.WriteGrid(path, clips, columns: 3);

        Assert.Equal(clips.Select((c, n) => $"{n / 3} {n % 3}: {c.Caption}"), File.ReadAllLines(dir.File("grid.txt")));
        int h = 2 * 32 + 3 * 2, w = 3 * 32 + 4 * 2;
        var grid = Gif.Read(path, 8, h, w);
        for (int n = 0; n < clips.Count; n++)
        {
            int top = 2 + n / 3 * 34, left = 2 + n % 3 * 34;
            var tile = new float[clips[n].Frames.Length];
            for (int f = 0; f < 8; f++)
            {
                for (int c = 0; c < 3; c++)
                {
                    for (int y = 0; y < 32; y++)
                    {
                        grid.Frames.AsSpan(((f * 3 + c) * h + top + y) * w + left, 32).CopyTo(tile.AsSpan(((f * 3 + c) * 32 + y) * 32, 32));
                    }
                }
            }

            Close.All(tile, clips[n].Frames, Tolerance, 0, $"seed {seed}: grid tile {n}");
        }

        Assert.True(Math.Abs(grid.Frames[0]) <= Tolerance, "the gap is not mid grey");
    }

    [Fact]
    public void Missing_unknown_and_truncated_files_throw_data_format_errors_naming_the_file()
    {
        using var dir = new TempFolder();
        string missing = dir.File("missing.gif");
        var e = Assert.Throws<DataFormatException>(() => Gif.Read(missing, 8, 32, 32));
        Assert.Equal(missing, e.File);
        Assert.StartsWith($"{missing}: ", e.Message);

        string garbage = dir.File("garbage.gif");
        File.WriteAllBytes(garbage, new Rng(Seeds.One).Ints(300, 256).Select(b => (byte)b).ToArray());
        e = Assert.Throws<DataFormatException>(() => Gif.Read(garbage, 8, 32, 32));
        Assert.Equal(garbage, e.File);
        Assert.Contains("not a GIF", e.Message);

        string truncated = dir.File("truncated.gif");
        Gif.Write(truncated, Emoji(Seeds.One));
        byte[] bytes = File.ReadAllBytes(truncated);
        File.WriteAllBytes(truncated, bytes[..(bytes.Length / 2)]);
        e = Assert.Throws<DataFormatException>(() => Gif.Read(truncated, 8, 32, 32));
        Assert.Equal(truncated, e.File);
        Assert.Contains("truncated", e.Message);

        // Cut anywhere, the file is refused as truncated: also where the last byte left happens to be 0x3B.
        for (int cut = 1; cut < bytes.Length; cut++)
        {
            Assert.True(Gif.RunsPastEnd(bytes.AsSpan(0, cut)), $"cut at {cut} of {bytes.Length} bytes (last byte 0x{bytes[cut - 1]:X2}) passes as whole ({Seeds.One})");
        }

        Assert.False(Gif.RunsPastEnd(bytes));

        string noData = dir.File("nodata.gif");
        File.WriteAllBytes(noData, [.. bytes[..13], 0x3B]);
        e = Assert.Throws<DataFormatException>(() => Gif.Read(noData, 8, 32, 32));
        Assert.Equal(noData, e.File);
        Assert.Contains("corrupt", e.Message);
    }
}
