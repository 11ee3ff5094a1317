using System.Numerics.Tensors;

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

    // ---- conv2d: im2col + GEMM ----------------------------------------------------------------------
    //
    // Forward runs one image per task on both threads with single-threaded GEMMs: the weights are packed
    // once per call and shared, so an image's GEMM packs nothing of its own; at 4x4 and 8x8 the weights
    // are 8 to 70 times larger than one image's columns and re-packing them per image cost more than the
    // product. Backward-data of a same-size conv (stride 1, "same" padding: the 3x3 and 1x1 convs) is
    // the forward conv of dy with the weights transposed and flipped, so it runs the same way and needs
    // no col2im; only strided convs go through dcol = W^T dy and col2im. Backward-filter sums over
    // images, so it is one k-segmented GEMM over a group of images (dW = sum_n dy_n col_n^T, k = images x
    // OutH*OutW), threaded inside the GEMM, instead of per-image products of depth OutH*OutW (16 at 4x4)
    // that each re-read and re-write dW.
    //
    // The im2col matrix is plain [Cin*K*K, OutH*OutW]: each of its rows is one shifted copy of an input
    // plane, written in a few long runs. (Storing it in 16-pixel panels that the GEMM could read without
    // packing measured 10-20% slower at 16x16 and 8x8: the many short runs cost more than the packing.)

    /// <inheritdoc />
    public void Conv2dForward(in Conv2dShape s, Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        int kdim = s.Cin * s.Kernel * s.Kernel;
        using var packed = Workspace(PackedA.Size(s.Cout, kdim));
        var pw = Sgemm.PackA(GemmOperand.A(Ptr(w), kdim, trans: false), s.Cout, kdim, Ptr(packed));
        Convolve(s, pw, Ptr(x), Ptr(y), bias is null ? null : Ptr(bias));
    }

    /// <inheritdoc />
    public void Conv2dBackwardData(in Conv2dShape s, Tensor dy, Tensor w, Tensor dx)
    {
        int taps = s.Kernel * s.Kernel;
        if (IsSameSize(s))
        {
            // dx[i, y, x] = sum_{o,u,v} w[o, i, K-1-u, K-1-v] dy[o, y + u - pad', x + v - pad'] with pad' = K-1-pad:
            // a same-size conv of dy by op(A)(i, o*K*K + t) = w[o, i, K*K-1-t].
            var flipped = GemmOperand.Strided(Ptr(w) + taps - 1, taps, -1).Segmented(taps, (nint)s.Cin * taps);
            using var packed = Workspace(PackedA.Size(s.Cin, s.Cout * taps));
            var pwt = Sgemm.PackA(flipped, s.Cin, s.Cout * taps, Ptr(packed));
            Convolve(new Conv2dShape(s.N, s.Cout, s.H, s.W, s.Cin, s.Kernel, 1, s.Kernel - 1 - s.Pad), pwt, Ptr(dy), Ptr(dx), null);
            return;
        }

        var sh = s;
        float* pdy = Ptr(dy);
        float* pdx = Ptr(dx);
        int outHw = sh.OutH * sh.OutW;
        int kdim = sh.Cin * taps;

        // dcol_n [kdim, outHw] = W^T [kdim, Cout] x dy_n [Cout, outHw]; col2im scatters it back.
        using var packedT = Workspace(PackedA.Size(kdim, sh.Cout));
        var pwT = Sgemm.PackA(GemmOperand.A(Ptr(w), kdim, trans: true), kdim, sh.Cout, Ptr(packedT));
        using var ws = Workspace((long)Math.Min(Threads, sh.N) * kdim * outHw);
        float* pws = Ptr(ws);
        PerImage(sh.N, 2.0 * kdim * outHw * sh.Cout, (n, slot) =>
        {
            float* col = pws + (long)slot * kdim * outHw;
            Sgemm.Run(this, pwT, GemmOperand.B(pdy + (long)n * sh.Cout * outHw, outHw, trans: false), outHw, 1f, 0f, col, outHw, parallel: false, Sgemm.BestIsa);
            Col2Im(sh, col, pdx + (long)n * sh.Cin * sh.H * sh.W);
        });
    }

    /// <summary>
    /// output_n [Cout, outHw] = weights [Cout, kdim] x col_n [kdim, outHw] (+ bias) for every image, one
    /// image per task; a 1x1 conv's input is its own column matrix.
    /// </summary>
    private void Convolve(in Conv2dShape s, PackedA weights, float* input, float* output, float* bias)
    {
        var sh = s;
        int outHw = sh.OutH * sh.OutW;
        int kdim = sh.Cin * sh.Kernel * sh.Kernel;
        bool direct = IsPointwise(sh);
        using var ws = direct ? null : Workspace((long)Math.Min(Threads, sh.N) * kdim * outHw);
        float* pws = ws is null ? null : Ptr(ws);
        PerImage(sh.N, 2.0 * kdim * outHw * sh.Cout, (n, slot) =>
        {
            float* xn = input + (long)n * sh.Cin * sh.H * sh.W;
            float* yn = output + (long)n * sh.Cout * outHw;
            float* col = direct ? xn : pws + (long)slot * kdim * outHw;
            if (!direct)
            {
                Im2Col(sh, xn, col);
            }

            Sgemm.Run(this, weights, GemmOperand.B(col, outHw, trans: false), outHw, 1f, 0f, yn, outHw, parallel: false, Sgemm.BestIsa);

            if (bias != null)
            {
                for (int o = 0; o < sh.Cout; o++)
                {
                    var row = new Span<float>(yn + (long)o * outHw, outHw);
                    TensorPrimitives.Add(row, bias[o], row);
                }
            }
        });
    }

    /// <inheritdoc />
    public void Conv2dBackwardFilter(in Conv2dShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias)
    {
        var sh = s;
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        float* pdw = Ptr(dw);
        int outHw = sh.OutH * sh.OutW;
        int kdim = sh.Cin * sh.Kernel * sh.Kernel;
        bool direct = IsPointwise(sh);

        // Images per GEMM: enough that the summed depth (group x outHw) spans a few KC blocks, few enough
        // that the group's columns stay a few MiB of workspace. A 1x1 conv needs no columns: its x_n is col_n.
        int group = direct ? sh.N : Math.Clamp(FilterGradDepth / outHw, 1, sh.N);
        using var ws = direct ? null : Workspace((long)group * kdim * outHw);
        float* pws = ws is null ? null : Ptr(ws);
        for (int g0 = 0; g0 < sh.N; g0 += group)
        {
            int count = Math.Min(group, sh.N - g0);
            float* cols = direct ? px + (long)g0 * kdim * outHw : pws;
            if (!direct)
            {
                int first = g0;
                For(count, 9.0 * kdim * outHw, i => Im2Col(sh, px + (long)(first + i) * sh.Cin * sh.H * sh.W, pws + (long)i * kdim * outHw));
            }

            // dW [Cout, kdim] (+)= sum over the group's images of dy_n [Cout, outHw] x col_n^T [outHw, kdim].
            var dyn = GemmOperand.A(pdy + (long)g0 * sh.Cout * outHw, outHw, trans: false).Segmented(outHw, (nint)sh.Cout * outHw);
            var coln = GemmOperand.B(cols, outHw, trans: true).Segmented(outHw, (nint)kdim * outHw);
            Sgemm.Run(this, dyn, coln, sh.Cout, kdim, count * outHw, 1f, g0 == 0 ? 0f : 1f, pdw, kdim, parallel: true, Sgemm.BestIsa);
        }

        if (dbias is not null)
        {
            ChannelBiasGrad(sh.N, sh.Cout, outHw, dy, dbias);
        }
    }

    /// <summary>Summed depth aimed at per backward-filter GEMM: about three KC blocks.</summary>
    private const int FilterGradDepth = 1024;

    /// <summary>Stride 1 with output as large as the input: the 3x3 convs with padding 1 and the 1x1 convs.</summary>
    private static bool IsSameSize(in Conv2dShape s) => s.Stride == 1 && s.OutH == s.H && s.OutW == s.W;

    /// <summary>A 1x1, stride-1, unpadded conv is a plain GEMM on the image itself (no im2col).</summary>
    private static bool IsPointwise(in Conv2dShape s) => s.Kernel == 1 && s.Stride == 1 && s.Pad == 0;

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

    /// <summary>col[(i*K + u)*K + v, p*OutW + q] = x[i, p*stride + u - pad, q*stride + v - pad] (0 outside).</summary>
    private static void Im2Col(in Conv2dShape s, float* x, float* col)
    {
        int taps = s.Kernel * s.Kernel, outHw = s.OutH * s.OutW;
        for (int r = 0; r < s.Cin * taps; r++)
        {
            new Tap(s, r).Gather(x + (long)(r / taps) * s.H * s.W, col + (long)r * outHw);
        }
    }

    /// <summary>The adjoint of <see cref="Im2Col"/> (strided convs only): x is overwritten with the scattered sums.</summary>
    private static void Col2Im(in Conv2dShape s, float* col, float* x)
    {
        int taps = s.Kernel * s.Kernel, outHw = s.OutH * s.OutW;
        new Span<float>(x, checked(s.Cin * s.H * s.W)).Clear();
        for (int r = 0; r < s.Cin * taps; r++)
        {
            new Tap(s, r).ScatterAdd(x + (long)(r / taps) * s.H * s.W, col + (long)r * outHw);
        }
    }

    /// <summary>
    /// One im2col row: tap (u, v) of one input channel. In a same-size conv (stride 1, output as large as
    /// the input) the row is the input plane shifted by Shift = dy*W + dx in flat index, so outputs
    /// [Lo, Hi) read input [Lo + Shift, Hi + Shift) in one run; outputs outside it (rows off the top or
    /// bottom) and the |dx| columns at one end of every row (which the flat run takes from the
    /// neighbouring row) are zero taps. Other convs (stride 2) go output row by output row.
    /// </summary>
    private readonly struct Tap
    {
        private readonly int _dy, _dx, _h, _w, _oh, _ow, _stride;

        public Tap(in Conv2dShape s, int row)
        {
            _dy = row / s.Kernel % s.Kernel - s.Pad;
            _dx = row % s.Kernel - s.Pad;
            (_h, _w, _oh, _ow, _stride) = (s.H, s.W, s.OutH, s.OutW, s.Stride);
        }

        /// <summary>dst[p*OutW + q] = the tap's input value at output pixel (p, q), 0 outside the plane.</summary>
        public void Gather(float* xi, float* dst)
        {
            if (_stride == 1 && _oh == _h && _ow == _w)
            {
                int size = _h * _w, shift = _dy * _w + _dx;
                int lo = Math.Clamp(-shift, 0, size), hi = Math.Clamp(size - shift, lo, size);
                Sgemm.Clear(dst, lo);
                Sgemm.Copy(dst + lo, xi + lo + shift, hi - lo);
                Sgemm.Clear(dst + hi, size - hi);
                if (_dx != 0)
                {
                    // The columns whose input lies past the row's start (dx < 0) or end (dx > 0).
                    int q0 = _dx < 0 ? 0 : _w - _dx, q1 = _dx < 0 ? -_dx : _w;
                    for (int p = 0; p < size; p += _w)
                    {
                        Sgemm.Clear(dst + p + q0, q1 - q0);
                    }
                }

                return;
            }

            for (int p = 0; p < _oh; p++, dst += _ow)
            {
                int yy = p * _stride + _dy;
                if ((uint)yy >= (uint)_h)
                {
                    Sgemm.Clear(dst, _ow);
                    continue;
                }

                float* src = xi + yy * _w;
                for (int q = 0, xx = _dx; q < _ow; q++, xx += _stride)
                {
                    dst[q] = (uint)xx < (uint)_w ? src[xx] : 0f;
                }
            }
        }

        /// <summary>x[tap position of (p, q)] += src[p*OutW + q] for the output pixels whose tap lies inside the plane.</summary>
        public void ScatterAdd(float* xi, float* src)
        {
            for (int p = 0; p < _oh; p++, src += _ow)
            {
                int yy = p * _stride + _dy;
                if ((uint)yy >= (uint)_h)
                {
                    continue;
                }

                float* dst = xi + yy * _w;
                for (int q = 0, xx = _dx; q < _ow; q++, xx += _stride)
                {
                    if ((uint)xx < (uint)_w)
                    {
                        dst[xx] += src[q];
                    }
                }
            }
        }
    }

    // ---- temporal conv: one GEMM over three stacked frames ------------------------------------------
    //
    // Frames f-1, f, f+1 of a clip lie one after another in x [B, F, Cin, S], so they already form one
    // [3 Cin, S] matrix: y_f = [W_0 W_1 W_2] x [x_{f-1}; x_f; x_{f+1}] is a single GEMM of depth 3 Cin
    // with B read in place, and the weights [Cout, Cin, 3] are packed once per call in that tap-major
    // order (a k-segmented view, one segment per tap). The first and last frame of a clip use two taps:
    // a depth slice of the same packed weights. Backward-data is the same with W^T and the taps reversed.

    /// <inheritdoc />
    public void TemporalConvForward(in TemporalConvShape s, Tensor x, Tensor w, Tensor? bias, Tensor y)
    {
        var sh = s;
        float* pbias = bias is null ? null : Ptr(bias);

        // op(A)(o, t*Cin + i) = w[o, i, t]
        var taps = GemmOperand.Strided(Ptr(w), 3 * sh.Cin, 3).Segmented(sh.Cin, 1);
        using var packed = Workspace(PackedA.Size(sh.Cout, 3 * sh.Cin));
        var pw = Sgemm.PackA(taps, sh.Cout, 3 * sh.Cin, Ptr(packed));
        StackedFrames(sh, pw, sh.Cin, Ptr(x), sh.Cout, Ptr(y));
        if (pbias != null)
        {
            AddChannelBias(sh.B * sh.F, sh.Cout, sh.S, y, bias!, y);
        }
    }

    /// <inheritdoc />
    public void TemporalConvBackwardData(in TemporalConvShape s, Tensor dy, Tensor w, Tensor dx)
    {
        var sh = s;

        // dx_f = sum_t W_t^T dy_{f-t+1} = [W_2^T W_1^T W_0^T] x [dy_{f-1}; dy_f; dy_{f+1}]:
        // op(A)(i, u*Cout + o) = w[o, i, 2 - u].
        var taps = GemmOperand.Strided(Ptr(w) + 2, 3, 3 * sh.Cin).Segmented(sh.Cout, -1);
        using var packed = Workspace(PackedA.Size(sh.Cin, 3 * sh.Cout));
        var pwt = Sgemm.PackA(taps, sh.Cin, 3 * sh.Cout, Ptr(packed));
        StackedFrames(sh, pwt, sh.Cout, Ptr(dy), sh.Cin, Ptr(dx));
    }

    /// <summary>
    /// out_f [outCh, S] = packed [outCh, 3 inCh] x [in_{f-1}; in_f; in_{f+1}] for every frame, in parallel
    /// over frames; at a clip's edges only the taps whose frame exists (a slice of the packed depth).
    /// </summary>
    private void StackedFrames(in TemporalConvShape s, PackedA packed, int inCh, float* input, int outCh, float* output)
    {
        var sh = s;
        For(sh.B * sh.F, 6.0 * outCh * inCh * sh.S, bf =>
        {
            int f = bf % sh.F;
            int lo = f == 0 ? 1 : 0, hi = f == sh.F - 1 ? 2 : 3;
            float* stacked = input + (long)(bf + lo - 1) * inCh * sh.S;
            Sgemm.Run(this, packed.Slice(lo * inCh, (hi - lo) * inCh), GemmOperand.B(stacked, sh.S, trans: false), sh.S,
                1f, 0f, output + (long)bf * outCh * sh.S, sh.S, parallel: false, Sgemm.BestIsa);
        });
    }

    /// <inheritdoc />
    public void TemporalConvBackwardWeight(in TemporalConvShape s, Tensor x, Tensor dy, Tensor dw, Tensor? dbias)
    {
        var sh = s;
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        long plane = (long)sh.Cout * sh.Cin;
        long frameX = (long)sh.Cin * sh.S, frameY = (long)sh.Cout * sh.S;

        // dW_t [Cout, Cin] = sum over frames f where f+t-1 exists of dy_f [Cout, S] x_{f+t-1}^T [S, Cin]: for
        // each tap one k-segmented GEMM over those frames (all B*F frames of every clip for the middle tap,
        // whose frames line up across clips; F-1 frames per clip for the outer taps), into a tap-major
        // [Cout, 3 Cin] workspace that is then interleaved into w's [Cout, Cin, 3] layout.
        using var taps = Workspace(3 * plane);
        float* pt = Ptr(taps);
        void Tap(int t, long firstFrame, int frames, float beta)
        {
            var dyf = GemmOperand.A(pdy + firstFrame * frameY, sh.S, trans: false).Segmented(sh.S, (nint)frameY);
            var xf = GemmOperand.B(px + (firstFrame + t - 1) * frameX, sh.S, trans: true).Segmented(sh.S, (nint)frameX);
            Sgemm.Run(this, dyf, xf, sh.Cout, sh.Cin, frames * sh.S, 1f, beta, pt + t * sh.Cin, 3 * sh.Cin, parallel: true, Sgemm.BestIsa);
        }

        // With F = 1 the outer taps sum over no frame: a depth-0 product, which only clears its columns.
        Tap(1, 0, sh.B * sh.F, 0f);
        for (int b = 0; b < sh.B; b++)
        {
            Tap(0, (long)b * sh.F + 1, sh.F - 1, b == 0 ? 0f : 1f);
            Tap(2, (long)b * sh.F, sh.F - 1, b == 0 ? 0f : 1f);
        }

        float* pdw = Ptr(dw);
        for (long o = 0; o < sh.Cout; o++)
        {
            for (long i = 0; i < sh.Cin; i++)
            {
                for (int t = 0; t < 3; t++)
                {
                    pdw[(o * sh.Cin + i) * 3 + t] = pt[o * 3 * sh.Cin + t * sh.Cin + i];
                }
            }
        }

        if (dbias is not null)
        {
            ChannelBiasGrad(sh.B * sh.F, sh.Cout, sh.S, dy, dbias);
        }
    }
}
