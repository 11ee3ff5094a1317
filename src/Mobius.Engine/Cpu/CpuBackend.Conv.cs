namespace Mobius.Engine.Cpu;

/// <summary>GEMM and the convolutions, all lowered to <see cref="Sgemm"/>.</summary>
public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void Gemm(in GemmShape s, float alpha, Tensor a, Tensor b, float beta, Tensor c)
    {
        float* pa = Ptr(a);
        float* pb = Ptr(b);
        float* pc = Ptr(c);
        int lda = s.TransA ? s.M : s.K;
        int ldb = s.TransB ? s.K : s.N;
        var g = s;

        // Parallelise over the batch when it can feed every thread, inside each product otherwise.
        if (g.Batch >= Threads)
        {
            For(g.Batch, (double)g.M * g.N * g.K, i =>
                Sgemm.Run(this, g.TransA, g.TransB, g.M, g.N, g.K, alpha, pa + i * g.StrideA, lda, pb + i * g.StrideB, ldb, beta, pc + i * g.StrideC, g.N, parallel: false));
        }
        else
        {
            for (int i = 0; i < g.Batch; i++)
            {
                Sgemm.Run(this, g.TransA, g.TransB, g.M, g.N, g.K, alpha, pa + i * g.StrideA, lda, pb + i * g.StrideB, ldb, beta, pc + i * g.StrideC, g.N, parallel: true);
            }
        }
    }

    // ---- conv2d: im2col + GEMM, one image per task ------------------------------------------------

    /// <inheritdoc />
    public void Conv2dForward(in Conv2dShape s, Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        var sh = s;
        float* px = Ptr(x);
        float* pw = Ptr(w);
        float* py = Ptr(y);
        float* pbias = bias is null ? null : Ptr(bias);
        int outHw = sh.OutH * sh.OutW;
        int kdim = sh.Cin * sh.Kernel * sh.Kernel;
        bool direct = sh.Kernel == 1 && sh.Stride == 1 && sh.Pad == 0;
        using var ws = direct ? null : Workspace((long)Threads * kdim * outHw);
        float* pws = ws is null ? null : Ptr(ws);
        PerImage(sh.N, (double)kdim * outHw * sh.Cout, (n, slot) =>
        {
            float* xn = px + (long)n * sh.Cin * sh.H * sh.W;
            float* yn = py + (long)n * sh.Cout * outHw;
            float* col = direct ? xn : pws + (long)slot * kdim * outHw;
            if (!direct)
            {
                Im2Col(sh, xn, col);
            }

            Sgemm.Run(this, false, false, sh.Cout, outHw, kdim, 1f, pw, kdim, col, outHw, 0f, yn, outHw, parallel: false);
            if (pbias != null)
            {
                for (int o = 0; o < sh.Cout; o++)
                {
                    System.Numerics.Tensors.TensorPrimitives.Add(new Span<float>(yn + (long)o * outHw, outHw), pbias[o], new Span<float>(yn + (long)o * outHw, outHw));
                }
            }
        });
    }

    /// <inheritdoc />
    public void Conv2dBackwardData(in Conv2dShape s, Tensor dy, Tensor w, Tensor dx)
    {
        var sh = s;
        float* pdy = Ptr(dy);
        float* pw = Ptr(w);
        float* pdx = Ptr(dx);
        int outHw = sh.OutH * sh.OutW;
        int kdim = sh.Cin * sh.Kernel * sh.Kernel;
        bool direct = sh.Kernel == 1 && sh.Stride == 1 && sh.Pad == 0;
        using var ws = direct ? null : Workspace((long)Threads * kdim * outHw);
        float* pws = ws is null ? null : Ptr(ws);
        PerImage(sh.N, (double)kdim * outHw * sh.Cout, (n, slot) =>
        {
            float* dyn = pdy + (long)n * sh.Cout * outHw;
            float* dxn = pdx + (long)n * sh.Cin * sh.H * sh.W;
            float* col = direct ? dxn : pws + (long)slot * kdim * outHw;

            // dcol [kdim, outHw] = W^T [kdim, Cout] x dy [Cout, outHw]; col2im scatters it back.
            Sgemm.Run(this, true, false, kdim, outHw, sh.Cout, 1f, pw, kdim, dyn, outHw, 0f, col, outHw, parallel: false);
            if (!direct)
            {
                Col2Im(sh, col, dxn);
            }
        });
    }

    /// <inheritdoc />
    public void Conv2dBackwardFilter(in Conv2dShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias)
    {
        var sh = s;
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        int outHw = sh.OutH * sh.OutW;
        int kdim = sh.Cin * sh.Kernel * sh.Kernel;
        long wsize = (long)sh.Cout * kdim;
        bool direct = sh.Kernel == 1 && sh.Stride == 1 && sh.Pad == 0;

        // One partial dW per thread, summed at the end: images are independent tasks.
        using var partial = Workspace(Threads * wsize);
        using var cols = direct ? null : Workspace((long)Threads * kdim * outHw);
        float* pp = Ptr(partial);
        float* pcols = cols is null ? null : Ptr(cols);
        var used = new bool[Threads];
        PerImage(sh.N, (double)kdim * outHw * sh.Cout, (n, slot) =>
        {
            float* xn = px + (long)n * sh.Cin * sh.H * sh.W;
            float* dyn = pdy + (long)n * sh.Cout * outHw;
            float* col = direct ? xn : pcols + (long)slot * kdim * outHw;
            if (!direct)
            {
                Im2Col(sh, xn, col);
            }

            // dW [Cout, kdim] += dy [Cout, outHw] x col^T [outHw, kdim]
            Sgemm.Run(this, false, true, sh.Cout, kdim, outHw, 1f, dyn, outHw, col, outHw, used[slot] ? 1f : 0f, pp + slot * wsize, kdim, parallel: false);
            used[slot] = true;
        });
        SumPartials(pp, used, wsize, Ptr(dw));
        if (dbias is not null)
        {
            ChannelBiasGrad(sh.N, sh.Cout, outHw, dy, dbias);
        }
    }

    /// <summary>Runs body(image, threadSlot) with each thread slot used by one task at a time.</summary>
    private void PerImage(int images, double workPerImage, Action<int, int> body)
    {
        int slots = Math.Min(Threads, images);
        if (slots <= 1 || images * workPerImage < 65_536)
        {
            for (int n = 0; n < images; n++)
            {
                body(n, 0);
            }

            return;
        }

        int next = -1;
        Parallel.For(0, slots, new ParallelOptions { MaxDegreeOfParallelism = slots }, slot =>
        {
            for (int n = Interlocked.Increment(ref next); n < images; n = Interlocked.Increment(ref next))
            {
                body(n, slot);
            }
        });
    }

    private void SumPartials(float* partials, bool[] used, long size, float* result)
    {
        var dst = new Span<float>(result, checked((int)size));
        dst.Clear();
        for (int t = 0; t < used.Length; t++)
        {
            if (used[t])
            {
                System.Numerics.Tensors.TensorPrimitives.Add(dst, new ReadOnlySpan<float>(partials + t * size, (int)size), dst);
            }
        }
    }

    /// <summary>col[(i*K + u)*K + v, p*OutW + q] = x[i, p*stride + u - pad, q*stride + v - pad] (0 outside).</summary>
    private static void Im2Col(in Conv2dShape s, float* x, float* col)
    {
        int oh = s.OutH, ow = s.OutW, k = s.Kernel;
        for (int i = 0; i < s.Cin; i++)
        {
            float* xi = x + (long)i * s.H * s.W;
            for (int u = 0; u < k; u++)
            {
                for (int v = 0; v < k; v++)
                {
                    float* row = col + ((long)(i * k + u) * k + v) * oh * ow;
                    for (int p = 0; p < oh; p++)
                    {
                        int yy = p * s.Stride + u - s.Pad;
                        float* dst = row + p * ow;
                        if ((uint)yy >= (uint)s.H)
                        {
                            new Span<float>(dst, ow).Clear();
                            continue;
                        }

                        float* src = xi + yy * s.W;
                        if (s.Stride == 1)
                        {
                            // Contiguous run with zero edges.
                            int x0 = v - s.Pad;
                            int qLo = Math.Max(0, -x0);
                            int qHi = Math.Min(ow, s.W - x0);
                            for (int q = 0; q < qLo; q++)
                            {
                                dst[q] = 0f;
                            }

                            if (qHi > qLo)
                            {
                                new ReadOnlySpan<float>(src + qLo + x0, qHi - qLo).CopyTo(new Span<float>(dst + qLo, qHi - qLo));
                            }

                            for (int q = Math.Max(qHi, qLo); q < ow; q++)
                            {
                                dst[q] = 0f;
                            }
                        }
                        else
                        {
                            for (int q = 0; q < ow; q++)
                            {
                                int xx = q * s.Stride + v - s.Pad;
                                dst[q] = (uint)xx < (uint)s.W ? src[xx] : 0f;
                            }
                        }
                    }
                }
            }
        }
    }

    /// <summary>The adjoint of <see cref="Im2Col"/>: x is overwritten with the scattered sums.</summary>
    private static void Col2Im(in Conv2dShape s, float* col, float* x)
    {
        new Span<float>(x, s.Cin * s.H * s.W).Clear();
        int oh = s.OutH, ow = s.OutW, k = s.Kernel;
        for (int i = 0; i < s.Cin; i++)
        {
            float* xi = x + (long)i * s.H * s.W;
            for (int u = 0; u < k; u++)
            {
                for (int v = 0; v < k; v++)
                {
                    float* row = col + ((long)(i * k + u) * k + v) * oh * ow;
                    for (int p = 0; p < oh; p++)
                    {
                        int yy = p * s.Stride + u - s.Pad;
                        if ((uint)yy >= (uint)s.H)
                        {
                            continue;
                        }

                        float* dst = xi + yy * s.W;
                        float* src = row + p * ow;
                        if (s.Stride == 1)
                        {
                            int x0 = v - s.Pad;
                            int qLo = Math.Max(0, -x0);
                            int qHi = Math.Min(ow, s.W - x0);
                            if (qHi > qLo)
                            {
                                var d = new Span<float>(dst + qLo + x0, qHi - qLo);
                                System.Numerics.Tensors.TensorPrimitives.Add(d, new ReadOnlySpan<float>(src + qLo, qHi - qLo), d);
                            }
                        }
                        else
                        {
                            for (int q = 0; q < ow; q++)
                            {
                                int xx = q * s.Stride + v - s.Pad;
                                if ((uint)xx < (uint)s.W)
                                {
                                    dst[xx] += src[q];
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    // ---- temporal conv: three shifted GEMMs per frame ----------------------------------------------

    /// <summary>Repacks w [Cout, Cin, 3] into three contiguous taps [3][Cout, Cin].</summary>
    private Tensor SplitTaps(in TemporalConvShape s, Tensor w)
    {
        var taps = Workspace(3L * s.Cout * s.Cin);
        float* pw = Ptr(w);
        float* pt = Ptr(taps);
        long plane = (long)s.Cout * s.Cin;
        for (long oi = 0; oi < plane; oi++)
        {
            for (int k = 0; k < 3; k++)
            {
                pt[k * plane + oi] = pw[oi * 3 + k];
            }
        }

        return taps;
    }

    /// <inheritdoc />
    public void TemporalConvForward(in TemporalConvShape s, Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        var sh = s;
        using var taps = SplitTaps(sh, w);
        float* pt = Ptr(taps);
        float* px = Ptr(x);
        float* py = Ptr(y);
        float* pbias = bias is null ? null : Ptr(bias);
        long plane = (long)sh.Cout * sh.Cin;
        For(sh.B * sh.F, 6.0 * plane * sh.S, bf =>
        {
            int f = bf % sh.F;
            float* yf = py + (long)bf * sh.Cout * sh.S;
            bool first = true;
            for (int k = 0; k < 3; k++)
            {
                int src = f + k - 1;
                if ((uint)src >= (uint)sh.F)
                {
                    continue;
                }

                float* xf = px + (long)(bf + k - 1) * sh.Cin * sh.S;
                Sgemm.Run(this, false, false, sh.Cout, sh.S, sh.Cin, 1f, pt + k * plane, sh.Cin, xf, sh.S, first ? 0f : 1f, yf, sh.S, parallel: false);
                first = false;
            }

            if (first)
            {
                new Span<float>(yf, sh.Cout * sh.S).Clear();
            }

            if (pbias != null)
            {
                for (int o = 0; o < sh.Cout; o++)
                {
                    var row = new Span<float>(yf + (long)o * sh.S, sh.S);
                    System.Numerics.Tensors.TensorPrimitives.Add(row, pbias[o], row);
                }
            }
        });
    }

    /// <inheritdoc />
    public void TemporalConvBackwardData(in TemporalConvShape s, Tensor dy, Tensor w, Tensor dx)
    {
        var sh = s;
        using var taps = SplitTaps(sh, w);
        float* pt = Ptr(taps);
        float* pdy = Ptr(dy);
        float* pdx = Ptr(dx);
        long plane = (long)sh.Cout * sh.Cin;
        For(sh.B * sh.F, 6.0 * plane * sh.S, bf =>
        {
            int f = bf % sh.F;
            float* dxf = pdx + (long)bf * sh.Cin * sh.S;
            bool first = true;

            // dx[f] = sum_k W_k^T dy[f - k + 1]
            for (int k = 0; k < 3; k++)
            {
                int src = f - k + 1;
                if ((uint)src >= (uint)sh.F)
                {
                    continue;
                }

                float* dyf = pdy + (long)(bf - k + 1) * sh.Cout * sh.S;
                Sgemm.Run(this, true, false, sh.Cin, sh.S, sh.Cout, 1f, pt + k * plane, sh.Cin, dyf, sh.S, first ? 0f : 1f, dxf, sh.S, parallel: false);
                first = false;
            }

            if (first)
            {
                new Span<float>(dxf, sh.Cin * sh.S).Clear();
            }
        });
    }

    /// <inheritdoc />
    public void TemporalConvBackwardWeight(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias)
    {
        var sh = s;
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        long plane = (long)sh.Cout * sh.Cin;

        // Per thread, three partial taps [3][Cout, Cin]; frames are split into contiguous ranges.
        using var partial = Workspace(Threads * 3 * plane);
        float* pp = Ptr(partial);
        int parts = ForRanges(sh.B * sh.F, 6.0 * plane * sh.S, (t, start, end) =>
        {
            float* mine = pp + t * 3 * plane;
            new Span<float>(mine, (int)(3 * plane)).Clear();
            for (long bf = start; bf < end; bf++)
            {
                int f = (int)(bf % sh.F);
                float* dyf = pdy + bf * sh.Cout * sh.S;
                for (int k = 0; k < 3; k++)
                {
                    int src = f + k - 1;
                    if ((uint)src >= (uint)sh.F)
                    {
                        continue;
                    }

                    float* xf = px + (bf + k - 1) * sh.Cin * sh.S;

                    // dW_k [Cout, Cin] += dy[f] [Cout, S] x x[f+k-1]^T [S, Cin]
                    Sgemm.Run(this, false, true, sh.Cout, sh.Cin, sh.S, 1f, dyf, sh.S, xf, sh.S, 1f, mine + k * plane, sh.Cin, parallel: false);
                }
            }
        });

        float* pdw = Ptr(dw);
        for (long oi = 0; oi < plane; oi++)
        {
            for (int k = 0; k < 3; k++)
            {
                float acc = 0f;
                for (int t = 0; t < parts; t++)
                {
                    acc += pp[t * 3 * plane + k * plane + oi];
                }

                pdw[oi * 3 + k] = acc;
            }
        }

        if (dbias is not null)
        {
            ChannelBiasGrad(sh.B * sh.F, sh.Cout, sh.S, dy, dbias);
        }
    }
}
