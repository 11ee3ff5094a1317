using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;

namespace Mobius.Model.Layers;

/// <summary>Multi-head attention with its projections: self-attention, or cross-attention to a context.</summary>
public sealed class AttentionLayer : Module
{
    private readonly int _heads;
    private readonly bool _temporal;

    /// <summary>Creates the layer; <paramref name="temporal"/> selects the frames-of-a-pixel kernel.</summary>
    public AttentionLayer(IBackend backend, Random rng, int channels, int contextChannels, int heads, bool temporal)
        : base(backend)
    {
        _heads = heads;
        _temporal = temporal;
        Q = AddModule("to_q", new Linear(backend, rng, channels, channels, bias: false));
        K = AddModule("to_k", new Linear(backend, rng, contextChannels, channels, bias: false));
        V = AddModule("to_v", new Linear(backend, rng, contextChannels, channels, bias: false));
        Out = AddModule("to_out", new Linear(backend, rng, channels, channels));
    }

    /// <summary>Query projection.</summary>
    public Linear Q { get; }

    /// <summary>Key projection.</summary>
    public Linear K { get; }

    /// <summary>Value projection.</summary>
    public Linear V { get; }

    /// <summary>Output projection.</summary>
    public Linear Out { get; }

    /// <summary>x [N, L, C]; context [N, Lk, Ck] or null for self-attention.</summary>
    public Tensor Forward(Tensor x, Tensor? context = null)
    {
        var kv = context ?? x;
        using var q = Q.Forward(x);
        using var k = K.Forward(kv);
        using var v = V.Forward(kv);
        using var o = _temporal ? Ops.TemporalAttention(q, k, v, _heads) : Ops.Attention(q, k, v, _heads);
        return Out.Forward(o);
    }
}

/// <summary>GEGLU feed-forward: Linear(C, 2 m C), GEGLU, Linear(m C, C).</summary>
public sealed class FeedForward : Module
{
    /// <summary>Creates the feed-forward with expansion <paramref name="mult"/>.</summary>
    public FeedForward(IBackend backend, Random rng, int channels, int mult)
        : base(backend)
    {
        In = AddModule("proj_in", new Linear(backend, rng, channels, 2 * mult * channels));
        Out = AddModule("proj_out", new Linear(backend, rng, mult * channels, channels));
    }

    /// <summary>Expanding projection (both GEGLU halves).</summary>
    public Linear In { get; }

    /// <summary>Contracting projection.</summary>
    public Linear Out { get; }

    /// <summary>Applies the feed-forward to x [..., C].</summary>
    public Tensor Forward(Tensor x) => In.Forward(x).Then(Ops.Geglu).Then(Out.Forward);
}

/// <summary>A pre-norm transformer block: self-attention, optional cross-attention, feed-forward, each residual.</summary>
public sealed class TransformerBlock : Module
{
    /// <summary>Creates the block; <paramref name="contextChannels"/> = 0 means no cross-attention.</summary>
    public TransformerBlock(IBackend backend, Random rng, int channels, int heads, int contextChannels, int ffMult, bool temporal)
        : base(backend)
    {
        Norm1 = AddModule("norm1", new LayerNorm(backend, channels));
        SelfAttention = AddModule("attn1", new AttentionLayer(backend, rng, channels, channels, heads, temporal));
        if (contextChannels > 0)
        {
            Norm2 = AddModule("norm2", new LayerNorm(backend, channels));
            CrossAttention = AddModule("attn2", new AttentionLayer(backend, rng, channels, contextChannels, heads, temporal: false));
        }

        Norm3 = AddModule("norm3", new LayerNorm(backend, channels));
        Ff = AddModule("ff", new FeedForward(backend, rng, channels, ffMult));
    }

    /// <summary>Norm before self-attention.</summary>
    public LayerNorm Norm1 { get; }

    /// <summary>Self-attention.</summary>
    public AttentionLayer SelfAttention { get; }

    /// <summary>Norm before cross-attention (null without).</summary>
    public LayerNorm? Norm2 { get; }

    /// <summary>Cross-attention to the text context (null without).</summary>
    public AttentionLayer? CrossAttention { get; }

    /// <summary>Norm before the feed-forward.</summary>
    public LayerNorm Norm3 { get; }

    /// <summary>Feed-forward.</summary>
    public FeedForward Ff { get; }

    /// <summary>x [N, L, C] (owned by the caller); context [N, Lk, Ck] when the block has cross-attention.</summary>
    public Tensor Forward(Tensor x, Tensor? context)
    {
        var h = Residual(x, Norm1, n => SelfAttention.Forward(n));
        if (CrossAttention is not null)
        {
            h = h.Then(hh => Residual(hh, Norm2!, n => CrossAttention.Forward(n, context)));
        }

        return h.Then(hh => Residual(hh, Norm3, Ff.Forward));
    }

    private static Tensor Residual(Tensor x, LayerNorm norm, Func<Tensor, Tensor> f)
    {
        using var branch = norm.Forward(x).Then(f);
        return Ops.Add(x, branch);
    }
}
