using Mobius.Cuda;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// The CUDA temporal convolution has two tile widths, 64 and 128, chosen by shape, and a path on cuBLAS
/// (TemporalConvOnCublas, taken by large convolutions); the shared op tests use shapes that always get 64-wide tiles. These force each
/// and check the op against the fp64 reference and finite differences. The class has its own backend instance,
/// so the settings reach no other test.
/// </summary>
public sealed class CudaTemporalConvTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Theory]
    [InlineData(64, 1)]
    [InlineData(128, 1)]
    [InlineData(128, 2)]
    public void Temporal_conv_matches_the_reference_at_each_tile_width(int tile, int seed)
    {
        var r = new Rng(Seeds.One * 11 + seed);
        // Channels past one 128-row tile and a ragged column count, so partial tiles are exercised.
        int b = r.Int(1, 2), f = r.Pick(2, 3, 5), cin = r.Int(3, 7), cout = r.Int(130, 140), h = r.Int(1, 3), w = r.Int(2, 5);
        B.TemporalConvTileOverride = tile;
        try
        {
            OpCheck.Run(B, r, Mobius.Tests.Engine.OpGradientTests.TemporalConvCase($"temporal_conv tile {tile} F={f}", b, f, cin, cout, h, w));
        }
        finally
        {
            B.TemporalConvTileOverride = null;
        }
    }

    [Theory]
    [InlineData(1, 1, 1, false)]
    [InlineData(1, 2, 2, false)]
    [InlineData(2, 2, 3, false)]
    [InlineData(2, 3, 4, false)]
    [InlineData(3, 5, 5, false)]
    [InlineData(3, 4, 6, true)]
    [InlineData(2, 1, 7, true)]
    public void Temporal_conv_on_cublas_matches_the_reference(int b, int f, int seed, bool clipByClip)
    {
        // Clips of one and two frames have no frame with a whole window; with several clips the first GEMM also
        // writes every clip's edge frames, which the edge GEMMs must rewrite. The weight gradient's GEMMs run over
        // chunks of clips that fit its scratch: one clip per chunk where the scratch is cut to nothing, so that
        // later chunks must add to the first.
        var r = new Rng(Seeds.One * 13 + seed);
        int cin = r.Int(2, 6), cout = r.Int(2, 7), h = r.Int(1, 3), w = r.Int(2, 4);
        long scratch = B.TemporalConvScratchBytes;
        B.TemporalConvOnCublas = true;
        B.TemporalConvScratchBytes = clipByClip ? 1 : scratch;
        try
        {
            OpCheck.Run(B, r, Mobius.Tests.Engine.OpGradientTests.TemporalConvCase($"temporal_conv on cuBLAS B={b} F={f}{(clipByClip ? ", clip by clip" : "")}", b, f, cin, cout, h, w));
        }
        finally
        {
            B.TemporalConvOnCublas = null;
            B.TemporalConvScratchBytes = scratch;
        }
    }

    [Fact]
    public void The_cublas_path_is_chosen_by_MOBIUS_TEMPORAL_CONV_and_a_wrong_value_is_refused()
    {
        Assert.Null(CudaBackend.TemporalConvSetting(null));
        Assert.Null(CudaBackend.TemporalConvSetting(""));
        Assert.False(CudaBackend.TemporalConvSetting("kernel"));
        Assert.True(CudaBackend.TemporalConvSetting("gemm"));
        Assert.Contains("expected kernel", Assert.Throws<ArgumentException>(() => CudaBackend.TemporalConvSetting("cublas")).Message);
    }

    [Fact]
    public void Wide_tiles_are_taken_only_where_every_multiprocessor_still_gets_a_block()
    {
        int sms = B.Device.Multiprocessors;
        Assert.Equal(128, B.TemporalConvTile(16L * 1024, 320));   // ms256 first level: 128 x 3 tiles
        Assert.Equal(64, B.TemporalConvTile(2L * 8 * 256, 64));   // tiny: 32 x 1 wide tiles would idle most SMs
        Assert.Equal(sms <= 128 ? 128 : 64, B.TemporalConvTile(128L * 128, 128));
        Assert.Equal(128, B.TemporalConvWeightTile(320, 320));
        Assert.Equal(64, B.TemporalConvWeightTile(32, 64));
    }
}
