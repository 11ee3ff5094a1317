namespace Mobius.Data;

/// <summary>
/// Maps pixels [N, 3, H, W] (N images, values in [-1, 1]) to latents [N, C, H / d, W / d] and back,
/// where C is <see cref="LatentChannels"/> and d is <see cref="Downscale"/>: the place of a VAE.
/// </summary>
public interface ILatentCodec
{
    /// <summary>Channels of a latent image.</summary>
    int LatentChannels { get; }

    /// <summary>Spatial reduction factor d: H and W must be multiples of it.</summary>
    int Downscale { get; }

    /// <summary>Encodes <paramref name="images"/> images of 3 x <paramref name="height"/> x <paramref name="width"/>.</summary>
    void Encode(ReadOnlySpan<float> pixels, Span<float> latents, int images, int height, int width);

    /// <summary>Decodes latents back to <paramref name="images"/> images of 3 x <paramref name="height"/> x <paramref name="width"/> (the pixel size).</summary>
    void Decode(ReadOnlySpan<float> latents, Span<float> pixels, int images, int height, int width);
}

/// <summary>Array conveniences over <see cref="ILatentCodec"/>.</summary>
public static class LatentCodecExtensions
{
    /// <summary>The latents of a clip's frames, [F, C, H / d, W / d].</summary>
    public static float[] Encode(this ILatentCodec codec, Clip clip)
    {
        ArgumentNullException.ThrowIfNull(codec);
        ArgumentNullException.ThrowIfNull(clip);
        int d = codec.Downscale;
        var latents = new float[clip.FrameCount * codec.LatentChannels * (clip.Height / d) * (clip.Width / d)];
        codec.Encode(clip.Frames, latents, clip.FrameCount, clip.Height, clip.Width);
        return latents;
    }

    /// <summary>The pixels [N, 3, H, W] of latents [N, C, H / d, W / d].</summary>
    public static float[] Decode(this ILatentCodec codec, ReadOnlySpan<float> latents, int images, int height, int width)
    {
        ArgumentNullException.ThrowIfNull(codec);
        var pixels = new float[images * 3 * height * width];
        codec.Decode(latents, pixels, images, height, width);
        return pixels;
    }
}

/// <summary>
/// The default codec: a fixed, invertible 2 x 2 space-to-depth (PyTorch's <c>pixel_unshuffle</c>
/// order: latent channel = 4 c + 2 dy + dx holds pixel (2 i + dy, 2 j + dx) of colour channel c), times a
/// per-channel scale, minus a per-channel shift: z = p s - m. Scales are powers of two and shifts
/// multiples of 1/8, so without shifts <c>Decode(Encode(x)) == x</c> bit for bit, and with them to within
/// one rounding of the shift (at most 2^-21 for pixels in [-1, 1]).
/// </summary>
public sealed class SpaceToDepthCodec : ILatentCodec
{
    private const int Channels = 12;

    /// <summary>
    /// Scales that give latents of emoji clips (8 x 32 x 32) roughly unit variance: 2^round(-log2 std)
    /// of each channel's standard deviation over 1024 clips. Pixel standard deviations are about 0.24
    /// (red), 0.28 (green) and 0.31 (blue), so every scale is 4 and latent standard deviations are about
    /// 0.95, 1.13 and 1.26. <see cref="Fit"/> computes such scales for other data.
    /// </summary>
    public static readonly IReadOnlyList<float> EmojiScales = [4f, 4f, 4f, 4f, 4f, 4f, 4f, 4f, 4f, 4f, 4f, 4f];

    /// <summary>
    /// Shifts that centre latents of emoji clips: the light background puts the scaled means near 3.4
    /// (red), 3.2 (green) and 3.0 (blue); diffusion wants zero-mean data (the noise it starts sampling
    /// from is zero-mean), so the means are subtracted, rounded to 1/8.
    /// </summary>
    public static readonly IReadOnlyList<float> EmojiShifts = [3.375f, 3.375f, 3.375f, 3.375f, 3.25f, 3.25f, 3.25f, 3.25f, 3f, 3f, 3f, 3f];

    private readonly float[] _scales;
    private readonly float[] _shifts;

    /// <summary>The codec with <see cref="EmojiScales"/> and <see cref="EmojiShifts"/>.</summary>
    public SpaceToDepthCodec()
        : this(EmojiScales, EmojiShifts)
    {
    }

    /// <summary>A codec with the given 12 channel scales (each a power of two) and shifts (default none).</summary>
    public SpaceToDepthCodec(IReadOnlyList<float> scales, IReadOnlyList<float>? shifts = null)
    {
        ArgumentNullException.ThrowIfNull(scales);
        if (scales.Count != Channels)
        {
            throw new ArgumentException($"Space-to-depth needs {Channels} channel scales, got {scales.Count}.", nameof(scales));
        }

        shifts ??= new float[Channels];
        if (shifts.Count != Channels || shifts.Any(m => !float.IsFinite(m)))
        {
            throw new ArgumentException($"Space-to-depth needs {Channels} finite channel shifts, got {shifts.Count}.", nameof(shifts));
        }

        _shifts = [.. shifts];

        foreach (float s in scales)
        {
            if (!float.IsNormal(s) || s < 0 || (BitConverter.SingleToInt32Bits(s) & 0x7FFFFF) != 0)
            {
                throw new ArgumentException($"Channel scale {s} is not a positive power of two, so scaling would not be exactly invertible.", nameof(scales));
            }
        }

        _scales = [.. scales];
    }

    /// <summary>The per-channel scales.</summary>
    public IReadOnlyList<float> Scales => Array.AsReadOnly(_scales);

    /// <summary>The per-channel shifts (subtracted after scaling).</summary>
    public IReadOnlyList<float> Shifts => Array.AsReadOnly(_shifts);

    /// <inheritdoc />
    public int LatentChannels => Channels;

    /// <inheritdoc />
    public int Downscale => 2;

    /// <summary>
    /// A codec whose scales are 2^round(-log2 std) of each channel's standard deviation over the first
    /// <paramref name="clips"/> clips of <paramref name="source"/>, and whose shifts are the scaled
    /// channel means rounded to 1/8.
    /// </summary>
    public static SpaceToDepthCodec Fit(IClipSource source, int clips = 256)
    {
        ArgumentNullException.ThrowIfNull(source);
        var stats = ChannelStats(new SpaceToDepthCodec(Enumerable.Repeat(1f, Channels).ToArray()), source, clips);
        var scales = stats.Select(s => MathF.Pow(2, MathF.Round(-MathF.Log2((float)Math.Max(s.Std, 1e-6))))).ToArray();
        var shifts = stats.Select((s, ch) => MathF.Round((float)s.Mean * scales[ch] * 8) / 8).ToArray();
        return new SpaceToDepthCodec(scales, shifts);
    }

    /// <summary>Mean and standard deviation of every latent channel over the first <paramref name="clips"/> clips.</summary>
    internal static (double Mean, double Std)[] ChannelStats(ILatentCodec codec, IClipSource source, int clips)
    {
        int n = Math.Min(clips, source.Count);
        if (n <= 0)
        {
            throw new ArgumentException("Channel statistics need at least one clip.", nameof(clips));
        }

        var sum = new double[codec.LatentChannels];
        var sumSq = new double[codec.LatentChannels];
        long perChannel = 0;
        for (int i = 0; i < n; i++)
        {
            var clip = source.Get(i);
            float[] z = codec.Encode(clip);
            int plane = z.Length / (clip.FrameCount * codec.LatentChannels);
            for (int k = 0; k < z.Length; k++)
            {
                int ch = k / plane % codec.LatentChannels;
                sum[ch] += z[k];
                sumSq[ch] += (double)z[k] * z[k];
            }

            perChannel += (long)clip.FrameCount * plane;
        }

        return [.. sum.Select((s, ch) => (s / perChannel, Math.Sqrt(Math.Max(0, sumSq[ch] / perChannel - (s / perChannel) * (s / perChannel)))))];
    }

    /// <inheritdoc />
    public void Encode(ReadOnlySpan<float> pixels, Span<float> latents, int images, int height, int width)
    {
        Check(pixels.Length, latents.Length, images, height, width);
        int h2 = height / 2, w2 = width / 2;
        for (int n = 0; n < images; n++)
        {
            for (int c = 0; c < 3; c++)
            {
                var src = pixels.Slice((n * 3 + c) * height * width, height * width);
                for (int sub = 0; sub < 4; sub++)
                {
                    int ch = 4 * c + sub, dy = sub >> 1, dx = sub & 1;
                    float s = _scales[ch], m = _shifts[ch];
                    var dst = latents.Slice((n * Channels + ch) * h2 * w2, h2 * w2);
                    for (int i = 0; i < h2; i++)
                    {
                        for (int j = 0; j < w2; j++)
                        {
                            dst[i * w2 + j] = src[(2 * i + dy) * width + 2 * j + dx] * s - m;
                        }
                    }
                }
            }
        }
    }

    /// <inheritdoc />
    public void Decode(ReadOnlySpan<float> latents, Span<float> pixels, int images, int height, int width)
    {
        Check(pixels.Length, latents.Length, images, height, width);
        int h2 = height / 2, w2 = width / 2;
        for (int n = 0; n < images; n++)
        {
            for (int c = 0; c < 3; c++)
            {
                var dst = pixels.Slice((n * 3 + c) * height * width, height * width);
                for (int sub = 0; sub < 4; sub++)
                {
                    int ch = 4 * c + sub, dy = sub >> 1, dx = sub & 1;
                    float inv = 1f / _scales[ch], m = _shifts[ch];
                    var src = latents.Slice((n * Channels + ch) * h2 * w2, h2 * w2);
                    for (int i = 0; i < h2; i++)
                    {
                        for (int j = 0; j < w2; j++)
                        {
                            dst[(2 * i + dy) * width + 2 * j + dx] = (src[i * w2 + j] + m) * inv;
                        }
                    }
                }
            }
        }
    }

    private static void Check(int pixelCount, int latentCount, int images, int height, int width)
    {
        if (images <= 0 || height <= 0 || width <= 0 || height % 2 != 0 || width % 2 != 0)
        {
            throw new ArgumentException($"Space-to-depth needs a positive image count and even height and width, got {images} images of {height} x {width}.");
        }

        long need = (long)images * 3 * height * width;
        if (pixelCount != need || latentCount != need)
        {
            throw new ArgumentException(
                $"Space-to-depth of {images} images of 3 x {height} x {width} needs {need} pixel values and {need} latent values ([{images}, {Channels}, {height / 2}, {width / 2}]), got {pixelCount} and {latentCount}.");
        }
    }
}
