using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>The rules of the tape: what is recorded, what is kept, who gets a gradient.</summary>
public abstract class AutogradTests(BackendFixture fixture)
{
    private IBackend B => fixture.Backend;

    private Tensor Leaf(Rng r, params int[] dims) => Tensor.FromArray(B, r.Uniform(new Shape(dims).Numel), new Shape(dims)).SetRequiresGrad();

    private Tensor Data(Rng r, params int[] dims) => Tensor.FromArray(B, r.Uniform(new Shape(dims).Numel), new Shape(dims));

    [Fact]
    public void A_frozen_layer_in_the_middle_passes_input_gradients_but_gets_none()
    {
        var r = new Rng(Seeds.One);
        var rng = new Random(r.Seed);
        using var tape = Tape.Begin();
        using var a = new Linear(B, rng, 5, 6);
        using var frozen = new Linear(B, rng, 6, 6);
        using var c = new Linear(B, rng, 6, 3);
        frozen.Freeze();
        using var x = Data(r, 4, 5);

        float[] GradOfA()
        {
            using var h1 = a.Forward(x);
            using var h2 = frozen.Forward(h1);
            using var h3 = c.Forward(h2);
            using var loss = Ops.Sum(h3);
            loss.Backward();
            var g = a.Weight.Grad!.ToArray();
            a.Weight.ClearGrad();
            a.Bias!.ClearGrad();
            c.Weight.ClearGrad();
            c.Bias!.ClearGrad();
            return g;
        }

        var gradThroughFrozen = GradOfA();
        Assert.Null(frozen.Weight.Grad);
        Assert.Null(frozen.Bias!.Grad);

        // The same gradient must reach `a` whether or not the middle layer is frozen.
        frozen.Unfreeze();
        var gradThroughTrainable = GradOfA();
        frozen.Weight.ClearGrad();
        frozen.Bias.ClearGrad();
        Close.All(gradThroughFrozen, gradThroughTrainable, 1e-6, 1e-6, "grad of a");
        Assert.Contains(gradThroughFrozen, v => v != 0);
    }

    [Fact]
    public void A_frozen_convolution_keeps_no_activation_for_its_input_gradient()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var conv = new Conv2d(B, new Random(r.Seed), 3, 4, 3);
        conv.Freeze();
        using var x = Leaf(r, 2, 3, 5, 5);
        using var y = conv.Forward(x);
        Assert.Equal(1, tape.NodeCount);
        Assert.Equal(0, tape.SavedBytes);

        // The trainable case keeps the input (for the weight gradient).
        conv.Unfreeze();
        using var y2 = conv.Forward(x);
        Assert.Equal(x.Bytes, tape.SavedBytes);
        tape.Clear();
        Assert.Equal(0, tape.SavedBytes);
    }

    [Fact]
    public void NoGrad_records_nothing_and_outputs_need_no_gradient()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 3, 4);
        using (Tape.NoGrad())
        {
            using var y = Ops.Silu(x);
            using var z = Ops.Sum(y);
            Assert.False(y.RequiresGrad);
            Assert.False(z.RequiresGrad);
            Assert.Equal(0, tape.NodeCount);
            Assert.Throws<AutogradException>(() => z.Backward());
        }

        using var w = Ops.Silu(x);
        Assert.True(w.RequiresGrad);
        Assert.Equal(1, tape.NodeCount);
    }

    [Fact]
    public void Ops_on_tensors_that_need_no_gradient_record_nothing()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Data(r, 3, 4);
        using var y = Ops.Gelu(x);
        Assert.False(y.RequiresGrad);
        Assert.Equal(0, tape.NodeCount);
        Assert.Equal(0, tape.SavedBytes);
    }

    [Fact]
    public void Detach_cuts_the_graph()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 3, 4);
        using var y = Ops.Silu(x);
        using var d = Ops.Detach(y);
        Assert.False(d.RequiresGrad);
        using var z = Ops.Mul(d, x);
        using var loss = Ops.Sum(z);
        loss.Backward();

        // d(sum(d * x))/dx = d, with d treated as a constant.
        Close.All(x.Grad!.ToArray(), d.ToArray(), 0, 0, "grad through detached factor");
    }

    [Fact]
    public void Saved_bytes_return_to_zero_after_backward_and_gradients_accumulate()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 4, 6);
        for (int round = 1; round <= 2; round++)
        {
            using var y = Ops.Silu(x);
            using var z = Ops.Mul(y, y);
            using var loss = Ops.Sum(z);
            Assert.True(tape.SavedBytes > 0);
            Assert.Equal(3, tape.NodeCount);
            loss.Backward();
            Assert.Equal(0, tape.SavedBytes);
            Assert.Equal(0, tape.NodeCount);
            Assert.Equal(0, B.Memory.Current(MemoryCategory.SavedActivations));
        }

        // Two identical backward passes accumulate twice the gradient of one.
        var twice = x.Grad!.ToArray();
        x.ClearGrad();
        using (var y = Ops.Silu(x))
        using (var z = Ops.Mul(y, y))
        using (var loss = Ops.Sum(z))
        {
            loss.Backward();
        }

        Close.All(twice, x.Grad!.ToArray().Select(v => 2 * v).ToArray(), 1e-6, 1e-6, "accumulated gradient");
        x.ClearGrad();
    }

    [Fact]
    public void Tape_reports_nodes_and_saved_bytes_by_layer_kind()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 2, 8);
        Tensor a, b;
        using (Tape.Kind("Spatial"))
        {
            a = Ops.Silu(x);
        }

        using (Tape.Kind("Temporal"))
        {
            b = Ops.Gelu(a);
        }

        var stats = tape.StatsByKind;
        Assert.Equal(1, stats["Spatial"].Nodes);
        Assert.Equal(x.Bytes, stats["Spatial"].SavedBytes);
        Assert.Equal(1, stats["Temporal"].Nodes);
        Assert.Equal(a.Bytes, stats["Temporal"].SavedBytes);
        a.Dispose();
        b.Dispose();
        tape.Clear();
        Assert.Empty(tape.StatsByKind);
    }

    [Fact]
    public void A_trainable_layer_after_a_norm_keeps_no_copy_of_the_norm_output()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var norm = new LayerNorm(B, 8);
        using var lin = new Linear(B, new Random(r.Seed), 8, 16);
        using var x = Leaf(r, 6, 8);
        using var h = norm.Forward(x);
        long normOnly = tape.SavedBytes;
        Assert.Equal(x.Bytes + 2 * 6 * 4, normOnly); // x, mean and rstd
        using var y = lin.Forward(h);
        Assert.Equal(normOnly, tape.SavedBytes);

        // A GELU output feeding a trainable layer is likewise recomputed from the GELU's input.
        using var a = Ops.Gelu(y);
        long beforeSecond = tape.SavedBytes;
        using var lin2 = new Linear(B, new Random(r.Seed + 1), 16, 4);
        using var z = lin2.Forward(a);
        Assert.Equal(beforeSecond, tape.SavedBytes);
        tape.Clear();
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Recomputed_inputs_give_the_same_gradients(int seed) =>
        NormLinearGegluLinear(new Rng(seed), checkpointed: false); // the linear layers keep recipes, not tensors

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void A_recomputed_region_matches_finite_differences_of_the_reference(int seed) =>
        NormLinearGegluLinear(new Rng(seed), checkpointed: true); // Ops.Recompute: only the inputs are kept

    /// <summary>
    /// LayerNorm -> Linear -> GEGLU -> Linear, plain (every input needing a gradient) or as one
    /// <see cref="Ops.Recompute"/> region (all but the norm's gain, whose gradient must then stay null);
    /// gradients must match finite differences of the reference composition.
    /// </summary>
    private void NormLinearGegluLinear(Rng r, bool checkpointed)
    {
        int rows = r.Int(1, 4), c = r.Int(2, 6), h = r.Int(1, 4);
        static Tensor Region(Tensor[] t)
        {
            using var n = Ops.LayerNorm(t[0], t[1], t[2]);
            using var p = Ops.Linear(n, t[3]);
            using var g = Ops.Geglu(p);
            return Ops.Linear(g, t[4]);
        }

        OpCheck.Run(B, r, new OpCase
        {
            Name = checkpointed ? "recompute(layer_norm > linear > geglu > linear)" : "layer_norm > linear > geglu > linear",
            Inputs = [new Shape(rows, c), new Shape(c), new Shape(c), new Shape(2 * h, c), new Shape(c, h)],
            RequiresGrad = checkpointed ? [true, false, true, true, true] : null,
            Op = t => checkpointed ? Ops.Recompute(Region, t[0], t[1..]) : Region(t),
            Reference = d =>
            {
                var n = Reference.LayerNorm(d[0], d[1], d[2], rows, c, 1e-5);
                var p = Reference.Linear(n, d[3], null, rows, c, 2 * h);
                return Reference.Linear(Reference.Geglu(p, rows, h), d[4], null, rows, h, c);
            },
            GradRtol = 2e-3,
        });
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Recompute_keeps_only_its_inputs_and_gives_the_gradients_of_the_plain_graph(int seed)
    {
        var r = new Rng(seed);
        var rng = new Random(r.Seed);
        int rows = r.Int(2, 6), c = r.Int(3, 8);
        using var frozen = new Linear(B, rng, c, 2 * c);
        using var trainable = new Linear(B, rng, c, c);
        frozen.Freeze();
        using var x = Leaf(r, rows, c);
        using var z = Leaf(r, rows, c);
        using var gain = Data(r, c);
        using var shift = Data(r, c);
        Tensor Region(Tensor[] a)
        {
            using var sum = Ops.Add(a[0], a[1]);
            using var n = Ops.LayerNorm(sum, gain, shift);
            using var p = frozen.Forward(n);
            using var g = Ops.Geglu(p);
            using var q = Ops.Silu(g);
            return trainable.Forward(q);
        }

        (float[] X, float[] Z, float[] W, long Saved, float[] Y) Run(bool recompute)
        {
            using var tape = Tape.Begin();
            using var y = recompute ? Ops.Recompute(Region, x, z) : Region([x, z]);
            long saved = tape.SavedBytes;
            var values = y.ToArray();
            using (var loss = Ops.Sum(y))
            {
                loss.Backward();
            }

            Assert.Equal(0, tape.SavedBytes);
            var result = (x.Grad!.ToArray(), z.Grad!.ToArray(), trainable.Weight.Grad!.ToArray(), saved, values);
            x.ClearGrad();
            z.ClearGrad();
            trainable.Weight.ClearGrad();
            trainable.Bias!.ClearGrad();
            Assert.Null(frozen.Weight.Grad);
            return result;
        }

        long before = B.Memory.CurrentBytes;
        var plain = Run(recompute: false);
        var again = Run(recompute: true);
        Assert.Equal(before, B.Memory.CurrentBytes); // nothing of the private tape outlives the backward

        // Same arithmetic in the same order: bit-identical values and gradients.
        Assert.Equal(plain.Y, again.Y);
        Assert.Equal(plain.X, again.X);
        Assert.Equal(plain.Z, again.Z);
        Assert.Equal(plain.W, again.W);
        Assert.Contains(plain.X, v => v != 0);

        // What stays on the tape between forward and backward: the two inputs, nothing of the region.
        Assert.Equal(x.Bytes + z.Bytes, again.Saved);
        Assert.True(plain.Saved > again.Saved, $"plain graph keeps {plain.Saved} B, the recomputed one {again.Saved} B");
    }

    [Fact]
    public void A_kind_profiler_charges_a_recomputed_region_once_to_the_kind_that_recorded_it()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 64, 64);
        using var w = Leaf(r, 64, 64);
        static Tensor Region(Tensor[] a)
        {
            using var inner = Tape.Kind("Inner");
            using var h = Ops.Linear(a[0], a[1]);
            using var g = Ops.Gelu(h);
            return Ops.Linear(g, a[1]);
        }

        var profiler = new KindProfiler(B.Synchronize);
        Tape.Profiler = profiler;
        try
        {
            Tensor y;
            using (Tape.Kind("Outer"))
            {
                y = Ops.Recompute(Region, x, w);
            }

            using (y)
            using (var loss = Ops.Sum(y))
            {
                loss.Backward();
            }

            profiler.Flush();
        }
        finally
        {
            Tape.Profiler = null;
        }

        var ms = profiler.Milliseconds;
        Assert.True(ms["Outer"].Backward > 0, "the recompute node's backward (second forward included) is Outer's, so the profiler is back by then");
        Assert.Equal(0, ms.GetValueOrDefault("Inner").Backward); // not timed again inside
        Assert.True(ms["Inner"].Forward > 0, "the first forward is Inner's, as any forward");
        x.ClearGrad();
        w.ClearGrad();
    }

    [Fact]
    public void Recompute_handles_a_region_that_returns_its_input_or_ignores_it()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 3, 4);
        using var d = Data(r, 3, 4);
        var upstream = r.Uniform(12);
        using var g = Tensor.FromArray(B, upstream, x.Shape);

        // The identity: the gradient passes unchanged, and the input keeps its own place in the graph.
        using (var y = Ops.Recompute(a => a[0], x))
        {
            Assert.NotSame(x, y);
            y.Backward(g);
        }

        Assert.Equal(upstream, x.Grad!.ToArray());
        x.ClearGrad();

        // An output that does not depend on the input that needs a gradient: nothing reaches it.
        using (var y = Ops.Recompute(a => Ops.Silu(a[1]), x, d))
        {
            y.Backward(g);
        }

        Assert.Null(x.Grad);
        Assert.Equal(0, tape.SavedBytes);
    }

    [Fact]
    public void Recompute_records_nothing_without_a_gradient_to_compute()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 3, 4);
        using var d = Data(r, 3, 4);
        int calls = 0;
        Tensor Region(Tensor[] a)
        {
            calls++;
            return Ops.Silu(a[0]);
        }

        using (Tape.NoGrad())
        using (var y = Ops.Recompute(Region, x))
        {
            Assert.False(y.RequiresGrad);
        }

        using (var y = Ops.Recompute(Region, d))
        {
            Assert.False(y.RequiresGrad);
        }

        Assert.Equal(0, tape.NodeCount);
        Assert.Equal(0, tape.SavedBytes);
        Assert.Equal(2, calls); // once each: no second forward when nothing is recorded
    }

    [Fact]
    public void Backward_twice_is_an_error()
    {
        var r = new Rng(Seeds.One);
        using var tape = Tape.Begin();
        using var x = Leaf(r, 3);
        using var loss = Ops.Sum(x);
        loss.Backward();
        var e = Assert.Throws<AutogradException>(() => loss.Backward());
        Assert.Contains("already", e.Message);
        x.ClearGrad();
    }

    [Fact]
    public void A_non_finite_loss_is_reported_when_asked()
    {
        using var tape = Tape.Begin();
        using var a = Tensor.FromArray(B, [1f, float.NaN, 2f], new Shape(3)).SetRequiresGrad();
        using var b = Tensor.FromArray(B, [0f, 1f, 2f], new Shape(3));
        using var loss = Ops.MseLoss(a, b);
        var e = Assert.Throws<NonFiniteException>(() => loss.Backward(checkFinite: true));
        Assert.Equal("mse_loss", e.Op);
        Assert.Contains("[3]", e.Message);
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void A_straight_through_convolution_is_straight_through_of_the_convolution_to_the_bit(int seed)
    {
        // StraightThroughConv2d(value, x, w, b) against StraightThrough(value, Conv2d(x, w, b)): the same value, the
        // same gradients for x (and for w and b where they train), bit for bit, without the convolution's forward.
        var r = new Rng(seed);
        int n = r.Int(1, 3), cin = r.Int(1, 5), cout = r.Int(1, 5), h = r.Int(3, 6), w = r.Int(3, 6), k = r.Pick(1, 3), stride = r.Pick(1, 2);
        int pad = k / 2, oh = ((h + (2 * pad) - k) / stride) + 1, ow = ((w + (2 * pad) - k) / stride) + 1;
        var xs = r.Uniform(n * cin * h * w);
        var ws = r.Uniform(cout * cin * k * k);
        var bs = r.Uniform(cout);
        var vs = r.Uniform(n * cout * oh * ow);
        var gs = r.Uniform(n * cout * oh * ow);

        (float[] Y, float[] Dx, float[]? Dw, float[]? Db, long Forwards, long Saved) Run(bool straight, bool trainWeights, bool bf16 = false)
        {
            using var tape = Tape.Begin();
            using var x = Tensor.FromArray(B, xs, new Shape(n, cin, h, w)).SetRequiresGrad();
            using var wide = Tensor.FromArray(B, ws, new Shape(cout, cin, k, k));
            using var narrow = bf16 ? Tensor.Empty(B, wide.Shape, dtype: DType.BFloat16) : null;
            if (narrow is not null)
            {
                B.Cast(wide, narrow); // a frozen weight stored in bf16, as --frozen-weights bf16 keeps it
            }

            var wt = narrow ?? wide;
            using var bt = Tensor.FromArray(B, bs, new Shape(cout));
            if (trainWeights)
            {
                wt.SetRequiresGrad();
                bt.SetRequiresGrad();
            }

            using var value = Tensor.FromArray(B, vs, new Shape(n, cout, oh, ow));
            using var g = Tensor.FromArray(B, gs, new Shape(n, cout, oh, ow));
            B.ResetCallCounts();
            Tensor y;
            if (straight)
            {
                y = Ops.StraightThroughConv2d(value, x, wt, bt, stride, pad);
            }
            else
            {
                using var path = Ops.Conv2d(x, wt, bt, stride, pad);
                y = Ops.StraightThrough(value, path);
            }

            long forwards = B.CallCounts?.GetValueOrDefault("cudnnConvolutionForward") ?? -1;
            long saved = tape.SavedBytes;
            using (y)
            {
                y.Backward(g);
                return (y.ToArray(), x.Grad!.ToArray(), wt.Grad?.ToArray(), bt.Grad?.ToArray(), forwards, saved);
            }
        }

        foreach (bool train in new[] { false, true })
        {
            var straight = Run(true, train);
            var reference = Run(false, train);
            Assert.Equal(vs, straight.Y);
            Assert.Equal(reference.Y, straight.Y);
            Assert.Equal(reference.Dx, straight.Dx);
            Assert.Equal(reference.Dw, straight.Dw);
            Assert.Equal(reference.Db, straight.Db);
            Assert.Equal(train, straight.Dw is not null);
            Assert.Equal(reference.Saved, straight.Saved); // frozen: nothing kept; trained: x, as the convolution keeps it
            if (straight.Forwards >= 0)
            {
                Assert.Equal(0, straight.Forwards);
                Assert.Equal(1, reference.Forwards);
            }
        }

        // A frozen weight stored in bf16: the same, widened in the backward only.
        var narrowStraight = Run(true, false, bf16: true);
        var narrowReference = Run(false, false, bf16: true);
        Assert.Equal(narrowReference.Dx, narrowStraight.Dx);
        Assert.NotEqual(Run(true, false).Dx, narrowStraight.Dx); // the rounded weight is what passed the gradient

        using var v = Tensor.FromArray(B, vs, new Shape(n, cout, oh, ow));
        using var xx = Tensor.FromArray(B, xs, new Shape(n, cin, h, w));
        using var ww = Tensor.FromArray(B, ws, new Shape(cout, cin, k, k));
        using var wrong = Tensor.FromArray(B, r.Uniform(n * cout * oh * (ow + 1)), new Shape(n, cout, oh, ow + 1));
        Assert.Throws<ShapeMismatchException>(() => Ops.StraightThroughConv2d(wrong, xx, ww, null, stride, pad));
        using var tracked = Tensor.FromArray(B, vs, new Shape(n, cout, oh, ow)).SetRequiresGrad();
        Assert.ThrowsAny<ArgumentException>(() => Ops.StraightThroughConv2d(tracked, xx, ww, null, stride, pad));
    }
}

public sealed class CpuAutogradTests(CpuFixture f) : AutogradTests(f), IClassFixture<CpuFixture>;
public sealed class CudaAutogradTests(CudaFixture f) : AutogradTests(f), IClassFixture<CudaFixture>;
