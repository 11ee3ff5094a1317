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
    public void AttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv)
    {
        var sh = s;
        bool recompute = o is null || lse is null;
        float* pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), po = recompute ? null : Ptr(o!), pl = recompute ? null : Ptr(lse!);
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

                // P = exp(scale q k^T - lse), or the softmax of the scores when lse is recomputed
                Sgemm.Run(this, false, true, rows, sh.Lk, sh.HeadDim, sh.Scale, qi, w, kh, w, 0f, p, sh.Lk, parallel: false);
                for (int r = 0; r < rows; r++)
                {
                    var row = new Span<float>(p + (long)r * sh.Lk, sh.Lk);
                    if (recompute)
                    {
                        TensorPrimitives.SoftMax(row, row);
                        continue;
                    }

                    TensorPrimitives.Subtract(row, lseRow[r], row);
                    TensorPrimitives.Exp(row, row);
                }

                // dv += P^T dO ; dP = dO v^T
                Sgemm.Run(this, true, false, sh.Lk, sh.HeadDim, rows, 1f, p, sh.Lk, doi, w, beta, dvh, w, parallel: false);
                Sgemm.Run(this, false, true, rows, sh.Lk, sh.HeadDim, 1f, doi, w, vh, w, 0f, dp, sh.Lk, parallel: false);

                // dS = P (dP - rowdot(dO, o)), or P (dP - rowdot(P, dP)) when recomputed, written over dP
                for (int r = 0; r < rows; r++)
                {
                    float d = recompute
                        ? TensorPrimitives.Dot(new ReadOnlySpan<float>(p + (long)r * sh.Lk, sh.Lk), new ReadOnlySpan<float>(dp + (long)r * sh.Lk, sh.Lk))
                        : TensorPrimitives.Dot(new ReadOnlySpan<float>(doi + (long)r * w, sh.HeadDim), new ReadOnlySpan<float>(oi + (long)r * w, sh.HeadDim));
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

    // ---- short sequences (the frames of a pixel): direct loops ---------------------------------------
    //
    // With F <= 32 keys per query a GEMM call per (n, head) costs more than the arithmetic; these loops
    // keep one query row's scores on the stack and work on head-dim vectors directly.

    /// <inheritdoc />
    public void TemporalAttentionForward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor o, Tensor lse)
    {
        var sh = s;
        float* pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), po = Ptr(o), pl = Ptr(lse);
        int w = sh.Width, d = sh.HeadDim, f = sh.Lk;
        For(sh.N * sh.Heads, 4.0 * sh.Lq * f * d, nh =>
        {
            int n = nh / sh.Heads, h = nh % sh.Heads;
            Span<float> p = stackalloc float[f];
            for (int i = 0; i < sh.Lq; i++)
            {
                var qi = Row(pq, n, sh.Lq, i, w, h, d);
                float max = float.NegativeInfinity;
                for (int j = 0; j < f; j++)
                {
                    p[j] = sh.Scale * TensorPrimitives.Dot(qi, Row(pk, n, f, j, w, h, d));
                    max = MathF.Max(max, p[j]);
                }

                float sum = 0;
                for (int j = 0; j < f; j++)
                {
                    p[j] = MathF.Exp(p[j] - max);
                    sum += p[j];
                }

                pl[((long)n * sh.Heads + h) * sh.Lq + i] = max + MathF.Log(sum);
                var oi = RowW(po, n, sh.Lq, i, w, h, d);
                oi.Clear();
                for (int j = 0; j < f; j++)
                {
                    TensorPrimitives.MultiplyAdd(Row(pv, n, f, j, w, h, d), p[j] / sum, oi, oi);
                }
            }
        });
    }

    /// <inheritdoc />
    public void TemporalAttentionBackward(in AttentionShape s, Tensor q, Tensor k, Tensor v, Tensor? o, Tensor? lse, Tensor dO,
        Tensor dq, Tensor dk, Tensor dv)
    {
        var sh = s;
        bool recompute = o is null || lse is null;
        float* pq = Ptr(q), pk = Ptr(k), pv = Ptr(v), po = recompute ? null : Ptr(o!), pl = recompute ? null : Ptr(lse!), pdo = Ptr(dO);
        float* pdq = Ptr(dq), pdk = Ptr(dk), pdv = Ptr(dv);
        int w = sh.Width, d = sh.HeadDim, f = sh.Lk;
        For(sh.N * sh.Heads, 10.0 * sh.Lq * f * d, nh =>
        {
            int n = nh / sh.Heads, h = nh % sh.Heads;
            Span<float> p = stackalloc float[f];
            Span<float> dp = stackalloc float[f];
            for (int j = 0; j < f; j++)
            {
                RowW(pdk, n, f, j, w, h, d).Clear();
                RowW(pdv, n, f, j, w, h, d).Clear();
            }

            for (int i = 0; i < sh.Lq; i++)
            {
                var qi = Row(pq, n, sh.Lq, i, w, h, d);
                var doi = Row(pdo, n, sh.Lq, i, w, h, d);
                for (int j = 0; j < f; j++)
                {
                    p[j] = sh.Scale * TensorPrimitives.Dot(qi, Row(pk, n, f, j, w, h, d));
                    dp[j] = TensorPrimitives.Dot(doi, Row(pv, n, f, j, w, h, d));
                }

                float di;
                if (recompute)
                {
                    // The probabilities from these q and k alone, and Drow = sum_j P dP: consistent with each other.
                    TensorPrimitives.SoftMax(p, p);
                    di = TensorPrimitives.Dot(p, dp);
                }
                else
                {
                    float l = pl[((long)n * sh.Heads + h) * sh.Lq + i];
                    for (int j = 0; j < f; j++)
                    {
                        p[j] = MathF.Exp(p[j] - l);
                    }

                    di = TensorPrimitives.Dot(doi, Row(po, n, sh.Lq, i, w, h, d));
                }

                var dqi = RowW(pdq, n, sh.Lq, i, w, h, d);
                dqi.Clear();
                for (int j = 0; j < f; j++)
                {
                    var kj = Row(pk, n, f, j, w, h, d);
                    float pij = p[j];
                    float ds = pij * (dp[j] - di) * sh.Scale;
                    var dvj = RowW(pdv, n, f, j, w, h, d);
                    TensorPrimitives.MultiplyAdd(doi, pij, dvj, dvj);
                    TensorPrimitives.MultiplyAdd(kj, ds, dqi, dqi);
                    var dkj = RowW(pdk, n, f, j, w, h, d);
                    TensorPrimitives.MultiplyAdd(qi, ds, dkj, dkj);
                }
            }
        });
    }

    /// <summary>Head h of row i of item n in a [N, L, H*D] tensor.</summary>
    private static ReadOnlySpan<float> Row(float* p, int n, int l, int i, int w, int h, int d) => new(p + ((long)n * l + i) * w + h * d, d);

    private static Span<float> RowW(float* p, int n, int l, int i, int w, int h, int d) => new(p + ((long)n * l + i) * w + h * d, d);
}
