using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// Activations kept for backward in bf16 or int8 blocks (<see cref="Tape.SavedActivations"/>): forward is untouched, a
/// kept input is exactly its rounding in backward (weight gradients equal an fp32 tape's on the rounded input, bit for
/// bit), one copy serves every node that keeps the same tensor, the gradients of a whole block stay within the type's
/// precision of fp32's, and every byte comes back after backward or when the tape is cleared.
/// </summary>
public abstract class SavedActivationsTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private static double RelativeError(float[] got, float[] want)
    {
        double num = 0, den = 0;
        for (int i = 0; i < want.Length; i++)
        {
            num += ((double)got[i] - want[i]) * ((double)got[i] - want[i]);
            den += (double)want[i] * want[i];
        }

        return Math.Sqrt(num / Math.Max(den, 1e-30));
    }

    [Theory]
    [MemberData(nameof(Seeds.ThreeWithNarrowTypes), MemberType = typeof(Seeds))]
    public void A_kept_input_is_its_rounding_and_one_copy_serves_every_node(int seed, DType kept)
    {
        var r = new Rng(seed);
        int rows = r.Int(2, 9), inF = r.Int(2, 17), outF = r.Int(1, 9);
        var xs = r.Uniform((long)rows * inF, 3f);
        var w1s = r.Uniform((long)outF * inF);
        var w2s = r.Uniform((long)outF * inF);
        var up = r.Uniform((long)rows * outF);

        // The product with the upstream values keeps them too (to differentiate by the sum), in bf16 as well.
        (float[] G1, float[] G2, long Saved) Run(DType kept, float[] input, float[] upstream)
        {
            using var x = Tensor.FromArray(B, input, new Shape(rows, inF));
            using var w1 = Tensor.FromArray(B, w1s, new Shape(outF, inF));
            using var w2 = Tensor.FromArray(B, w2s, new Shape(outF, inF));
            w1.SetRequiresGrad();
            w2.SetRequiresGrad();
            using var g = Tensor.FromArray(B, upstream, new Shape(rows, outF));
            long saved;
            using (var tape = Tape.Begin())
            {
                tape.SavedActivations = kept;
                using var y1 = Ops.Linear(x, w1);
                using var y2 = Ops.Linear(x, w2); // keeps the same x: no second copy
                using var sum = Ops.Add(y1, y2);
                using var weighted = Ops.Mul(sum, g);
                using var loss = Ops.Sum(weighted);
                saved = tape.SavedBytes;
                loss.Backward();
            }

            return (w1.Grad!.ToArray(), w2.Grad!.ToArray(), saved);
        }

        var narrow = Run(kept, xs, up);
        var exact = Run(DType.Float32, Int8BlocksTests.Rounded(xs, kept), Int8BlocksTests.Rounded(up, kept));
        Assert.Equal(exact.G1, narrow.G1);
        Assert.Equal(exact.G2, narrow.G2);
        // x once for both layers, and the upstream values.
        Assert.Equal(kept.Bytes((long)rows * inF) + kept.Bytes((long)rows * outF), narrow.Saved);
        Assert.Equal(((long)rows * inF + (long)rows * outF) * 4, exact.Saved);
    }

    [Theory]
    [MemberData(nameof(Seeds.ThreeWithNarrowTypes), MemberType = typeof(Seeds))]
    public void A_transformer_block_keeps_less_and_its_gradients_stay_within_the_types_precision(int seed, DType kept)
    {
        // Tolerances, norm-wise against fp32's gradient, on each tensor's median error over five draws of shapes and
        // values (DrawSeeds). bf16 keeps 8 bits (relative rounding 2^-9), so each product in a gradient's sum errs by
        // about 0.2 %; int8 blocks round each value to 1/254 of its block's largest magnitude, about four times that.
        // Over 3,000 draws of each type (CPU, 2026-11-29), one draw's error was:
        // - on the matrices: bf16 median 0.003, at most 0.018 (wk); int8 median 0.010 to 0.014, p99 0.030, at most
        //   0.043 (wk, with q, k and v narrowed and the softmax recomputed from them);
        // - on the group norm's gamma and beta: one entry per channel (4 to 10 here), each a sum whose terms largely
        //   cancel, so the same per-term error is a larger part of the result: bf16 median 0.003, at most 0.034;
        //   int8 median 0.011, p99 0.045, at most 0.13.
        // Held draw by draw, int8's 4e-2 and 8e-2 failed about one CI run in a hundred. The median of five fails only
        // where three draws pass the tolerance: about 10 p^3 for a one-draw chance p, at most 0.4 % here (int8's
        // gamma past 6e-2: 12 of 3,000), so under 1e-6. The largest median of 600 groups of five was 0.029 in int8
        // (gamma) and 0.007 in bf16, about half and a third of the tolerances. An error every draw makes still
        // fails (the norm inputs kept raw rather than centred erred 13 % here).
        var errors = DrawSeeds(seed).Select(s => (Seed: s, Errors: TransformerBlockErrors(s, kept))).ToArray();
        for (int i = 0; i < BlockTensors.Length; i++)
        {
            double tolerance = (kept, BlockTensors[i] is "gamma" or "beta") switch
            {
                (DType.BFloat16, _) => 2e-2,
                (_, true) => 6e-2,
                (_, false) => 4e-2,
            };
            AssertMedianWithin($"{BlockTensors[i]}: gradient relative error against fp32's", tolerance, kept,
                errors.Select(e => (e.Seed, e.Errors[i])).ToArray());
        }
    }

    private static readonly string[] BlockTensors = ["gamma", "beta", "wq", "wk", "wv", "wo", "ln_g", "ln_b", "w1", "w2"];

    /// <summary>
    /// One draw of <see cref="A_transformer_block_keeps_less_and_its_gradients_stay_within_the_types_precision"/>:
    /// asserts what holds exactly (forward untouched, bytes kept, every byte back) and returns each tensor's
    /// gradient error in <see cref="BlockTensors"/>' order.
    /// </summary>
    private double[] TransformerBlockErrors(int seed, DType kept)
    {
        var r = new Rng(seed);
        int n = r.Int(1, 2), len = 2 * r.Int(2, 5), heads = r.Pick(1, 2), d = r.Pick(8, 16), width = heads * d, groups = r.Pick(1, 2);
        var inputs = r.Uniform((long)n * len * width, 2f);
        var shapes = new[]
        {
            new Shape(len), new Shape(len), new Shape(width, width), new Shape(width, width), new Shape(width, width), new Shape(width, width),
            new Shape(width), new Shape(width), new Shape(4 * width, width), new Shape(width, 2 * width),
        };
        var values = shapes.Select((s, i) => i is 0 or 6 ? r.Uniform(s.Numel, 0.3f).Select(v => 1 + v).ToArray() : r.Uniform(s.Numel, 0.5f)).ToArray();
        var up = r.Uniform((long)n * len * width);
        long temporariesBefore = B.Memory.Current(MemoryCategory.Temporaries);
        long savedBefore = B.Memory.Current(MemoryCategory.SavedActivations);

        (float Loss, float[][] Grads, long Saved) Run(DType kept)
        {
            // Parameters, as in a model: weights are not activations, and a norm's beta is held without being saved.
            var ps = shapes.Select((s, i) => (Tensor)Parameter.Create(B, BlockTensors[i], s, values[i])).ToArray();
            try
            {
                using var x = Tensor.FromArray(B, inputs, new Shape(n, len, width));
                using var g = Tensor.FromArray(B, up, x.Shape);
                float loss;
                long saved;
                using (var tape = Tape.Begin())
                {
                    tape.SavedActivations = kept;
                    // Group norm over the sequence positions as channels, SiLU, self-attention, a residual, a layer
                    // norm and a GEGLU feed-forward: every kind of kept activation the model has.
                    using var gn = Ops.GroupNorm(x, ps[0], ps[1], groups, silu: true);
                    using var q = Ops.Linear(gn, ps[2]);
                    using var k = Ops.Linear(gn, ps[3]);
                    using var v = Ops.Linear(gn, ps[4]);
                    using var a = Ops.Attention(q, k, v, heads);
                    using var o = Ops.Linear(a, ps[5]);
                    using var h = Ops.Add(x, o);
                    using var ln = Ops.LayerNorm(h, ps[6], ps[7]);
                    using var f1 = Ops.Linear(ln, ps[8]);
                    using var gg = Ops.Geglu(f1);
                    using var f2 = Ops.Linear(gg, ps[9]);
                    using var y = Ops.Add(h, f2);
                    using var weighted = Ops.Mul(y, g);
                    using var lossT = Ops.Sum(weighted);
                    loss = lossT.Item();
                    saved = tape.SavedBytes;
                    lossT.Backward();
                    Assert.Equal(0, tape.SavedBytes);
                }

                return (loss, ps.Select(p => p.Grad!.ToArray()).ToArray(), saved);
            }
            finally
            {
                foreach (var p in ps)
                {
                    p.ClearGrad();
                    p.Dispose();
                }
            }
        }

        var exact = Run(DType.Float32);
        var narrow = Run(kept);
        Assert.Equal(exact.Loss, narrow.Loss); // forward is untouched
        // Norm statistics stay exact; attention keeps q, k and v narrowed and neither o nor the log-sum-exps. Seen at
        // these small sizes: bf16 0.50 to 0.51, int8 blocks 0.27 to 0.28.
        if (kept == DType.BFloat16)
        {
            Assert.InRange(narrow.Saved / (double)exact.Saved, 0.4, 0.65);
        }
        else
        {
            Assert.InRange(narrow.Saved / (double)exact.Saved, 0.15, 0.4);
        }

        var errors = narrow.Grads.Select((g, i) => RelativeError(g, exact.Grads[i])).ToArray();
        Assert.True(errors.Max() > 0, $"no gradient changed: nothing was kept in {kept.Name()} (seed {seed})");
        Assert.Equal(temporariesBefore, B.Memory.Current(MemoryCategory.Temporaries));
        Assert.Equal(savedBefore, B.Memory.Current(MemoryCategory.SavedActivations));
        return errors;
    }

    [Theory]
    [MemberData(nameof(Seeds.ThreeWithNarrowTypes), MemberType = typeof(Seeds))]
    public void Norms_keep_their_input_centred_so_a_large_mean_costs_no_precision(int seed, DType kept)
    {
        // Groups and rows whose mean is tens of times their spread: bf16 rounds 50 to a multiple of 0.25, so a norm
        // that kept x itself would read its normalised values off by a large fraction in backward. Each gradient's
        // median error over five draws (DrawSeeds) against the tolerance: over 3,000 draws of each type (CPU,
        // 2026-11-29) one draw's error was at most 0.022 in bf16 (a group norm's gamma; p99 0.009) and 0.089 in int8
        // blocks (its beta; p99 0.017), the inputs' gradients at most 0.010 and 0.031.
        double tolerance = kept == DType.BFloat16 ? 2e-2 : 5e-2;
        var errors = DrawSeeds(seed).Select(s => (Seed: s, Errors: NormErrors(s, kept))).ToArray();
        for (int i = 0; i < NormGradients.Length; i++)
        {
            AssertMedianWithin($"{NormGradients[i]}: relative error against fp32's", tolerance, kept,
                errors.Select(e => (e.Seed, e.Errors[i])).ToArray());
        }
    }

    private static readonly string[] NormGradients = ["group norm dx", "group norm dgamma", "group norm dbeta", "layer norm dx", "layer norm dgamma", "layer norm dbeta"];

    /// <summary>One draw of <see cref="Norms_keep_their_input_centred_so_a_large_mean_costs_no_precision"/>: each gradient's error, in <see cref="NormGradients"/>' order.</summary>
    private double[] NormErrors(int seed, DType kept)
    {
        var r = new Rng(seed);
        int frames = r.Pick(1, 2), clips = r.Int(1, 2), c = 4, sPix = r.Int(3, 7), groups = 2, rows = r.Int(3, 7), cols = r.Int(6, 12);
        float Offset() => r.Pick(-1f, 1f) * r.Int(20, 100);
        var gx = new float[clips * frames * c * sPix];
        for (int i = 0; i < gx.Length; i++)
        {
            gx[i] = r.Uniform(1)[0];
        }

        for (int b = 0; b < clips; b++)
        {
            for (int g = 0; g < groups; g++)
            {
                float o = Offset();
                for (int f = 0; f < frames; f++)
                {
                    for (int k = 0; k < c / groups * sPix; k++)
                    {
                        gx[((b * frames + f) * c * sPix) + (g * c / groups * sPix) + k] += o;
                    }
                }
            }
        }

        var lx = r.Uniform((long)rows * cols);
        for (int i = 0; i < rows; i++)
        {
            float o = Offset();
            for (int j = 0; j < cols; j++)
            {
                lx[(i * cols) + j] += o;
            }
        }

        var gGamma = r.Uniform(c, 0.3f).Select(v => 1 + v).ToArray();
        var gBeta = r.Uniform(c, 0.3f);
        var lGamma = r.Uniform(cols, 0.3f).Select(v => 1 + v).ToArray();
        var lBeta = r.Uniform(cols, 0.3f);
        var gUp = r.Uniform(gx.Length);
        var lUp = r.Uniform(lx.Length);
        bool silu = r.Pick(false, true);

        float[][] Grads(DType type)
        {
            using var x1 = Tensor.FromArray(B, gx, new Shape(clips * frames, c, sPix)).SetRequiresGrad();
            using var g1 = Tensor.FromArray(B, gGamma, new Shape(c)).SetRequiresGrad();
            using var b1 = Tensor.FromArray(B, gBeta, new Shape(c)).SetRequiresGrad();
            using var x2 = Tensor.FromArray(B, lx, new Shape(rows, cols)).SetRequiresGrad();
            using var g2 = Tensor.FromArray(B, lGamma, new Shape(cols)).SetRequiresGrad();
            using var b2 = Tensor.FromArray(B, lBeta, new Shape(cols)).SetRequiresGrad();
            using var u1 = Tensor.FromArray(B, gUp, x1.Shape);
            using var u2 = Tensor.FromArray(B, lUp, x2.Shape);
            using (var tape = Tape.Begin())
            {
                tape.SavedActivations = type;
                using var y1 = Ops.GroupNorm(x1, g1, b1, groups, frames, silu);
                using var y2 = Ops.LayerNorm(x2, g2, b2);
                using var w1 = Ops.Mul(y1, u1);
                using var w2 = Ops.Mul(y2, u2);
                using var s1 = Ops.Sum(w1);
                using var s2 = Ops.Sum(w2);
                using var loss = Ops.Add(s1, s2);
                loss.Backward();
            }

            return new[] { x1, g1, b1, x2, g2, b2 }.Select(t => t.Grad!.ToArray()).ToArray();
        }

        var exact = Grads(DType.Float32);
        var narrow = Grads(kept);
        return exact.Select((e, i) => RelativeError(narrow[i], e)).ToArray();
    }

    /// <summary>Five seeds drawn from a test's seed: the draws whose median error a tolerance holds.</summary>
    private static int[] DrawSeeds(int seed)
    {
        var r = new Random(seed);
        return Enumerable.Range(0, 5).Select(_ => r.Next()).ToArray();
    }

    /// <summary>
    /// The median of the draws' errors is below the tolerance. The message gives every draw's error and seed; the
    /// draws follow from the test's seed, which its name shows and MOBIUS_TEST_SEED replays.
    /// </summary>
    private static void AssertMedianWithin(string what, double tolerance, DType kept, (int Seed, double Error)[] draws)
    {
        double median = draws.Select(d => d.Error).Order().ElementAt(draws.Length / 2);
        Assert.True(median < tolerance,
            $"{what}: median {median:g3} over {draws.Length} draws, tolerance {tolerance} ({kept.Name()}; draws: " +
            string.Join(", ", draws.Select(d => $"{d.Error:g3} at seed {d.Seed}")) + ")");
    }

    [Theory]
    [InlineData(DType.BFloat16)]
    [InlineData(DType.Int8Blocks)]
    public void Clearing_a_tape_without_backward_gives_every_byte_back(DType kept)
    {
        var r = new Rng(Seeds.One);
        long temporariesBefore = B.Memory.Current(MemoryCategory.Temporaries);
        long savedBefore = B.Memory.Current(MemoryCategory.SavedActivations);
        using (var w = Tensor.FromArray(B, r.Uniform(12), new Shape(3, 4)).SetRequiresGrad())
        using (var x = Tensor.FromArray(B, r.Uniform(20), new Shape(5, 4)))
        using (var tape = Tape.Begin())
        {
            tape.SavedActivations = kept;
            using var y = Ops.Linear(x, w);
            using var z = Ops.Gelu(y);
            Assert.True(tape.SavedBytes > 0);
            Assert.True(B.Memory.Current(MemoryCategory.SavedActivations) > savedBefore);
        }

        Assert.Equal(temporariesBefore, B.Memory.Current(MemoryCategory.Temporaries));
        Assert.Equal(savedBefore, B.Memory.Current(MemoryCategory.SavedActivations));
    }

    [Theory]
    [InlineData(Topology.Serial, DType.BFloat16)]
    [InlineData(Topology.Parallel, DType.BFloat16)]
    [InlineData(Topology.Serial, DType.Int8Blocks)]
    [InlineData(Topology.Parallel, DType.Int8Blocks)]
    public void A_training_step_keeps_less_with_the_same_loss_and_nearly_the_same_gradient(Topology topology, DType kept)
    {
        int seed = Seeds.One;
        var micro = ModelConfig.Get("micro");
        var data = Comparison.Data(micro, seed, Split.Train);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-3f };
        StepStats Step(DType type)
        {
            using var model = TextToVideo.Create(B, micro, topology, seed);
            using var trainer = new Trainer(model, data, Stage.TextToVideo, options with { SavedActivations = type });
            return trainer.TrainStep();
        }

        var exact = Step(DType.Float32);
        var narrow = Step(kept);
        Assert.Equal(exact.Loss, narrow.Loss);
        // micro: bf16 0.48 (serial) and 0.51 (parallel) of the bytes, int8 blocks 0.26 and 0.27.
        var (low, high) = kept == DType.BFloat16 ? (0.4, 0.65) : (0.15, 0.4);
        Assert.InRange(narrow.SavedActivationBytes / (double)exact.SavedActivationBytes, low, high);
        Assert.True(narrow.Memory.PeakBytes < exact.Memory.PeakBytes);
        Assert.InRange(narrow.GradNorm / exact.GradNorm, 0.97, 1.03);
        Assert.Equal(kept, TrainOptions.FromJson((options with { SavedActivations = kept }).ToJson()).SavedActivations);
    }
}

public sealed class CpuSavedActivationsTests(CpuFixture f) : SavedActivationsTests(f), IClassFixture<CpuFixture>;
public sealed class CudaSavedActivationsTests(CudaFixture f) : SavedActivationsTests(f), IClassFixture<CudaFixture>;

/// <summary>
/// The attention backward that narrower saved activations use: without o and the log-sum-exp it recomputes the
/// softmax from q and k and takes Drow = rowsum(P dP). On the forward's own q, k, v that is the same gradient as the
/// backward from o and lse (which OpGradientTests checks against finite differences), within fp32 rounding, for the
/// general kernels (self- and cross-attention) and the temporal ones.
/// </summary>
public abstract class AttentionRecomputeTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Backward_without_o_and_lse_gives_the_same_gradients(int seed)
    {
        var r = new Rng(seed);
        foreach (bool temporal in new[] { false, true })
        {
            int n = r.Int(1, 4), heads = r.Pick(1, 2, 3), d = r.Pick(4, 8, 17), lq = temporal ? r.Int(2, 32) : r.Int(1, 40);
            int lk = temporal ? lq : r.Pick(lq, r.Int(2, 40)); // two keys at least: with one, dq is zero
            lk = Math.Max(lk, 2);
            var s = new AttentionShape(n, heads, lq, lk, d, 1f / MathF.Sqrt(d));
            using var q = Tensor.FromArray(B, r.Uniform((long)n * lq * heads * d, 2f), new Shape(n, lq, heads * d));
            using var k = Tensor.FromArray(B, r.Uniform((long)n * lk * heads * d, 2f), new Shape(n, lk, heads * d));
            using var v = Tensor.FromArray(B, r.Uniform((long)n * lk * heads * d), k.Shape);
            using var dO = Tensor.FromArray(B, r.Uniform((long)n * lq * heads * d), q.Shape);
            using var o = Tensor.Empty(B, q.Shape);
            using var lse = Tensor.Empty(B, new Shape(n, heads, lq));
            if (temporal)
            {
                B.TemporalAttentionForward(s, q, k, v, o, lse);
            }
            else
            {
                B.AttentionForward(s, q, k, v, o, lse);
            }

            float[][] Backward(Tensor? so, Tensor? sl)
            {
                using var dq = Tensor.Empty(B, q.Shape);
                using var dk = Tensor.Empty(B, k.Shape);
                using var dv = Tensor.Empty(B, v.Shape);
                if (temporal)
                {
                    B.TemporalAttentionBackward(s, q, k, v, so, sl, dO, dq, dk, dv);
                }
                else
                {
                    B.AttentionBackward(s, q, k, v, so, sl, dO, dq, dk, dv);
                }

                return [dq.ToArray(), dk.ToArray(), dv.ToArray()];
            }

            var saved = Backward(o, lse);
            var recomputed = Backward(null, null);
            string[] names = ["dq", "dk", "dv"];
            for (int g = 0; g < 3; g++)
            {
                for (int i = 0; i < saved[g].Length; i++)
                {
                    float want = saved[g][i], got = recomputed[g][i];
                    Assert.True(Math.Abs(got - want) <= 1e-5f + (1e-4f * Math.Abs(want)),
                        $"{(temporal ? "temporal" : "general")} {names[g]}[{i}]: {got} recomputed, {want} from o and lse (n {n}, heads {heads}, d {d}, lq {lq}, lk {lk}, seed {seed})");
                }
            }

            Assert.Contains(saved[0], x => x != 0f);
            Assert.Contains(saved[2], x => x != 0f);
        }
    }
}

public sealed class CpuAttentionRecomputeTests(CpuFixture f) : AttentionRecomputeTests(f), IClassFixture<CpuFixture>;
public sealed class CudaAttentionRecomputeTests(CudaFixture f) : AttentionRecomputeTests(f), IClassFixture<CudaFixture>;
