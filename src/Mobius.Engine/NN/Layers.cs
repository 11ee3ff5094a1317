namespace Mobius.Engine.NN;

/// <summary>y = x W^T + b over the last dimension.</summary>
public sealed class Linear : Module
{
    /// <summary>Creates a linear layer with PyTorch's default initialisation (or zeros).</summary>
    public Linear(IBackend backend, Random rng, int inFeatures, int outFeatures, bool bias = true, bool zeroInit = false)
        : base(backend)
    {
        Weight = AddParameter("weight", new Shape(outFeatures, inFeatures), () => zeroInit ? new float[(long)outFeatures * inFeatures] : Init.FanIn(rng, (long)outFeatures * inFeatures, inFeatures));
        Bias = bias ? AddParameter("bias", new Shape(outFeatures), () => zeroInit ? new float[outFeatures] : Init.FanIn(rng, outFeatures, inFeatures)) : null;
    }

    /// <summary>[out, in].</summary>
    public Parameter Weight { get; }

    /// <summary>[out] or null.</summary>
    public Parameter? Bias { get; }

    /// <summary>Applies the layer to x [..., in].</summary>
    public Tensor Forward(Tensor x) => Ops.Linear(x, Weight, Bias);
}

/// <summary>2-D convolution with a square kernel over NCHW tensors.</summary>
public sealed class Conv2d : Module
{
    /// <summary>Creates a convolution with PyTorch's default initialisation (or zeros).</summary>
    public Conv2d(IBackend backend, Random rng, int inChannels, int outChannels, int kernel, int stride = 1, int padding = -1, bool zeroInit = false)
        : base(backend)
    {
        Stride = stride;
        Padding = padding >= 0 ? padding : kernel / 2;
        long fanIn = (long)inChannels * kernel * kernel;
        long n = outChannels * fanIn;
        Weight = AddParameter("weight", new Shape(outChannels, inChannels, kernel, kernel), () => zeroInit ? new float[n] : Init.FanIn(rng, n, fanIn));
        Bias = AddParameter("bias", new Shape(outChannels), () => zeroInit ? new float[outChannels] : Init.FanIn(rng, outChannels, fanIn));
    }

    /// <summary>Stride of the convolution.</summary>
    public int Stride { get; }

    /// <summary>Zero padding on each side.</summary>
    public int Padding { get; }

    /// <summary>[out, in, k, k].</summary>
    public Parameter Weight { get; }

    /// <summary>[out].</summary>
    public Parameter Bias { get; }

    /// <summary>Applies the convolution to x [N, in, H, W].</summary>
    public Tensor Forward(Tensor x) => Ops.Conv2d(x, Weight, Bias, Stride, Padding);
}

/// <summary>Group normalisation with learned scale and shift, optionally fused with SiLU.</summary>
public sealed class GroupNorm : Module
{
    /// <summary>Creates a group norm over <paramref name="channels"/> channels (gamma 1, beta 0).</summary>
    public GroupNorm(IBackend backend, int groups, int channels, float eps = 1e-5f)
        : base(backend)
    {
        Groups = groups;
        Eps = eps;
        Weight = AddParameter("weight", new Shape(channels), () => Init.Constant(channels, 1f));
        Bias = AddParameter("bias", new Shape(channels), () => new float[channels]);
    }

    /// <summary>Number of groups.</summary>
    public int Groups { get; }

    /// <summary>Variance epsilon.</summary>
    public float Eps { get; }

    /// <summary>gamma [C].</summary>
    public Parameter Weight { get; }

    /// <summary>beta [C].</summary>
    public Parameter Bias { get; }

    /// <summary>Normalises x [N*frames, C, ...] with statistics over <paramref name="frames"/> entries at a time.</summary>
    public Tensor Forward(Tensor x, int frames = 1, bool silu = false) => Ops.GroupNorm(x, Weight, Bias, Groups, frames, silu, Eps);
}

/// <summary>Layer normalisation over the last dimension.</summary>
public sealed class LayerNorm : Module
{
    /// <summary>Creates a layer norm over <paramref name="dim"/> features (gamma 1, beta 0).</summary>
    public LayerNorm(IBackend backend, int dim, float eps = 1e-5f)
        : base(backend)
    {
        Eps = eps;
        Weight = AddParameter("weight", new Shape(dim), () => Init.Constant(dim, 1f));
        Bias = AddParameter("bias", new Shape(dim), () => new float[dim]);
    }

    /// <summary>Variance epsilon.</summary>
    public float Eps { get; }

    /// <summary>gamma.</summary>
    public Parameter Weight { get; }

    /// <summary>beta.</summary>
    public Parameter Bias { get; }

    /// <summary>Normalises the last dimension of x.</summary>
    public Tensor Forward(Tensor x) => Ops.LayerNorm(x, Weight, Bias, Eps);
}

/// <summary>A lookup table of embeddings.</summary>
public sealed class Embedding : Module
{
    /// <summary>Creates a table of <paramref name="count"/> vectors of <paramref name="dim"/> values, normal(0, 0.02).</summary>
    public Embedding(IBackend backend, Random rng, int count, int dim)
        : base(backend) => Weight = AddParameter("weight", new Shape(count, dim), () => Init.Normal(rng, (long)count * dim, 0.02f));

    /// <summary>[count, dim].</summary>
    public Parameter Weight { get; }

    /// <summary>Rows for <paramref name="ids"/>: [ids.Length, dim].</summary>
    public Tensor Forward(ReadOnlySpan<int> ids) => Ops.Embedding(ids, Weight);
}
