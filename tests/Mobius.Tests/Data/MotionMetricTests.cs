using Mobius.Data;
using Xunit;

namespace Mobius.Tests.Data;

public sealed class MotionMetricTests
{
    /// <summary><paramref name="perMotion"/> clips of every motion, random sprites and colours, 8 x 32 x 32.</summary>
    private static List<Clip> ClipsOfEveryMotion(int seed, int perMotion)
    {
        var r = new Rng(seed);
        var rng = new SplitMix((ulong)seed);
        var clips = new List<Clip>();
        foreach (var motion in Enum.GetValues<Motion>())
        {
            for (int i = 0; i < perMotion; i++)
            {
                var label = new ClipLabel((Sprite)r.Int(0, 7), (Colour)r.Int(0, 7), motion);
                clips.Add(EmojiClips.Render(label, ref rng, 8, 32, 32));
            }
        }

        return clips;
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Generator_clips_score_high_for_their_motion_and_low_for_every_other(int seed)
    {
        var clips = ClipsOfEveryMotion(seed, 3);
        var right = new List<double>();
        var wrong = new List<double>();
        foreach (var clip in clips)
        {
            var all = MotionMetric.ScoreAll(clip);
            var mine = all[clip.Label!.Motion];
            var others = all.Where(p => p.Key != clip.Label.Motion).ToList();
            var best = others.MaxBy(p => p.Value.Combined);
            Assert.True(mine.Combined > best.Value.Combined + 0.3, $"seed {seed}: \"{clip.Caption}\" scores {mine.Combined:0.00} as {clip.Label.Motion} but {best.Value.Combined:0.00} as {best.Key}.");
            right.Add(mine.Combined);
            wrong.AddRange(others.Select(p => p.Value.Combined));
        }

        Assert.True(right.Average() > 0.8, $"seed {seed}: generator clips average {right.Average():0.000}.");
        Assert.True(wrong.Average() < 0.1, $"seed {seed}: wrong motions average {wrong.Average():0.000}.");
        foreach (var group in clips.Zip(right).GroupBy(p => p.First.Label!.Motion))
        {
            Assert.True(group.Average(p => p.Second) > 0.8, $"seed {seed}: {group.Key} clips average {group.Average(p => p.Second):0.000}.");
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Clips_played_backwards_score_low_for_directed_motions(int seed)
    {
        foreach (var clip in ClipsOfEveryMotion(seed, 2).Where(c => c.Label!.Motion is not (Motion.Rotate or Motion.Blink)))
        {
            var frames = new float[clip.Frames.Length];
            for (int f = 0; f < clip.FrameCount; f++)
            {
                clip.Frame(clip.FrameCount - 1 - f).CopyTo(frames.AsSpan(f * clip.FrameSize));
            }

            var score = MotionMetric.Score(new Clip(frames, clip.FrameCount, clip.Height, clip.Width, clip.Caption, clip.Label));
            Assert.True(score.Combined < 0.2, $"seed {seed}: \"{clip.Caption}\" backwards scores {score}.");
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Frozen_frames_score_low_though_perfectly_consistent(int seed)
    {
        foreach (var clip in ClipsOfEveryMotion(seed, 1))
        {
            var score = MotionMetric.Score(ClipProbe.Frozen(clip));
            Assert.True(score.Combined < 0.2, $"seed {seed}: frozen \"{clip.Caption}\" scores {score}.");
            Assert.True(score.Consistency > 0.99, $"seed {seed}: frozen \"{clip.Caption}\" is not consistent: {score}.");
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Pure_noise_scores_low_for_every_motion(int seed)
    {
        var r = new Rng(seed);
        for (int i = 0; i < 4; i++)
        {
            var noise = new Clip(r.Uniform(8 * 3 * 32 * 32), 8, 32, 32, "noise");
            foreach (var (motion, score) in MotionMetric.ScoreAll(noise))
            {
                Assert.True(score.Combined < 0.2 && score.Consistency < 0.3, $"{r}: noise clip {i} scores {score} as {motion}.");
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Blurred_noisy_clips_like_generated_samples_still_rank_their_motion_first(int seed)
    {
        var r = new Rng(seed);
        var right = new List<double>();
        foreach (var clip in ClipsOfEveryMotion(seed, 1))
        {
            var degraded = Degrade(clip, r, noise: 0.05f);
            var all = MotionMetric.ScoreAll(degraded);
            var best = all.MaxBy(p => p.Value.Combined);
            Assert.True(best.Key == clip.Label!.Motion, $"{r}: degraded \"{clip.Caption}\" scores best as {best.Key} ({best.Value}), as {clip.Label.Motion} {all[clip.Label.Motion]}.");
            right.Add(all[clip.Label.Motion].Combined);
        }

        Assert.True(right.Average() > 0.6, $"{r}: degraded generator clips average {right.Average():0.000}.");
    }

    [Fact]
    public void The_motion_comes_from_the_label_or_else_the_caption()
    {
        var clip = ClipsOfEveryMotion(Seeds.One, 1)[0];
        var unlabelled = new Clip(clip.Frames, clip.FrameCount, clip.Height, clip.Width, clip.Caption);
        Assert.Equal(MotionMetric.ScoreAll(clip)[clip.Label!.Motion], MotionMetric.Score(clip));
        Assert.Equal(MotionMetric.Score(clip), MotionMetric.Score(unlabelled));
        var e = Assert.Throws<ArgumentException>(() => MotionMetric.Score(new Clip(clip.Frames, clip.FrameCount, clip.Height, clip.Width, "a cat")));
        Assert.Contains("a cat", e.Message);
        Assert.Throws<ArgumentException>(() => MotionMetric.Score(clip.Frames.AsSpan(0, clip.FrameSize), 1, clip.Height, clip.Width, Motion.Grow));
    }

    /// <summary>A 3 x 3 blur plus Gaussian noise, the way a half-trained model's samples look.</summary>
    private static Clip Degrade(Clip clip, Rng r, float noise)
    {
        int h = clip.Height, w = clip.Width;
        var gauss = r.Uniform(clip.Frames.Length * 2L);
        var frames = new float[clip.Frames.Length];
        for (int p = 0; p < clip.FrameCount * 3; p++)
        {
            for (int y = 0; y < h; y++)
            {
                for (int x = 0; x < w; x++)
                {
                    float sum = 0;
                    for (int dy = -1; dy <= 1; dy++)
                    {
                        for (int dx = -1; dx <= 1; dx++)
                        {
                            sum += clip.Frames[p * h * w + Math.Clamp(y + dy, 0, h - 1) * w + Math.Clamp(x + dx, 0, w - 1)];
                        }
                    }

                    // Box-Muller from two uniforms in [-1, 1].
                    int i = p * h * w + y * w + x;
                    double u1 = (gauss[2 * i] + 1) / 2, u2 = (gauss[2 * i + 1] + 1) / 2;
                    double g = Math.Sqrt(-2 * Math.Log(Math.Max(u1, 1e-12))) * Math.Cos(2 * Math.PI * u2);
                    frames[i] = sum / 9 + noise * (float)g;
                }
            }
        }

        return new Clip(frames, clip.FrameCount, h, w, clip.Caption, clip.Label);
    }
}
