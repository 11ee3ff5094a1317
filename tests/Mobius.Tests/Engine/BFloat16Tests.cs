using Mobius.Data;
using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;
using Mobius.Model;
using Mobius.Model.Training;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// bf16 storage of frozen weights: the cast against an independent rounding reference (bit for bit, on every
/// backend: the CUDA backend runs its cast kernels), ops reading bf16 weights against the same ops on fp32
/// weights holding the rounded values (exactly equal: the compute is the same fp32 path), and a training step of
/// each topology with bf16 frozen weights against one with the rounded weights in fp32.
/// </summary>
public abstract class BFloat16Tests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    /// <summary>
    /// Round to nearest, ties to even, by comparing distances in fp64 to the two bf16 neighbours (the value with
    /// its low 16 bits cleared, and the next one up in magnitude, 2^128 past the largest finite one): independent
    /// of the engine's integer formula.
    /// </summary>
    private static ushort ReferenceRound(float x)
    {
        if (float.IsNaN(x))
        {
            return 0x7fc0; // any NaN; compared as "is NaN"
        }

        uint u = BitConverter.SingleToUInt32Bits(x);
        uint sign = u & 0x8000_0000u;
        uint magnitude = u & 0x7fff_ffffu;
        uint lowBits = magnitude & 0xffff_0000u;
        double ax = Math.Abs((double)x);
        if (float.IsInfinity(x) || lowBits == magnitude)
        {
            return (ushort)(u >> 16);
        }

        double low = BitConverter.UInt32BitsToSingle(lowBits);
        uint highBits = lowBits + 0x1_0000u;
        double high = highBits == 0x7f80_0000u ? Math.Pow(2, 128) : BitConverter.UInt32BitsToSingle(highBits);
        double dLow = ax - low, dHigh = high - ax;
        bool up = dHigh < dLow || (dHigh == dLow && ((lowBits >> 16) & 1u) == 1u);
        return (ushort)((sign | (up ? highBits : lowBits)) >> 16);
    }

    /// <summary>Values of every kind: random bit patterns (subnormals, huge, tiny), exact ties, near the overflow edge, specials.</summary>
    private static float[] Values(Rng r, int n)
    {
        var v = new float[n];
        for (int i = 0; i < n; i++)
        {
            uint bits = ((uint)r.Int(0, 0xffff) << 16) | (uint)r.Int(0, 0xffff);
            v[i] = (i % 8) switch
            {
                0 => BitConverter.UInt32BitsToSingle((bits & 0xffff_0000u) | 0x8000u), // an exact tie
                1 => BitConverter.UInt32BitsToSingle(bits & 0x807f_ffffu), // subnormal or zero
                2 => BitConverter.UInt32BitsToSingle(0x7f7f_0000u | (bits & 0xffffu)), // next to the largest bf16
                3 => r.Uniform(1, 3f)[0],
                _ => BitConverter.UInt32BitsToSingle(bits),
            };
        }

        float[] specials = [float.PositiveInfinity, float.NegativeInfinity, float.NaN, 0f, -0f, float.MaxValue, -float.MaxValue, float.Epsilon];
        specials.CopyTo(v, r.Int(0, n - specials.Length));
        return v;
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Cast_rounds_to_nearest_even_and_widens_exactly(int seed)
    {
        var r = new Rng(seed);
        var values = Values(r, r.Int(300, 3000));
        using var x = Tensor.FromArray(B, values, new Shape(values.Length));
        using var narrow = Tensor.Empty(B, x.Shape, dtype: DType.BFloat16);
        using var wide = Tensor.Empty(B, x.Shape);
        B.Cast(x, narrow);
        B.Cast(narrow, wide);
        Assert.Equal(values.Length * 2L, narrow.Bytes);
        var got = wide.ToArray();
        var host = narrow.ToArray(); // Tensor.ToArray widens a bf16 tensor
        for (int i = 0; i < values.Length; i++)
        {
            ushort want = ReferenceRound(values[i]);
            if (float.IsNaN(values[i]))
            {
                Assert.True(float.IsNaN(got[i]) && float.IsNaN(BFloat16Bits.Round(values[i])), $"NaN at {i} became {got[i]} (seed {seed})");
                continue;
            }

            uint wantBits = (uint)want << 16;
            Assert.True(BitConverter.SingleToUInt32Bits(got[i]) == wantBits,
                $"{values[i]:R} (0x{BitConverter.SingleToUInt32Bits(values[i]):x8}) became 0x{BitConverter.SingleToUInt32Bits(got[i]):x8}, want 0x{wantBits:x8} (seed {seed})");
            Assert.Equal(wantBits, BitConverter.SingleToUInt32Bits(host[i]));
            Assert.Equal(want, BFloat16Bits.FromFloat(values[i]));
        }

        // Writing host values into a bf16 tensor rounds them the same way.
        using var written = Tensor.Empty(B, x.Shape, dtype: DType.BFloat16);
        written.CopyFrom(values);
        var back = written.ToArray();
        for (int i = 0; i < values.Length; i++)
        {
            Assert.True(BitConverter.SingleToUInt32Bits(back[i]) == BitConverter.SingleToUInt32Bits(got[i]) || (float.IsNaN(back[i]) && float.IsNaN(got[i])), $"CopyFrom at {i} (seed {seed})");
        }
    }

    /// <summary>A frozen copy of <paramref name="values"/> stored in <paramref name="dtype"/>, and an fp32 tensor of the same values rounded so (computed here).</summary>
    private (Parameter Bf16, Tensor Rounded) Weights(string name, Shape shape, float[] values, DType dtype = DType.BFloat16)
    {
        var p = Parameter.Create(B, name, shape, values);
        p.Frozen = true;
        p.StoreAs(dtype);
        var rounded = Tensor.FromArray(B, Int8BlocksTests.Rounded(values, dtype), shape);
        return (p, rounded);
    }

    /// <summary>Runs <paramref name="op"/> under a tape with x needing a gradient; returns the output and x's gradient for a fixed upstream gradient.</summary>
    private (float[] Y, float[] Dx) ForwardBackward(Tensor x, Func<Tensor, Tensor> op, float[] upstream)
    {
        using var tape = Tape.Begin();
        x.SetRequiresGrad();
        using var y = op(x);
        using var g = Tensor.FromArray(B, upstream, y.Shape);
        using var weighted = Ops.Mul(y, g);
        using var loss = Ops.Sum(weighted);
        loss.Backward();
        var dx = x.Grad!.ToArray();
        x.ClearGrad();
        x.SetRequiresGrad(false);
        return (y.ToArray(), dx);
    }

    [Theory]
    [MemberData(nameof(Seeds.ThreeWithNarrowTypes), MemberType = typeof(Seeds))]
    public void Linear_and_conv2d_on_narrow_weights_equal_the_fp32_ops_on_the_rounded_weights(int seed, DType dtype)
    {
        var r = new Rng(seed);
        int rows = r.Int(1, 9), inF = r.Int(1, 17) * (dtype == DType.Int8Blocks ? 20 : 1), outF = r.Int(1, 17); // int8: several blocks
        var (w, wRounded) = Weights("w", new Shape(outF, inF), r.Uniform((long)outF * inF), dtype);
        using var _w = w;
        using var _wr = wRounded;
        using var b = Tensor.FromArray(B, r.Uniform(outF), new Shape(outF));
        using var x = Tensor.FromArray(B, r.Uniform((long)rows * inF), new Shape(rows, inF));
        var up = r.Uniform((long)rows * outF);
        long before = B.Memory.Current(MemoryCategory.Workspace);
        var got = ForwardBackward(x, t => Ops.Linear(t, w, b), up);
        var want = ForwardBackward(x, t => Ops.Linear(t, wRounded, b), up);
        Assert.Equal(want.Y, got.Y);
        Assert.Equal(want.Dx, got.Dx);
        Assert.Null(w.Grad);
        Assert.Equal(before, B.Memory.Current(MemoryCategory.Workspace)); // the widened copies are gone

        int n = r.Int(1, 2), cin = r.Int(1, 5), cout = r.Int(1, 5), k = r.Pick(1, 3), h = r.Int(k, 7), wd = r.Int(k, 7), stride = r.Pick(1, 2);
        var (cw, cwRounded) = Weights("cw", new Shape(cout, cin, k, k), r.Uniform((long)cout * cin * k * k), dtype);
        using var _cw = cw;
        using var _cwr = cwRounded;
        using var cb = Tensor.FromArray(B, r.Uniform(cout), new Shape(cout));
        using var cx = Tensor.FromArray(B, r.Uniform((long)n * cin * h * wd), new Shape(n, cin, h, wd));
        using var probe = Ops.Conv2d(cx, cwRounded, cb, stride, k / 2);
        var cup = r.Uniform(probe.Numel);
        var cgot = ForwardBackward(cx, t => Ops.Conv2d(t, cw, cb, stride, k / 2), cup);
        var cwant = ForwardBackward(cx, t => Ops.Conv2d(t, cwRounded, cb, stride, k / 2), cup);
        Assert.Equal(cwant.Y, cgot.Y);
        Assert.Equal(cwant.Dx, cgot.Dx);

        int vocab = r.Int(2, 9), dim = r.Int(1, 7);
        var (table, tableRounded) = Weights("table", new Shape(vocab, dim), r.Uniform((long)vocab * dim), dtype);
        using var _t = table;
        using var _tr = tableRounded;
        int[] ids = r.Ints(r.Int(1, 7), vocab);
        using var e1 = Ops.Embedding(ids, table);
        using var e2 = Ops.Embedding(ids, tableRounded);
        Assert.Equal(e2.ToArray(), e1.ToArray());
    }

    [Fact]
    public void Ops_that_do_not_read_bf16_refuse_it_with_a_clear_message()
    {
        var r = new Rng(Seeds.One);
        var (w, rounded) = Weights("gamma", new Shape(4), r.Uniform(4));
        using var _w = w;
        using var _r = rounded;
        using var x = Tensor.FromArray(B, r.Uniform(4), new Shape(4));
        var e = Assert.Throws<DTypeMismatchException>(() => Ops.Add(x, w));
        Assert.Contains("bf16 is a storage type for frozen weights", e.Message);

        using var trainable = Parameter.Create(B, "trainable", new Shape(3), r.Uniform(3));
        var refused = Assert.Throws<InvalidOperationException>(() => trainable.StoreAs(DType.BFloat16));
        Assert.Contains("only a frozen parameter", refused.Message);

        // Unfreezing moves it back to fp32, keeping the values bf16 held.
        w.Frozen = false;
        Assert.Equal(DType.Float32, w.DType);
        Assert.Equal(rounded.ToArray(), w.ToArray());
    }

    private sealed class Small : Module
    {
        public Small(IBackend backend, Random rng)
            : base(backend)
        {
            Lin = AddModule("lin", new Linear(backend, rng, 6, 5));
            Conv = AddModule("conv", new Conv2d(backend, rng, 3, 4, 3));
            Norm = AddModule("norm", new GroupNorm(backend, 2, 4));
            Emb = AddModule("emb", new Embedding(backend, rng, 7, 3));
            Trained = AddModule("trained", new Linear(backend, rng, 4, 4));
        }

        public Linear Lin { get; }

        public Conv2d Conv { get; }

        public GroupNorm Norm { get; }

        public Embedding Emb { get; }

        public Linear Trained { get; }
    }

    [Fact]
    public void StoreFrozenWeights_halves_only_the_frozen_layer_weights_and_keeps_them_rounded()
    {
        int seed = Seeds.One;
        using var m = new Small(B, new Random(seed));
        var before = m.StateDict();
        long bytesBefore = m.Parameters().Sum(p => p.Bytes);
        foreach (var (name, p) in m.NamedParameters().Where(n => !n.Name.StartsWith("trained.", StringComparison.Ordinal)))
        {
            p.Frozen = true;
        }

        long weightsBefore = B.Memory.Current(MemoryCategory.Weights);
        Assert.Equal(3, m.StoreFrozenWeights(DType.BFloat16));
        Assert.Equal(0, m.StoreFrozenWeights(DType.BFloat16)); // already stored so
        string[] narrowed = ["lin.weight", "conv.weight", "emb.weight"];
        long halved = narrowed.Sum(n => before[n].Length * 2L);
        Assert.Equal(bytesBefore - halved, m.Parameters().Sum(p => p.Bytes));
        Assert.True(B.Memory.Current(MemoryCategory.Weights) <= weightsBefore - halved, $"weights {weightsBefore} -> {B.Memory.Current(MemoryCategory.Weights)}, {halved} fewer expected");
        var after = m.StateDict();
        foreach (var (name, p) in m.NamedParameters())
        {
            bool isNarrow = narrowed.Contains(name);
            Assert.Equal(isNarrow ? DType.BFloat16 : DType.Float32, p.DType);
            Assert.Equal(isNarrow ? before[name].Select(BFloat16Bits.Round).ToArray() : before[name], after[name]);
        }

        // A state dict loads into bf16 weights with rounding; fp32 moves them all back.
        var fresh = new Rng(seed + 1).Uniform(before["lin.weight"].Length);
        m.LoadStateDict(new Dictionary<string, float[]>(after) { ["lin.weight"] = fresh });
        Assert.Equal(fresh.Select(BFloat16Bits.Round).ToArray(), m.Lin.Weight.ToArray());
        Assert.Equal(3, m.StoreFrozenWeights(DType.Float32));
        Assert.All(m.Parameters(), p => Assert.Equal(DType.Float32, p.DType));
    }

    [Theory]
    [InlineData(Topology.Serial, DType.BFloat16)]
    [InlineData(Topology.Parallel, DType.BFloat16)]
    [InlineData(Topology.Serial, DType.Int8Blocks)]
    [InlineData(Topology.Parallel, DType.Int8Blocks)]
    public void Training_steps_with_narrow_frozen_weights_equal_steps_on_the_rounded_weights_in_fp32(Topology topology, DType dtype)
    {
        int seed = Seeds.One;
        var micro = ModelConfig.Get("micro");
        var data = Comparison.Data(micro, seed, Split.Train);
        using var narrowModel = TextToVideo.Create(B, micro, topology, seed);
        using var wideModel = TextToVideo.Create(B, micro, topology, seed);
        long wideBytes = wideModel.Unet.Parameters().Concat(wideModel.Text.Parameters()).Sum(p => p.Bytes);
        var options = new TrainOptions { Seed = seed, LearningRate = 1e-2f };
        using var narrow = new Trainer(narrowModel, data, Stage.TextToVideo, options with { FrozenWeights = dtype });
        using var wide = new Trainer(wideModel, data, Stage.TextToVideo, options);

        // The fp32 model gets the values the bf16 one holds.
        var narrowed = narrowModel.Unet.NamedParameters().Select(n => ("unet." + n.Name, n.Parameter))
            .Concat(narrowModel.Text.NamedParameters().Select(n => ("text." + n.Name, n.Parameter)))
            .Where(n => n.Parameter.DType == dtype).ToList();
        Assert.NotEmpty(narrowed);
        Assert.All(narrowed, n => Assert.True(n.Parameter.Frozen, n.Item1));
        Assert.Contains(narrowed, n => n.Item1.StartsWith("text.", StringComparison.Ordinal));
        var wideByName = wideModel.Unet.NamedParameters().Select(n => ("unet." + n.Name, n.Parameter))
            .Concat(wideModel.Text.NamedParameters().Select(n => ("text." + n.Name, n.Parameter))).ToDictionary();
        foreach (var (name, p) in narrowed)
        {
            wideByName[name].CopyFrom(p.ToArray());
        }

        long narrowBytes = narrowModel.Unet.Parameters().Concat(narrowModel.Text.Parameters()).Sum(p => p.Bytes);
        Assert.Equal(wideBytes - narrowed.Sum(n => (n.Parameter.Numel * 4L) - dtype.Bytes(n.Parameter.Numel)), narrowBytes);

        for (int i = 0; i < 2; i++)
        {
            var a = narrow.TrainStep();
            var b = wide.TrainStep();
            Assert.Equal(b.Loss, a.Loss);
            Assert.Equal(b.SavedActivationBytes, a.SavedActivationBytes); // the widened weights are never kept
        }

        foreach (var (name, p) in narrowModel.Unet.NamedParameters().Where(n => !n.Parameter.Frozen))
        {
            Assert.Equal(wideByName["unet." + name].ToArray(), p.ToArray());
        }

        // Recorded for a resumed run; a stage-1 run refuses it.
        Assert.Equal(dtype, TrainOptions.FromJson((options with { FrozenWeights = dtype }).ToJson()).FrozenWeights);
        Assert.Equal(DType.Float32, TrainOptions.FromJson(options.ToJson()).FrozenWeights);
        using var t2i = TextToVideo.Create(B, micro, Topology.Spatial, seed);
        Assert.Throws<ArgumentException>(() => new Trainer(t2i, data, Stage.TextToImage, options with { FrozenWeights = dtype }));
    }
}

public sealed class CpuBFloat16Tests(CpuFixture f) : BFloat16Tests(f), IClassFixture<CpuFixture>;
public sealed class CudaBFloat16Tests(CudaFixture f) : BFloat16Tests(f), IClassFixture<CudaFixture>;
