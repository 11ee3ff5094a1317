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
