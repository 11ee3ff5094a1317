using Mobius.Data;
using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;
using Xunit;

namespace Mobius.Tests.Data;

/// <summary>
/// Filmstrip PNGs: every pixel of every frame lands in its row and column. Tolerance: 1 of 255 a channel, the
/// reference rounding in double where the writer rounds in float (PNG itself is lossless).
/// </summary>
public sealed class FilmstripTests
{
    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Each_clip_is_a_row_and_each_frame_a_column_with_grey_gaps(int seed)
    {
        var r = new Rng(seed);
        int height = r.Int(3, 9), width = r.Int(3, 9), upscale = r.Int(1, 4);
        // Three clips, the last shorter: its missing frames stay grey. Values a little past [-1, 1] clamp.
        var frameCounts = new[] { 5, 5, 3 };
        var clips = frameCounts.Select((f, n) => new Clip(r.Uniform((long)f * 3 * height * width, 1.1f), f, height, width, $"clip {n}")).ToList();
        using var dir = new TempFolder();
        string path = dir.File("strip.png");
        Filmstrip.Write(path, clips, upscale);

        using var image = Image.Load<Rgba32>(path);
        int gap = Filmstrip.Gap;
        Assert.Equal((5 * width + 6 * gap) * upscale, image.Width);
        Assert.Equal((3 * height + 4 * gap) * upscale, image.Height);
        var grey = new Rgba32(128, 128, 128);
        var expected = new Rgba32[image.Width * image.Height];
        Array.Fill(expected, grey);
        int plane = height * width;
        for (int n = 0; n < clips.Count; n++)
        {
            for (int f = 0; f < clips[n].FrameCount; f++)
            {
                for (int y = 0; y < height; y++)
                {
                    for (int x = 0; x < width; x++)
                    {
                        int i = f * 3 * plane + y * width + x;
                        var px = new Rgba32(Byte(clips[n].Frames[i]), Byte(clips[n].Frames[i + plane]), Byte(clips[n].Frames[i + 2 * plane]));
                        int top = (gap + n * (height + gap) + y) * upscale, left = (gap + f * (width + gap) + x) * upscale;
                        for (int dy = 0; dy < upscale; dy++)
                        {
                            for (int dx = 0; dx < upscale; dx++)
                            {
                                expected[(top + dy) * image.Width + left + dx] = px;
                            }
                        }
                    }
                }
            }
        }

        for (int y = 0; y < image.Height; y++)
        {
            for (int x = 0; x < image.Width; x++)
            {
                Rgba32 want = expected[y * image.Width + x], got = image[x, y];
                bool near = Math.Abs(want.R - got.R) <= 1 && Math.Abs(want.G - got.G) <= 1 && Math.Abs(want.B - got.B) <= 1 && got.A == 255;
                Assert.True(near, $"{r}: pixel ({x}, {y}) is {got}, expected {want} (within 1 of 255 a channel)");
            }
        }
    }

    [Fact]
    public void Bad_input_is_refused_with_a_message()
    {
        using var dir = new TempFolder();
        string path = dir.File("strip.png");
        var a = new Clip(new Rng(Seeds.One).Uniform(2 * 3 * 4 * 4), 2, 4, 4, "a");
        var b = new Clip(new Rng(Seeds.One).Uniform(2 * 3 * 4 * 5), 2, 4, 5, "b");
        Assert.Contains("at least one clip", Assert.Throws<ArgumentException>(() => Filmstrip.Write(path, [])).Message);
        Assert.Contains("one frame size", Assert.Throws<ArgumentException>(() => Filmstrip.Write(path, [a, b])).Message);
        Assert.Contains("upscale", Assert.Throws<ArgumentException>(() => Filmstrip.Write(path, [a], 0)).Message);
        Assert.False(File.Exists(path));
    }

    // The [-1, 1] -> byte mapping, written out independently of the library's.
    private static byte Byte(float v) => (byte)Math.Round((Math.Min(Math.Max(v, -1.0), 1.0) + 1.0) / 2.0 * 255.0, MidpointRounding.ToEven);
}
