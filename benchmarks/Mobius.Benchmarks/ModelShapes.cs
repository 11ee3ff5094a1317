using Mobius.Engine;

namespace Mobius.Benchmarks;

/// <summary>
/// Shapes of the tiny text-to-video UNet trained on the CPU: a batch of 2 clips x 8 frames = 16 images,
/// latents 16 x 16 with 32 channels, 8 x 8 with 64, 4 x 4 with 128 (one level per row below).
/// </summary>
public static class ModelShapes
{
    private const int Images = 16;

    /// <summary>
    /// Products the model issues, as the engine issues them: linear layers through IBackend.Gemm (threaded),
    /// attention per (image or pixel, head) on query blocks of 64 rows with q/k/v strided by the model width,
    /// the three per-frame GEMMs of a temporal conv and the per-image im2col GEMMs of a conv (one per thread).
    /// </summary>
    public static readonly GemmCase[] Gemms =
    [
        // Linear layers on 16 x 256 = 4096 tokens of 32 channels, 16 x 64 = 1024 of 64: y = x W^T, dW = dy^T x.
        new("linear 32→32", Images * 256, 32, 32, false, true, Parallel: true),
        new("geglu in 64→512", Images * 64, 512, 64, false, true, Parallel: true),
        new("geglu out 256→64", Images * 64, 64, 256, false, true, Parallel: true),
        new("linear dW 64x64", 64, 64, Images * 64, true, false, Parallel: true),

        // Spatial self-attention, one head of 32 over 256 pixels; one head of 64 over 64 pixels.
        new("attn q k^T", 64, 256, 32, false, true, Parallel: false, LdA: 32, LdB: 32),
        new("attn P v", 64, 32, 256, false, false, Parallel: false, LdA: 256, LdB: 32),
        new("attn q k^T", 64, 64, 64, false, true, Parallel: false, LdA: 64, LdB: 64),

        // Temporal self-attention over 8 frames, one head of 32 (4 heads in a width of 128).
        new("tattn q k^T", 8, 8, 32, false, true, Parallel: false, LdA: 128, LdB: 128),
        new("tattn P v", 8, 32, 8, false, false, Parallel: false, LdA: 8, LdB: 128),

        // Temporal conv, one tap of one frame: W_k [Cout, Cin] x x_f [Cin, S].
        new("tconv tap", 32, 256, 32, false, false, Parallel: false),
        new("tconv tap", 128, 16, 128, false, false, Parallel: false),

        // Conv 3x3 by im2col, one image: W [Cout, 9 Cin] x col [9 Cin, OutH OutW].
        new("conv3x3 im2col", 32, 256, 288, false, false, Parallel: false),
        new("conv3x3 im2col", 64, 64, 576, false, false, Parallel: false),
        new("conv3x3 im2col", 128, 16, 1152, false, false, Parallel: false),
    ];

    /// <summary>Convolutions of the model over the whole batch of 16 images.</summary>
    public static readonly ConvCase[] Convs =
    [
        new("3x3", new Conv2dShape(Images, 32, 16, 16, 32, 3, 1, 1)),
        new("3x3 concat", new Conv2dShape(Images, 96, 16, 16, 32, 3, 1, 1)),
        new("3x3", new Conv2dShape(Images, 64, 8, 8, 64, 3, 1, 1)),
        new("3x3", new Conv2dShape(Images, 128, 4, 4, 128, 3, 1, 1)),
        new("down s2", new Conv2dShape(Images, 32, 16, 16, 32, 3, 2, 1)),
        new("down s2", new Conv2dShape(Images, 64, 8, 8, 64, 3, 2, 1)),
        new("1x1 skip", new Conv2dShape(Images, 32, 8, 8, 64, 1, 1, 0)),
        new("1x1 skip", new Conv2dShape(Images, 128, 8, 8, 64, 1, 1, 0)),
    ];

    /// <summary>Temporal convolutions: 2 clips of 8 frames at each level.</summary>
    public static readonly TemporalConvCase[] TemporalConvs =
    [
        new(new TemporalConvShape(2, 8, 32, 32, 256)),
        new(new TemporalConvShape(2, 8, 64, 64, 64)),
        new(new TemporalConvShape(2, 8, 128, 128, 16)),
    ];
}
