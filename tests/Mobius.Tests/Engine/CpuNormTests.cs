using Mobius.Engine;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>The CPU backend's norms beyond what the op gradient tests check against the reference.</summary>
public sealed class CpuNormTests
{
    /// <summary>
    /// The CPU group norm's backward keeps each group's xhat and gradient between its two passes when they fit a
    /// cache-sized buffer, and computes them twice otherwise: both ways give the same bits.
    /// </summary>
    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Cpu_group_norm_backward_is_the_same_with_its_group_buffer_or_without(bool silu)
    {
        var r = new Rng(Seeds.One + (silu ? 1 : 0));
        var sh = new GroupNormShape(2, 3, 8, 40, 2);
        float[] x = r.Uniform(sh.N * sh.T * sh.C * sh.S), dy = r.Uniform(x.Length), gamma = r.Uniform(sh.C), beta = r.Uniform(sh.C);
        float[][] Run(long cacheFloats)
        {
            using var cpu = new CpuBackend(threads: 2) { GroupNormCacheFloats = cacheFloats };
            using var tx = Tensor.FromArray(cpu, x, new Shape(sh.N * sh.T, sh.C, sh.S));
            using var tdy = Tensor.FromArray(cpu, dy, tx.Shape);
            using var tg = Tensor.FromArray(cpu, gamma, new Shape(sh.C));
            using var tb = Tensor.FromArray(cpu, beta, new Shape(sh.C));
            using var y = Tensor.Empty(cpu, tx.Shape);
            using var mean = Tensor.Empty(cpu, new Shape(sh.N, sh.Groups));
            using var rstd = Tensor.Empty(cpu, new Shape(sh.N, sh.Groups));
            using var dx = Tensor.Empty(cpu, tx.Shape);
            using var dg = Tensor.Empty(cpu, tg.Shape);
            using var db = Tensor.Empty(cpu, tg.Shape);
            cpu.GroupNormForward(sh, tx, tg, tb, y, mean, rstd, silu);
            cpu.GroupNormBackward(sh, tx, tg, tb, mean, rstd, tdy, dx, dg, db, silu);
            return [dx.ToArray(), dg.ToArray(), db.ToArray()];
        }

        var kept = Run(1L << 20);
        var twice = Run(0);
        Assert.True(kept[0].Any(v => v != 0f), "the gradient is not all zero");
        for (int i = 0; i < 3; i++)
        {
            Assert.Equal(twice[i], kept[i]);
        }
    }
}
