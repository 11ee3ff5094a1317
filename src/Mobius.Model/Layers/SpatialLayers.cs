using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;

namespace Mobius.Model.Layers;

/// <summary>
/// ResBlock2D: GN+SiLU, conv3x3, + projected time embedding, GN+SiLU, conv3x3, + skip (1x1 conv when
/// the channel count changes). Spatial: frames are the batch.
/// </summary>
public sealed class ResBlock2D : Module
{
    /// <summary>Creates the block.</summary>
    public ResBlock2D(IBackend backend, Random rng, int inChannels, int outChannels, int embedChannels, int groups)
        : base(backend)
    {
        Norm1 = AddModule("norm1", new GroupNorm(backend, groups, inChannels));
        Conv1 = AddModule("conv1", new Conv2d(backend, rng, inChannels, outChannels, 3));
        TimeProj = AddModule("time_emb_proj", new Linear(backend, rng, embedChannels, outChannels));
        Norm2 = AddModule("norm2", new GroupNorm(backend, groups, outChannels));
        Conv2 = AddModule("conv2", new Conv2d(backend, rng, outChannels, outChannels, 3));
        Shortcut = inChannels != outChannels ? AddModule("conv_shortcut", new Conv2d(backend, rng, inChannels, outChannels, 1)) : null;
    }

    /// <summary>First norm.</summary>
    public GroupNorm Norm1 { get; }

    /// <summary>First convolution.</summary>
    public Conv2d Conv1 { get; }

    /// <summary>Time-embedding projection.</summary>
    public Linear TimeProj { get; }

    /// <summary>Second norm.</summary>
    public GroupNorm Norm2 { get; }

    /// <summary>Second convolution.</summary>
    public Conv2d Conv2 { get; }

    /// <summary>1x1 skip projection, when channels change.</summary>
    public Conv2d? Shortcut { get; }

    /// <summary>x [N, Cin, H, W]; <paramref name="embedSilu"/> = SiLU(time embedding) [N, E].</summary>
    public Tensor Forward(Tensor x, Tensor embedSilu)
    {
        using var kind = Tape.Kind(nameof(ResBlock2D));
        var h = Norm1.Forward(x, silu: true).Then(Conv1.Forward);
        using (var t = TimeProj.Forward(embedSilu))
        {
            h = h.Then(hh => Ops.AddBias(hh, t, 1));
        }

        h = h.Then(hh => Norm2.Forward(hh, silu: true)).Then(Conv2.Forward);
        using var skip = Shortcut?.Forward(x);
        return h.Then(hh => Ops.Add(skip ?? x, hh));
    }
}

/// <summary>
/// Spatial transformer: GN, proj_in, a transformer block (self-attention over the pixels of a frame,
/// cross-attention to the text), proj_out, residual.
/// </summary>
public sealed class SpatialTransformer : Module
{
    /// <summary>Creates the transformer.</summary>
    public SpatialTransformer(IBackend backend, Random rng, int channels, int headDim, int contextChannels, int groups, int ffMult)
        : base(backend)
    {
        Norm = AddModule("norm", new GroupNorm(backend, groups, channels));
        ProjIn = AddModule("proj_in", new Linear(backend, rng, channels, channels));
        Block = AddModule("block", new TransformerBlock(backend, rng, channels, channels / headDim, contextChannels, ffMult, temporal: false));
        ProjOut = AddModule("proj_out", new Linear(backend, rng, channels, channels));
    }

    /// <summary>Input norm.</summary>
    public GroupNorm Norm { get; }

    /// <summary>Input projection.</summary>
    public Linear ProjIn { get; }

    /// <summary>The transformer block.</summary>
    public TransformerBlock Block { get; }

    /// <summary>Output projection.</summary>
    public Linear ProjOut { get; }

    /// <summary>x [N, C, H, W]; context [N, L, Ctext].</summary>
    public Tensor Forward(Tensor x, Tensor context)
    {
        using var kind = Tape.Kind(nameof(SpatialTransformer));
        int n = x.Dim(0), c = x.Dim(1), hh = x.Dim(2), ww = x.Dim(3);

        // [N, C, H, W] -> tokens [N, HW, C]
        var h = Norm.Forward(x)
            .Then(t => Ops.Reshape(t, n, c, hh * ww))
            .Then(Ops.Transpose)
            .Then(ProjIn.Forward)
            .Then(t => Block.Forward(t, context))
            .Then(ProjOut.Forward)
            .Then(Ops.Transpose)
            .Then(t => Ops.Reshape(t, n, c, hh, ww));
        return h.Then(t => Ops.Add(x, t));
    }
}

/// <summary>Stride-2 3x3 convolution.</summary>
public sealed class Downsample : Module
{
    /// <summary>Creates the layer.</summary>
    public Downsample(IBackend backend, Random rng, int channels)
        : base(backend) => Conv = AddModule("conv", new Conv2d(backend, rng, channels, channels, 3, stride: 2));

    /// <summary>The strided convolution.</summary>
    public Conv2d Conv { get; }

    /// <summary>Halves height and width.</summary>
    public Tensor Forward(Tensor x)
    {
        using var kind = Tape.Kind("Resample");
        return Conv.Forward(x);
    }
}

/// <summary>Nearest x2 upsampling then a 3x3 convolution.</summary>
public sealed class Upsample : Module
{
    /// <summary>Creates the layer.</summary>
    public Upsample(IBackend backend, Random rng, int channels)
        : base(backend) => Conv = AddModule("conv", new Conv2d(backend, rng, channels, channels, 3));

    /// <summary>The convolution after upsampling.</summary>
    public Conv2d Conv { get; }

    /// <summary>Doubles height and width.</summary>
    public Tensor Forward(Tensor x)
    {
        using var kind = Tape.Kind("Resample");
        return Ops.Upsample2x(x).Then(Conv.Forward);
    }
}

/// <summary>Sinusoidal timestep features followed by an MLP (Linear, SiLU, Linear).</summary>
public sealed class TimestepEmbedding : Module
{
    private readonly int _features;

    /// <summary>Creates the embedding with <paramref name="features"/> sinusoidal features and <paramref name="channels"/> outputs.</summary>
    public TimestepEmbedding(IBackend backend, Random rng, int features, int channels)
        : base(backend)
    {
        _features = features;
        Linear1 = AddModule("linear_1", new Linear(backend, rng, features, channels));
        Linear2 = AddModule("linear_2", new Linear(backend, rng, channels, channels));
    }

    /// <summary>First layer.</summary>
    public Linear Linear1 { get; }

    /// <summary>Second layer.</summary>
    public Linear Linear2 { get; }

    /// <summary>Returns SiLU(embedding) [timesteps.Length, channels], what every ResBlock consumes.</summary>
    public Tensor Forward(ReadOnlySpan<int> timesteps)
    {
        using var kind = Tape.Kind("Embedding");
        using var features = Tensor.FromArray(Backend, Sinusoid(timesteps, _features), new Shape(timesteps.Length, _features));
        return Linear1.Forward(features).Then(Ops.Silu).Then(Linear2.Forward).Then(Ops.Silu);
    }

    /// <summary>[cos(t f_i), sin(t f_i)] with f_i = 10000^(-i / (d/2)), as in diffusers (flip_sin_to_cos).</summary>
    public static float[] Sinusoid(ReadOnlySpan<int> positions, int dim)
    {
        int half = dim / 2;
        var a = new float[positions.Length * dim];
        for (int r = 0; r < positions.Length; r++)
        {
            for (int i = 0; i < half; i++)
            {
                double freq = Math.Exp(-Math.Log(10000) * i / half);
                a[r * dim + i] = (float)Math.Cos(positions[r] * freq);
                a[r * dim + half + i] = (float)Math.Sin(positions[r] * freq);
            }
        }

        return a;
    }
}
