using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.NN;

namespace Mobius.Model.Layers;

/// <summary>
/// A small text encoder: token and learned position embeddings, pre-norm transformer blocks, final
/// layer norm. Trained with the spatial UNet in stage 1, frozen in stage 2.
/// </summary>
public sealed class TextEncoder : Module
{
    private readonly int _tokens;
    private readonly int _width;
    private readonly TransformerBlock[] _blocks;

    /// <summary>Creates the encoder for a vocabulary of <paramref name="vocabulary"/> tokens.</summary>
    public TextEncoder(IBackend backend, Random rng, int vocabulary, int tokens, int width, int layers, int heads)
        : base(backend)
    {
        _tokens = tokens;
        _width = width;
        TokenEmbedding = AddModule("token_embedding", new Embedding(backend, rng, vocabulary, width));
        PositionEmbedding = AddParameter("position_embedding", new Shape(tokens * width), () => Init.Normal(rng, tokens * width, 0.01f));
        _blocks = new TransformerBlock[layers];
        for (int i = 0; i < layers; i++)
        {
            _blocks[i] = AddModule($"layer{i}", new TransformerBlock(backend, rng, width, heads, 0, 4, temporal: false));
        }

        FinalNorm = AddModule("final_norm", new LayerNorm(backend, width));
    }

    /// <summary>Token table [vocabulary, width].</summary>
    public Embedding TokenEmbedding { get; }

    /// <summary>Learned positions [tokens * width].</summary>
    public Parameter PositionEmbedding { get; }

    /// <summary>Final norm.</summary>
    public LayerNorm FinalNorm { get; }

    /// <summary>Encodes <paramref name="ids"/> ([batch * tokens], padded) into a context [batch, tokens, width].</summary>
    public Tensor Forward(ReadOnlySpan<int> ids)
    {
        using var kind = Tape.Kind(nameof(TextEncoder));
        if (ids.Length % _tokens != 0)
        {
            throw new ArgumentException($"text encoder: {ids.Length} ids are not whole captions of {_tokens} tokens.");
        }

        int batch = ids.Length / _tokens;
        var h = TokenEmbedding.Forward(ids)
            .Then(t => Ops.Reshape(t, batch, _tokens * _width))
            .Then(t => Ops.AddBias(t, PositionEmbedding, 1))
            .Then(t => Ops.Reshape(t, batch, _tokens, _width));
        foreach (var block in _blocks)
        {
            h = h.Then(t => block.Forward(t, null));
        }

        return h.Then(FinalNorm.Forward);
    }
}
