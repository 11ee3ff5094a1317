using SixLabors.ImageSharp;
using SixLabors.ImageSharp.PixelFormats;

namespace Mobius.Data;

/// <summary>
/// Still pictures of clips for reading motion off a page: one row per clip, one column per frame, with
/// 2-pixel mid-grey gaps, written as PNG. A GIF shows a clip moving; a filmstrip shows where each frame's
/// sprite is, side by side, in a report or a printed page. Pixel values map as <see cref="Gif"/>'s do:
/// [-1, 1] to bytes [0, 255].
/// </summary>
public static class Filmstrip
{
    /// <summary>The grey gap between frames and rows, in (un-upscaled) pixels.</summary>
    public const int Gap = 2;

    /// <summary>
    /// Writes the clips (one frame size; shorter clips leave their missing frames grey) as a PNG of
    /// rows x frames, every pixel an <paramref name="upscale"/> x <paramref name="upscale"/> block.
    /// </summary>
    public static void Write(string path, IReadOnlyList<Clip> clips, int upscale = 4)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(clips);
        if (clips.Count == 0)
        {
            throw new ArgumentException("A filmstrip needs at least one clip.", nameof(clips));
        }

        if (upscale < 1)
        {
            throw new ArgumentException($"Filmstrip upscale must be at least 1, got {upscale}.", nameof(upscale));
        }

        int height = clips[0].Height, width = clips[0].Width;
        if (clips.Any(c => c.Height != height || c.Width != width))
        {
            throw new ArgumentException($"Filmstrip clips must share one frame size; the first is {height} x {width}.", nameof(clips));
        }

        int frames = clips.Max(c => c.FrameCount), plane = height * width;
        int h = clips.Count * height + (clips.Count + 1) * Gap, w = frames * width + (frames + 1) * Gap;
        using var image = new Image<Rgba32>(w * upscale, h * upscale, new Rgba32(128, 128, 128));
        image.ProcessPixelRows(a =>
        {
            for (int n = 0; n < clips.Count; n++)
            {
                var clip = clips[n];
                int top = Gap + n * (height + Gap);
                for (int f = 0; f < clip.FrameCount; f++)
                {
                    var src = clip.Frame(f);
                    int left = Gap + f * (width + Gap);
                    for (int y = 0; y < height * upscale; y++)
                    {
                        var row = a.GetRowSpan(top * upscale + y);
                        for (int x = 0; x < width * upscale; x++)
                        {
                            int i = y / upscale * width + x / upscale;
                            row[left * upscale + x] = new Rgba32(Gif.ToByte(src[i]), Gif.ToByte(src[plane + i]), Gif.ToByte(src[2 * plane + i]));
                        }
                    }
                }
            }
        });
        image.SaveAsPng(path);
    }
}
