namespace Mobius.Data;

/// <summary>
/// A short video with its caption: frames in layout [F, 3, H, W] (frame, RGB channel, row, column),
/// values in [-1, 1] (-1 black, 1 full intensity).
/// </summary>
public sealed class Clip
{
    /// <summary>Wraps frames (not copied) of <paramref name="frameCount"/> x 3 x <paramref name="height"/> x <paramref name="width"/> values.</summary>
    public Clip(float[] frames, int frameCount, int height, int width, string caption, ClipLabel? label = null)
    {
        ArgumentNullException.ThrowIfNull(frames);
        ArgumentNullException.ThrowIfNull(caption);
        if (frameCount <= 0 || height <= 0 || width <= 0)
        {
            throw new ArgumentException($"Clip size {frameCount}x{height}x{width} has a dimension that is not positive.");
        }

        if (frames.LongLength != (long)frameCount * 3 * height * width)
        {
            throw new ArgumentException(
                $"Clip of {frameCount} frames of 3x{height}x{width} needs {(long)frameCount * 3 * height * width} values, got {frames.LongLength}.",
                nameof(frames));
        }

        Frames = frames;
        FrameCount = frameCount;
        Height = height;
        Width = width;
        Caption = caption;
        Label = label;
    }

    /// <summary>The pixel values, [F, 3, H, W] row-major, in [-1, 1]. Shared, not copied: treat as read-only.</summary>
    public float[] Frames { get; }

    /// <summary>Number of frames F.</summary>
    public int FrameCount { get; }

    /// <summary>Frame height H in pixels.</summary>
    public int Height { get; }

    /// <summary>Frame width W in pixels.</summary>
    public int Width { get; }

    /// <summary>The text that describes the clip.</summary>
    public string Caption { get; }

    /// <summary>What the clip shows, when known (generated clips); null for clips read from files.</summary>
    public ClipLabel? Label { get; }

    /// <summary>Values in one frame (3 x H x W).</summary>
    public int FrameSize => 3 * Height * Width;

    /// <summary>The values of frame <paramref name="f"/>, [3, H, W].</summary>
    public ReadOnlySpan<float> Frame(int f)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(f);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(f, FrameCount);
        return Frames.AsSpan(f * FrameSize, FrameSize);
    }
}

/// <summary>What a generated clip shows: which sprite, in which colour, doing what.</summary>
/// <param name="Sprite">The shape.</param>
/// <param name="Colour">Its fill colour.</param>
/// <param name="Motion">What it does over the clip.</param>
public sealed record ClipLabel(Sprite Sprite, Colour Colour, Motion Motion);

/// <summary>A deterministic, indexable collection of clips of one size.</summary>
public interface IClipSource
{
    /// <summary>Number of clips.</summary>
    int Count { get; }

    /// <summary>Frames per clip.</summary>
    int FrameCount { get; }

    /// <summary>Frame height in pixels.</summary>
    int Height { get; }

    /// <summary>Frame width in pixels.</summary>
    int Width { get; }

    /// <summary>
    /// Clip <paramref name="index"/> (0 &lt;= index &lt; <see cref="Count"/>); the same index always gives the same clip.
    /// May be called from several threads at once: a trainer on a device backend makes its next batch on a worker
    /// thread while validation reads clips on the caller's.
    /// </summary>
    Clip Get(int index);
}
