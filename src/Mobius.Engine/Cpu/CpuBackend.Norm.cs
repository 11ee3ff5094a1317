using System.Buffers;
using System.Numerics.Tensors;

namespace Mobius.Engine.Cpu;

/// <summary>
/// Group norm (with fused SiLU) and layer norm. Statistics are accumulated in double. Row temporaries come from
/// the shared array pool: a training step runs these a hundred times and more, and fresh arrays made them the
/// engine's largest source of managed garbage.
/// </summary>
public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void GroupNormForward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd, bool silu)
    {
        var sh = s;
        float* px = Ptr(x);
        float* py = Ptr(y);
        float* pg = Ptr(gamma);
        float* pb = Ptr(beta);
        float* pm = Ptr(mean);
        float* pr = Ptr(rstd);
        int cpg = sh.C / sh.Groups;
        For(sh.N * sh.Groups, sh.GroupSize * 4.0, ng =>
        {
            int n = ng / sh.Groups;
            int g = ng % sh.Groups;
            // Two passes (mean, then squared deviations): E[x^2] - mean^2 cancels badly when the
            // spread is small next to the mean.
            double sum = 0, sq = 0;
            int run = cpg * sh.S;
            for (int t = 0; t < sh.T; t++)
            {
                sum += TensorPrimitives.Sum(new ReadOnlySpan<float>(px + (((long)n * sh.T + t) * sh.C + g * cpg) * sh.S, run));
            }

            double mu = sum / sh.GroupSize;
            int chunk = Math.Min(run, 4096);
            float[] pooled = ArrayPool<float>.Shared.Rent(chunk);
            var dev = pooled.AsSpan(0, chunk);
            for (int t = 0; t < sh.T; t++)
            {
                float* start = px + (((long)n * sh.T + t) * sh.C + g * cpg) * sh.S;
                for (int i = 0; i < run; i += chunk)
                {
                    int len = Math.Min(chunk, run - i);
                    TensorPrimitives.Subtract(new ReadOnlySpan<float>(start + i, len), (float)mu, dev[..len]);
                    sq += TensorPrimitives.SumOfSquares(dev[..len]);
                }
            }

            ArrayPool<float>.Shared.Return(pooled);

            double var = sq / sh.GroupSize;
            float m = (float)mu;
            float r = (float)(1.0 / Math.Sqrt(var + sh.Eps));
            pm[ng] = m;
            pr[ng] = r;
            for (int t = 0; t < sh.T; t++)
            {
                for (int cc = 0; cc < cpg; cc++)
                {
                    int c = g * cpg + cc;
                    long off = (((long)n * sh.T + t) * sh.C + c) * sh.S;
                    var ys = new Span<float>(py + off, sh.S);

                    // y = x * (r*gamma) + (beta - m*r*gamma)
                    float a = r * pg[c];
                    TensorPrimitives.Multiply(new ReadOnlySpan<float>(px + off, sh.S), a, ys);
                    TensorPrimitives.Add(ys, pb[c] - m * a, ys);
                }

                if (silu)
                {
                    // The group's channels of one frame lie side by side: one SiLU over all of them.
                    var ys = new Span<float>(py + (((long)n * sh.T + t) * sh.C + g * cpg) * sh.S, run);
                    Activations.Silu(ys, ys);
                }
            }
        });
    }

    /// <summary>
    /// Most floats (xhat and the gradient of every element of one group) the group norm's backward keeps between its
    /// two passes instead of computing them twice: 256 KiB, a quarter of a core's L2. Either way gives the same bits
    /// (the tests set 0 to compare).
    /// </summary>
    internal long GroupNormCacheFloats { get; set; } = 64 * 1024;

    /// <inheritdoc />
    public void GroupNormBackward(in GroupNormShape s, Tensor x, Tensor gamma, Tensor beta, Tensor mean, Tensor rstd, Tensor dy,
        Tensor? dx, Tensor? dgamma, Tensor? dbeta, bool silu, Tensor? dxAddend = null)
    {
        var sh = s;
        float* padd = dx is null || dxAddend is null ? null : Ptr(dxAddend);
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        float* pg = Ptr(gamma);
        float* pb = Ptr(beta);
        float* pm = Ptr(mean);
        float* pr = Ptr(rstd);
        float* pdx = dx is null ? null : Ptr(dx);
        int cpg = sh.C / sh.Groups;

        // Per (n, c) partial sums of g and g*xhat (g = dy, or dy*silu'(pre) when fused); reduced over n below.
        using var partial = Workspace(2L * sh.N * sh.C);
        float* pdb = Ptr(partial);
        float* pdgam = pdb + (long)sh.N * sh.C;
        // Pass 1 computes xhat and g for every (channel, frame) of the group; pass 2 reuses them when they fit in a
        // cache-sized buffer (the sigmoid of the fused SiLU is the costly part), or computes them again.
        long cached = 2L * cpg * sh.T * sh.S;
        bool keep = cached <= GroupNormCacheFloats;
        For(sh.N * sh.Groups, sh.GroupSize * 10.0, ng =>
        {
            int n = ng / sh.Groups;
            int gi = ng % sh.Groups;
            float m = pm[ng];
            float r = pr[ng];
            float[] pooled = ArrayPool<float>.Shared.Rent(keep ? (int)cached : 2 * sh.S);
            Span<float> Xhat(int cc, int t) => pooled.AsSpan(keep ? (cc * sh.T + t) * 2 * sh.S : 0, sh.S);
            Span<float> Grad(int cc, int t) => pooled.AsSpan((keep ? (cc * sh.T + t) * 2 * sh.S : 0) + sh.S, sh.S);
            double sumGG = 0, sumGGX = 0;

            // Pass 1: channel partials and the two group sums dx needs.
            for (int cc = 0; cc < cpg; cc++)
            {
                int c = gi * cpg + cc;
                double cb = 0, cgm = 0;
                for (int t = 0; t < sh.T; t++)
                {
                    long off = (((long)n * sh.T + t) * sh.C + c) * sh.S;
                    var xh = Xhat(cc, t);
                    var gg = Grad(cc, t);
                    LoadGrad(px + off, pdy + off, m, r, pg[c], pb[c], silu, xh, gg);
                    float sg = TensorPrimitives.Sum(gg);
                    float sgx = TensorPrimitives.Dot(gg, xh);
                    cb += sg;
                    cgm += sgx;
                }

                pdb[(long)n * sh.C + c] = (float)cb;
                pdgam[(long)n * sh.C + c] = (float)cgm;
                sumGG += cb * pg[c];
                sumGGX += cgm * pg[c];
            }

            if (pdx == null)
            {
                ArrayPool<float>.Shared.Return(pooled);
                return;
            }

            // dx = r * (g*gamma - mean(g*gamma) - xhat * mean(g*gamma*xhat))
            float meanA = (float)(sumGG / sh.GroupSize);
            float meanB = (float)(sumGGX / sh.GroupSize);
            for (int cc = 0; cc < cpg; cc++)
            {
                int c = gi * cpg + cc;
                for (int t = 0; t < sh.T; t++)
                {
                    long off = (((long)n * sh.T + t) * sh.C + c) * sh.S;
                    var xh = Xhat(cc, t);
                    var gg = Grad(cc, t);
                    if (!keep)
                    {
                        LoadGrad(px + off, pdy + off, m, r, pg[c], pb[c], silu, xh, gg);
                    }

                    var d = new Span<float>(pdx + off, sh.S);
                    TensorPrimitives.Multiply(gg, pg[c], d);
                    TensorPrimitives.Subtract(d, meanA, d);
                    TensorPrimitives.MultiplyAdd(xh, -meanB, d, d);
                    TensorPrimitives.Multiply(d, r, d);
                    if (padd != null)
                    {
                        TensorPrimitives.Add(d, new ReadOnlySpan<float>(padd + off, sh.S), d);
                    }
                }
            }

            ArrayPool<float>.Shared.Return(pooled);
        });

        ReduceOverOuter(pdb, sh.N, sh.C, dbeta);
        ReduceOverOuter(pdgam, sh.N, sh.C, dgamma);
    }

    /// <summary>xhat = (x - m) r and g = dy, or g = dy * silu'(xhat*gamma + beta) when fused.</summary>
    private static void LoadGrad(float* x, float* dy, float m, float r, float gamma, float beta, bool silu, Span<float> xhat, Span<float> g)
    {
        var xs = new ReadOnlySpan<float>(x, xhat.Length);
        var dys = new ReadOnlySpan<float>(dy, g.Length);
        TensorPrimitives.Subtract(xs, m, xhat);
        TensorPrimitives.Multiply(xhat, r, xhat);
        if (!silu)
        {
            dys.CopyTo(g);
            return;
        }

        TensorPrimitives.Multiply(xhat, gamma, g);
        TensorPrimitives.Add(g, beta, g);
        Activations.SiluBackward(g, dys, g);
    }

    private static void ReduceOverOuter(float* partial, int outer, int channels, Tensor? result)
    {
        if (result is null)
        {
            return;
        }

        float* pr = Ptr(result);
        for (int c = 0; c < channels; c++)
        {
            double acc = 0;
            for (int o = 0; o < outer; o++)
            {
                acc += partial[(long)o * channels + c];
            }

            pr[c] = (float)acc;
        }
    }

    /// <inheritdoc />
    public void LayerNormForward(int rows, int cols, float eps, Tensor x, Tensor gamma, Tensor beta, Tensor y, Tensor mean, Tensor rstd)
    {
        float* px = Ptr(x);
        float* py = Ptr(y);
        float* pg = Ptr(gamma);
        float* pb = Ptr(beta);
        float* pm = Ptr(mean);
        float* pr = Ptr(rstd);
        For(rows, cols * 6.0, i =>
        {
            var xs = new ReadOnlySpan<float>(px + (long)i * cols, cols);
            var ys = new Span<float>(py + (long)i * cols, cols);
            // Two passes, as in group norm: deviations first, then their mean square.
            double mu = TensorPrimitives.Sum(xs) / (double)cols;
            float m = (float)mu;
            TensorPrimitives.Subtract(xs, m, ys);
            double var = TensorPrimitives.SumOfSquares(ys) / (double)cols;
            float r = (float)(1.0 / Math.Sqrt(var + eps));
            pm[i] = m;
            pr[i] = r;
            TensorPrimitives.Multiply(ys, r, ys);
            TensorPrimitives.FusedMultiplyAdd(ys, new ReadOnlySpan<float>(pg, cols), new ReadOnlySpan<float>(pb, cols), ys);
        });
    }

    /// <inheritdoc />
    public void LayerNormBackward(int rows, int cols, Tensor x, Tensor gamma, Tensor mean, Tensor rstd, Tensor dy,
        Tensor? dx, Tensor? dgamma, Tensor? dbeta, Tensor? dxAddend = null)
    {
        float* px = Ptr(x);
        float* padd = dx is null || dxAddend is null ? null : Ptr(dxAddend);
        float* pdy = Ptr(dy);
        float* pg = Ptr(gamma);
        float* pm = Ptr(mean);
        float* pr = Ptr(rstd);
        float* pdx = dx is null ? null : Ptr(dx);
        using var partial = Workspace(2L * Threads * cols);
        float* pp = Ptr(partial);
        int parts = ForRanges(rows, cols * 10.0, (t, start, end) =>
        {
            var db = new Span<float>(pp + (long)t * 2 * cols, cols);
            var dgm = new Span<float>(pp + ((long)t * 2 + 1) * cols, cols);
            db.Clear();
            dgm.Clear();
            var xh = new float[cols];
            var gg = new float[cols];
            var gamma = new ReadOnlySpan<float>(pg, cols);
            for (long i = start; i < end; i++)
            {
                var xs = new ReadOnlySpan<float>(px + i * cols, cols);
                var dys = new ReadOnlySpan<float>(pdy + i * cols, cols);
                TensorPrimitives.Subtract(xs, pm[i], xh);
                TensorPrimitives.Multiply(xh, pr[i], xh);
                TensorPrimitives.Add(db, dys, db);
                TensorPrimitives.FusedMultiplyAdd(dys, xh, dgm, dgm);
                if (pdx == null)
                {
                    continue;
                }

                // dx = r (g*gamma - mean(g*gamma) - xhat mean(g*gamma*xhat))
                TensorPrimitives.Multiply(dys, gamma, gg);
                float meanA = TensorPrimitives.Sum(gg) / cols;
                float meanB = TensorPrimitives.Dot(gg, xh) / cols;
                var d = new Span<float>(pdx + i * cols, cols);
                TensorPrimitives.Subtract(gg, meanA, d);
                TensorPrimitives.MultiplyAdd(xh, -meanB, d, d);
                TensorPrimitives.Multiply(d, pr[i], d);
                if (padd != null)
                {
                    TensorPrimitives.Add(d, new ReadOnlySpan<float>(padd + i * cols, cols), d);
                }
            }
        });

        if (dbeta is not null || dgamma is not null)
        {
            for (int c = 0; c < cols; c++)
            {
                float b = 0, g = 0;
                for (int t = 0; t < parts; t++)
                {
                    b += pp[(long)t * 2 * cols + c];
                    g += pp[((long)t * 2 + 1) * cols + c];
                }

                if (dbeta is not null)
                {
                    Ptr(dbeta)[c] = b;
                }

                if (dgamma is not null)
                {
                    Ptr(dgamma)[c] = g;
                }
            }
        }
    }
}
