namespace Mobius.Data;

/// <summary>Which part of a data set.</summary>
public enum Split
{
    /// <summary>The clips to train on.</summary>
    Train,

    /// <summary>Held-out clips: see <see cref="EmojiClips"/> for what they hold out.</summary>
    Validation,
}

/// <summary>Settings of the <see cref="EmojiClips"/> generator.</summary>
public sealed record EmojiClipsOptions
{
    /// <summary>Seed of the whole collection: the same seed gives the same clips, byte for byte.</summary>
    public int Seed { get; init; }

    /// <summary>Frames per clip (at least 2).</summary>
    public int Frames { get; init; } = 8;

    /// <summary>Frame height in pixels (at least 16).</summary>
    public int Height { get; init; } = 32;

    /// <summary>Frame width in pixels (at least 16).</summary>
    public int Width { get; init; } = 32;

    /// <summary>Number of clips.</summary>
    public int Count { get; init; } = 1024;

    /// <summary>Training or validation clips.</summary>
    public Split Split { get; init; } = Split.Train;

    /// <summary>Only combinations with these motions (null: every motion); the split is unchanged.</summary>
    public IReadOnlyList<Motion>? Motions { get; init; }
}

/// <summary>
/// The built-in cartoon emoji clips: one coloured sprite on a plain light background doing one motion,
/// captioned from templates ("a red heart moving left"). Deterministic: clip i depends only on the seed,
/// the split, the index and the size. <see cref="Get"/> may be called from several threads at once.
/// <para>
/// The split holds out combinations: of the 8 x 8 x 8 (sprite, colour, motion) combinations, the 64
/// with (3 sprite + 5 colour + 7 motion) mod 8 = 2 are validation-only, exactly one motion for each
/// (sprite, colour) pair, so every sprite, colour and motion, and every pair of them, is still seen in
/// training; validation asks for unseen compositions. The two splits also draw their random poses
/// from different streams.
/// </para>
/// <para>
/// Every run of <see cref="Split.Train"/> combinations (448) or <see cref="Split.Validation"/>
/// combinations (64) consecutive indices, starting at a multiple of that count, shows each combination
/// of the split once, in a shuffled order (with <see cref="EmojiClipsOptions.Motions"/>, the split's
/// combinations of those motions: 56 and 8 per motion).
/// </para>
/// </summary>
public sealed class EmojiClips : IClipSource
{
    private readonly ClipLabel[] _labels;

    /// <summary>A generator with the given settings (defaults: seed 0, 8 frames of 32 x 32, 1024 training clips).</summary>
    public EmojiClips(EmojiClipsOptions? options = null)
    {
        Options = options ?? new EmojiClipsOptions();
        if (Options.Frames < 2 || Options.Height < 16 || Options.Width < 16 || Options.Count < 0)
        {
            throw new ArgumentException(
                $"Emoji clips need at least 2 frames of 16 x 16 and a count >= 0, got {Options.Frames} frames of {Options.Height} x {Options.Width}, count {Options.Count}.",
                nameof(options));
        }

        _labels = [.. Labels(Options.Split).Where(l => Options.Motions is null || Options.Motions.Contains(l.Motion))];
        if (_labels.Length == 0)
        {
            throw new ArgumentException("Emoji clips need at least one motion.", nameof(options));
        }
    }

    /// <summary>The settings.</summary>
    public EmojiClipsOptions Options { get; }

    /// <inheritdoc />
    public int Count => Options.Count;

    /// <inheritdoc />
    public int FrameCount => Options.Frames;

    /// <inheritdoc />
    public int Height => Options.Height;

    /// <inheritdoc />
    public int Width => Options.Width;

    /// <summary>The split a combination belongs to.</summary>
    public static Split SplitOf(ClipLabel label)
    {
        ArgumentNullException.ThrowIfNull(label);
        return (3 * (int)label.Sprite + 5 * (int)label.Colour + 7 * (int)label.Motion) % 8 == 2 ? Split.Validation : Split.Train;
    }

    /// <summary>The combinations of a split, in enum order.</summary>
    public static IEnumerable<ClipLabel> Labels(Split split) => EmojiCaptions.AllLabels().Where(l => SplitOf(l) == split);

    /// <inheritdoc />
    public Clip Get(int index)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(index);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(index, Count);
        int n = _labels.Length;
        var order = new SplitMix(SplitMix.Hash(Options.Seed, (int)Options.Split, index / n, 1));
        var labels = (ClipLabel[])_labels.Clone();
        for (int i = n - 1; i > 0; i--)
        {
            int j = order.Below(i + 1);
            (labels[i], labels[j]) = (labels[j], labels[i]);
        }

        var rng = new SplitMix(SplitMix.Hash(Options.Seed, (int)Options.Split, index, 2));
        return Render(labels[index % n], ref rng, Options.Frames, Options.Height, Options.Width);
    }

    /// <summary>Draws one clip of <paramref name="label"/> with poses and wording drawn from <paramref name="rng"/>.</summary>
    internal static Clip Render(ClipLabel label, ref SplitMix rng, int frames, int height, int width)
    {
        string caption = EmojiCaptions.Caption(label, rng.Below(EmojiCaptions.TemplateCount), rng.Below(EmojiCaptions.PhraseCount));
        var poses = Poses(label.Motion, ref rng, frames, height, width);
        var data = new float[frames * 3 * height * width];
        for (int f = 0; f < frames; f++)
        {
            SpriteRaster.Render(data.AsSpan(f * 3 * height * width, 3 * height * width), height, width, label.Sprite, label.Colour, poses[f]);
        }

        return new Clip(data, frames, height, width, caption, label);
    }

    /// <summary>
    /// The sprite's pose in every frame. Sizes are relative to the shorter side S: full radius 0.20 to
    /// 0.25 S; a move runs from near one edge to near the other, 90 to 100 % of the free travel (13 to
    /// 17 pixels at 32 x 32, about 2 pixels per frame at 8 frames); grow and shrink change the area
    /// fourfold; a spin turns up to 150 degrees, at most 24 degrees per frame (below half the star's
    /// 72-degree symmetry, so the turn is unambiguous); a blink flattens to 15 % height. The bounding
    /// disc stays at least one pixel inside the frame.
    /// </summary>
    private static Pose[] Poses(Motion motion, ref SplitMix rng, int frames, int height, int width)
    {
        const float margin = 1f;
        float radius = Math.Min(height, width) * rng.Range(0.20f, 0.25f);
        float Across(ref SplitMix r, int size) => r.Range(radius + margin, size - radius - margin);
        float x = Across(ref rng, width), y = Across(ref rng, height);

        float travelX = (width - 2 * (radius + margin)) * rng.Range(0.45f, 0.5f);
        float travelY = (height - 2 * (radius + margin)) * rng.Range(0.45f, 0.5f);
        float centreX = width / 2f, centreY = height / 2f;
        float spin = (rng.Below(2) == 0 ? -1 : 1) * MathF.Min(150f, 24f * (frames - 1)) * MathF.PI / 180f;

        var poses = new Pose[frames];
        for (int f = 0; f < frames; f++)
        {
            float t = f / (float)(frames - 1);
            float along = 2 * t - 1;
            poses[f] = motion switch
            {
                Motion.MoveLeft => new Pose(centreX - along * travelX, y, radius, 0, 1),
                Motion.MoveRight => new Pose(centreX + along * travelX, y, radius, 0, 1),
                Motion.MoveUp => new Pose(x, centreY - along * travelY, radius, 0, 1),
                Motion.MoveDown => new Pose(x, centreY + along * travelY, radius, 0, 1),
                Motion.Rotate => new Pose(x, y, radius, spin * t, 1),
                Motion.Grow => new Pose(x, y, radius * (0.5f + 0.5f * t), 0, 1),
                Motion.Shrink => new Pose(x, y, radius * (1f - 0.5f * t), 0, 1),
                Motion.Blink => new Pose(x, y, radius, 0, 1f - 0.85f * MathF.Max(0f, 1f - MathF.Abs(t - 0.5f) / 0.35f)),
                _ => throw new ArgumentOutOfRangeException(nameof(motion), motion, "Unknown motion."),
            };
        }

        return poses;
    }
}
