using Mobius.Data;
using Xunit;

namespace Mobius.Tests.Data;

public sealed class LatentCodecTests
{
    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Space_to_depth_follows_pixel_unshuffle_order_and_round_trips_bit_for_bit(int seed)
    {
        var r = new Rng(seed);
        int n = r.Int(1, 3), h = 2 * r.Int(1, 6), w = 2 * r.Int(1, 6);
        float[] scales = [.. Enumerable.Range(0, 12).Select(_ => MathF.Pow(2, r.Int(-3, 3)))];
        var codec = new SpaceToDepthCodec(scales);
        float[] pixels = r.Uniform(n * 3 * h * w);
        var latents = new float[pixels.Length];
        codec.Encode(pixels, latents, n, h, w);

        for (int b = 0; b < n; b++)
        {
            for (int c = 0; c < 3; c++)
            {
                for (int y = 0; y < h; y++)
                {
                    for (int x = 0; x < w; x++)
                    {
                        int ch = 4 * c + 2 * (y % 2) + x % 2;
                        float want = pixels[((b * 3 + c) * h + y) * w + x] * scales[ch];
                        float got = latents[((b * 12 + ch) * (h / 2) + y / 2) * (w / 2) + x / 2];
                        Assert.True(want == got, $"{r}: pixel [{b}, {c}, {y}, {x}] went to channel {ch} as {got}, expected {want}.");
                    }
                }
            }
        }

        float[] back = codec.Decode(latents, n, h, w);
        Assert.True(back.AsSpan().SequenceEqual(pixels), $"{r}: decode(encode(x)) != x for {n} x 3 x {h} x {w}.");
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Emoji_clips_round_trip_with_the_default_codec(int seed)
    {
        var clip = new EmojiClips(new EmojiClipsOptions { Seed = seed, Count = 1 }).Get(0);
        ILatentCodec codec = new SpaceToDepthCodec();
        float[] z = codec.Encode(clip);
        Assert.Equal(clip.FrameCount * codec.LatentChannels * (clip.Height / 2) * (clip.Width / 2), z.Length);
        Assert.Equal((12, 2), (codec.LatentChannels, codec.Downscale));

        // Shifts cost at most one rounding: 2^-21 for pixels in [-1, 1] scaled by 4.
        Close.All(codec.Decode(z, clip.FrameCount, clip.Height, clip.Width), clip.Frames, 5e-7, 0, $"seed {seed}: emoji clip round trip");

        // Without shifts the round trip is exact.
        ILatentCodec plain = new SpaceToDepthCodec(SpaceToDepthCodec.EmojiScales);
        Assert.True(plain.Decode(plain.Encode(clip), clip.FrameCount, clip.Height, clip.Width).AsSpan().SequenceEqual(clip.Frames), $"seed {seed}: emoji clip does not round trip.");
    }

    [Fact]
    public void Default_codec_gives_emoji_latents_zero_mean_and_roughly_unit_variance_and_matches_a_fresh_fit()
    {
        var source = new EmojiClips(new EmojiClipsOptions { Seed = Seeds.One, Count = 64 });
        var stats = SpaceToDepthCodec.ChannelStats(new SpaceToDepthCodec(), source, 64);
        // Power-of-two scales put each channel's std within sqrt 2 of 1 over many clips; a sample of 64 clips
        // wanders around that (0.71 to 1.41 over 300 samples of 64, channel by channel, and 1.42 once on a test
        // run), so the bounds leave that sampling room: a wrong scale is off by a factor of 2.
        for (int ch = 0; ch < 12; ch++)
        {
            Assert.True(stats[ch].Std is > 0.6 and < 1.6, $"seed {Seeds.One}: latent channel {ch} has std {stats[ch].Std:0.000}, not within sqrt 2 of 1 (give or take a sample's wander).");
            Assert.True(Math.Abs(stats[ch].Mean) < 0.3, $"seed {Seeds.One}: latent channel {ch} has mean {stats[ch].Mean:0.000}.");
        }

        // Fit rounds each channel's scale to a power of two; a channel whose raw std sits near a rounding
        // boundary may round either way on a fresh sample of clips, so there the default may be the
        // neighbouring power of two (never further).
        var fit = SpaceToDepthCodec.Fit(source, 64);
        var raw = SpaceToDepthCodec.ChannelStats(new SpaceToDepthCodec(Enumerable.Repeat(1f, 12).ToArray()), source, 64);
        for (int ch = 0; ch < 12; ch++)
        {
            double ideal = -Math.Log2(raw[ch].Std);
            double fromBoundary = Math.Abs(ideal - Math.Floor(ideal) - 0.5);
            double defaultLog = Math.Log2(SpaceToDepthCodec.EmojiScales[ch]);
            if (fromBoundary > 0.1)
            {
                Assert.True(fit.Scales[ch] == SpaceToDepthCodec.EmojiScales[ch], $"seed {Seeds.One}: channel {ch}: fitted scale {fit.Scales[ch]}, default {SpaceToDepthCodec.EmojiScales[ch]} (raw std {raw[ch].Std:0.000}).");
            }
            else
            {
                Assert.InRange(defaultLog, Math.Floor(ideal), Math.Ceiling(ideal));
            }
        }

        for (int ch = 0; ch < 12; ch++)
        {
            // Shifts are in scaled units: compare them where the scales agree.
            if (fit.Scales[ch] != SpaceToDepthCodec.EmojiScales[ch])
            {
                continue;
            }

            Assert.True(Math.Abs(fit.Shifts[ch] - SpaceToDepthCodec.EmojiShifts[ch]) <= 0.25, $"channel {ch}: fitted shift {fit.Shifts[ch]}, default {SpaceToDepthCodec.EmojiShifts[ch]}.");
        }
    }

    [Fact]
    public void Bad_sizes_and_scales_are_refused()
    {
        var codec = new SpaceToDepthCodec();
        Assert.Throws<ArgumentException>(() => codec.Encode(new float[3 * 3 * 4], new float[3 * 3 * 4], 1, 3, 4));
        Assert.Throws<ArgumentException>(() => codec.Encode(new float[3 * 4 * 4], new float[3 * 4 * 4 - 1], 1, 4, 4));
        Assert.Throws<ArgumentException>(() => codec.Decode(new float[3 * 4 * 4], new float[3 * 4 * 4], 2, 4, 4));
        foreach (float bad in new[] { 3f, 0f, -2f, float.NaN, float.PositiveInfinity, 1e-40f })
        {
            Assert.Throws<ArgumentException>(() => new SpaceToDepthCodec(Enumerable.Repeat(bad, 12).ToArray()));
        }

        Assert.Throws<ArgumentException>(() => new SpaceToDepthCodec([1f, 1f]));
    }
}
