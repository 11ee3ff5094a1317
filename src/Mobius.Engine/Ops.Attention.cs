using Mobius.Engine.Autograd;

namespace Mobius.Engine;

/// <summary>Attention ops.</summary>
public static partial class Ops
{
    /// <summary>
    /// Multi-head scaled dot-product attention: q [N, Lq, H*D], k and v [N, Lk, H*D]; returns [N, Lq, H*D].
    /// Backward keeps q, k, v, the output and the log-sum-exp rows, never the Lq x Lk probabilities.
    /// </summary>
    public static Tensor Attention(Tensor q, Tensor k, Tensor v, int heads) => AttentionCore("attention", q, k, v, heads, temporal: false);

    /// <summary>
    /// Self-attention over the frames of every pixel: q, k, v [N, F, H*D] in pixel-major layout
    /// (N = batch x pixels, F at most 32). Same contract as <see cref="Attention"/>, dedicated kernels.
    /// </summary>
    public static Tensor TemporalAttention(Tensor q, Tensor k, Tensor v, int heads)
    {
        Check.That("temporal_attention", q.Dim(1) <= 32, $"at most 32 frames, got {q.Shape}.");
        return AttentionCore("temporal_attention", q, k, v, heads, temporal: true);
    }

    private static Tensor AttentionCore(string op, Tensor q, Tensor k, Tensor v, int heads, bool temporal)
    {
        var backend = Check.Same(op, q, k, v);
        Check.Rank(op, q, 3, "q");
        Check.Rank(op, k, 3, "k");
        Check.SameShape(op, k, v);
        int width = q.Dim(2);
        Check.That(op, heads > 0 && width % heads == 0, $"width {width} of {q.Shape} does not split into {heads} heads.");
        Check.That(op, k.Dim(0) == q.Dim(0) && k.Dim(2) == width, $"q {q.Shape} and k {k.Shape} do not match.");
        Check.That(op, !temporal || q.Dim(1) == k.Dim(1), $"temporal attention is self-attention: q {q.Shape}, k {k.Shape}.");
        int d = width / heads;
        var s = new AttentionShape(q.Dim(0), heads, q.Dim(1), k.Dim(1), d, 1f / MathF.Sqrt(d));
        var o = Tensor.Empty(backend, q.Shape);
        var lse = Tensor.Empty(backend, new Shape(s.N, heads, s.Lq));
        if (temporal)
        {
            backend.TemporalAttentionForward(s, q, k, v, o, lse);
        }
        else
        {
            backend.AttentionForward(s, q, k, v, o, lse);
        }

        var node = Tape.Record(op, q, k, v);
        if (node is not null)
        {
            // Exact: q, k, v, o and the log-sum-exp; backward takes P = exp(scale q k^T - lse) and Drow = rowsum(dO o)
            // for the sum over keys of P (dO v). Kept narrower (bf16, int8 blocks): only q, k and v, rounded, and
            // backward recomputes the softmax from them and takes Drow = rowsum(P dP), so that P, Drow and dS all
            // belong to the rounded q, k, v (rounded o or lse would break the identity by more than dS itself where
            // the values are alike).
            bool narrow = node.NarrowsActivations;
            var sq = node.SaveActivation(q);
            var sk = node.SaveActivation(k);
            var sv = node.SaveActivation(v);
            var so = narrow ? null : node.Save(o);
            var sl = narrow ? null : node.Save(lse);
            node.Finish(o, g =>
            {
                var dq = Tensor.Empty(g.Backend, q.Shape);
                var dk = Tensor.Empty(g.Backend, k.Shape);
                var dv = Tensor.Empty(g.Backend, v.Shape);
                if (temporal)
                {
                    g.Backend.TemporalAttentionBackward(s, sq, sk, sv, so, sl, g, dq, dk, dv);
                }
                else
                {
                    g.Backend.AttentionBackward(s, sq, sk, sv, so, sl, g, dq, dk, dv);
                }

                return [Keep(node, 0, dq), Keep(node, 1, dk), Keep(node, 2, dv)];
            });
        }

        lse.Dispose();
        return o;
    }

    /// <summary>Returns a computed gradient when input i needs it, disposing it otherwise.</summary>
    private static Tensor? Keep(Node node, int i, Tensor grad)
    {
        if (node.NeedsGrad(i))
        {
            return grad;
        }

        grad.Dispose();
        return null;
    }
}
