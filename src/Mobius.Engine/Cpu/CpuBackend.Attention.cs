using System.Numerics.Tensors;

namespace Mobius.Engine.Cpu;

/// <summary>
/// Attention in blocks of query rows: only a block's scores (QueryBlock x Lk) exist at a time, in
/// per-thread workspace, so memory stays O(L) like the fused GPU kernels; backward recomputes the
/// probabilities from the saved log-sum-exp.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    private const int QueryBlock = 64;

    /// <inheritdoc />
    public void AttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
    {
        var sh = s;
        float* pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), po = Ptr(o), pl = Ptr(lse);
        int qb = Math.Min(QueryBlock, sh.Lq);
        using var ws = Workspace((long)Threads * qb * sh.Lk);
        float* pws = Ptr(ws);
        int w = sh.Width;
        PerImage(sh.N * sh.Heads, 4.0 * sh.Lq * sh.Lk * sh.HeadDim, (nh, slot) =>
        {
            int n = nh / sh.Heads, h = nh % sh.Heads;
            float* scores = pws + (long)slot * qb * sh.Lk;
            float* kh = pk + (long)n * sh.Lk * w + h * sh.HeadDim;
            float* vh = pv + (long)n * sh.Lk * w + h * sh.HeadDim;
            for (int i0 = 0; i0 < sh.Lq; i0 += qb)
            {
                int rows = Math.Min(qb, sh.Lq - i0);
                float* qi = pq + ((long)n * sh.Lq + i0) * w + h * sh.HeadDim;
                float* oi = po + ((long)n * sh.Lq + i0) * w + h * sh.HeadDim;
                Sgemm.Run(this, false, true, rows, sh.Lk, sh.HeadDim, sh.Scale, qi, w, kh, w, 0f, scores, sh.Lk, parallel: false);
                float* lseRow = pl + ((long)n * sh.Heads + h) * sh.Lq + i0;
                for (int r = 0; r < rows; r++)
                {
                    var row = new Span<float>(scores + (long)r * sh.Lk, sh.Lk);
                    float max = TensorPrimitives.Max(row);
                    TensorPrimitives.Subtract(row, max, row);
                    TensorPrimitives.Exp(row, row);
                    float sum = TensorPrimitives.Sum(row);
                    TensorPrimitives.Multiply(row, 1f / sum, row);
                    lseRow[r] = max + MathF.Log(sum);
                }

                Sgemm.Run(this, false, false, rows, sh.HeadDim, sh.Lk, 1f, scores, sh.Lk, vh, w, 0f, oi, w, parallel: false);
            }
        });
    }

    /// <inheritdoc />
    public void AttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv)
    {
        var sh = s;
        float* pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), po = Ptr(o), pl = Ptr(lse);
        float* pdo = Ptr(dO), pdq = Ptr(dq), pdk = Ptr(dk), pdv = Ptr(dv);
        int qb = Math.Min(QueryBlock, sh.Lq);
        using var ws = Workspace(2L * Threads * qb * sh.Lk);
        float* pws = Ptr(ws);
        int w = sh.Width;
        PerImage(sh.N * sh.Heads, 10.0 * sh.Lq * sh.Lk * sh.HeadDim, (nh, slot) =>
        {
            int n = nh / sh.Heads, h = nh % sh.Heads;
            float* p = pws + (long)slot * 2 * qb * sh.Lk;
            float* dp = p + (long)qb * sh.Lk;
            long kvOff = (long)n * sh.Lk * w + h * sh.HeadDim;
            float* kh = pk + kvOff, vh = pv + kvOff, dkh = pdk + kvOff, dvh = pdv + kvOff;
            for (int i0 = 0; i0 < sh.Lq; i0 += qb)
            {
                int rows = Math.Min(qb, sh.Lq - i0);
                long qOff = ((long)n * sh.Lq + i0) * w + h * sh.HeadDim;
                float* qi = pq + qOff, oi = po + qOff, doi = pdo + qOff, dqi = pdq + qOff;
                float* lseRow = pl + ((long)n * sh.Heads + h) * sh.Lq + i0;
                float beta = i0 == 0 ? 0f : 1f;

                // P = exp(scale q k^T - lse)
                Sgemm.Run(this, false, true, rows, sh.Lk, sh.HeadDim, sh.Scale, qi, w, kh, w, 0f, p, sh.Lk, parallel: false);
                for (int r = 0; r < rows; r++)
                {
                    var row = new Span<float>(p + (long)r * sh.Lk, sh.Lk);
                    TensorPrimitives.Subtract(row, lseRow[r], row);
                    TensorPrimitives.Exp(row, row);
                }

                // dv += P^T dO ; dP = dO v^T
                Sgemm.Run(this, true, false, sh.Lk, sh.HeadDim, rows, 1f, p, sh.Lk, doi, w, beta, dvh, w, parallel: false);
                Sgemm.Run(this, false, true, rows, sh.Lk, sh.HeadDim, 1f, doi, w, vh, w, 0f, dp, sh.Lk, parallel: false);

                // dS = P (dP - rowdot(dO, o)), written over dP
                for (int r = 0; r < rows; r++)
                {
                    float d = TensorPrimitives.Dot(new ReadOnlySpan<float>(doi + (long)r * w, sh.HeadDim), new ReadOnlySpan<float>(oi + (long)r * w, sh.HeadDim));
                    var dpr = new Span<float>(dp + (long)r * sh.Lk, sh.Lk);
                    TensorPrimitives.Subtract(dpr, d, dpr);
                    TensorPrimitives.Multiply(dpr, new ReadOnlySpan<float>(p + (long)r * sh.Lk, sh.Lk), dpr);
                }

                // dq = scale dS k ; dk += scale dS^T q
                Sgemm.Run(this, false, false, rows, sh.HeadDim, sh.Lk, sh.Scale, dp, sh.Lk, kh, w, 0f, dqi, w, parallel: false);
                Sgemm.Run(this, true, false, sh.Lk, sh.HeadDim, rows, sh.Scale, dp, sh.Lk, qi, w, beta, dkh, w, parallel: false);
            }
        });
    }

    /// <inheritdoc />
    public void TemporalAttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
        => AttentionForward(s, q, k, v, o, lse);

    /// <inheritdoc />
    public void TemporalAttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv)
        => AttentionBackward(s, q, k, v, o, lse, dO, dq, dk, dv);
}
