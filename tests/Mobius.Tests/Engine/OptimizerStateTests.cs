using Mobius.Engine;
using Mobius.Engine.NN;
using Mobius.Engine.Optim;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// AdamW with bf16 moments (`--optimizer-state bf16`): the moments take half the bytes; one step keeps exactly what
/// the definition gives from the same moments (the moments updated in fp32, the parameter stepped with them, each
/// moment stored by stochastic rounding to one of its two bf16 neighbours, chosen by the hash written here); the
/// rounding is unbiased where rounding to nearest would freeze the second moment; many steps follow fp32 AdamW's
/// trajectory; the state round-trips through a state dict exactly.
/// </summary>
public abstract class OptimizerStateTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private static uint Mix(uint x)
    {
        x ^= x >> 16;
        x *= 0x7feb352du;
        x ^= x >> 15;
        x *= 0x846ca68bu;
        x ^= x >> 16;
        return x;
    }

    private static float Bf16(float value, uint random) =>
        BitConverter.UInt32BitsToSingle(((BitConverter.SingleToUInt32Bits(value) + (random & 0xffffu)) >> 16) << 16);

    private Parameter Param(string name, float[] values) => Parameter.Create(B, name, new Shape(values.Length), values);

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void One_step_stores_each_moment_as_a_bf16_neighbour_of_its_fp32_update(int seed)
    {
        var r = new Rng(seed);
        int n = r.Int(1, 3000);
        var p0 = r.Uniform(n);
        var g = r.Uniform(n, 0.1f);
        const float lr = 1e-2f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f;
        using var p = Param("p", p0);
        using var opt = new AdamW([("p", p)], lr, b1, b2, eps, wd, DType.BFloat16);
        for (int step = 1; step <= 2; step++)
        {
            var m0 = opt.StateDict().GetValueOrDefault("p.exp_avg") ?? new float[n];
            var v0 = opt.StateDict().GetValueOrDefault("p.exp_avg_sq") ?? new float[n];
            var before = p.ToArray();
            p.Grad = Tensor.FromArray(B, g, p.Shape);
            opt.Step();
            var m1 = opt.StateDict()["p.exp_avg"];
            var v1 = opt.StateDict()["p.exp_avg_sq"];
            var after = p.ToArray();
            for (int i = 0; i < n; i++)
            {
                // The fp32 updates: the CPU backend's exactly (C# contracts nothing), so there the stored moments are
                // exactly the hash's rounding; a device may contract a product into the sum, so there they are one of
                // the update's two bf16 neighbours.
                float mi = b1 * m0[i] + (1 - b1) * g[i];
                float vi = b2 * v0[i] + (1 - b2) * g[i] * g[i];
                uint bits = Mix((uint)i ^ Mix(0u ^ Mix(0u ^ Mix((uint)step))));
                if (B is Mobius.Engine.Cpu.CpuBackend)
                {
                    Assert.True(m1[i] == Bf16(mi, bits) && v1[i] == Bf16(vi, Mix(bits)), $"element {i} step {step}: m {m1[i]} for {Bf16(mi, bits)}, v {v1[i]} for {Bf16(vi, Mix(bits))} (seed {seed})");
                }

                Assert.True(Neighbour(m1[i], mi) && Neighbour(v1[i], vi), $"element {i} step {step}: m {m1[i]} for {mi}, v {v1[i]} for {vi} (seed {seed})");
                double bc1 = 1 - Math.Pow(b1, step), bc2 = 1 - Math.Pow(b2, step);
                double want = before[i] * (1 - lr * wd) - lr * (mi / bc1) / (Math.Sqrt(vi / bc2) + eps);
                Assert.True(Math.Abs(after[i] - want) <= 1e-6 + 1e-5 * Math.Abs(want), $"parameter {i} step {step}: {after[i]} against {want} (seed {seed})");
            }
        }

        Assert.Equal(2L * n * 2, B.Memory.Current(MemoryCategory.OptimizerState));
    }

    /// <summary>True when <paramref name="stored"/> is the bf16 value just below or just above <paramref name="value"/> (within an ulp of fp32 rounding of the update).</summary>
    private static bool Neighbour(float stored, float value)
    {
        float low = BitConverter.UInt32BitsToSingle(BitConverter.SingleToUInt32Bits(value) & 0xffff_0000u);
        float high = Bf16(value, 0xffffu);
        float slack = Math.Abs(value) * 1e-6f;
        return (stored >= Math.Min(low, high) - slack && stored <= Math.Max(low, high) + slack) && BitConverter.SingleToUInt32Bits(stored) % 0x1_0000u == 0;
    }

    [Fact]
    public void The_rounding_is_unbiased_where_to_nearest_would_freeze_the_second_moment()
    {
        // v = 1 and g^2 = 1.5: each step v moves by 0.0005, a quarter of the bf16 gap at 1 (2^-7 = 0.0078): to nearest
        // it would stay 1 for ever. Over many elements and steps the stored v follows the fp32 recurrence on average.
        const int n = 16384, steps = 40;
        var g = Enumerable.Repeat(MathF.Sqrt(1.5f), n).ToArray();
        using var p = Param("p", new float[n]);
        using var opt = new AdamW([("p", p)], 1e-6f, 0.9f, 0.999f, 1e-8f, 0f, DType.BFloat16);
        p.Grad = Tensor.FromArray(B, g, p.Shape);
        opt.Step();
        var state = opt.StateDict();
        state["p.exp_avg_sq"] = Enumerable.Repeat(1f, n).ToArray();
        opt.LoadStateDict(state, 1);
        double exact = 1;
        for (int step = 2; step <= steps + 1; step++)
        {
            p.Grad = Tensor.FromArray(B, g, p.Shape);
            opt.Step();
            exact = (0.999 * exact) + (0.001 * 1.5);
        }

        double mean = opt.StateDict()["p.exp_avg_sq"].Average(v => (double)v);
        Assert.True(exact - 1 > 0.015, "the test's drift is large enough to see");
        // Each element's v carries 40 steps' unbiased rounding errors, each at most a gap (2^-7 here) wide: about 0.02
        // apart from the recurrence, so the mean of 16384 errs by about 1.6e-4; 1e-3 is six of those, and a twentieth
        // of the drift that rounding to nearest would lose.
        Assert.True(Math.Abs(mean - exact) < 1e-3, $"mean v {mean} against {exact} (to nearest: 1)");
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Many_steps_follow_fp32_adamw_and_the_state_round_trips(int seed)
    {
        // Minimise sum (w - target)^2 from the same start with fp32 and bf16 moments: the same path within bf16's noise.
        var r = new Rng(seed);
        int n = r.Int(50, 400);
        var start = r.Uniform(n);
        var target = r.Uniform(n);
        float[] Run(DType state, out Dictionary<string, float[]> dict)
        {
            using var p = Param("w", start);
            using var opt = new AdamW([("w", p)], 1e-2f, stateType: state);
            for (int step = 0; step < 150; step++)
            {
                var w = p.ToArray();
                p.Grad = Tensor.FromArray(B, w.Select((x, i) => 2 * (x - target[i])).ToArray(), p.Shape);
                opt.Step();
            }

            dict = opt.StateDict();
            using var again = new AdamW([("w", p)], 1e-2f, stateType: state);
            again.LoadStateDict(dict, opt.StepCount);
            Assert.Equal(dict["w.exp_avg"], again.StateDict()["w.exp_avg"]);
            Assert.Equal(dict["w.exp_avg_sq"], again.StateDict()["w.exp_avg_sq"]);
            return p.ToArray();
        }

        var exact = Run(DType.Float32, out _);
        var narrow = Run(DType.BFloat16, out var narrowState);
        double distStart = Math.Sqrt(start.Select((x, i) => (x - target[i]) * (x - target[i])).Sum());
        double distNarrow = Math.Sqrt(narrow.Select((x, i) => (x - target[i]) * (x - target[i])).Sum());
        double gap = Math.Sqrt(narrow.Select((x, i) => (x - exact[i]) * (x - exact[i])).Sum());
        Assert.True(distNarrow < 0.5 * distStart, $"bf16 moments converge: {distNarrow} from {distStart} (seed {seed})");
        Assert.True(gap < 0.05 * distStart, $"bf16 moments follow fp32's path: {gap} apart, start {distStart} away (seed {seed})");
        Assert.All(narrowState["w.exp_avg_sq"], v => Assert.Equal(0u, BitConverter.SingleToUInt32Bits(v) & 0xffffu));
    }

    [Fact]
    public void Only_fp32_and_bf16_moments_are_taken()
    {
        using var p = Param("p", [1f, 2f]);
        Assert.Throws<ArgumentException>(() => new AdamW([("p", p)], stateType: DType.Int8Blocks));
    }
}

public sealed class CpuOptimizerStateTests(CpuFixture f) : OptimizerStateTests(f), IClassFixture<CpuFixture>;
public sealed class CudaOptimizerStateTests(CudaFixture f) : OptimizerStateTests(f), IClassFixture<CudaFixture>;
