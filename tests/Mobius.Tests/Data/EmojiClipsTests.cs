using Mobius.Data;
using Xunit;

namespace Mobius.Tests.Data;

public sealed class EmojiClipsTests
{
    private static EmojiClips Generator(int seed, int count = 64, Split split = Split.Train, int frames = 8, int size = 32) =>
        new(new EmojiClipsOptions { Seed = seed, Count = count, Split = split, Frames = frames, Height = size, Width = size });

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Same_seed_gives_the_same_bytes_and_captions(int seed)
    {
        var r = new Rng(seed);
        var a = Generator(seed);
        var b = Generator(seed);
        foreach (int i in r.Ints(6, a.Count))
        {
            var x = a.Get(i);
            var y = b.Get(i);
            var again = a.Get(i);
            Assert.True(x.Frames.AsSpan().SequenceEqual(y.Frames), $"{r}: clip {i} differs between two generators with one seed.");
            Assert.True(x.Frames.AsSpan().SequenceEqual(again.Frames), $"{r}: clip {i} differs between two calls.");
            Assert.Equal(x.Caption, y.Caption);
            Assert.Equal(x.Label, y.Label);
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Different_seeds_and_indices_give_different_clips(int seed)
    {
        var a = Generator(seed);
        var b = Generator(seed + 1000);
        for (int i = 0; i < 8; i++)
        {
            Assert.False(a.Get(i).Frames.AsSpan().SequenceEqual(b.Get(i).Frames), $"seed {seed}: clip {i} is the same for seeds {seed} and {seed + 1000}.");
            Assert.False(a.Get(i).Frames.AsSpan().SequenceEqual(a.Get(i + 1).Frames), $"seed {seed}: clips {i} and {i + 1} are the same.");
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Clips_have_the_asked_shape_values_in_range_and_a_sprite_inside_the_frame(int seed)
    {
        var r = new Rng(seed);
        int frames = r.Int(2, 12), size = r.Pick(16, 24, 32, 48);
        var gen = Generator(seed, count: 8, frames: frames, size: size);
        for (int i = 0; i < gen.Count; i++)
        {
            var clip = gen.Get(i);
            Assert.Equal((frames, size, size), (clip.FrameCount, clip.Height, clip.Width));
            Assert.Equal(frames * 3 * size * size, clip.Frames.Length);
            Assert.All(clip.Frames, v => Assert.True(v is >= -1f and <= 1f, $"{r}: value {v} outside [-1, 1] in clip {i}."));
            int[] areas = [.. Enumerable.Range(0, frames).Select(f => ClipProbe.Blob(clip, f).Area)];
            Assert.True(areas.Max() >= size * size / 25, $"{r}: clip {i} ({clip.Caption}) shows at most {areas.Max()} sprite pixels.");
            for (int f = 0; f < frames; f++)
            {
                Assert.True(areas[f] > 0, $"{r}: clip {i} ({clip.Caption}) frame {f} shows no sprite.");
                for (int k = 0; k < size; k++)
                {
                    Assert.False(
                        ClipProbe.IsForeground(clip, f, 0, k) || ClipProbe.IsForeground(clip, f, size - 1, k)
                        || ClipProbe.IsForeground(clip, f, k, 0) || ClipProbe.IsForeground(clip, f, k, size - 1),
                        $"{r}: clip {i} ({clip.Caption}) frame {f} touches the border at {k}.");
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Captions_name_the_label(int seed)
    {
        var gen = Generator(seed, count: 64, frames: 2, size: 16); // captions do not depend on the size
        var templates = new HashSet<string>();
        for (int i = 0; i < gen.Count; i++)
        {
            var clip = gen.Get(i);
            Assert.NotNull(clip.Label);
            Assert.True(EmojiCaptions.TryParse(clip.Caption, out var parsed), $"seed {seed}: caption \"{clip.Caption}\" does not parse.");
            Assert.Equal(clip.Label, parsed);
            Assert.Contains(EmojiCaptions.Name(clip.Label.Colour), clip.Caption);
            Assert.Contains(EmojiCaptions.Name(clip.Label.Sprite), clip.Caption);
            templates.Add(clip.Caption.Split(' ')[0]);
        }

        Assert.True(templates.Count >= 2, $"seed {seed}: 64 captions all start alike: {string.Join(", ", templates)}.");
    }

    [Fact]
    public void Every_caption_parses_back_to_its_label()
    {
        foreach (var label in EmojiCaptions.AllLabels())
        {
            for (int t = 0; t < EmojiCaptions.TemplateCount; t++)
            {
                for (int p = 0; p < EmojiCaptions.PhraseCount; p++)
                {
                    string caption = EmojiCaptions.Caption(label, t, p);
                    Assert.True(EmojiCaptions.TryParse(caption.ToUpperInvariant() + ".", out var parsed), $"\"{caption}\" does not parse.");
                    Assert.Equal(label, parsed);
                }
            }
        }

        Assert.False(EmojiCaptions.TryParse("a red blue heart moving left", out _));
        Assert.False(EmojiCaptions.TryParse("a red heart moving left and growing", out _));
        Assert.False(EmojiCaptions.TryParse("a red heart", out _));
    }

    [Fact]
    public void Splits_hold_out_whole_combinations_and_keep_every_part_in_training()
    {
        var train = EmojiClips.Labels(Split.Train).ToHashSet();
        var validation = EmojiClips.Labels(Split.Validation).ToHashSet();
        Assert.Equal(8 * 8 * 8, train.Count + validation.Count);
        Assert.Equal(64, validation.Count);
        Assert.Empty(train.Intersect(validation));

        // Every pair of attributes (and so every single attribute) still appears in training.
        Assert.Equal(64, train.Select(l => (l.Sprite, l.Colour)).Distinct().Count());
        Assert.Equal(64, train.Select(l => (l.Sprite, l.Motion)).Distinct().Count());
        Assert.Equal(64, train.Select(l => (l.Colour, l.Motion)).Distinct().Count());
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Generated_splits_are_disjoint_and_balanced(int seed)
    {
        var train = Generator(seed, count: 448, size: 16, frames: 2);
        var validation = Generator(seed, count: 128, split: Split.Validation, size: 16, frames: 2);
        var trainLabels = Enumerable.Range(0, train.Count).Select(i => train.Get(i).Label!).ToList();
        var validationLabels = Enumerable.Range(0, validation.Count).Select(i => validation.Get(i).Label!).ToList();

        Assert.Equal(448, trainLabels.Distinct().Count());
        Assert.All(trainLabels, l => Assert.Equal(Split.Train, EmojiClips.SplitOf(l)));
        Assert.All(validationLabels, l => Assert.Equal(Split.Validation, EmojiClips.SplitOf(l)));
        Assert.Equal(64, validationLabels.Take(64).Distinct().Count());
        Assert.Equal(64, validationLabels.Skip(64).Distinct().Count());
        Assert.NotEqual(validationLabels.Take(64), validationLabels.Skip(64));
        Assert.Empty(trainLabels.Intersect(validationLabels));
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void A_motion_subset_keeps_the_split_and_cycles_through_its_combinations(int seed)
    {
        Motion[] motions = [Motion.Grow, Motion.MoveUp];
        var options = new EmojiClipsOptions { Seed = seed, Count = 224, Height = 16, Width = 16, Frames = 2, Motions = motions };
        var train = new EmojiClips(options);
        var validation = new EmojiClips(options with { Split = Split.Validation, Count = 32 });
        var trainLabels = Enumerable.Range(0, train.Count).Select(i => train.Get(i).Label!).ToList();
        var validationLabels = Enumerable.Range(0, validation.Count).Select(i => validation.Get(i).Label!).ToList();

        // 56 training and 8 validation combinations per motion, each once per run of that many clips.
        Assert.All(trainLabels.Concat(validationLabels), l => Assert.Contains(l.Motion, motions));
        Assert.Equal(112, trainLabels.Take(112).Distinct().Count());
        Assert.Equal(112, trainLabels.Skip(112).Distinct().Count());
        Assert.Equal(16, validationLabels.Take(16).Distinct().Count());
        Assert.All(trainLabels, l => Assert.Equal(Split.Train, EmojiClips.SplitOf(l)));
        Assert.All(validationLabels, l => Assert.Equal(Split.Validation, EmojiClips.SplitOf(l)));
        Assert.Throws<ArgumentException>(() => new EmojiClips(options with { Motions = [] }));
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Every_motion_is_clearly_visible_at_32_by_32_over_8_frames(int seed)
    {
        var gen = Generator(seed, count: 40);
        for (int i = 0; i < gen.Count; i++)
        {
            var clip = gen.Get(i);
            var first = ClipProbe.Blob(clip, 0);
            var middle = ClipProbe.Blob(clip, 4);
            var last = ClipProbe.Blob(clip, 7);
            string what = $"seed {seed} clip {i} ({clip.Caption}): area {first.Area} -> {middle.Area} -> {last.Area}, centre ({first.X:0.0}, {first.Y:0.0}) -> ({last.X:0.0}, {last.Y:0.0})";
            double dx = last.X - first.X, dy = last.Y - first.Y;
            switch (clip.Label!.Motion)
            {
                case Motion.MoveLeft: Assert.True(dx < -10 && Math.Abs(dy) < 1, what); break;
                case Motion.MoveRight: Assert.True(dx > 10 && Math.Abs(dy) < 1, what); break;
                case Motion.MoveUp: Assert.True(dy < -10 && Math.Abs(dx) < 1, what); break;
                case Motion.MoveDown: Assert.True(dy > 10 && Math.Abs(dx) < 1, what); break;
                case Motion.Grow: Assert.True(last.Area > 2.5 * first.Area, what); break;
                case Motion.Shrink: Assert.True(first.Area > 2.5 * last.Area, what); break;
                case Motion.Blink: Assert.True(middle.Area < 0.6 * first.Area && Math.Abs(last.Area - first.Area) <= 2, what); break;
                case Motion.Rotate:
                    Assert.True(ClipProbe.ChangedPixels(clip, 0, 7) > first.Area / 8, $"{what}, {ClipProbe.ChangedPixels(clip, 0, 7)} pixels changed");
                    Assert.True(Math.Abs(dx) < 1 && Math.Abs(dy) < 1, what);
                    break;
            }
        }
    }

    [Fact]
    public void Sprites_fit_their_unit_disc_and_faces_and_balls_have_details()
    {
        foreach (var sprite in Enum.GetValues<Sprite>())
        {
            int inside = 0, detail = 0, n = 241;
            for (int i = 0; i < n; i++)
            {
                for (int j = 0; j < n; j++)
                {
                    float u = -1.2f + 2.4f * i / (n - 1), v = -1.2f + 2.4f * j / (n - 1);
                    int what = SpriteRaster.Paint(sprite, u, v);
                    if (what != 0)
                    {
                        Assert.True(u * u + v * v <= 0.96f * 0.96f, $"{sprite} paints ({u}, {v}), outside its disc.");
                        inside++;
                        detail += what == 2 ? 1 : 0;
                    }
                }
            }

            double discFraction = inside * (2.4 / (n - 1)) * (2.4 / (n - 1)) / Math.PI;
            Assert.True(discFraction > 0.25, $"{sprite} covers only {discFraction:P0} of its disc.");
            Assert.Equal(sprite is Sprite.SmileyFace or Sprite.Ball, detail > 0);
        }
    }

    [Fact]
    public void Bad_options_are_refused()
    {
        Assert.Throws<ArgumentException>(() => new EmojiClips(new EmojiClipsOptions { Frames = 1 }));
        Assert.Throws<ArgumentException>(() => new EmojiClips(new EmojiClipsOptions { Height = 8 }));
        Assert.Throws<ArgumentOutOfRangeException>(() => Generator(Seeds.One, count: 4).Get(4));
    }
}
