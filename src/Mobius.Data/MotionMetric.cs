namespace Mobius.Data;

/// <summary>How well a clip shows a motion; every part in [0, 1], higher is better.</summary>
/// <param name="Motion">How well the observed movement matches the asked-for motion.</param>
/// <param name="Consistency">How well each frame is the previous frame moved by the observed motion (1: nothing else changes).</param>
/// <param name="Combined">The geometric mean of both: high only when both are.</param>
public sealed record MotionScore(double Motion, double Consistency, double Combined);

/// <summary>
/// A quality number for emoji-like clips (one object on a plain background), robust to blur and noise,
/// so it can score generated samples.
/// <para>
/// Frames are first smoothed with a 3 x 3 box filter (pixel grain is not motion). Segmentation: per
/// frame, the background colour is the median of the border pixels, and a pixel belongs to the object
/// in proportion to its colour distance from it (a soft mask whose threshold rises with the border's
/// noise). From the mask: centroid, area and second moments; between
/// consecutive frames, the rotation about the centroid that best aligns rings of pixels around it.
/// </para>
/// <para>
/// Motion term: moves score the centroid's net travel in the asked direction (full marks at a quarter
/// of the frame) times its directness (net travel over path length); grow and shrink score the change
/// of log area (full marks at a doubling) times its directness; blink scores the dip of log area
/// between the end frames (full marks at 2.5x), its directness and the recovery to the starting area;
/// rotate scores the net turn (full marks at 60 degrees) times its directness, counting only turns
/// whose alignment is confident.
/// </para>
/// <para>
/// Consistency term: each frame is predicted from the previous one by the affine map the measurements
/// imply (centroid shift, rotation, and the change of second moments, which covers scaling and
/// squashing); 1 minus the mean absolute prediction error relative to the frame's mean distance from
/// its background. Pure noise scores near 0; frozen frames score 1 here but 0 on motion.
/// </para>
/// </summary>
public static class MotionMetric
{
    private const int Angles = 90;
    private const int MaxShift = 10; // 40 degrees per frame
    private static readonly float[] RingScales = [0.6f, 0.9f, 1.2f];
    private static readonly double[] Cos = [.. Enumerable.Range(0, Angles).Select(k => Math.Cos(2 * Math.PI * k / Angles))];
    private static readonly double[] Sin = [.. Enumerable.Range(0, Angles).Select(k => Math.Sin(2 * Math.PI * k / Angles))];

    /// <summary>The motion a clip shows: its label's, or else the one its caption names; null when neither names one.</summary>
    public static Motion? MotionOf(Clip clip)
    {
        ArgumentNullException.ThrowIfNull(clip);
        return clip.Label is { } label || EmojiCaptions.TryParse(clip.Caption, out label) ? label.Motion : null;
    }

    /// <summary>Scores a clip against the motion of its label, or else the motion its caption names.</summary>
    public static MotionScore Score(Clip clip)
    {
        if (MotionOf(clip) is { } motion)
        {
            return Score(clip, motion);
        }

        throw new ArgumentException($"Clip has no label and its caption \"{clip.Caption}\" names no emoji motion; pass the motion.", nameof(clip));
    }

    /// <summary>Scores a clip against <paramref name="motion"/>.</summary>
    public static MotionScore Score(Clip clip, Motion motion)
    {
        ArgumentNullException.ThrowIfNull(clip);
        return Score(clip.Frames, clip.FrameCount, clip.Height, clip.Width, motion);
    }

    /// <summary>Scores frames [F, 3, H, W] (values in [-1, 1], F at least 2) against <paramref name="motion"/>.</summary>
    public static MotionScore Score(ReadOnlySpan<float> frames, int frameCount, int height, int width, Motion motion) =>
        new Observation(frames, frameCount, height, width).Score(motion);

    /// <summary>Scores a clip against every motion at once (one measurement): which motion it shows best, and how well.</summary>
    public static IReadOnlyDictionary<Motion, MotionScore> ScoreAll(Clip clip)
    {
        ArgumentNullException.ThrowIfNull(clip);
        var observed = new Observation(clip.Frames, clip.FrameCount, clip.Height, clip.Width);
        return Enum.GetValues<Motion>().ToDictionary(m => m, observed.Score);
    }

    /// <summary>What a clip shows, measured once: per-frame shapes, per-step turns, and the consistency term.</summary>
    private sealed class Observation
    {
        private readonly Shape[] _shapes;
        private readonly double[] _turns;
        private readonly double[] _confidence;
        private readonly double _consistency;

        public Observation(ReadOnlySpan<float> frames, int frameCount, int height, int width)
        {
            if (frameCount < 2 || height < 4 || width < 4 || frames.Length != (long)frameCount * 3 * height * width)
            {
                throw new ArgumentException($"Motion scoring needs at least 2 frames of 3 x 4 x 4 or more and matching data, got {frames.Length} values for {frameCount} x 3 x {height} x {width}.");
            }

            // Everything is measured on 3 x 3 box-smoothed frames: pixel grain is not motion, and averaging
            // nine pixels cuts independent noise threefold while blur barely moves centroids or moments.
            float[] smooth = BoxSmooth(frames, frameCount * 3, height, width);
            int size = 3 * height * width;
            _shapes = new Shape[frameCount];
            for (int f = 0; f < frameCount; f++)
            {
                _shapes[f] = Measure(smooth.AsSpan(f * size, size), height, width);
            }

            _turns = new double[frameCount - 1];
            _confidence = new double[frameCount - 1];
            double relativeError = 0;
            for (int f = 0; f + 1 < frameCount; f++)
            {
                var prev = smooth.AsSpan(f * size, size);
                var next = smooth.AsSpan((f + 1) * size, size);
                (_turns[f], _confidence[f]) = Turn(prev, _shapes[f], next, _shapes[f + 1], height, width);
                relativeError += PredictionError(prev, _shapes[f], next, _shapes[f + 1], _turns[f], height, width);
            }

            _consistency = Math.Clamp(1 - relativeError / (frameCount - 1), 0, 1);
        }

        public MotionScore Score(Motion motion)
        {
            double score = motion switch
            {
                Motion.MoveLeft => Move(_shapes, -1, 0),
                Motion.MoveRight => Move(_shapes, 1, 0),
                Motion.MoveUp => Move(_shapes, 0, -1),
                Motion.MoveDown => Move(_shapes, 0, 1),
                Motion.Grow => Resize(_shapes, 1),
                Motion.Shrink => Resize(_shapes, -1),
                Motion.Blink => Blink(_shapes),
                Motion.Rotate => Rotate(_turns, _confidence),
                _ => throw new ArgumentOutOfRangeException(nameof(motion), motion, "Unknown motion."),
            };
            return new MotionScore(score, _consistency, Math.Sqrt(score * _consistency));
        }
    }

    private static double Move(Shape[] s, double dx, double dy)
    {
        double along = 0, path = 0;
        for (int f = 0; f + 1 < s.Length; f++)
        {
            double mx = s[f + 1].RelX - s[f].RelX, my = s[f + 1].RelY - s[f].RelY;
            along += mx * dx + my * dy;
            path += Math.Sqrt(mx * mx + my * my);
        }

        return Math.Clamp(along / 0.25, 0, 1) * Directness(along, path);
    }

    private static double Resize(Shape[] s, int sign)
    {
        double net = sign * (s[^1].LogArea - s[0].LogArea), path = PathOfLogArea(s);
        return Math.Clamp(net / Math.Log(2), 0, 1) * Directness(net, path);
    }

    private static double Blink(Shape[] s)
    {
        if (s.Length < 3)
        {
            return 0;
        }

        double low = double.MaxValue;
        for (int f = 1; f + 1 < s.Length; f++)
        {
            low = Math.Min(low, s[f].LogArea);
        }

        double dip = Math.Min(s[0].LogArea, s[^1].LogArea) - low;
        double recovery = Math.Clamp(1 - Math.Abs(s[^1].LogArea - s[0].LogArea) / Math.Log(2), 0, 1);
        return Math.Clamp(dip / Math.Log(2.5), 0, 1) * recovery * Directness(2 * dip, PathOfLogArea(s));
    }

    private static double Rotate(double[] turns, double[] confidence)
    {
        double net = 0, path = 0;
        for (int f = 0; f < turns.Length; f++)
        {
            net += turns[f] * confidence[f];
            path += Math.Abs(turns[f]) * confidence[f];
        }

        return Math.Clamp(Math.Abs(net) / (Math.PI / 3), 0, 1) * Directness(Math.Abs(net), path);
    }

    private static double PathOfLogArea(Shape[] s)
    {
        double path = 0;
        for (int f = 0; f + 1 < s.Length; f++)
        {
            path += Math.Abs(s[f + 1].LogArea - s[f].LogArea);
        }

        return path;
    }

    private static double Directness(double net, double path) => path > 1e-9 ? Math.Clamp(net / path, 0, 1) : 0;

    /// <summary>Background, soft object mask and its moments of one frame [3, H, W].</summary>
    private static Shape Measure(ReadOnlySpan<float> frame, int height, int width)
    {
        int plane = height * width;
        var border = new List<int>(2 * (height + width));
        for (int x = 0; x < width; x++)
        {
            border.Add(x);
            border.Add((height - 1) * width + x);
        }

        for (int y = 1; y + 1 < height; y++)
        {
            border.Add(y * width);
            border.Add(y * width + width - 1);
        }

        var bg = new float[3];
        var values = new float[border.Count];
        for (int c = 0; c < 3; c++)
        {
            for (int k = 0; k < border.Count; k++)
            {
                values[k] = frame[c * plane + border[k]];
            }

            bg[c] = Median(values);
        }

        for (int k = 0; k < border.Count; k++)
        {
            values[k] = Distance(frame, plane, border[k], bg);
        }

        // The mask threshold sits above the border's own noise, so noisy backgrounds stay background.
        float low = Math.Max(0.1f, 3 * Median(values)), high = low + 0.4f;
        double m0 = 0, mx = 0, my = 0, mxx = 0, myy = 0, mxy = 0, contrast = 0;
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                float d = Distance(frame, plane, y * width + x, bg);
                contrast += d;
                double w = Math.Clamp((d - low) / (high - low), 0, 1);
                double px = x + 0.5, py = y + 0.5;
                m0 += w;
                mx += w * px;
                my += w * py;
                mxx += w * px * px;
                myy += w * py * py;
                mxy += w * px * py;
            }
        }

        double area = m0 / plane;
        if (m0 < 1e-6)
        {
            return new Shape(bg, width / 2.0, height / 2.0, 1, 0, 1, Math.Log(1e-4), contrast / plane, width, height);
        }

        double cx = mx / m0, cy = my / m0;
        double sxx = mxx / m0 - cx * cx, syy = myy / m0 - cy * cy, sxy = mxy / m0 - cx * cy;
        const double floor = 0.25; // a quarter pixel squared keeps the covariance invertible for tiny blobs
        return new Shape(bg, cx, cy, sxx + floor, sxy, syy + floor, Math.Log(Math.Max(area, 1e-4)), contrast / plane, width, height);
    }

    /// <summary>
    /// The rotation (radians, positive clockwise on screen) about the centroids that best maps rings of
    /// pixels around the first frame's centroid onto those of the second, and how confident that is
    /// (0 when the best normalised correlation is below 0.3, 1 above 0.7).
    /// </summary>
    private static (double Turn, double Confidence) Turn(ReadOnlySpan<float> a, Shape sa, ReadOnlySpan<float> b, Shape sb, int height, int width)
    {
        double radius = (sa.RmsRadius + sb.RmsRadius) / 2;
        int n = RingScales.Length * 3 * Angles;
        var pa = new double[n];
        var pb = new double[n];
        Profile(a, sa, radius, height, width, pa);
        Profile(b, sb, radius, height, width, pb);
        double na = 0, nb = 0;
        for (int i = 0; i < n; i++)
        {
            na += pa[i] * pa[i];
            nb += pb[i] * pb[i];
        }

        if (na < 1e-9 || nb < 1e-9)
        {
            return (0, 0);
        }

        var corr = new double[2 * MaxShift + 1];
        for (int s = -MaxShift; s <= MaxShift; s++)
        {
            double sum = 0;
            for (int ring = 0; ring < n; ring += Angles)
            {
                for (int k = 0; k < Angles; k++)
                {
                    int j = k + s;
                    j += j < 0 ? Angles : j >= Angles ? -Angles : 0;
                    sum += pa[ring + k] * pb[ring + j];
                }
            }

            corr[s + MaxShift] = sum / Math.Sqrt(na * nb);
        }

        int best = 0;
        for (int i = 1; i < corr.Length; i++)
        {
            best = corr[i] > corr[best] ? i : best;
        }

        double shift = best - MaxShift;
        if (best > 0 && best < corr.Length - 1)
        {
            double l = corr[best - 1], c = corr[best], r = corr[best + 1], curve = l - 2 * c + r;
            shift += curve < 0 ? 0.5 * (l - r) / curve : 0;
        }

        return (shift * 2 * Math.PI / Angles, Math.Clamp((corr[best] - 0.3) / 0.4, 0, 1));
    }

    /// <summary>Difference from the background along rings around the centroid, [ring, channel, angle], mean removed per ring and channel.</summary>
    private static void Profile(ReadOnlySpan<float> frame, Shape s, double radius, int height, int width, double[] profile)
    {
        Span<double> rgb = stackalloc double[3];
        for (int ring = 0; ring < RingScales.Length; ring++)
        {
            double rho = radius * RingScales[ring];
            var block = profile.AsSpan(ring * 3 * Angles, 3 * Angles);
            for (int k = 0; k < Angles; k++)
            {
                SampleRgb(frame, s.X + rho * Cos[k], s.Y + rho * Sin[k], height, width, s.Background, rgb);
                for (int c = 0; c < 3; c++)
                {
                    block[c * Angles + k] = rgb[c] - s.Background[c];
                }
            }

            for (int c = 0; c < 3; c++)
            {
                var line = block.Slice(c * Angles, Angles);
                double mean = 0;
                foreach (double v in line)
                {
                    mean += v;
                }

                mean /= Angles;
                for (int k = 0; k < Angles; k++)
                {
                    line[k] -= mean;
                }
            }
        }
    }

    /// <summary>
    /// Mean absolute error of predicting <paramref name="b"/> from <paramref name="a"/> by the map
    /// p_b = c_b + M (p_a - c_a), M = S_b^(1/2) R(turn) S_a^(-1/2) (S the second-moment matrices),
    /// relative to b's mean distance from its background.
    /// </summary>
    private static double PredictionError(ReadOnlySpan<float> a, Shape sa, ReadOnlySpan<float> b, Shape sb, double turn, int height, int width)
    {
        // Inverse map, from b back to a: M^-1 = S_a^(1/2) R(-turn) S_b^(-1/2).
        var (a11, a12, a22) = SqrtSym(sa.Sxx, sa.Sxy, sa.Syy);
        var (b11, b12, b22) = SqrtSym(sb.Sxx, sb.Sxy, sb.Syy);
        double det = b11 * b22 - b12 * b12;
        double i11 = b22 / det, i12 = -b12 / det, i22 = b11 / det;
        double cos = Math.Cos(turn), sin = Math.Sin(turn);
        // R(-turn) * S_b^(-1/2)
        double r11 = cos * i11 + sin * i12, r12 = cos * i12 + sin * i22;
        double r21 = -sin * i11 + cos * i12, r22 = -sin * i12 + cos * i22;
        double m11 = a11 * r11 + a12 * r21, m12 = a11 * r12 + a12 * r22;
        double m21 = a12 * r11 + a22 * r21, m22 = a12 * r12 + a22 * r22;

        int plane = height * width;
        double error = 0;
        Span<double> rgb = stackalloc double[3];
        for (int y = 0; y < height; y++)
        {
            for (int x = 0; x < width; x++)
            {
                double qx = x + 0.5 - sb.X, qy = y + 0.5 - sb.Y;
                SampleRgb(a, sa.X + m11 * qx + m12 * qy, sa.Y + m21 * qx + m22 * qy, height, width, sa.Background, rgb);
                for (int c = 0; c < 3; c++)
                {
                    error += Math.Abs(b[c * plane + y * width + x] - rgb[c]);
                }
            }
        }

        return error / (3 * plane) / Math.Max(sb.Contrast, 1e-3);
    }

    /// <summary>The square root of the symmetric positive definite matrix [[xx, xy], [xy, yy]].</summary>
    private static (double S11, double S12, double S22) SqrtSym(double xx, double xy, double yy)
    {
        double det = Math.Sqrt(Math.Max(xx * yy - xy * xy, 1e-12));
        double t = Math.Sqrt(xx + yy + 2 * det);
        return ((xx + det) / t, xy / t, (yy + det) / t);
    }

    /// <summary>Bilinear sample of the three channels at image point (x, y) (pixel centres at +0.5), outside pixels reading as background.</summary>
    private static void SampleRgb(ReadOnlySpan<float> frame, double x, double y, int height, int width, float[] background, Span<double> rgb)
    {
        double fx = x - 0.5, fy = y - 0.5;
        int x0 = (int)Math.Floor(fx), y0 = (int)Math.Floor(fy), plane = height * width;
        double tx = fx - x0, ty = fy - y0;
        rgb.Clear();
        for (int corner = 0; corner < 4; corner++)
        {
            int cx = x0 + (corner & 1), cy = y0 + (corner >> 1);
            double w = ((corner & 1) == 1 ? tx : 1 - tx) * ((corner >> 1) == 1 ? ty : 1 - ty);
            bool inside = cx >= 0 && cy >= 0 && cx < width && cy < height;
            for (int c = 0; c < 3; c++)
            {
                rgb[c] += w * (inside ? frame[c * plane + cy * width + cx] : background[c]);
            }
        }
    }

    /// <summary>3 x 3 box filter of every plane, edges clamped; separable: a horizontal pass, then a vertical one.</summary>
    private static float[] BoxSmooth(ReadOnlySpan<float> planes, int count, int height, int width)
    {
        int plane = height * width;
        var rows = new float[plane];
        var result = new float[planes.Length];
        for (int p = 0; p < count; p++)
        {
            var src = planes.Slice(p * plane, plane);
            for (int y = 0; y < height; y++)
            {
                var row = src.Slice(y * width, width);
                for (int x = 0; x < width; x++)
                {
                    rows[y * width + x] = row[Math.Max(x - 1, 0)] + row[x] + row[Math.Min(x + 1, width - 1)];
                }
            }

            var dst = result.AsSpan(p * plane, plane);
            for (int y = 0; y < height; y++)
            {
                int up = Math.Max(y - 1, 0) * width, down = Math.Min(y + 1, height - 1) * width;
                for (int x = 0; x < width; x++)
                {
                    dst[y * width + x] = (rows[up + x] + rows[y * width + x] + rows[down + x]) / 9;
                }
            }
        }

        return result;
    }

    private static float Distance(ReadOnlySpan<float> frame, int plane, int i, float[] bg)
    {
        float r = frame[i] - bg[0], g = frame[plane + i] - bg[1], b = frame[2 * plane + i] - bg[2];
        return MathF.Sqrt((r * r + g * g + b * b) / 3);
    }

    private static float Median(float[] values)
    {
        var sorted = (float[])values.Clone();
        Array.Sort(sorted);
        int n = sorted.Length;
        return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2;
    }

    /// <summary>What one frame shows: background colour, object centroid, second moments (pixels squared), log area fraction, mean distance from the background.</summary>
    private sealed record Shape(float[] Background, double X, double Y, double Sxx, double Sxy, double Syy, double LogArea, double Contrast, int Width, int Height)
    {
        public double RelX => X / Width;

        public double RelY => Y / Height;

        public double RmsRadius => Math.Sqrt(Sxx + Syy);
    }
}
