using System.Runtime.Intrinsics;
using System.Numerics.Tensors;

namespace Mobius.Engine.Cpu;

/// <summary>Resampling, embedding, loss, reductions and the optimiser step.</summary>
public sealed unsafe partial class CpuBackend
{
    /// <inheritdoc />
    public void AvgPool2x2Forward(int planes, int h, int w, Tensor x, Tensor y)
    {
        float* px = Ptr(x), py = Ptr(y);
        int oh = h / 2, ow = w / 2;
        For(planes, h * w, p =>
        {
            float* xp = px + (long)p * h * w;
            float* yp = py + (long)p * oh * ow;
            for (int i = 0; i < oh; i++)
            {
                float* r0 = xp + 2 * i * w;
                float* r1 = r0 + w;
                for (int j = 0; j < ow; j++)
                {
                    yp[i * ow + j] = 0.25f * (r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1]);
                }
            }
        });
    }

    /// <inheritdoc />
    public void AvgPool2x2Backward(int planes, int h, int w, Tensor dy, Tensor dx)
    {
        float* pdy = Ptr(dy), pdx = Ptr(dx);
        int oh = h / 2, ow = w / 2;
        For(planes, h * w, p =>
        {
            float* dyp = pdy + (long)p * oh * ow;
            float* dxp = pdx + (long)p * h * w;
            for (int i = 0; i < h; i++)
            {
                for (int j = 0; j < w; j++)
                {
                    dxp[i * w + j] = 0.25f * dyp[(i / 2) * ow + j / 2];
                }
            }
        });
    }

    /// <inheritdoc />
    public void Upsample2xForward(int planes, int h, int w, Tensor x, Tensor y)
    {
        float* px = Ptr(x), py = Ptr(y);
        int w2 = 2 * w;
        For(planes, 4 * h * w, p =>
        {
            float* xp = px + (long)p * h * w;
            float* yp = py + (long)p * 4 * h * w;
            for (int i = 0; i < 2 * h; i++)
            {
                float* src = xp + (i / 2) * w;
                float* dst = yp + i * w2;
                for (int j = 0; j < w2; j++)
                {
                    dst[j] = src[j >> 1];
                }
            }
        });
    }

    /// <inheritdoc />
    public void Upsample2xBackward(int planes, int h, int w, Tensor dy, Tensor dx)
    {
        float* pdy = Ptr(dy), pdx = Ptr(dx);
        int w2 = 2 * w;
        For(planes, 4 * h * w, p =>
        {
            float* dyp = pdy + (long)p * 4 * h * w;
            float* dxp = pdx + (long)p * h * w;
            for (int i = 0; i < h; i++)
            {
                float* r0 = dyp + 2 * i * w2;
                float* r1 = r0 + w2;
                for (int j = 0; j < w; j++)
                {
                    dxp[i * w + j] = r0[2 * j] + r0[2 * j + 1] + r1[2 * j] + r1[2 * j + 1];
                }
            }
        });
    }

    /// <inheritdoc />
    public void EmbeddingForward(ReadOnlySpan<int> ids, Tensor table, Tensor y)
    {
        int d = table.Dim(-1);
        int vocab = table.Dim(0);
        float* pt = Ptr(table), py = Ptr(y);
        for (int r = 0; r < ids.Length; r++)
        {
            int id = ids[r];
            if ((uint)id >= (uint)vocab)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), $"embedding: id {id} outside a vocabulary of {vocab}.");
            }

            new ReadOnlySpan<float>(pt + (long)id * d, d).CopyTo(new Span<float>(py + (long)r * d, d));
        }
    }

    /// <inheritdoc />
    public void EmbeddingBackward(ReadOnlySpan<int> ids, Tensor dy, Tensor dtable)
    {
        int d = dtable.Dim(-1);
        float* pdy = Ptr(dy), pdt = Ptr(dtable);
        for (int r = 0; r < ids.Length; r++)
        {
            var row = new Span<float>(pdt + (long)ids[r] * d, d);
            TensorPrimitives.Add(row, new ReadOnlySpan<float>(pdy + (long)r * d, d), row);
        }
    }

    /// <inheritdoc />
    public void MseForward(Tensor a, Tensor b, Tensor output)
    {
        float* pa = Ptr(a), pb = Ptr(b);
        long n = a.Numel;
        var partial = new double[Threads];
        ForRanges(n, 2, (t, start, end) =>
        {
            double acc = 0;
            const int Chunk = 4096;
            Span<float> diff = stackalloc float[Chunk];
            for (long i = start; i < end; i += Chunk)
            {
                int len = (int)Math.Min(Chunk, end - i);
                TensorPrimitives.Subtract(new ReadOnlySpan<float>(pa + i, len), new ReadOnlySpan<float>(pb + i, len), diff[..len]);
                acc += TensorPrimitives.SumOfSquares(diff[..len]);
            }

            partial[t] = acc;
        });
        Ptr(output)[0] = (float)(partial.Sum() / n);
    }

    /// <inheritdoc />
    public void MseBackward(Tensor a, Tensor b, Tensor dOut, Tensor da)
    {
        float* pa = Ptr(a), pb = Ptr(b), pd = Ptr(da);
        float scale = 2f * Ptr(dOut)[0] / a.Numel;
        Chunked(a.Numel, (s, n) =>
        {
            var d = new Span<float>(pd + s, n);
            TensorPrimitives.Subtract(new ReadOnlySpan<float>(pa + s, n), new ReadOnlySpan<float>(pb + s, n), d);
            TensorPrimitives.Multiply(d, scale, d);
        });
    }

    /// <inheritdoc />
    public void Sum(Tensor x, Tensor output) => Ptr(output)[0] = (float)Reduce(x, static s => TensorPrimitives.Sum(s));

    /// <inheritdoc />
    public void SumSquaresAccumulate(Tensor x, Tensor output) => Ptr(output)[0] += (float)Reduce(x, static s => TensorPrimitives.SumOfSquares(s));

    /// <summary>Sums a per-chunk float reduction in double over all threads.</summary>
    private double Reduce(Tensor x, Func<ReadOnlySpan<float>, float> chunkReduce)
    {
        float* px = Ptr(x);
        long n = x.Numel;
        var partial = new double[Threads];
        ForRanges(n, 1, (t, start, end) =>
        {
            double acc = 0;
            for (long i = start; i < end; i += 4096)
            {
                acc += chunkReduce(new ReadOnlySpan<float>(px + i, (int)Math.Min(4096, end - i)));
            }

            partial[t] = acc;
        });
        return partial.Sum();
    }

    /// <inheritdoc />
    public void AdamWStep(Tensor param, Tensor grad, Tensor m, Tensor v, in AdamWStepArgs args)
    {
        if (m.DType == DType.BFloat16 && v.DType == DType.BFloat16)
        {
            AdamWStepBf16(param, grad, m, v, args);
            return;
        }

        var a = args;
        float* pp = Ptr(param), pg = Ptr(grad), pm = Ptr(m), pv = Ptr(v);
        float bc1 = 1f - MathF.Pow(a.Beta1, a.Step);
        float bc2 = 1f - MathF.Pow(a.Beta2, a.Step);
        float decay = 1f - a.Lr * a.WeightDecay;
        float stepSize = a.Lr / bc1;
        float rootBc2 = MathF.Sqrt(bc2);
        Chunked(param.Numel, (s, n) =>
        {
            // p = p (1 - lr wd) - (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps), in vectors of 8 with a scalar tail.
            long i = s, end = s + n;
            if (Vector256.IsHardwareAccelerated)
            {
                var b1 = Vector256.Create(a.Beta1);
                var b1c = Vector256.Create(1f - a.Beta1);
                var b2 = Vector256.Create(a.Beta2);
                var b2c = Vector256.Create(1f - a.Beta2);
                var scale = Vector256.Create(a.GradScale);
                var dec = Vector256.Create(decay);
                var step = Vector256.Create(stepSize);
                var inv = Vector256.Create(1f / rootBc2);
                var eps = Vector256.Create(a.Eps);
                for (; i + 8 <= end; i += 8)
                {
                    var g = Vector256.Load(pg + i) * scale;
                    var mi = b1 * Vector256.Load(pm + i) + b1c * g;
                    var vi = b2 * Vector256.Load(pv + i) + b2c * g * g;
                    mi.Store(pm + i);
                    vi.Store(pv + i);
                    var p = Vector256.Load(pp + i) * dec - step * mi / (Vector256.Sqrt(vi) * inv + eps);
                    p.Store(pp + i);
                }
            }

            for (; i < end; i++)
            {
                float g = pg[i] * a.GradScale;
                float mi = a.Beta1 * pm[i] + (1f - a.Beta1) * g;
                float vi = a.Beta2 * pv[i] + (1f - a.Beta2) * g * g;
                pm[i] = mi;
                pv[i] = vi;
                pp[i] = pp[i] * decay - stepSize * mi / (MathF.Sqrt(vi) / rootBc2 + a.Eps);
            }
        });
    }

    /// <summary>
    /// AdamW with bf16 moments: the adamw_multi_bf16m kernel's arithmetic in its order (the moments widened, updated in
    /// fp32 and stored by stochastic rounding with the same hash; the parameter stepped with the fp32 moments).
    /// </summary>
    private void AdamWStepBf16(Tensor param, Tensor grad, Tensor m, Tensor v, AdamWStepArgs a)
    {
        float* pp = Ptr(param), pg = Ptr(grad);
        ushort* pm = (ushort*)m.Storage.Handle + m.Offset, pv = (ushort*)v.Storage.Handle + v.Offset;
        float bc1 = 1f - PowerBySquaring(a.Beta1, a.Step), bc2 = 1f - PowerBySquaring(a.Beta2, a.Step);
        float decay = 1f - a.Lr * a.WeightDecay;
        Chunked(param.Numel, (s, n) =>
        {
            long i = s, end = s + n;
            if (Vector256.IsHardwareAccelerated)
            {
                // Eight elements at a time: the same float operations in the same order, and the hash in 32-bit lanes.
                var b1 = Vector256.Create(a.Beta1);
                var b1c = Vector256.Create(1f - a.Beta1);
                var b2 = Vector256.Create(a.Beta2);
                var b2c = Vector256.Create(1f - a.Beta2);
                var scale = Vector256.Create(a.GradScale);
                var dec = Vector256.Create(decay);
                var lr = Vector256.Create(a.Lr);
                var c1 = Vector256.Create(bc1);
                var c2 = Vector256.Create(bc2);
                var eps = Vector256.Create(a.Eps);
                for (; i + 8 <= end && (uint)i <= uint.MaxValue - 8; i += 8)
                {
                    var g = scale * Vector256.Load(pg + i);
                    var mi = (b1 * BFloat16Bits.Widen(pm + i)) + (b1c * g);
                    var vi = (b2 * BFloat16Bits.Widen(pv + i)) + (b2c * g * g);
                    var r = StochasticRounding.Bits8(a.Step, a.Tensor, i);
                    StochasticRounding.Store(mi, r, pm + i);
                    StochasticRounding.Store(vi, StochasticRounding.Mix(r), pv + i);
                    ((Vector256.Load(pp + i) * dec) - (lr * (mi / c1) / (Vector256.Sqrt(vi / c2) + eps))).Store(pp + i);
                }
            }

            for (; i < end; i++)
            {
                float g = a.GradScale * pg[i];
                float mi = a.Beta1 * BFloat16Bits.ToFloat(pm[i]) + (1f - a.Beta1) * g;
                float vi = a.Beta2 * BFloat16Bits.ToFloat(pv[i]) + (1f - a.Beta2) * g * g;
                uint r = StochasticRounding.Bits(a.Step, a.Tensor, i);
                pm[i] = StochasticRounding.ToBFloat16(mi, r);
                pv[i] = StochasticRounding.ToBFloat16(vi, StochasticRounding.Mix(r));
                pp[i] = pp[i] * decay - a.Lr * (mi / bc1) / (MathF.Sqrt(vi / bc2) + a.Eps);
            }
        });
    }

    /// <summary>base^exponent by repeated squaring, as the AdamW kernels compute the bias corrections.</summary>
    private static float PowerBySquaring(float b, int exponent)
    {
        float result = 1f;
        for (; exponent > 0; exponent >>= 1, b *= b)
        {
            if ((exponent & 1) != 0)
            {
                result *= b;
            }
        }

        return result;
    }
}
