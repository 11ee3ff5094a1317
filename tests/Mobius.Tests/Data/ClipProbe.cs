using Mobius.Data;

namespace Mobius.Tests.Data;

/// <summary>
/// Plain measurements of a clip, independent of <see cref="MotionMetric"/>: a pixel is foreground when
/// any channel differs from the top-left pixel by more than 0.05.
/// </summary>
internal static class ClipProbe
{
    public static bool IsForeground(Clip clip, int f, int y, int x)
    {
        var frame = clip.Frame(f);
        int plane = clip.Height * clip.Width, i = y * clip.Width + x;
        for (int c = 0; c < 3; c++)
        {
            if (Math.Abs(frame[c * plane + i] - frame[c * plane]) > 0.05f)
            {
                return true;
            }
        }

        return false;
    }

    /// <summary>Foreground pixel count and centroid (pixel units) of frame f.</summary>
    public static (int Area, double X, double Y) Blob(Clip clip, int f)
    {
        int n = 0;
        double sx = 0, sy = 0;
        for (int y = 0; y < clip.Height; y++)
        {
            for (int x = 0; x < clip.Width; x++)
            {
                if (IsForeground(clip, f, y, x))
                {
                    n++;
                    sx += x;
                    sy += y;
                }
            }
        }

        return n == 0 ? (0, double.NaN, double.NaN) : (n, sx / n, sy / n);
    }

    /// <summary>Pixels where some channel differs by more than 0.25 between frames f and g.</summary>
    public static int ChangedPixels(Clip clip, int f, int g)
    {
        var a = clip.Frame(f);
        var b = clip.Frame(g);
        int plane = clip.Height * clip.Width, n = 0;
        for (int i = 0; i < plane; i++)
        {
            if (Math.Abs(a[i] - b[i]) > 0.25f || Math.Abs(a[plane + i] - b[plane + i]) > 0.25f || Math.Abs(a[2 * plane + i] - b[2 * plane + i]) > 0.25f)
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>A copy of the clip with every frame replaced by frame 0.</summary>
    public static Clip Frozen(Clip clip)
    {
        var frames = new float[clip.Frames.Length];
        for (int f = 0; f < clip.FrameCount; f++)
        {
            clip.Frame(0).CopyTo(frames.AsSpan(f * clip.FrameSize, clip.FrameSize));
        }

        return new Clip(frames, clip.FrameCount, clip.Height, clip.Width, clip.Caption, clip.Label);
    }
}
