using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;

namespace Mobius.Model.Layers;

/// <summary>
/// TemporalConv (ModelScope's TemporalConvLayer): 4 x [GN over the clip + SiLU, conv with kernel (3,1,1)
/// along frames], the last conv zero-initialised so the layer starts as the identity; residual.
/// </summary>
public sealed class TemporalConvLayer : Module
{
    private readonly (GroupNorm Norm, Parameter Weight, Parameter Bias)[] _stages;

    /// <summary>Creates the layer.</summary>
    public TemporalConvLayer(IBackend backend, Random rng, int channels, int groups)
        : base(backend)
    {
        _stages = new (GroupNorm, Parameter, Parameter)[4];
        long fanIn = channels * 3L;
        for (int i = 0; i < 4; i++)
        {
            bool last = i == 3;
            var norm = AddModule($"norm{i + 1}", new GroupNorm(backend, groups, channels));
            var w = AddParameter($"conv{i + 1}_weight", new Shape(channels, channels, 3), () => last ? new float[channels * fanIn] : Init.FanIn(rng, channels * fanIn, fanIn));
            var b = AddParameter($"conv{i + 1}_bias", new Shape(channels), () => last ? new float[channels] : Init.FanIn(rng, channels, fanIn));
            _stages[i] = (norm, w, b);
        }
    }

    /// <summary>x [B*F, C, H, W] with <paramref name="frames"/> consecutive frames per clip.</summary>
    public Tensor Forward(Tensor x, int frames)
    {
        using var kind = Tape.Kind("TemporalConv");
        Tensor? h = null;
        foreach (var (norm, w, b) in _stages)
        {
            var input = h ?? x;
            var next = norm.Forward(input, frames, silu: true).Then(t => Ops.TemporalConv(t, w, b, frames));
            h?.Dispose();
            h = next;
        }

        return h!.Then(t => Ops.Add(x, t));
    }
}

/// <summary>
/// Temporal transformer: GN over the clip, to pixel-major tokens [B*H*W, F, C], proj_in, + sinusoidal
/// frame position, a transformer block whose self-attention runs over the frames of each pixel,
/// proj_out (zero-initialised: the layer starts as the identity), back to [B*F, C, H, W], residual.
/// </summary>
public sealed class TemporalTransformer : Module
{
    private readonly Dictionary<int, Tensor> _positions = new();
    private readonly int _channels;

    /// <summary>Creates the transformer.</summary>
    public TemporalTransformer(IBackend backend, Random rng, int channels, int headDim, int groups, int ffMult)
        : base(backend)
    {
        _channels = channels;
        Norm = AddModule("norm", new GroupNorm(backend, groups, channels));
        ProjIn = AddModule("proj_in", new Linear(backend, rng, channels, channels));
        Block = AddModule("block", new TransformerBlock(backend, rng, channels, channels / headDim, 0, ffMult, temporal: true));
        ProjOut = AddModule("proj_out", new Linear(backend, rng, channels, channels, zeroInit: true));
    }

    /// <summary>Input norm (statistics over the whole clip).</summary>
    public GroupNorm Norm { get; }

    /// <summary>Input projection.</summary>
    public Linear ProjIn { get; }

    /// <summary>The transformer block (temporal self-attention and feed-forward).</summary>
    public TransformerBlock Block { get; }

    /// <summary>Zero-initialised output projection.</summary>
    public Linear ProjOut { get; }

    /// <summary>x [B*F, C, H, W] with <paramref name="frames"/> consecutive frames per clip.</summary>
    public Tensor Forward(Tensor x, int frames)
    {
        using var kind = Tape.Kind(nameof(TemporalTransformer));
        int bf = x.Dim(0), c = x.Dim(1), hh = x.Dim(2), ww = x.Dim(3), b = bf / frames, s = hh * ww;
        var pe = Positions(frames);

        // [B*F, C, H, W] = [B, F*C, S] -> [B, S, F*C] = [B*S, F, C] (pixel-major)
        var h = Norm.Forward(x, frames)
            .Then(t => Ops.Reshape(t, b, frames * c, s))
            .Then(Ops.Transpose)
            .Then(t => Ops.Reshape(t, b * s, frames, c))
            .Then(ProjIn.Forward)
            .Then(t => Ops.Reshape(t, b * s, frames * c))
            .Then(t => Ops.AddBias(t, pe, 1))
            .Then(t => Ops.Reshape(t, b * s, frames, c))
            .Then(t => Block.Forward(t, null))
            .Then(ProjOut.Forward)
            .Then(t => Ops.Reshape(t, b, s, frames * c))
            .Then(Ops.Transpose)
            .Then(t => Ops.Reshape(t, bf, c, hh, ww));
        return h.Then(t => Ops.Add(x, t));
    }

    private Tensor Positions(int frames)
    {
        if (!_positions.TryGetValue(frames, out var pe))
        {
            var positions = Enumerable.Range(0, frames).ToArray();
            pe = AddBuffer(new Shape(frames * _channels), TimestepEmbedding.Sinusoid(positions, _channels));
            _positions[frames] = pe;
        }

        return pe;
    }
}
