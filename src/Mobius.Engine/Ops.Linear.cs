using Mobius.Engine.Autograd;

namespace Mobius.Engine;

/// <summary>Linear layers, matrix products and convolutions.</summary>
public static partial class Ops
{
    /// <summary>
    /// y = x w^T + b for x [..., I], w [O, I], b [O] (optional); y is [..., O]. A frozen w may be stored in bf16:
    /// it is widened to fp32 while the op runs (and again in backward), never kept wide.
    /// </summary>
    public static Tensor Linear(Tensor x, Tensor w, Tensor? b = null)
    {
        const string op = "linear";
        using var widened = WidenedCopy(op, w);
        var wide = widened ?? w;
        var backend = Check.Same(op, x, wide, b);
        Check.Rank(op, w, 2, "weight");
        int inF = w.Dim(1), outF = w.Dim(0);
        Check.That(op, x.Dim(-1) == inF, $"input {x.Shape} has {x.Dim(-1)} features, weight {w.Shape} expects {inF}.");
        if (b is not null)
        {
            Check.Shape(op, b, new Shape(outF), "bias");
        }

        int rows = (int)(x.Numel / inF);
        var dims = x.Shape.ToArray();
        dims[^1] = outF;
        var y = Tensor.Empty(backend, new Shape(dims));
        if (b is not null)
        {
            backend.GemmBias(new GemmShape(rows, outF, inF, TransB: true), 1f, x, wide, b, y);
        }
        else
        {
            backend.Gemm(new GemmShape(rows, outF, inF, TransB: true), 1f, x, wide, 0f, y);
        }

        var node = Tape.Record(op, x, w, b);
        if (node is not null)
        {
            // dx needs only w; dw needs only x: a frozen linear layer keeps no activation.
            var sw = node.NeedsGrad(0) ? node.Save(w) : null;
            var sx = node.NeedsGrad(1) ? node.SaveInput(x) : null;
            node.Finish(y, g =>
            {
                Tensor? dx = null, dw = null, db = null;
                if (sw is not null)
                {
                    using var widenedW = WidenedCopy(op, sw);
                    dx = Tensor.Empty(g.Backend, x.Shape);
                    g.Backend.Gemm(new GemmShape(rows, inF, outF), 1f, g, widenedW ?? sw, 0f, dx);
                }

                if (node.NeedsGrad(2))
                {
                    db = Tensor.Empty(g.Backend, b!.Shape);
                }

                if (sx is not null)
                {
                    using var xv = sx.Get();
                    dw = Tensor.Empty(g.Backend, w.Shape);
                    var shape = new GemmShape(outF, inF, rows, TransA: true);
                    if (db is not null)
                    {
                        g.Backend.GemmRowSums(shape, 1f, g, xv, dw, db); // db: the column sums of g [rows, outF]
                    }
                    else
                    {
                        g.Backend.Gemm(shape, 1f, g, xv, 0f, dw);
                    }
                }
                else if (db is not null)
                {
                    g.Backend.ChannelBiasGrad(rows, outF, 1, g, db);
                }

                return [dx, dw, db];
            });
        }

        return y;
    }

    /// <summary>
    /// Matrix product op(a) op(b): a [M, K] or [batch, M, K] (transposed storage when <paramref name="transA"/>),
    /// b [K, N] or [batch, K, N] (likewise). A 2-D b with a 3-D, untransposed a is shared by every batch entry.
    /// </summary>
    public static Tensor MatMul(Tensor a, Tensor b, bool transA = false, bool transB = false)
    {
        const string op = "matmul";
        var backend = Check.Same(op, a, b);
        Check.That(op, a.Shape.Rank is 2 or 3 && b.Shape.Rank is 2 or 3, $"operands {a.Shape} and {b.Shape} must be 2-D or 3-D.");
        if (a.Shape.Rank == 3 && b.Shape.Rank == 2 && !transA)
        {
            // Shared right operand: one product over the flattened batch.
            using var flat = Reshape(a, a.Dim(0) * a.Dim(1), a.Dim(2));
            using var prod = MatMul(flat, b, false, transB);
            return Reshape(prod, a.Dim(0), a.Dim(1), prod.Dim(1));
        }

        Check.That(op, a.Shape.Rank == b.Shape.Rank, $"operands {a.Shape} and {b.Shape} must have the same rank.");
        int batch = a.Shape.Rank == 3 ? a.Dim(0) : 1;
        Check.That(op, batch == (b.Shape.Rank == 3 ? b.Dim(0) : 1), $"batch sizes of {a.Shape} and {b.Shape} differ.");
        int m = transA ? a.Dim(-1) : a.Dim(-2);
        int k = transA ? a.Dim(-2) : a.Dim(-1);
        int kb = transB ? b.Dim(-1) : b.Dim(-2);
        int n = transB ? b.Dim(-2) : b.Dim(-1);
        Check.That(op, k == kb, $"inner dimensions of {a.Shape}{(transA ? "^T" : "")} and {b.Shape}{(transB ? "^T" : "")} differ ({k} and {kb}).");

        Shape Out(int rows, int cols) => a.Shape.Rank == 3 ? new Shape(batch, rows, cols) : new Shape(rows, cols);
        GemmShape G(int mm, int nn, int kk, bool ta, bool tb) =>
            new(mm, nn, kk, ta, tb, batch, (long)mm * kk, (long)kk * nn, (long)mm * nn);

        var y = Tensor.Empty(backend, Out(m, n));
        backend.Gemm(G(m, n, k, transA, transB), 1f, a, b, 0f, y);
        var node = Tape.Record(op, a, b);
        if (node is not null)
        {
            var sbIn = node.NeedsGrad(0) ? node.SaveInput(b) : null;
            var saIn = node.NeedsGrad(1) ? node.SaveInput(a) : null;
            node.Finish(y, g =>
            {
                Tensor? da = null, db = null;
                if (sbIn is not null)
                {
                    using var sb = sbIn.Get();
                    da = Tensor.Empty(g.Backend, a.Shape);
                    if (!transA)
                    {
                        g.Backend.Gemm(G(m, k, n, false, !transB), 1f, g, sb, 0f, da);
                    }
                    else
                    {
                        g.Backend.Gemm(G(k, m, n, transB, true), 1f, sb, g, 0f, da);
                    }
                }

                if (saIn is not null)
                {
                    using var sa = saIn.Get();
                    db = Tensor.Empty(g.Backend, b.Shape);
                    if (!transB)
                    {
                        g.Backend.Gemm(G(k, n, m, !transA, false), 1f, sa, g, 0f, db);
                    }
                    else
                    {
                        g.Backend.Gemm(G(n, k, m, true, transA), 1f, g, sa, 0f, db);
                    }
                }

                return [da, db];
            });
        }

        return y;
    }

    /// <summary>
    /// 2-D convolution of x [N, Cin, H, W] with w [Cout, Cin, K, K] (K = 1 or 3) and optional bias [Cout]. A frozen w
    /// may be stored in bf16, widened to fp32 while the op runs, as in <see cref="Linear"/>.
    /// </summary>
    public static Tensor Conv2d(Tensor x, Tensor w, Tensor? b = null, int stride = 1, int padding = 0)
    {
        const string op = "conv2d";
        using var widened = WidenedCopy(op, w);
        var wide = widened ?? w;
        var backend = Check.Same(op, x, wide, b);
        var s = Conv2dShapeOf(op, x, w, b, stride, padding);
        var y = Tensor.Empty(backend, new Shape(s.N, s.Cout, s.OutH, s.OutW));
        backend.Conv2dForward(s, x, wide, b, y);
        RecordConv2d(op, s, x, w, b, y);
        return y;
    }

    /// <summary>
    /// <paramref name="value"/> (computed without a gradient) carrying the gradient of <see cref="Conv2d"/>(x, w, b):
    /// forward a view of <paramref name="value"/>, backward the incoming gradient goes through the convolution's
    /// input, weight and bias gradients as Conv2d's would. It is <see cref="StraightThrough"/>(value, Conv2d(x, w, b))
    /// to the bit, without the convolution's forward, whose value that op throws away: the straight-through path of a
    /// frozen residual block whose skip connection is a 1x1 convolution.
    /// </summary>
    public static Tensor StraightThroughConv2d(Tensor value, Tensor x, Tensor w, Tensor? b = null, int stride = 1, int padding = 0)
    {
        const string op = "straight_through_conv2d";
        var backend = Check.Same(op, value, x, b);
        if (w.IsDisposed)
        {
            throw new TensorDisposedException(op, w.Describe());
        }

        // A frozen weight may be stored in bf16: only the backward reads it, widened there (RecordWeighted).
        if (!ReferenceEquals(w.Backend, backend))
        {
            throw new BackendMismatchException(op, $"{x.Describe()} and {w.Describe()} live on different backends ({backend.Name} and {w.Backend.Name}); copy one across first.");
        }

        var s = Conv2dShapeOf(op, x, w, b, stride, padding);
        Check.Shape(op, value, new Shape(s.N, s.Cout, s.OutH, s.OutW), "value");
        Check.That(op, !value.RequiresGrad, $"the value {value.Shape} must be computed without a gradient (under Tape.NoGrad()).");
        var y = value.View(0, value.Shape);
        RecordConv2d(op, s, x, w, b, y);
        return y;
    }

    private static Conv2dShape Conv2dShapeOf(string op, Tensor x, Tensor w, Tensor? b, int stride, int padding)
    {
        Check.Rank(op, x, 4, "input");
        Check.Rank(op, w, 4, "weight");
        Check.That(op, w.Dim(2) == w.Dim(3), $"weight {w.Shape} is not square.");
        Check.That(op, x.Dim(1) == w.Dim(1), $"input {x.Shape} has {x.Dim(1)} channels, weight {w.Shape} expects {w.Dim(1)}.");
        Check.That(op, stride >= 1 && padding >= 0, $"stride {stride} and padding {padding} are invalid.");
        if (b is not null)
        {
            Check.Shape(op, b, new Shape(w.Dim(0)), "bias");
        }

        var s = new Conv2dShape(x.Dim(0), x.Dim(1), x.Dim(2), x.Dim(3), w.Dim(0), w.Dim(2), stride, padding);
        Check.That(op, s.OutH > 0 && s.OutW > 0, $"input {x.Shape} is smaller than kernel {w.Shape}.");
        return s;
    }

    private static void RecordConv2d(string op, Conv2dShape s, Tensor x, Tensor w, Tensor? b, Tensor y) =>
        RecordWeighted(op, x, w, b, y,
            (g, wv, dx) => g.Backend.Conv2dBackwardData(s, g, wv, dx),
            (xv, g, dw, db) => g.Backend.Conv2dBackwardFilter(s, xv, g, dw, db),
            (g, db) => g.Backend.ChannelBiasGrad(s.N, s.Cout, s.OutH * s.OutW, g, db));

    /// <summary>
    /// Temporal convolution (kernel 3 along frames, zero padding) of x [B*F, Cin, H, W], frames
    /// consecutive per clip, with w [Cout, Cin, 3] and optional bias [Cout]; y is [B*F, Cout, H, W].
    /// </summary>
    public static Tensor TemporalConv(Tensor x, Tensor w, Tensor? b, int frames)
    {
        const string op = "temporal_conv";
        var backend = Check.Same(op, x, w, b);
        Check.MinRank(op, x, 2);
        Check.Rank(op, w, 3, "weight");
        Check.That(op, w.Dim(2) == 3, $"weight {w.Shape} must have 3 taps.");
        Check.That(op, frames > 0 && x.Dim(0) % frames == 0, $"{x.Dim(0)} images of {x.Shape} are not clips of {frames} frames.");
        Check.That(op, x.Dim(1) == w.Dim(1), $"input {x.Shape} has {x.Dim(1)} channels, weight {w.Shape} expects {w.Dim(1)}.");
        if (b is not null)
        {
            Check.Shape(op, b, new Shape(w.Dim(0)), "bias");
        }

        var s = new TemporalConvShape(x.Dim(0) / frames, frames, x.Dim(1), w.Dim(0), (int)x.Shape.Product(2, x.Shape.Rank));
        var dims = x.Shape.ToArray();
        dims[1] = s.Cout;
        var y = Tensor.Empty(backend, new Shape(dims));
        backend.TemporalConvForward(s, x, w, b, y);
        RecordWeighted(op, x, w, b, y,
            (g, wv, dx) => g.Backend.TemporalConvBackwardData(s, g, wv, dx),
            (xv, g, dw, db) => g.Backend.TemporalConvBackwardWeight(s, xv, g, dw, db),
            (g, db) => g.Backend.ChannelBiasGrad(s.B * s.F, s.Cout, s.S, g, db));
        return y;
    }

    /// <summary>
    /// Records the node of a convolution-like op y = f(x, w) + b. Its input-gradient needs only w and its
    /// weight-gradient only x, so each is kept only when that gradient is needed: a frozen layer keeps no
    /// activation.
    /// </summary>
    private static void RecordWeighted(string op, Tensor x, Tensor w, Tensor? b, Tensor y,
        Action<Tensor, Tensor, Tensor> backwardData, Action<Tensor, Tensor, Tensor, Tensor?> backwardWeight, Action<Tensor, Tensor> biasGrad)
    {
        var node = Tape.Record(op, x, w, b);
        if (node is null)
        {
            return;
        }

        var sw = node.NeedsGrad(0) ? node.Save(w) : null;
        var sx = node.NeedsGrad(1) ? node.SaveInput(x) : null;
        node.Finish(y, g =>
        {
            Tensor? dx = null, dw = null;
            if (sw is not null)
            {
                using var widenedW = WidenedCopy(op, sw);
                dx = Tensor.Empty(g.Backend, x.Shape);
                backwardData(g, widenedW ?? sw, dx);
            }

            var db = node.NeedsGrad(2) ? Tensor.Empty(g.Backend, b!.Shape) : null;
            if (sx is not null)
            {
                using var xv = sx.Get();
                dw = Tensor.Empty(g.Backend, w.Shape);
                backwardWeight(xv, g, dw, db);
            }
            else if (db is not null)
            {
                biasGrad(g, db);
            }

            return [dx, dw, db];
        });
    }

    /// <summary>
    /// A workspace copy of <paramref name="w"/> widened to fp32 from its bf16 storage, for an op to read and then
    /// dispose; null when <paramref name="w"/> is fp32 already (read it as it is: no copy, no handle).
    /// </summary>
    internal static Tensor? WidenedCopy(string op, Tensor w)
    {
        ArgumentNullException.ThrowIfNull(w);
        if (w.IsDisposed)
        {
            throw new TensorDisposedException(op, w.Describe());
        }

        if (w.DType == DType.Float32)
        {
            return null;
        }

        var wide = Tensor.Empty(w.Backend, w.Shape, MemoryCategory.Workspace);
        wide.Name = w.Name;
        w.Backend.Cast(w, wide);
        return wide;
    }
}
