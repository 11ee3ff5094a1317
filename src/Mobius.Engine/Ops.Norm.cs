using Mobius.Engine.Autograd;

namespace Mobius.Engine;

/// <summary>Normalisation ops.</summary>
public static partial class Ops
{
    /// <summary>
    /// Group norm of x [N*T, C, ...] with <paramref name="groups"/> groups, statistics over T consecutive
    /// entries of the first dimension together (T = <paramref name="frames"/>: 1 for per-image norms,
    /// the clip length for the clip-wide norm of temporal layers); optionally fused with SiLU.
    /// </summary>
    public static Tensor GroupNorm(Tensor x, Tensor gamma, Tensor beta, int groups, int frames = 1, bool silu = false, float eps = 1e-5f)
    {
        string op = silu ? "group_norm_silu" : "group_norm";
        var backend = Check.Same(op, x, gamma, beta);
        Check.MinRank(op, x, 2);
        int c = x.Dim(1);
        Check.That(op, groups > 0 && c % groups == 0, $"{c} channels of {x.Shape} do not split into {groups} groups.");
        Check.That(op, frames > 0 && x.Dim(0) % frames == 0, $"{x.Dim(0)} entries of {x.Shape} are not groups of {frames} frames.");
        Check.Shape(op, gamma, new Shape(c), "gamma");
        Check.Shape(op, beta, new Shape(c), "beta");
        var s = new GroupNormShape(x.Dim(0) / frames, frames, c, (int)x.Shape.Product(2, x.Shape.Rank), groups, eps);
        var y = Tensor.Empty(backend, x.Shape);
        var mean = Tensor.Empty(backend, new Shape(s.N, groups));
        var rstd = Tensor.Empty(backend, new Shape(s.N, groups));
        backend.GroupNormForward(s, x, gamma, beta, y, mean, rstd, silu);
        var node = Tape.Record(op, x, gamma, beta);
        Tensor? centred = null, zero = null;
        if (node is not null)
        {
            if (node.NarrowsActivations)
            {
                (centred, zero) = CentreGroups(x, mean, s);
            }

            var sx = node.SaveActivation(centred ?? x);
            var sm = node.Save(zero ?? mean);
            var sr = node.Save(rstd);
            var sg = node.Save(gamma);
            var sb = node.Save(beta);
            node.Finish(y, g =>
            {
                // x's gradient from its other consumers (a residual's skip) is added in the same pass.
                using var addend = node.TakePendingGradient(0);
                var dx = node.NeedsGrad(0) ? Tensor.Empty(g.Backend, x.Shape) : null;
                var dgamma = node.NeedsGrad(1) ? Tensor.Empty(g.Backend, gamma.Shape) : null;
                var dbeta = node.NeedsGrad(2) ? Tensor.Empty(g.Backend, beta.Shape) : null;
                g.Backend.GroupNormBackward(s, sx, sg, sb, sm, sr, g, dx, dgamma, dbeta, silu, addend);
                return [dx, dgamma, dbeta];
            });
        }

        mean.Dispose();
        rstd.Dispose();
        y.Recipe = new Recipe(a => GroupNorm(a[0], a[1], a[2], groups, frames, silu, eps), centred ?? x, gamma, beta);
        centred?.Dispose();
        zero?.Dispose();
        return y;
    }

    /// <summary>
    /// x less its group means, and zeros in the means' shape. With bf16 saved activations a norm keeps its input
    /// centred: bf16 rounds the centred values relative to the spread, where x's own rounding is relative to
    /// |x| and would swamp a group whose mean is large beside its spread. Backward reads the centred input with a
    /// zero mean (the same normalised values), and the output's recipe normalises it again (the same output).
    /// </summary>
    private static (Tensor Centred, Tensor Zero) CentreGroups(Tensor x, Tensor mean, GroupNormShape s)
    {
        var backend = x.Backend;
        int rows = s.N * s.T;
        using var negated = Tensor.Empty(backend, new Shape(rows, s.Groups));
        if (s.T == 1)
        {
            backend.Scale(mean, -1f, negated);
        }
        else
        {
            // The clip's means, once per frame: each row of the means copied T times (a source stride of 0).
            using var perClip = Tensor.Empty(backend, mean.Shape);
            backend.Scale(mean, -1f, perClip);
            for (int n = 0; n < s.N; n++)
            {
                backend.CopyRows(perClip, (long)n * s.Groups, 0, negated, (long)n * s.T * s.Groups, s.Groups, s.T, s.Groups);
            }
        }

        var centred = Tensor.Empty(backend, x.Shape);
        backend.AddChannelBias(rows, s.Groups, (int)(x.Numel / rows / s.Groups), x, negated, centred, perOuter: true);
        return (centred, Tensor.Zeros(backend, mean.Shape));
    }

    /// <summary>Layer norm over the last dimension of x, with gamma and beta of that length.</summary>
    public static Tensor LayerNorm(Tensor x, Tensor gamma, Tensor beta, float eps = 1e-5f)
    {
        const string op = "layer_norm";
        var backend = Check.Same(op, x, gamma, beta);
        int cols = x.Dim(-1);
        int rows = (int)(x.Numel / cols);
        Check.Shape(op, gamma, new Shape(cols), "gamma");
        Check.Shape(op, beta, new Shape(cols), "beta");
        var y = Tensor.Empty(backend, x.Shape);
        var mean = Tensor.Empty(backend, new Shape(rows));
        var rstd = Tensor.Empty(backend, new Shape(rows));
        backend.LayerNormForward(rows, cols, eps, x, gamma, beta, y, mean, rstd);
        var node = Tape.Record(op, x, gamma, beta);
        Tensor? centred = null, zero = null;
        if (node is not null)
        {
            if (node.NarrowsActivations)
            {
                // Kept centred, as the group norm's input is (CentreGroups).
                using var negated = Tensor.Empty(backend, mean.Shape);
                backend.Scale(mean, -1f, negated);
                centred = Tensor.Empty(backend, x.Shape);
                backend.AddChannelBias(1, rows, cols, x, negated, centred);
                zero = Tensor.Zeros(backend, mean.Shape);
            }

            var sx = node.SaveActivation(centred ?? x);
            var sm = node.Save(zero ?? mean);
            var sr = node.Save(rstd);
            var sg = node.Save(gamma);
            node.Finish(y, g =>
            {
                using var addend = node.TakePendingGradient(0);
                var dx = node.NeedsGrad(0) ? Tensor.Empty(g.Backend, x.Shape) : null;
                var dgamma = node.NeedsGrad(1) ? Tensor.Empty(g.Backend, gamma.Shape) : null;
                var dbeta = node.NeedsGrad(2) ? Tensor.Empty(g.Backend, beta.Shape) : null;
                g.Backend.LayerNormBackward(rows, cols, sx, sg, sm, sr, g, dx, dgamma, dbeta, addend);
                return [dx, dgamma, dbeta];
            });
        }

        mean.Dispose();
        rstd.Dispose();
        y.Recipe = new Recipe(a => LayerNorm(a[0], a[1], a[2], eps), centred ?? x, gamma, beta);
        centred?.Dispose();
        zero?.Dispose();
        return y;
    }
}
