using SixLabors.ImageSharp;
using SixLabors.ImageSharp.Formats.Gif;
using SixLabors.ImageSharp.PixelFormats;
using SixLabors.ImageSharp.Processing;
using SixLabors.ImageSharp.Processing.Processors.Quantization;

namespace Mobius.Data;

/// <summary>How <see cref="Gif"/> writes an animation.</summary>
public sealed record GifWriteOptions
{
    /// <summary>Time each frame shows, in milliseconds (GIF stores hundredths of a second, so it is rounded to 10 ms).</summary>
    public int FrameDelayMs { get; init; } = 125;

    /// <summary>Integer upscaling for viewing: every pixel becomes an Upscale x Upscale block.</summary>
    public int Upscale { get; init; } = 1;
}

/// <summary>
/// Animated GIF reading and writing. Pixel values map linearly between [-1, 1] and bytes [0, 255].
/// Writing quantises every frame to its own palette of up to 256 colours without dithering (an octree
/// keeps every colour exactly when a frame has at most 256, which emoji frames usually do) and loops forever.
/// </summary>
public static class Gif
{
    /// <summary>Writes a clip's frames to a GIF file.</summary>
    public static void Write(string path, Clip clip, GifWriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(clip);
        Write(path, clip.Frames, clip.FrameCount, clip.Height, clip.Width, options);
    }

    /// <summary>Writes frames [F, 3, H, W] (values in [-1, 1]) to a GIF file.</summary>
    public static void Write(string path, ReadOnlySpan<float> frames, int frameCount, int height, int width, GifWriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        using var stream = File.Create(path);
        Write(stream, frames, frameCount, height, width, options);
    }

    /// <summary>Writes frames [F, 3, H, W] (values in [-1, 1]) to a stream as a GIF.</summary>
    public static void Write(Stream stream, ReadOnlySpan<float> frames, int frameCount, int height, int width, GifWriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(stream);
        options ??= new GifWriteOptions();
        if (frameCount <= 0 || height <= 0 || width <= 0 || frames.Length != (long)frameCount * 3 * height * width)
        {
            throw new ArgumentException($"GIF of {frameCount} frames of 3 x {height} x {width} needs {(long)frameCount * 3 * height * width} values, got {frames.Length}.", nameof(frames));
        }

        if (options.Upscale < 1 || options.FrameDelayMs < 0)
        {
            throw new ArgumentException($"GIF upscale must be >= 1 and frame delay >= 0, got {options.Upscale} and {options.FrameDelayMs} ms.", nameof(options));
        }

        int k = options.Upscale, w = width * k, h = height * k, plane = height * width;
        var pixels = new Rgba32[w * h];
        using var image = new Image<Rgba32>(w, h);
        for (int f = 0; f < frameCount; f++)
        {
            var frame = frames.Slice(f * 3 * plane, 3 * plane);
            for (int y = 0; y < h; y++)
            {
                for (int x = 0; x < w; x++)
                {
                    int i = y / k * width + x / k;
                    pixels[y * w + x] = new Rgba32(ToByte(frame[i]), ToByte(frame[plane + i]), ToByte(frame[2 * plane + i]));
                }
            }

            if (f == 0)
            {
                image.Frames.RootFrame.ProcessPixelRows(a =>
                {
                    for (int y = 0; y < h; y++)
                    {
                        pixels.AsSpan(y * w, w).CopyTo(a.GetRowSpan(y));
                    }
                });
            }
            else
            {
                image.Frames.AddFrame(pixels);
            }
        }

        int delay = (int)Math.Round(options.FrameDelayMs / 10.0);
        foreach (var frame in image.Frames)
        {
            frame.Metadata.GetGifMetadata().FrameDelay = delay;
        }

        image.Metadata.GetGifMetadata().RepeatCount = 0;
        image.Save(stream, new GifEncoder
        {
            ColorTableMode = GifColorTableMode.Local,
            Quantizer = new OctreeQuantizer(new QuantizerOptions { Dither = null, MaxColors = 256 }),
        });
    }

    /// <summary>
    /// Tiles clips of one size side by side (<paramref name="columns"/> per row, default about square)
    /// with 2-pixel grey gaps into one GIF, and writes their captions to a text file beside it (same
    /// name, extension .txt), one line per tile: "row col: caption". Shorter clips hold their last frame.
    /// </summary>
    public static void WriteGrid(string path, IReadOnlyList<Clip> clips, int columns = 0, GifWriteOptions? options = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(clips);
        if (clips.Count == 0)
        {
            throw new ArgumentException("A grid needs at least one clip.", nameof(clips));
        }

        int height = clips[0].Height, width = clips[0].Width;
        if (clips.Any(c => c.Height != height || c.Width != width))
        {
            throw new ArgumentException($"Grid clips must share one frame size; the first is {height} x {width}.", nameof(clips));
        }

        const int gap = 2;
        int cols = columns > 0 ? columns : (int)Math.Ceiling(Math.Sqrt(clips.Count));
        int rows = (clips.Count + cols - 1) / cols;
        int frames = clips.Max(c => c.FrameCount);
        int gh = rows * height + (rows + 1) * gap, gw = cols * width + (cols + 1) * gap, gplane = gh * gw;
        var grid = new float[frames * 3 * gplane]; // 0 is mid grey: the gaps
        for (int n = 0; n < clips.Count; n++)
        {
            var clip = clips[n];
            int top = gap + n / cols * (height + gap), left = gap + n % cols * (width + gap);
            for (int f = 0; f < frames; f++)
            {
                var src = clip.Frame(Math.Min(f, clip.FrameCount - 1));
                for (int c = 0; c < 3; c++)
                {
                    for (int y = 0; y < height; y++)
                    {
                        src.Slice((c * height + y) * width, width)
                            .CopyTo(grid.AsSpan(f * 3 * gplane + c * gplane + (top + y) * gw + left, width));
                    }
                }
            }
        }

        Write(path, grid, frames, gh, gw, options);
        File.WriteAllLines(Path.ChangeExtension(path, ".txt"), clips.Select((c, n) => $"{n / cols} {n % cols}: {c.Caption}"));
    }

    /// <summary>
    /// Reads an animated GIF (any image format ImageSharp reads; a still image gives a still clip) as
    /// a clip of <paramref name="frames"/> frames of <paramref name="height"/> x <paramref name="width"/>.
    /// Frames are sampled evenly in time, honouring each frame's delay (a delay of 0 counts as 100 ms,
    /// as browsers do); a GIF with fewer frames gives all of them, then repeats its last. Frames of
    /// another size are centre-cropped to the aspect ratio and resized (box filter down, bicubic up);
    /// transparent pixels are composited over white. A missing, unknown, truncated or corrupt file
    /// throws <see cref="DataFormatException"/> naming it.
    /// </summary>
    public static Clip Read(string path, int frames, int height, int width, string caption = "")
    {
        ArgumentNullException.ThrowIfNull(path);
        if (!File.Exists(path))
        {
            throw new DataFormatException(path, "GIF file not found.");
        }

        using var stream = File.OpenRead(path);
        return Read(stream, path, frames, height, width, caption);
    }

    /// <summary>
    /// Whether a GIF's blocks (header, screen descriptor, colour tables, extensions and images with their
    /// sub-blocks) run past the end of <paramref name="b"/> before the trailer. A byte that starts no block is
    /// left to the decoder, which reports the file corrupt.
    /// </summary>
    internal static bool RunsPastEnd(ReadOnlySpan<byte> b)
    {
        const int screen = 13;  // "GIF89a", then width, height, flags, background, aspect
        if (b.Length < screen)
        {
            return true;
        }

        static int ColourTable(byte flags) => (flags & 0x80) != 0 ? 3 << ((flags & 7) + 1) : 0;
        long p = screen + ColourTable(b[10]);
        while (p < b.Length)
        {
            switch (b[(int)p])
            {
                case 0x3B:
                    return false;
                case 0x21:  // extension: introducer, label, sub-blocks
                    p += 2;
                    break;
                case 0x2C:  // image: descriptor (10 bytes with the separator), local colour table, LZW code size, sub-blocks
                    if (p + 10 > b.Length)
                    {
                        return true;
                    }

                    p += 10 + ColourTable(b[(int)p + 9]) + 1;
                    break;
                default:
                    return false;
            }

            while (p < b.Length && b[(int)p] != 0)
            {
                p += b[(int)p] + 1;
            }

            p++;  // the terminating empty sub-block
        }

        return true;
    }

    /// <summary>Reads a GIF from a stream like <see cref="Read(string, int, int, int, string)"/>; <paramref name="name"/> names it in errors.</summary>
    public static Clip Read(Stream stream, string name, int frames, int height, int width, string caption = "")
    {
        ArgumentNullException.ThrowIfNull(stream);
        ArgumentNullException.ThrowIfNull(name);
        if (frames <= 0 || height <= 0 || width <= 0)
        {
            throw new ArgumentException($"A clip needs a positive size, got {frames} frames of {height} x {width}.");
        }

        using var buffer = new MemoryStream();
        stream.CopyTo(buffer);
        byte[] bytes = buffer.ToArray();

        // The decoder shows a cut-off GIF without complaint (missing frames, garbage rows); walking its blocks
        // to the trailer tells, wherever the cut fell (a last byte of 0x3B alone could be data).
        if (bytes.AsSpan().StartsWith("GIF8"u8) && RunsPastEnd(bytes))
        {
            throw new DataFormatException(name, "truncated GIF: its blocks run past the end of the file before the GIF trailer (0x3B).");
        }

        Image<Rgba32> image;
        try
        {
            image = Image.Load<Rgba32>(bytes);
        }
        catch (UnknownImageFormatException e)
        {
            throw new DataFormatException(name, "not a GIF (nor another image format ImageSharp reads).", e);
        }
        catch (Exception e) when (e is not OutOfMemoryException)
        {
            // The decoder throws many kinds of exceptions on damaged files (format errors, index and
            // end-of-stream errors); all of them mean the same thing here: this file is not usable.
            throw new DataFormatException(name, $"corrupt image ({e.GetType().Name}: {e.Message.Split('\n')[0].Trim()}).", e);
        }

        using (image)
        {
            var delays = new int[image.Frames.Count];
            for (int k = 0; k < delays.Length; k++)
            {
                delays[k] = image.Frames[k].Metadata.GetGifMetadata().FrameDelay;
            }

            int[] chosen = SampleFrames(delays, frames);
            int plane = height * width;
            var data = new float[frames * 3 * plane];
            var pixels = new Rgba32[plane];
            int decoded = -1;
            for (int f = 0; f < frames; f++)
            {
                if (chosen[f] != decoded)
                {
                    decoded = chosen[f];
                    using var single = image.Frames.CloneFrame(decoded);
                    if (single.Width != width || single.Height != height)
                    {
                        bool down = single.Width >= width && single.Height >= height;
                        single.Mutate(x => x.Resize(new ResizeOptions
                        {
                            Size = new Size(width, height),
                            Mode = ResizeMode.Crop,
                            Sampler = down ? KnownResamplers.Box : KnownResamplers.Bicubic,
                        }));
                    }

                    single.CopyPixelDataTo(pixels);
                }

                var dst = data.AsSpan(f * 3 * plane, 3 * plane);
                for (int i = 0; i < plane; i++)
                {
                    var p = pixels[i];
                    float a = p.A / 255f, white = 1 - a;
                    dst[i] = (p.R / 255f * a + white) * 2 - 1;
                    dst[plane + i] = (p.G / 255f * a + white) * 2 - 1;
                    dst[2 * plane + i] = (p.B / 255f * a + white) * 2 - 1;
                }
            }

            return new Clip(data, frames, height, width, caption);
        }
    }

    /// <summary>
    /// Which source frame shows at each of <paramref name="count"/> evenly spaced times, given frame
    /// delays in hundredths of a second; with fewer source frames than <paramref name="count"/>, every
    /// frame once and then the last again.
    /// </summary>
    internal static int[] SampleFrames(int[] delays, int count)
    {
        int n = delays.Length;
        var chosen = new int[count];
        if (n < count)
        {
            for (int i = 0; i < count; i++)
            {
                chosen[i] = Math.Min(i, n - 1);
            }

            return chosen;
        }

        var start = new long[n + 1];
        for (int k = 0; k < n; k++)
        {
            start[k + 1] = start[k] + (delays[k] > 0 ? delays[k] : 10);
        }

        // Time i * total / count falls in frame k when start[k] * count <= i * total < start[k + 1] * count.
        int frame = 0;
        for (int i = 0; i < count; i++)
        {
            long t = i * start[n];
            while (start[frame + 1] * count <= t)
            {
                frame++;
            }

            chosen[i] = frame;
        }

        return chosen;
    }

    internal static byte ToByte(float v) => float.IsNaN(v) ? (byte)0 : (byte)MathF.Round((Math.Clamp(v, -1f, 1f) + 1f) * 127.5f);
}
