using Mobius.Cuda;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// The CUDA group norm cuts each group (and, in backward, each channel) into chunks when there are too few
/// groups to fill the device (a video norm at batch 1). The shared op tests use shapes too small to be cut,
/// so these lower the chunk size until they are, and check the same op against the same fp64 reference and
/// finite differences. The class has its own backend instance, so the setting reaches no other test.
/// </summary>
public sealed class CudaGroupNormTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Theory]
    [InlineData(1, false, 1)]
    [InlineData(3, true, 2)]
    [InlineData(4, false, 3)]
    public void Group_norm_cut_into_chunks_matches_the_reference(int frames, bool silu, int seed)
    {
        var r = new Rng(Seeds.One * 7 + seed);
        int n = r.Int(1, 2), groups = r.Int(1, 3), c = groups * r.Int(1, 3), h = r.Int(2, 3), w = r.Int(2, 4);
        int before = B.GroupNormMinChunk;
        B.GroupNormMinChunk = 2;
        try
        {
            long perGroup = (long)frames * (c / groups) * h * w;
            Assert.True(B.GroupNormSplits(n * groups, perGroup) > 1, "the shape must be cut into chunks");

            OpCheck.Run(B, r, Mobius.Tests.Engine.OpGradientTests.GroupNormCase($"group_norm in chunks T={frames} silu={silu}", n, frames, c, h, w, groups, silu));
        }
        finally
        {
            B.GroupNormMinChunk = before;
        }
    }

    [Theory]
    [InlineData(1, false, 1)]
    [InlineData(4, true, 2)]
    public void One_launch_each_way_gives_the_bits_of_two(int frames, bool silu, int seed)
    {
        // Where a group is one chunk (every shape of the shared op tests), the forward is one launch, and so is the
        // backward where a channel is one chunk too; the two launches each replaces must give the same bits.
        var r = new Rng(Seeds.One * 29 + seed);
        int n = r.Int(1, 3), groups = r.Int(1, 4), c = groups * r.Int(1, 3), hw = r.Int(2, 20);
        var shape = new GroupNormShape(n, frames, c, hw, groups, 1e-5f);
        Assert.Equal(1, B.GroupNormSplits((long)n * groups, (long)frames * (c / groups) * hw));
        using var x = Tensor.FromArray(B, r.Uniform((long)n * frames * c * hw, 3f).Select(v => v + 2f).ToArray(), new Shape(n * frames, c, hw));
        using var gamma = Tensor.FromArray(B, r.Uniform(c), new Shape(c));
        using var beta = Tensor.FromArray(B, r.Uniform(c), new Shape(c));
        (float[] Y, float[] Mean, float[] Rstd) Run(bool onePass)
        {
            B.GroupNormOnePass = onePass;
            try
            {
                using var y = Tensor.Empty(B, x.Shape);
                using var mean = Tensor.Empty(B, new Shape(n, groups));
                using var rstd = Tensor.Empty(B, new Shape(n, groups));
                B.GroupNormForward(shape, x, gamma, beta, y, mean, rstd, silu);
                return (y.ToArray(), mean.ToArray(), rstd.ToArray());
            }
            finally
            {
                B.GroupNormOnePass = true;
            }
        }

        B.ResetCallCounts();
        var one = Run(true);
        Assert.Equal(1, B.CallCounts.GetValueOrDefault("group_norm_one_pass_f32"));
        var two = Run(false);
        Assert.Equal(1, B.CallCounts.GetValueOrDefault("group_norm_stats_f32"));
        Assert.Equal(two.Y, one.Y);
        Assert.Equal(two.Mean, one.Mean);
        Assert.Equal(two.Rstd, one.Rstd);

        // Backward: dx, dgamma and dbeta, and dx alone (frozen norm parameters).
        using var mean = Tensor.FromArray(B, one.Mean, new Shape(n, groups));
        using var rstd = Tensor.FromArray(B, one.Rstd, new Shape(n, groups));
        using var dy = Tensor.FromArray(B, r.Uniform(x.Numel), x.Shape);
        (float[] Dx, float[] Dg, float[] Db) Back(bool onePass, bool parameters)
        {
            B.GroupNormOnePass = onePass;
            try
            {
                using var dx = Tensor.Empty(B, x.Shape);
                using var dg = Tensor.Empty(B, new Shape(c));
                using var db = Tensor.Empty(B, new Shape(c));
                B.GroupNormBackward(shape, x, gamma, beta, mean, rstd, dy, dx, parameters ? dg : null, parameters ? db : null, silu);
                return (dx.ToArray(), parameters ? dg.ToArray() : [], parameters ? db.ToArray() : []);
            }
            finally
            {
                B.GroupNormOnePass = true;
            }
        }

        foreach (bool parameters in new[] { true, false })
        {
            B.ResetCallCounts();
            var oneBack = Back(true, parameters);
            Assert.Equal(1, B.CallCounts.GetValueOrDefault("group_norm_bwd_one_pass_f32"));
            Assert.Equal(0, B.CallCounts.GetValueOrDefault("group_norm_bwd_reduce_f32"));
            var twoBack = Back(false, parameters);
            Assert.Equal(twoBack.Dx, oneBack.Dx);
            Assert.Equal(twoBack.Dg, oneBack.Dg);
            Assert.Equal(twoBack.Db, oneBack.Db);
            Assert.Contains(oneBack.Dx, v => v != 0f);
        }
    }

    [Fact]
    public void Chunk_counts_fill_the_device_and_keep_chunks_large()
    {
        int target = B.GroupNormTargetBlocks;
        Assert.Equal(1, B.GroupNormSplits(target, 1 << 20));                  // enough groups: one chunk each
        Assert.Equal(1, B.GroupNormSplits(32, B.GroupNormMinChunk));          // too small to cut
        int splits = B.GroupNormSplits(32, 16L * 10 * 1024);                  // ms256 first level at batch 1
        Assert.InRange(splits * 32, target, target + 32);
        Assert.InRange(16L * 10 * 1024 / splits, B.GroupNormMinChunk, long.MaxValue);
    }
}
