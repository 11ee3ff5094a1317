using Mobius.Engine.Autograd;

namespace Mobius.Engine;

/// <summary>Resampling, embedding, losses and reductions.</summary>
public static partial class Ops
{
    /// <summary>2x2 average pooling of x [..., H, W] (H and W even).</summary>
    public static Tensor AvgPool2x2(Tensor x) => Resample("avg_pool2x2", x, down: true);

    /// <summary>Nearest-neighbour x2 upsampling of x [..., H, W].</summary>
    public static Tensor Upsample2x(Tensor x) => Resample("upsample2x", x, down: false);

    private static Tensor Resample(string op, Tensor x, bool down)
    {
        Check.Live(op, x);
        Check.MinRank(op, x, 3);
        int h = x.Dim(-2), w = x.Dim(-1);
        Check.That(op, !down || (h % 2 == 0 && w % 2 == 0), $"height and width of {x.Shape} must be even.");
        int planes = (int)x.Shape.Product(0, x.Shape.Rank - 2);
        var dims = x.Shape.ToArray();
        dims[^2] = down ? h / 2 : h * 2;
        dims[^1] = down ? w / 2 : w * 2;
        var y = Tensor.Empty(x.Backend, new Shape(dims));
        if (down)
        {
            x.Backend.AvgPool2x2Forward(planes, h, w, x, y);
        }
        else
        {
            x.Backend.Upsample2xForward(planes, h, w, x, y);
        }

        var node = Tape.Record(op, x);
        node?.Finish(y, g =>
        {
            var dx = Tensor.Empty(g.Backend, x.Shape);
            if (down)
            {
                g.Backend.AvgPool2x2Backward(planes, h, w, g, dx);
            }
            else
            {
                g.Backend.Upsample2xBackward(planes, h, w, g, dx);
            }

            return [dx];
        });
        return y;
    }

    /// <summary>
    /// Rows of <paramref name="table"/> [V, D] picked by <paramref name="ids"/>; returns [ids.Length, D]. A frozen table may be
    /// stored in bf16 (widened while the op runs).
    /// </summary>
    public static Tensor Embedding(ReadOnlySpan<int> ids, Tensor table)
    {
        const string op = "embedding";
        using var widened = WidenedCopy(op, table);
        var wide = widened ?? table;
        Check.Live(op, wide);
        Check.Rank(op, table, 2, "table");
        Check.That(op, ids.Length > 0, "no ids.");
        foreach (int id in ids)
        {
            Check.That(op, (uint)id < (uint)table.Dim(0), $"id {id} outside table {table.Shape}.");
        }

        var y = Tensor.Empty(table.Backend, new Shape(ids.Length, table.Dim(1)));
        table.Backend.EmbeddingForward(ids, wide, y);
        var node = Tape.Record(op, table);
        if (node is not null)
        {
            int[] saved = ids.ToArray();
            node.Finish(y, g =>
            {
                var dt = Tensor.Zeros(g.Backend, table.Shape);
                g.Backend.EmbeddingBackward(saved, g, dt);
                return [dt];
            });
        }

        return y;
    }

    /// <summary>Mean squared error mean((a - b)^2), a one-element tensor.</summary>
    public static Tensor MseLoss(Tensor a, Tensor b)
    {
        const string op = "mse_loss";
        var backend = Check.Same(op, a, b);
        Check.SameShape(op, a, b);
        var y = Tensor.Empty(backend, new Shape(1));
        backend.MseForward(a, b, y);
        var node = Tape.Record(op, a, b);
        if (node is not null)
        {
            var sa = node.Save(a);
            var sb = node.Save(b);
            node.Finish(y, g =>
            {
                Tensor? da = null, db = null;
                if (node.NeedsGrad(0))
                {
                    da = Tensor.Empty(g.Backend, a.Shape);
                    g.Backend.MseBackward(sa, sb, g, da);
                }

                if (node.NeedsGrad(1))
                {
                    db = Tensor.Empty(g.Backend, b.Shape);
                    g.Backend.MseBackward(sb, sa, g, db);
                }

                return [da, db];
            });
        }

        return y;
    }

    /// <summary>Sum of all elements, a one-element tensor.</summary>
    public static Tensor Sum(Tensor x)
    {
        const string op = "sum";
        Check.Live(op, x);
        var y = Tensor.Empty(x.Backend, new Shape(1));
        x.Backend.Sum(x, y);
        var node = Tape.Record(op, x);
        node?.Finish(y, g => [Tensor.Full(g.Backend, x.Shape, g.Item())]);
        return y;
    }

    /// <summary>
    /// Runs backward from <paramref name="loss"/> on the tape that recorded it (see <see cref="Tape.Backward"/>).
    /// </summary>
    public static void Backward(this Tensor loss, Tensor? gradient = null, bool checkFinite = false)
    {
        ArgumentNullException.ThrowIfNull(loss);
        var tape = loss.GradSlot?.Producer?.Tape ?? Tape.Current;
        tape.Backward(loss, gradient, checkFinite);
    }
}
