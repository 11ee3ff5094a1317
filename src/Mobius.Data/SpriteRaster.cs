namespace Mobius.Data;

/// <summary>Where and how a sprite is drawn in one frame, in pixels and radians.</summary>
/// <param name="X">Centre column (pixel centres are at x + 0.5).</param>
/// <param name="Y">Centre row.</param>
/// <param name="Radius">Radius of the sprite's bounding disc: the sprite never reaches beyond it.</param>
/// <param name="Angle">Rotation, positive turns clockwise on screen.</param>
/// <param name="SquashY">Vertical scale in the sprite's own frame (1 open, near 0 flat).</param>
internal readonly record struct Pose(float X, float Y, float Radius, float Angle, float SquashY);

/// <summary>
/// Draws anti-aliased sprites: a pixel is covered by 4x4 samples, each classified as outside, fill or
/// detail (eyes, mouth, stripe), and becomes the coverage-weighted mix of background, fill and detail
/// colours. Pixels whose four corners and centre show the same thing are taken as uniform, so only
/// the pixels on edges pay for the 16 samples. Shapes live in the unit disc of sprite coordinates
/// (u right, v up), so any rotation keeps them inside the bounding disc.
/// </summary>
internal static class SpriteRaster
{
    private const int Sub = 4;

    /// <summary>The plain light background (cream), RGB in [0, 1].</summary>
    private static readonly Rgb Background = new(0.95f, 0.94f, 0.91f);

    private static readonly Rgb[] Fills =
    [
        new(0.86f, 0.16f, 0.16f), // red
        new(0.96f, 0.55f, 0.08f), // orange
        new(0.96f, 0.80f, 0.08f), // yellow
        new(0.16f, 0.67f, 0.24f), // green
        new(0.16f, 0.35f, 0.86f), // blue
        new(0.55f, 0.24f, 0.75f), // purple
        new(0.94f, 0.39f, 0.67f), // pink
        new(0.55f, 0.33f, 0.16f), // brown
    ];

    private static readonly Rgb FaceFeatures = new(0.16f, 0.12f, 0.12f);

    // Half-planes (nx, ny, c): inside when nx*u + ny*v + c >= 0.
    internal static readonly float[] StarLines = Lines(5, 0.95f, skip: 2);
    internal static readonly float[] TriangleLines = Lines(3, 0.95f, skip: 1);

    /// <summary>The detail colour: dark features on a face, a darker shade of the fill elsewhere.</summary>
    private static Rgb Detail(Sprite sprite, Colour colour) =>
        sprite == Sprite.SmileyFace ? FaceFeatures : Fills[(int)colour].Scale(0.55f);

    /// <summary>Fills <paramref name="frame"/> ([3, H, W], values in [-1, 1]) with the background and draws the sprite.</summary>
    public static void Render(Span<float> frame, int height, int width, Sprite sprite, Colour colour, Pose pose)
    {
        // One loop per shape, so the JIT inlines the shape test into the 16-sample loop.
        switch (sprite)
        {
            case Sprite.SmileyFace: Render<SmileyShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Heart: Render<HeartShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Star: Render<StarShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Ball: Render<BallShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Square: Render<SquareShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Triangle: Render<TriangleShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Diamond: Render<DiamondShape>(frame, height, width, sprite, colour, pose); break;
            case Sprite.Moon: Render<MoonShape>(frame, height, width, sprite, colour, pose); break;
            default: throw new ArgumentOutOfRangeException(nameof(sprite), sprite, "Unknown sprite.");
        }
    }

    /// <summary>What sprite coordinates (u, v) of <paramref name="sprite"/> show: 0 outside, 1 fill, 2 detail.</summary>
    internal static int Paint(Sprite sprite, float u, float v) => sprite switch
    {
        Sprite.SmileyFace => SmileyShape.Paint(u, v),
        Sprite.Heart => HeartShape.Paint(u, v),
        Sprite.Star => StarShape.Paint(u, v),
        Sprite.Ball => BallShape.Paint(u, v),
        Sprite.Square => SquareShape.Paint(u, v),
        Sprite.Triangle => TriangleShape.Paint(u, v),
        Sprite.Diamond => DiamondShape.Paint(u, v),
        Sprite.Moon => MoonShape.Paint(u, v),
        _ => throw new ArgumentOutOfRangeException(nameof(sprite), sprite, "Unknown sprite."),
    };

    private static void Render<TShape>(Span<float> frame, int height, int width, Sprite sprite, Colour colour, Pose pose)
        where TShape : struct, IShape
    {
        int plane = height * width;
        Rgb bg = Background, fill = Fills[(int)colour], detail = Detail(sprite, colour);
        frame[..plane].Fill(bg.R * 2 - 1);
        frame.Slice(plane, plane).Fill(bg.G * 2 - 1);
        frame.Slice(2 * plane, plane).Fill(bg.B * 2 - 1);

        // Sprite coordinates of an image point p: q = R(-angle) (p - centre) / radius; u = q.x, v = -q.y / squash.
        float cos = MathF.Cos(pose.Angle), sin = MathF.Sin(pose.Angle);
        float inv = 1f / pose.Radius, squash = Math.Max(pose.SquashY, 1e-3f);
        float ux = cos * inv, uy = sin * inv;
        float vx = sin * inv / squash, vy = -cos * inv / squash;

        int x0 = Math.Max(0, (int)MathF.Floor(pose.X - pose.Radius)), x1 = Math.Min(width - 1, (int)MathF.Ceiling(pose.X + pose.Radius));
        int y0 = Math.Max(0, (int)MathF.Floor(pose.Y - pose.Radius)), y1 = Math.Min(height - 1, (int)MathF.Ceiling(pose.Y + pose.Radius));
        if (x0 > x1 || y0 > y1)
        {
            return;
        }

        // What the pixel corners show, each computed once and shared by four pixels.
        int nx = x1 - x0 + 2, ny = y1 - y0 + 2;
        Span<byte> corners = nx * ny <= 4096 ? stackalloc byte[nx * ny] : new byte[nx * ny];
        for (int j = 0; j < ny; j++)
        {
            float dy = y0 + j - pose.Y;
            for (int i = 0; i < nx; i++)
            {
                float dx = x0 + i - pose.X;
                corners[j * nx + i] = (byte)TShape.Paint(ux * dx + uy * dy, vx * dx + vy * dy);
            }
        }

        // Sprite-coordinate offsets of the 4 x 4 samples from a pixel's top-left corner.
        Span<float> su = stackalloc float[Sub * Sub], sv = stackalloc float[Sub * Sub];
        for (int k = 0; k < Sub * Sub; k++)
        {
            float ox = (k % Sub + 0.5f) / Sub, oy = (k / Sub + 0.5f) / Sub;
            su[k] = ux * ox + uy * oy;
            sv[k] = vx * ox + vy * oy;
        }

        const float weight = 1f / (Sub * Sub);
        for (int y = y0; y <= y1; y++)
        {
            for (int x = x0; x <= x1; x++)
            {
                float dx = x - pose.X, dy = y - pose.Y;
                float u0 = ux * dx + uy * dy, v0 = vx * dx + vy * dy;
                int corner = (y - y0) * nx + x - x0;
                int what = corners[corner];

                // A pixel whose corners and centre agree is taken as uniform; only edge pixels are supersampled.
                int nFill, nDetail;
                if (what == corners[corner + 1] && what == corners[corner + nx] && what == corners[corner + nx + 1]
                    && what == TShape.Paint(u0 + (ux + uy) * 0.5f, v0 + (vx + vy) * 0.5f))
                {
                    nFill = what == 1 ? Sub * Sub : 0;
                    nDetail = what == 2 ? Sub * Sub : 0;
                }
                else
                {
                    nFill = nDetail = 0;
                    for (int k = 0; k < Sub * Sub; k++)
                    {
                        switch (TShape.Paint(u0 + su[k], v0 + sv[k]))
                        {
                            case 1: nFill++; break;
                            case 2: nDetail++; break;
                        }
                    }
                }

                if (nFill + nDetail == 0)
                {
                    continue;
                }

                float a = nFill * weight, b = nDetail * weight, keep = 1 - a - b;
                int p = y * width + x;
                frame[p] = 2 * (keep * bg.R + a * fill.R + b * detail.R) - 1;
                frame[plane + p] = 2 * (keep * bg.G + a * fill.G + b * detail.G) - 1;
                frame[2 * plane + p] = 2 * (keep * bg.B + a * fill.B + b * detail.B) - 1;
            }
        }
    }

    internal static int InsideCount(float[] lines, float u, float v)
    {
        int n = 0;
        for (int i = 0; i < lines.Length; i += 3)
        {
            if (lines[i] * u + lines[i + 1] * v + lines[i + 2] >= 0f)
            {
                n++;
            }
        }

        return n;
    }

    /// <summary>
    /// The lines through vertex k and vertex k + skip of a regular polygon with one vertex pointing up,
    /// as half-planes that contain the centre. skip 1 gives a convex polygon (inside all); skip 2 of a
    /// pentagon gives the pentagram, whose star is the set of points inside at least four of the five.
    /// </summary>
    private static float[] Lines(int vertices, float radius, int skip)
    {
        var lines = new float[3 * vertices];
        for (int k = 0; k < vertices; k++)
        {
            double a0 = Math.PI / 2 + 2 * Math.PI * k / vertices, a1 = Math.PI / 2 + 2 * Math.PI * (k + skip) / vertices;
            double px = radius * Math.Cos(a0), py = radius * Math.Sin(a0);
            double qx = radius * Math.Cos(a1), qy = radius * Math.Sin(a1);
            double nx = -(qy - py), ny = qx - px;
            double c = -(nx * px + ny * py);
            if (c < 0)
            {
                (nx, ny, c) = (-nx, -ny, -c);
            }

            lines[3 * k] = (float)nx;
            lines[3 * k + 1] = (float)ny;
            lines[3 * k + 2] = (float)c;
        }

        return lines;
    }
}

/// <summary>A shape in sprite coordinates (u right, v up, inside the unit disc).</summary>
internal interface IShape
{
    /// <summary>0 outside, 1 fill, 2 detail.</summary>
    static abstract int Paint(float u, float v);
}

internal readonly struct SmileyShape : IShape
{
    public static int Paint(float u, float v)
    {
        if (u * u + v * v > 0.92f * 0.92f)
        {
            return 0;
        }

        float ex = MathF.Abs(u) - 0.32f, ey = v - 0.3f;
        if (ex * ex / (0.15f * 0.15f) + ey * ey / (0.24f * 0.24f) <= 1f)
        {
            return 2;
        }

        float my = v - 0.1f, m2 = u * u + my * my;
        return my < -0.15f && m2 >= 0.4f * 0.4f && m2 <= 0.6f * 0.6f ? 2 : 1;
    }
}

internal readonly struct HeartShape : IShape
{
    // (x^2 + y^2 - 1)^3 - x^2 y^3 <= 0, shifted and scaled so its farthest point from the centre sits at radius 0.95.
    public static int Paint(float u, float v)
    {
        float x = u * 1.316f, y = v * 1.316f + 0.25f;
        float s = x * x + y * y - 1f;
        return s * s * s - x * x * y * y * y <= 0f ? 1 : 0;
    }
}

internal readonly struct StarShape : IShape
{
    public static int Paint(float u, float v) => SpriteRaster.InsideCount(SpriteRaster.StarLines, u, v) >= 4 ? 1 : 0;
}

internal readonly struct BallShape : IShape
{
    public static int Paint(float u, float v) => u * u + v * v > 0.92f * 0.92f ? 0 : MathF.Abs(v) <= 0.2f ? 2 : 1;
}

internal readonly struct SquareShape : IShape
{
    public static int Paint(float u, float v) => MathF.Abs(u) <= 0.65f && MathF.Abs(v) <= 0.65f ? 1 : 0;
}

internal readonly struct TriangleShape : IShape
{
    public static int Paint(float u, float v) => SpriteRaster.InsideCount(SpriteRaster.TriangleLines, u, v) == 3 ? 1 : 0;
}

internal readonly struct DiamondShape : IShape
{
    public static int Paint(float u, float v) => MathF.Abs(u) / 0.6f + MathF.Abs(v) / 0.95f <= 1f ? 1 : 0;
}

internal readonly struct MoonShape : IShape
{
    // A disc of radius 0.92 less one of radius 0.72 at (0.4, 0.2), moved so its centroid (-0.31, -0.155)
    // sits at the centre (so spinning does not move it) and scaled to reach radius 0.95.
    public static int Paint(float u, float v)
    {
        float x = u * 1.233f - 0.31f, y = v * 1.233f - 0.155f;
        float cx = x - 0.4f, cy = y - 0.2f;
        return x * x + y * y <= 0.92f * 0.92f && cx * cx + cy * cy > 0.72f * 0.72f ? 1 : 0;
    }
}

/// <summary>An RGB colour with channels in [0, 1].</summary>
internal readonly record struct Rgb(float R, float G, float B)
{
    public Rgb Scale(float s) => new(R * s, G * s, B * s);
}
