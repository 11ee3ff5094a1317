using Mobius.Engine.Autograd;

namespace Mobius.Engine;

/// <summary>
/// The differentiable ops (PyTorch's torch.nn.functional, in short): each validates its arguments,
/// allocates its output, runs the backend primitive and, when a gradient is needed, records a tape
/// node that saves only what its backward needs given which inputs require gradients. For example a
/// convolution with frozen weights keeps no activation: its input-gradient needs the weights alone.
/// Returned tensors are owned by the caller.
/// </summary>
public static partial class Ops
{
    // ---- views and layout -----------------------------------------------------------------------

    /// <summary>A view of <paramref name="x"/> with another shape of the same element count (no copy).</summary>
    public static Tensor Reshape(Tensor x, params int[] dims)
    {
        const string op = "reshape";
        Check.Live(op, x);
        var shape = new Shape(dims);
        if (shape.Numel != x.Numel)
        {
            throw new ShapeMismatchException(op, $"cannot view {x.Shape} ({x.Numel} elements) as {shape}.");
        }

        var y = x.View(0, shape);
        if (x.Recipe is not null)
        {
            y.Recipe = new Recipe(a => Reshape(a[0], dims), x);
        }

        var node = Tape.Record(op, x);
        node?.Finish(y, g => [g.View(0, x.Shape)]);
        return y;
    }

    /// <summary>
    /// Elements [start, start+length) of dimension <paramref name="dim"/>. Along the first dimension (or
    /// when all leading dimensions are 1) this is a view; otherwise a copy.
    /// </summary>
    public static Tensor Narrow(Tensor x, int dim, int start, int length)
    {
        const string op = "narrow";
        Check.Live(op, x);
        dim = Check.Dim(op, x, dim);
        if (start < 0 || length <= 0 || start + length > x.Dim(dim))
        {
            throw new ShapeMismatchException(op, $"range [{start}, {start + length}) outside dimension {dim} of {x.Shape}.");
        }

        var dims = x.Shape.ToArray();
        dims[dim] = length;
        var shape = new Shape(dims);
        long outer = x.Shape.Product(0, dim);
        long inner = x.Shape.Product(dim + 1, x.Shape.Rank);
        Tensor y;
        if (outer == 1)
        {
            y = x.View(start * inner, shape);
        }
        else
        {
            y = Tensor.Empty(x.Backend, shape);
            x.Backend.CopyRows(x, start * inner, x.Dim(dim) * inner, y, 0, length * inner, (int)outer, (int)(length * inner));
        }

        var node = Tape.Record(op, x);
        node?.Finish(y, g =>
        {
            var dx = Tensor.Zeros(g.Backend, x.Shape);
            g.Backend.CopyRows(g, 0, length * inner, dx, start * inner, x.Dim(dim) * inner, (int)outer, (int)(length * inner));
            return [dx];
        });
        return y;
    }

    /// <summary>Joins tensors along <paramref name="dim"/>; all other dimensions must match.</summary>
    public static Tensor Concat(int dim, params Tensor[] xs)
    {
        const string op = "concat";
        if (xs.Length == 0)
        {
            throw new ShapeMismatchException(op, "no tensors to join.");
        }

        var backend = Check.Same(op, xs);
        var first = xs[0];
        dim = Check.Dim(op, first, dim);
        var dims = first.Shape.ToArray();
        int total = 0;
        foreach (var t in xs)
        {
            bool ok = t.Shape.Rank == first.Shape.Rank;
            for (int i = 0; ok && i < dims.Length; i++)
            {
                ok = i == dim || t.Dim(i) == first.Dim(i);
            }

            if (!ok)
            {
                throw new ShapeMismatchException(op, $"shapes {string.Join(", ", xs.Select(s => s.Shape))} differ outside dimension {dim}.");
            }

            total += t.Dim(dim);
        }

        dims[dim] = total;
        var y = Tensor.Empty(backend, new Shape(dims));
        long outer = first.Shape.Product(0, dim);
        long inner = first.Shape.Product(dim + 1, first.Shape.Rank);
        long offset = 0;
        foreach (var t in xs)
        {
            long run = t.Dim(dim) * inner;
            backend.CopyRows(t, 0, run, y, offset, total * inner, (int)outer, (int)run);
            offset += run;
        }

        var node = Tape.Record(op, xs);
        node?.Finish(y, g =>
        {
            var grads = new Tensor?[xs.Length];
            long off = 0;
            for (int i = 0; i < xs.Length; i++)
            {
                long run = xs[i].Dim(dim) * inner;
                if (node.NeedsGrad(i))
                {
                    grads[i] = Tensor.Empty(g.Backend, xs[i].Shape);
                    g.Backend.CopyRows(g, off, total * inner, grads[i]!, 0, run, (int)outer, (int)run);
                }

                off += run;
            }

            return grads;
        });
        return y;
    }

    /// <summary>Swaps the last two dimensions: [..., R, C] becomes [..., C, R] (a copy).</summary>
    public static Tensor Transpose(Tensor x)
    {
        const string op = "transpose";
        Check.Live(op, x);
        Check.MinRank(op, x, 2);
        int rows = x.Dim(-2), cols = x.Dim(-1);
        int batch = (int)x.Shape.Product(0, x.Shape.Rank - 2);
        var dims = x.Shape.ToArray();
        (dims[^1], dims[^2]) = (rows, cols);
        var y = Tensor.Empty(x.Backend, new Shape(dims));
        x.Backend.Transpose(batch, rows, cols, x, y);
        y.Recipe = new Recipe(a => Transpose(a[0]), x);
        var node = Tape.Record(op, x);
        node?.Finish(y, g =>
        {
            var dx = Tensor.Empty(g.Backend, x.Shape);
            g.Backend.Transpose(batch, cols, rows, g, dx);
            return [dx];
        });
        return y;
    }

    /// <summary>A copy that does not require a gradient (PyTorch's detach, with its own storage reference).</summary>
    public static Tensor Detach(Tensor x)
    {
        Check.Live("detach", x);
        return x.View(0, x.Shape);
    }

    /// <summary>
    /// The value of <paramref name="value"/> (computed without a gradient) carrying the gradient of
    /// <paramref name="path"/>: forward it is <paramref name="value"/> (a view, no copy), backward the
    /// incoming gradient goes to <paramref name="path"/> unchanged. A straight-through estimator: with
    /// path = the skip connection of a residual block y = skip(x) + f(x), the block's activations need not
    /// be kept, at the price of leaving f's Jacobian out of the gradient.
    /// </summary>
    public static Tensor StraightThrough(Tensor value, Tensor path)
    {
        const string op = "straight_through";
        Check.Same(op, value, path);
        Check.SameShape(op, value, path);
        Check.That(op, !value.RequiresGrad, $"the value {value.Shape} must be computed without a gradient (under Tape.NoGrad()).");
        var y = value.View(0, value.Shape);
        var node = Tape.Record(op, path);
        node?.Finish(y, g => [g.View(0, path.Shape)]);
        return y;
    }

    /// <summary>
    /// Activation checkpointing: returns <paramref name="f"/>(<paramref name="x"/>, <paramref name="others"/>...)
    /// and keeps only those inputs for backward. The forward runs without recording; backward runs f again
    /// on a private tape and back-propagates the output gradient through it, so every input that needs a
    /// gradient receives f's exact one (and f's trainable parameters theirs), while f's own activations
    /// exist only during this node's backward: one more forward of f for its saved activations. f gets its
    /// inputs as an array, in the order given; any other tensor it reads must outlive the backward (a
    /// layer's parameters do; a per-step embedding does not, so pass that one as an input) and f must
    /// compute the same values every time (the backends are deterministic). Without a gradient to compute
    /// it is just f.
    /// </summary>
    public static Tensor Recompute(Func<Tensor[], Tensor> f, Tensor x, params Tensor[] others)
    {
        const string op = "recompute";
        ArgumentNullException.ThrowIfNull(f);
        Tensor[] inputs = [x, .. others];
        foreach (var t in inputs)
        {
            Check.Live(op, t);
        }

        var node = Tape.Record(op, inputs);
        if (node is null)
        {
            return f(inputs);
        }

        Tensor y;
        using (Tape.NoGrad())
        {
            y = f(inputs);
        }

        if (inputs.Any(t => ReferenceEquals(t, y)))
        {
            y = y.View(0, y.Shape); // f handed back an input: the output needs its own handle
        }

        var saved = inputs.Select(node.Save).ToArray();
        node.Finish(y, g =>
        {
            using var enable = Tape.EnableGrad();
            using var tape = Tape.Begin();
            var args = saved.Select((t, i) => node.NeedsGrad(i) ? t.View(0, t.Shape).SetRequiresGrad() : t.View(0, t.Shape)).ToArray();

            // A kind profiler charges this whole node, the second forward included, to the node's kind as backward
            // time; timing the private tape's nodes too would count them twice.
            var profiler = Tape.Profiler;
            Tape.Profiler = null;
            try
            {
                using (var again = f(args))
                {
                    if (!again.RequiresGrad)
                    {
                        return new Tensor?[args.Length]; // the output does not depend on what needs a gradient
                    }

                    tape.Backward(again, g);
                }

                var grads = new Tensor?[args.Length];
                for (int i = 0; i < args.Length; i++)
                {
                    grads[i] = args[i].Grad;
                    args[i].Grad = null;
                    if (grads[i] is { } gi && gi.Storage.Category == MemoryCategory.Gradients)
                    {
                        gi.Storage.Reclassify(MemoryCategory.Temporaries);
                    }
                }

                return grads;
            }
            finally
            {
                Tape.Profiler = profiler;
                foreach (var a in args)
                {
                    a.ClearGrad();
                    a.Dispose();
                }
            }
        });
        return y;
    }

    // ---- elementwise ------------------------------------------------------------------------------

    /// <summary>a + b.</summary>
    public static Tensor Add(Tensor a, Tensor b) => Combine("add", a, b, 1f, 1f);

    /// <summary>a - b.</summary>
    public static Tensor Sub(Tensor a, Tensor b) => Combine("sub", a, b, 1f, -1f);

    /// <summary>alpha*a + beta*b.</summary>
    public static Tensor Combine(Tensor a, Tensor b, float alpha, float beta) => Combine("combine", a, b, alpha, beta);

    private static Tensor Combine(string op, Tensor a, Tensor b, float alpha, float beta)
    {
        var backend = Check.Same(op, a, b);
        Check.SameShape(op, a, b);
        var y = Tensor.Empty(backend, a.Shape);
        backend.Add(a, b, y, alpha, beta);
        var node = Tape.Record(op, a, b);
        node?.Finish(y, g => [node.NeedsGrad(0) ? ScaleOrShare(g, alpha) : null, node.NeedsGrad(1) ? ScaleOrShare(g, beta) : null]);
        return y;
    }

    /// <summary>a * b, elementwise.</summary>
    public static Tensor Mul(Tensor a, Tensor b)
    {
        const string op = "mul";
        var backend = Check.Same(op, a, b);
        Check.SameShape(op, a, b);
        var y = Tensor.Empty(backend, a.Shape);
        backend.Mul(a, b, y);
        var node = Tape.Record(op, a, b);
        if (node is not null)
        {
            var sa = node.NeedsGrad(1) ? node.SaveInput(a) : null;
            var sb = node.NeedsGrad(0) ? node.SaveInput(b) : null;
            node.Finish(y, g => [sb is null ? null : MulNew(g, sb), sa is null ? null : MulNew(g, sa)]);
        }

        return y;
    }

    /// <summary>alpha * x.</summary>
    public static Tensor Scale(Tensor x, float alpha)
    {
        const string op = "scale";
        Check.Live(op, x);
        var y = ScaleCopy(x, alpha);
        var node = Tape.Record(op, x);
        node?.Finish(y, g => [ScaleOrShare(g, alpha)]);
        return y;
    }

    /// <summary>
    /// Adds a bias broadcast over every dimension but <paramref name="dim"/>: bias [C] with C = x.Dim(dim),
    /// or bias [x.Dim(0), ..., x.Dim(dim)] (one bias row per leading index: a per-sample bias).
    /// </summary>
    public static Tensor AddBias(Tensor x, Tensor bias, int dim)
    {
        const string op = "add_bias";
        var backend = Check.Same(op, x, bias);
        dim = Check.Dim(op, x, dim);
        int channels = x.Dim(dim);
        int outer = (int)x.Shape.Product(0, dim);
        int inner = (int)x.Shape.Product(dim + 1, x.Shape.Rank);
        bool perOuter = bias.Numel == (long)outer * channels && bias.Shape.Rank > 1;
        if (bias.Numel != channels && !perOuter)
        {
            throw new ShapeMismatchException(op, $"bias {bias.Shape} does not match dimension {dim} of {x.Shape}.");
        }

        var y = Tensor.Empty(backend, x.Shape);
        backend.AddChannelBias(outer, channels, inner, x, bias, y, perOuter);
        var node = Tape.Record(op, x, bias);
        node?.Finish(y, g =>
        {
            Tensor? db = null;
            if (node.NeedsGrad(1))
            {
                db = Tensor.Empty(g.Backend, bias.Shape);
                g.Backend.ChannelBiasGrad(outer, channels, inner, g, db, perOuter);
            }

            return [node.NeedsGrad(0) ? g.View(0, g.Shape) : null, db];
        });
        return y;
    }

    /// <summary>x * sigmoid(x).</summary>
    public static Tensor Silu(Tensor x) => Activate("silu", Activation.Silu, x);

    /// <summary>GELU (tanh form).</summary>
    public static Tensor Gelu(Tensor x) => Activate("gelu", Activation.Gelu, x);

    private static Tensor Activate(string op, Activation act, Tensor x)
    {
        Check.Live(op, x);
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.ActivationForward(act, x, y);
        y.Recipe = new Recipe(a => Activate(op, act, a[0]), x);
        var node = Tape.Record(op, x);
        if (node is not null)
        {
            var sx = node.SaveActivation(x);
            node.Finish(y, g =>
            {
                var dx = Tensor.Empty(g.Backend, sx.Shape);
                g.Backend.ActivationBackward(act, sx, g, dx);
                return [dx];
            });
        }

        return y;
    }

    /// <summary>GEGLU over the last dimension: x [..., 2H] gives x[..., :H] * gelu(x[..., H:]).</summary>
    public static Tensor Geglu(Tensor x)
    {
        const string op = "geglu";
        Check.Live(op, x);
        int two = x.Dim(-1);
        if (two % 2 != 0)
        {
            throw new ShapeMismatchException(op, $"last dimension of {x.Shape} is odd.");
        }

        int hidden = two / 2;
        int rows = (int)(x.Numel / two);
        var dims = x.Shape.ToArray();
        dims[^1] = hidden;
        var y = Tensor.Empty(x.Backend, new Shape(dims));
        x.Backend.GegluForward(rows, hidden, x, y);
        y.Recipe = new Recipe(a => Geglu(a[0]), x);
        var node = Tape.Record(op, x);
        if (node is not null)
        {
            var sx = node.SaveActivation(x);
            node.Finish(y, g =>
            {
                var dx = Tensor.Empty(g.Backend, sx.Shape);
                g.Backend.GegluBackward(rows, hidden, sx, g, dx);
                return [dx];
            });
        }

        return y;
    }

    /// <summary>Softmax over the last dimension.</summary>
    public static Tensor Softmax(Tensor x)
    {
        const string op = "softmax";
        Check.Live(op, x);
        int cols = x.Dim(-1);
        int rows = (int)(x.Numel / cols);
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.SoftmaxForward(rows, cols, x, y);
        var node = Tape.Record(op, x);
        if (node is not null)
        {
            var sy = node.Save(y);
            node.Finish(y, g =>
            {
                var dx = Tensor.Empty(g.Backend, sy.Shape);
                g.Backend.SoftmaxBackward(rows, cols, sy, g, dx);
                return [dx];
            });
        }

        return y;
    }

    private static Tensor ScaleCopy(Tensor x, float alpha)
    {
        var y = Tensor.Empty(x.Backend, x.Shape);
        x.Backend.Scale(x, alpha, y);
        return y;
    }

    /// <summary>alpha*g; for alpha = 1 a view sharing g (the tape never writes through shared gradients).</summary>
    private static Tensor ScaleOrShare(Tensor g, float alpha) => alpha == 1f ? g.View(0, g.Shape) : ScaleCopy(g, alpha);

    private static Tensor MulNew(Tensor a, SavedInput saved)
    {
        using var b = saved.Get();
        var y = Tensor.Empty(a.Backend, a.Shape);
        a.Backend.Mul(a, b, y);
        return y;
    }
}

/// <summary>Helpers for writing forward passes that free intermediates as early as possible.</summary>
public static class TensorExtensions
{
    /// <summary>
    /// Applies <paramref name="next"/> to <paramref name="x"/> and disposes <paramref name="x"/>:
    /// <c>h = h.Then(conv.Forward)</c> keeps exactly one intermediate alive (the tape keeps what it saved).
    /// </summary>
    public static Tensor Then(this Tensor x, Func<Tensor, Tensor> next)
    {
        ArgumentNullException.ThrowIfNull(next);
        try
        {
            return next(x);
        }
        finally
        {
            x.Dispose();
        }
    }
}
