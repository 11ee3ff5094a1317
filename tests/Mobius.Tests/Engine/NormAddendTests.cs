using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// The norms' backward adds the gradient their input already has (a residual's skip path) into dx in the same pass
/// (<c>dxAddend</c>), rounding each element once as a separate addition does: the same bits as backward and then
/// <see cref="IBackend.Add"/>. The tape hands a norm that gradient (<c>Node.TakePendingGradient</c>).
/// </summary>
public sealed class NormAddendTests
{
    /// <summary>Group norm (plain and fused SiLU) and layer norm on <paramref name="b"/>: with the addend, the bits of adding afterwards.</summary>
    internal static void CheckBackwardAddsTheAddend(IBackend b, Rng r, GroupNormShape sh)
    {
        int rows = sh.N * sh.T;
        using var x = Tensor.FromArray(b, Shift(r.Uniform(rows * sh.C * sh.S, 2.5f), 0.5f), new Shape(rows, sh.C, sh.S));
        using var dy = Tensor.FromArray(b, r.Uniform(x.Numel), x.Shape);
        using var addend = Tensor.FromArray(b, r.Uniform(x.Numel), x.Shape);
        using var gamma = Tensor.FromArray(b, Shift(r.Uniform(sh.C, 0.5f), 1f), new Shape(sh.C));
        using var beta = Tensor.FromArray(b, r.Uniform(sh.C), new Shape(sh.C));
        using var y = Tensor.Empty(b, x.Shape);
        using var mean = Tensor.Empty(b, new Shape(sh.N, sh.Groups));
        using var rstd = Tensor.Empty(b, new Shape(sh.N, sh.Groups));
        foreach (bool silu in new[] { false, true })
        {
            b.GroupNormForward(sh, x, gamma, beta, y, mean, rstd, silu);
            using var plain = Tensor.Empty(b, x.Shape);
            using var fused = Tensor.Empty(b, x.Shape);
            using var dg = Tensor.Empty(b, gamma.Shape);
            using var dg2 = Tensor.Empty(b, gamma.Shape);
            b.GroupNormBackward(sh, x, gamma, beta, mean, rstd, dy, plain, dg, null, silu);
            b.GroupNormBackward(sh, x, gamma, beta, mean, rstd, dy, fused, dg2, null, silu, addend);
            var gotPlain = plain.ToArray();
            b.Add(plain, addend, plain);
            Assert.Equal(plain.ToArray(), fused.ToArray());
            Assert.Equal(dg.ToArray(), dg2.ToArray()); // the parameter gradients do not see the addend
            Assert.NotEqual(gotPlain, fused.ToArray());
        }

        int cols = sh.C * sh.S;
        using var lnMean = Tensor.Empty(b, new Shape(rows));
        using var lnRstd = Tensor.Empty(b, new Shape(rows));
        using var lnGamma = Tensor.FromArray(b, Shift(r.Uniform(cols, 0.5f), 1f), new Shape(cols));
        using var lnBeta = Tensor.FromArray(b, r.Uniform(cols), new Shape(cols));
        b.LayerNormForward(rows, cols, 1e-5f, x, lnGamma, lnBeta, y, lnMean, lnRstd);
        using var lnPlain = Tensor.Empty(b, x.Shape);
        using var lnFused = Tensor.Empty(b, x.Shape);
        b.LayerNormBackward(rows, cols, x, lnGamma, lnMean, lnRstd, dy, lnPlain, null, null);
        b.LayerNormBackward(rows, cols, x, lnGamma, lnMean, lnRstd, dy, lnFused, null, null, addend);
        b.Add(lnPlain, addend, lnPlain);
        Assert.Equal(lnPlain.ToArray(), lnFused.ToArray());
    }

    private static float[] Shift(float[] a, float by)
    {
        for (int i = 0; i < a.Length; i++)
        {
            a[i] += by;
        }

        return a;
    }

    [Fact]
    public void Cpu_norm_backward_adds_the_addend_as_adding_afterwards_does() =>
        CheckBackwardAddsTheAddend(new CpuBackend(threads: 2), new Rng(Seeds.One + 31), new GroupNormShape(2, 3, 8, 20, 4, 1e-5f));

    /// <summary>
    /// A residual x + norm(x): backward gives x the skip's gradient plus the norm's, here added inside the norm's
    /// backward. It is the same to the bit as the two computed apart, for the group norm (with SiLU) and the layer
    /// norm, and the gradient check confirms it against finite differences.
    /// </summary>
    [Fact]
    public void A_residual_around_a_norm_gets_both_paths_gradient_in_one_pass()
    {
        using var b = new CpuBackend(threads: 2);
        var r = new Rng(Seeds.One + 32);
        using var x = Tensor.FromArray(b, Shift(r.Uniform(2 * 8 * 6, 1.5f), 0.5f), new Shape(2, 8, 6));
        using var w = Tensor.FromArray(b, r.Uniform(x.Numel), x.Shape);
        using var gamma = Tensor.FromArray(b, Shift(r.Uniform(8, 0.5f), 1f), new Shape(8));
        using var beta = Tensor.FromArray(b, r.Uniform(8), new Shape(8));
        using var lnGamma = Tensor.FromArray(b, Shift(r.Uniform(6, 0.5f), 1f), new Shape(6));
        using var lnBeta = Tensor.FromArray(b, r.Uniform(6), new Shape(6));
        foreach (bool layer in new[] { false, true })
        {
            x.SetRequiresGrad();
            x.ClearGrad();
            Tensor Norm(Tensor t) => layer ? Ops.LayerNorm(t, lnGamma, lnBeta) : Ops.GroupNorm(t, gamma, beta, groups: 4, frames: 1, silu: true);
            using (var tape = Tape.Begin())
            {
                // h = 2x (so h's gradient collects in an op output's slot), y = h + norm(h), loss = sum(w * y)
                using var h = Ops.Scale(x, 2f);
                using var n = Norm(h);
                using var y = Ops.Add(h, n);
                using var wy = Ops.Mul(w, y);
                using var loss = Ops.Sum(wy);
                loss.Backward();
            }

            // The same by hand: dh = w + norm'(h)^T w, computed apart and added afterwards; dx = 2 dh.
            Tensor hh;
            using (Tape.NoGrad())
            {
                hh = Ops.Scale(x, 2f);
            }

            using var hhScope = hh;
            using var mean = Tensor.Empty(b, layer ? new Shape(16) : new Shape(2, 4));
            using var rstd = Tensor.Empty(b, mean.Shape);
            using var yy = Tensor.Empty(b, x.Shape);
            using var dn = Tensor.Empty(b, x.Shape);
            if (layer)
            {
                b.LayerNormForward(16, 6, 1e-5f, hh, lnGamma, lnBeta, yy, mean, rstd);
                b.LayerNormBackward(16, 6, hh, lnGamma, mean, rstd, w, dn, null, null);
            }
            else
            {
                var sh = new GroupNormShape(2, 1, 8, 6, 4, 1e-5f);
                b.GroupNormForward(sh, hh, gamma, beta, yy, mean, rstd, true);
                b.GroupNormBackward(sh, hh, gamma, beta, mean, rstd, w, dn, null, null, true);
            }

            b.Add(w, dn, dn);
            b.Scale(dn, 2f, dn);
            Assert.Equal(dn.ToArray(), x.Grad!.ToArray());
        }
    }
}
