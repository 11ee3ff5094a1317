using System.Numerics.Tensors;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Mobius.Engine.Cpu;

/// <summary>
/// The managed reference backend: native host memory through a caching allocator, SIMD loops
/// (System.Numerics.Tensors; the GEMM's micro-kernel in AVX-512, AVX2/FMA or portable vectors, whichever is the
/// widest the machine runs), both cores through <see cref="Parallel"/>. It is the oracle
/// every other backend is tested against, and fast enough to train the tiny model on two cores.
/// </summary>
public sealed unsafe partial class CpuBackend : IBackend
{
    private readonly CachingAllocator _allocator;

    /// <summary>Creates a CPU backend.</summary>
    /// <param name="threads">Threads for parallel ops (0: all cores).</param>
    /// <param name="memoryLimitBytes">Most bytes the allocator may hold (0: no limit); past it allocations
    /// fail with <see cref="OutOfDeviceMemoryException"/>, as on a device with that much memory.</param>
    public CpuBackend(int threads = 0, long memoryLimitBytes = 0)
    {
        Threads = threads > 0 ? threads : Environment.ProcessorCount;
        _allocator = new CachingAllocator(new HostMemory(memoryLimitBytes), this);
    }

    /// <inheritdoc />
    public string Name => "cpu";

    /// <inheritdoc />
    public string DeviceName => $"{Environment.ProcessorCount}-core {RuntimeInformation.ProcessArchitecture} host ({Threads} thread{(Threads == 1 ? "" : "s")}, {SimdDescription})";

    /// <summary>Worker threads used by parallel ops.</summary>
    public int Threads { get; }

    /// <inheritdoc />
    public MemoryTracker Memory { get; } = new();

    /// <summary>Fill new blocks with NaN (0x7FC07FC0: a NaN as fp32 and as each bf16 half) so reads of never-written memory show up (on in the tests).</summary>
    public bool PoisonAllocations
    {
        get => _allocator.PoisonAllocations;
        set => _allocator.PoisonAllocations = value;
    }

    private static string SimdDescription => Sgemm.BestIsa switch
    {
        SgemmIsa.Avx512 => "AVX-512",
        SgemmIsa.Avx2 => "AVX2+FMA",
        _ => $"Vector<float> x{System.Numerics.Vector<float>.Count}",
    };

    /// <inheritdoc />
    public Storage Allocate(long bytes, MemoryCategory category) => _allocator.Allocate(bytes, category);

    /// <inheritdoc />
    public void EmptyCache() => _allocator.EmptyCache();

    /// <inheritdoc />
    public void Synchronize()
    {
    }

    /// <inheritdoc />
    public void Dispose() => _allocator.Dispose();

    // ---- pointers and spans ---------------------------------------------------------------------

    internal static float* Ptr(Tensor t) => (float*)t.Storage.Handle + t.Offset;

    internal static Span<float> Span(Tensor t) => new(Ptr(t), checked((int)t.Numel));

    private static Span<float> Span(float* p, long n) => new(p, checked((int)n));

    /// <summary>A scratch buffer accounted as workspace; dispose it when the op is done.</summary>
    private Tensor Workspace(long elements) => Tensor.Empty(this, new Shape(checked((int)Math.Max(1, elements))), MemoryCategory.Workspace);

    /// <summary>Runs body(i) for i in [0, n), on all threads when the total work is worth it.</summary>
    internal void For(int n, double workPerItem, Action<int> body)
    {
        if (n <= 1 || Threads == 1 || n * workPerItem < 32_768)
        {
            for (int i = 0; i < n; i++)
            {
                body(i);
            }

            return;
        }

        Parallel.For(0, n, new ParallelOptions { MaxDegreeOfParallelism = Threads }, body);
    }

    /// <summary>
    /// Splits [0, n) into one contiguous range per thread and runs body(threadIndex, start, end); used
    /// by reductions that keep one partial result per thread.
    /// </summary>
    internal int ForRanges(long n, double workPerItem, Action<int, long, long> body)
    {
        int parts = n * workPerItem < 65_536 ? 1 : (int)Math.Min(Threads, n);
        if (parts <= 1)
        {
            body(0, 0, n);
            return 1;
        }

        Parallel.For(0, parts, new ParallelOptions { MaxDegreeOfParallelism = Threads }, p =>
            body(p, n * p / parts, n * (p + 1) / parts));
        return parts;
    }

    // ---- data movement ----------------------------------------------------------------------------

    /// <inheritdoc />
    public void CopyFromHost(ReadOnlySpan<float> src, Tensor dst) => src.CopyTo(Span(dst));

    /// <inheritdoc />
    public void CopyToHost(Tensor src, Span<float> dst) => Span(src).CopyTo(dst);

    /// <inheritdoc />
    public void Fill(Tensor dst, float value)
    {
        if (dst.DType == DType.BFloat16)
        {
            new Span<ushort>((ushort*)dst.Storage.Handle + dst.Offset, checked((int)dst.Numel)).Fill(BFloat16Bits.FromFloat(value));
            return;
        }

        Span(dst).Fill(value);
    }

    /// <inheritdoc />
    public void Cast(Tensor x, Tensor y)
    {
        long n = x.Numel;
        byte* px = (byte*)x.Storage.Handle + x.Offset * x.DType.Size();
        byte* py = (byte*)y.Storage.Handle + y.Offset * y.DType.Size();
        switch (x.DType, y.DType)
        {
            case (DType.Float32, DType.BFloat16):
                ForRanges(n, 1, (_, a, b) => NarrowToBFloat16((uint*)px, (ushort*)py, a, b));
                break;
            case (DType.BFloat16, DType.Float32):
                ForRanges(n, 1, (_, a, b) => WidenFromBFloat16((ushort*)px, (uint*)py, a, b));
                break;
            case (DType.Float32, DType.Int8Blocks):
                ForRanges(Int8BlockCount(n), DTypeExtensions.Int8Block, (_, a, b) => QuantizeInt8Blocks((float*)px, (sbyte*)py, (float*)(py + DTypeExtensions.Int8ScalesOffset(n)), n, a, b));
                break;
            case (DType.Int8Blocks, DType.Float32):
                ForRanges(Int8BlockCount(n), DTypeExtensions.Int8Block, (_, a, b) => DequantizeInt8Blocks((sbyte*)px, (float*)(px + DTypeExtensions.Int8ScalesOffset(n)), (float*)py, n, a, b));
                break;
            case var (from, to) when from != to:
                throw new NotSupportedException($"cast from {from.Name()} to {to.Name()}.");
            default:
                Buffer.MemoryCopy(px, py, y.Bytes, x.Bytes);
                break;
        }
    }

    private static long Int8BlockCount(long n) => (n + DTypeExtensions.Int8Block - 1) / DTypeExtensions.Int8Block;

    /// <summary>
    /// Blocks [a, b) of <see cref="DType.Int8Blocks"/>: each block's largest magnitude m maps to 127, q = rint(x (127 / m))
    /// (ties to even), scale m / 127; a block of zeros has scale 0, one holding a NaN or an infinity scale NaN and q 0.
    /// The arithmetic of the quantize_f32_i8b kernel, so the same bits.
    /// </summary>
    private static void QuantizeInt8Blocks(float* x, sbyte* q, float* scales, long n, long a, long b)
    {
        const int block = DTypeExtensions.Int8Block;
        for (long k = a; k < b; k++)
        {
            long start = k * block, end = Math.Min(n, start + block);
            float m = 0f;
            bool bad = false;
            long i = start;
            if (Vector256.IsHardwareAccelerated && end - start == block)
            {
                var most = Vector256<float>.Zero;
                var worst = Vector256<uint>.Zero;
                for (; i < end; i += 8)
                {
                    var magnitude = Vector256.Load((uint*)(x + i)) & Vector256.Create(0x7fff_ffffu);
                    worst = Vector256.Max(worst, magnitude);
                    most = Vector256.Max(most, magnitude.AsSingle()); // NaN lanes are caught by worst
                }

                bad = Vector256.GreaterThanOrEqualAny(worst, Vector256.Create(0x7f80_0000u));
                for (int l = 0; l < 8; l++)
                {
                    m = Math.Max(m, most[l]);
                }
            }
            else
            {
                for (; i < end; i++)
                {
                    float v = Math.Abs(x[i]);
                    if (!float.IsFinite(v))
                    {
                        bad = true;
                    }
                    else if (v > m)
                    {
                        m = v;
                    }
                }
            }

            float scale = 0f, inv = 0f;
            if (bad)
            {
                scale = float.NaN;
            }
            else if (m > 0f)
            {
                scale = m / 127f;
                inv = 127f / m;
            }

            scales[k] = scale;
            i = start;
            if (bad)
            {
                new Span<sbyte>(q + start, (int)(end - start)).Clear();
                continue;
            }

            if (Vector256.IsHardwareAccelerated)
            {
                var factor = Vector256.Create(inv);
                var top = Vector256.Create(127f);
                for (; i + 32 <= end; i += 32)
                {
                    Vector256<int> Quantized(long at) =>
                        Vector256.ConvertToInt32(Vector256.Min(Vector256.Max(Vector256.Round(Vector256.Load(x + at) * factor), -top), top));
                    var lo = Vector256.Narrow(Quantized(i), Quantized(i + 8));
                    var hi = Vector256.Narrow(Quantized(i + 16), Quantized(i + 24));
                    Vector256.Narrow(lo, hi).Store(q + i);
                }
            }

            for (; i < end; i++)
            {
                q[i] = (sbyte)Math.Clamp(MathF.Round(x[i] * inv, MidpointRounding.ToEven), -127f, 127f);
            }
        }
    }

    /// <summary>y = q scale, for the elements of blocks [a, b) of <see cref="DType.Int8Blocks"/>.</summary>
    private static void DequantizeInt8Blocks(sbyte* q, float* scales, float* y, long n, long a, long b)
    {
        const int block = DTypeExtensions.Int8Block;
        for (long k = a; k < b; k++)
        {
            float scale = scales[k];
            long i = k * block, end = Math.Min(n, i + block);
            if (Vector256.IsHardwareAccelerated)
            {
                var factor = Vector256.Create(scale);
                for (; i + 32 <= end; i += 32)
                {
                    var (lo, hi) = Vector256.Widen(Vector256.Load(q + i));
                    var (l0, l1) = Vector256.Widen(lo);
                    var (h0, h1) = Vector256.Widen(hi);
                    (Vector256.ConvertToSingle(l0) * factor).Store(y + i);
                    (Vector256.ConvertToSingle(l1) * factor).Store(y + i + 8);
                    (Vector256.ConvertToSingle(h0) * factor).Store(y + i + 16);
                    (Vector256.ConvertToSingle(h1) * factor).Store(y + i + 24);
                }
            }

            for (; i < end; i++)
            {
                y[i] = q[i] * scale;
            }
        }
    }

    /// <summary>
    /// dst[i] = bf16(src[i]) for i in [a, b): <see cref="BFloat16Bits.FromFloat"/>'s integer rounding, sixteen lanes at a
    /// time where the CPU has 256-bit vectors (the same bits), then one by one.
    /// </summary>
    private static void NarrowToBFloat16(uint* src, ushort* dst, long a, long b)
    {
        long i = a;
        if (Vector256.IsHardwareAccelerated)
        {
            var magnitude = Vector256.Create(0x7fff_ffffu);
            var infinity = Vector256.Create(0x7f80_0000u);
            var half = Vector256.Create(0x7fffu);
            var one = Vector256.Create(1u);
            var quiet = Vector256.Create(0x0040u);
            for (; i + 16 <= b; i += 16)
            {
                var lo = Narrow(Vector256.Load(src + i));
                var hi = Narrow(Vector256.Load(src + i + 8));
                Vector256.Narrow(lo, hi).Store(dst + i);
            }

            Vector256<uint> Narrow(Vector256<uint> u)
            {
                var rounded = Vector256.ShiftRightLogical(u + half + (Vector256.ShiftRightLogical(u, 16) & one), 16);
                var nan = Vector256.ShiftRightLogical(u, 16) | quiet;
                return Vector256.ConditionalSelect(Vector256.GreaterThan(u & magnitude, infinity), nan, rounded);
            }
        }

        for (; i < b; i++)
        {
            dst[i] = BFloat16Bits.FromFloat(BitConverter.UInt32BitsToSingle(src[i]));
        }
    }

    /// <summary>dst[i] = the fp32 bits of bf16 src[i] (exact) for i in [a, b), sixteen lanes at a time where possible.</summary>
    private static void WidenFromBFloat16(ushort* src, uint* dst, long a, long b)
    {
        long i = a;
        if (Vector256.IsHardwareAccelerated)
        {
            for (; i + 16 <= b; i += 16)
            {
                var (lo, hi) = Vector256.Widen(Vector256.Load(src + i));
                Vector256.ShiftLeft(lo, 16).Store(dst + i);
                Vector256.ShiftLeft(hi, 16).Store(dst + i + 8);
            }
        }

        for (; i < b; i++)
        {
            dst[i] = (uint)src[i] << 16;
        }
    }

    /// <inheritdoc />
    public void CopyRows(Tensor src, long srcOffset, long srcRowStride, Tensor dst, long dstOffset, long dstRowStride, int rows, int cols)
    {
        float* s = Ptr(src) + srcOffset;
        float* d = Ptr(dst) + dstOffset;
        For(rows, cols, r => Span(s + r * srcRowStride, cols).CopyTo(Span(d + r * dstRowStride, cols)));
    }

    /// <inheritdoc />
    public void Transpose(int batch, int rows, int cols, Tensor x, Tensor y)
    {
        float* px = Ptr(x);
        float* py = Ptr(y);
        const int Tile = 32;
        int tilesR = (rows + Tile - 1) / Tile;
        int tilesC = (cols + Tile - 1) / Tile;
        For(batch * tilesR, (double)Tile * cols, job =>
        {
            int b = job / tilesR;
            int r0 = job % tilesR * Tile;
            int r1 = Math.Min(rows, r0 + Tile);
            float* xb = px + (long)b * rows * cols;
            float* yb = py + (long)b * rows * cols;
            for (int tc = 0; tc < tilesC; tc++)
            {
                int c0 = tc * Tile;
                int c1 = Math.Min(cols, c0 + Tile);
                for (int r = r0; r < r1; r++)
                {
                    for (int c = c0; c < c1; c++)
                    {
                        yb[(long)c * rows + r] = xb[(long)r * cols + c];
                    }
                }
            }
        });
    }

    // ---- elementwise ------------------------------------------------------------------------------

    /// <summary>Runs a span kernel over matching chunks of up to three tensors, in parallel.</summary>
    private void Chunked(long n, Action<long, int> body)
    {
        const int Chunk = 1 << 16;
        int chunks = (int)((n + Chunk - 1) / Chunk);
        For(chunks, Chunk, c =>
        {
            long start = (long)c * Chunk;
            body(start, (int)Math.Min(Chunk, n - start));
        });
    }

    /// <inheritdoc />
    public void Add(Tensor a, Tensor b, Tensor y, float alpha = 1f, float beta = 1f)
    {
        float* pa = Ptr(a);
        float* pb = Ptr(b);
        float* py = Ptr(y);
        Chunked(y.Numel, (s, n) =>
        {
            var ya = Span(py + s, n);
            if (alpha == 1f && beta == 1f)
            {
                TensorPrimitives.Add(Span(pa + s, n), Span(pb + s, n), ya);
            }
            else if (alpha == 1f)
            {
                TensorPrimitives.MultiplyAdd(Span(pb + s, n), beta, Span(pa + s, n), ya);
            }
            else
            {
                // y = alpha*a + beta*b without a temporary: y = b*beta first when y does not alias a.
                if (py != pa)
                {
                    TensorPrimitives.Multiply(Span(pb + s, n), beta, ya);
                    TensorPrimitives.MultiplyAdd(Span(pa + s, n), alpha, ya, ya);
                }
                else
                {
                    TensorPrimitives.Multiply(Span(pa + s, n), alpha, ya);
                    TensorPrimitives.MultiplyAdd(Span(pb + s, n), beta, ya, ya);
                }
            }
        });
    }

    /// <inheritdoc />
    public void Mul(Tensor a, Tensor b, Tensor y)
    {
        float* pa = Ptr(a);
        float* pb = Ptr(b);
        float* py = Ptr(y);
        Chunked(y.Numel, (s, n) => TensorPrimitives.Multiply(Span(pa + s, n), Span(pb + s, n), Span(py + s, n)));
    }

    /// <inheritdoc />
    public void Scale(Tensor x, float alpha, Tensor y)
    {
        float* px = Ptr(x);
        float* py = Ptr(y);
        Chunked(y.Numel, (s, n) => TensorPrimitives.Multiply(Span(px + s, n), alpha, Span(py + s, n)));
    }

    /// <inheritdoc />
    public void AddChannelBias(int outer, int channels, int inner, Tensor x, Tensor bias, Tensor y, bool perOuter = false)
    {
        float* px = Ptr(x);
        float* pb = Ptr(bias);
        float* py = Ptr(y);
        long row = (long)channels * inner;
        For(outer, row, o =>
        {
            float* xo = px + o * row;
            float* yo = py + o * row;
            float* bo = perOuter ? pb + (long)o * channels : pb;
            if (inner == 1)
            {
                // A linear layer's bias: one vector add per row.
                TensorPrimitives.Add(Span(xo, channels), Span(bo, channels), Span(yo, channels));
                return;
            }

            for (int c = 0; c < channels; c++)
            {
                TensorPrimitives.Add(Span(xo + (long)c * inner, inner), bo[c], Span(yo + (long)c * inner, inner));
            }
        });
    }

    /// <inheritdoc />
    public void ChannelBiasGrad(int outer, int channels, int inner, Tensor dy, Tensor dbias, bool perOuter = false)
    {
        float* pdy = Ptr(dy);
        float* pdb = Ptr(dbias);
        if (perOuter)
        {
            For(outer * channels, inner, oc => pdb[oc] = TensorPrimitives.Sum(Span(pdy + (long)oc * inner, inner)));
            return;
        }

        if (inner == 1)
        {
            // Column sums of a [outer, channels] gradient: each thread adds whole rows into its own partial.
            var partial = new float[Threads * channels];
            int parts = ForRanges(outer, channels, (t, start, end) =>
            {
                var acc = partial.AsSpan(t * channels, channels);
                for (long o = start; o < end; o++)
                {
                    TensorPrimitives.Add(acc, Span(pdy + o * channels, channels), acc);
                }
            });
            var result = Span(pdb, channels);
            result.Clear();
            for (int t = 0; t < parts; t++)
            {
                TensorPrimitives.Add(result, partial.AsSpan(t * channels, channels), result);
            }

            return;
        }

        // Sum in double per channel: outer*inner can be large and the result feeds the optimiser.
        For(channels, (double)outer * inner, c =>
        {
            double acc = 0;
            for (int o = 0; o < outer; o++)
            {
                acc += TensorPrimitives.Sum(Span(pdy + ((long)o * channels + c) * inner, inner));
            }

            pdb[c] = (float)acc;
        });
    }

    /// <inheritdoc />
    public void ActivationForward(Activation act, Tensor x, Tensor y)
    {
        float* px = Ptr(x);
        float* py = Ptr(y);
        Chunked(y.Numel, (s, n) =>
        {
            var xs = Span(px + s, n);
            var ys = Span(py + s, n);
            switch (act)
            {
                case Activation.Silu:
                    Activations.Silu(xs, ys);
                    break;
                case Activation.Gelu:
                    Activations.Gelu(xs, ys);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(act));
            }
        });
    }

    /// <inheritdoc />
    public void ActivationBackward(Activation act, Tensor x, Tensor dy, Tensor dx)
    {
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        float* pdx = Ptr(dx);
        Chunked(dx.Numel, (s, n) =>
        {
            var xs = Span(px + s, n);
            var gs = Span(pdy + s, n);
            var ds = Span(pdx + s, n);
            switch (act)
            {
                case Activation.Silu:
                    Activations.SiluBackward(xs, gs, ds);
                    break;
                case Activation.Gelu:
                    Activations.GeluBackward(xs, gs, ds);
                    break;
                default:
                    throw new ArgumentOutOfRangeException(nameof(act));
            }
        });
    }

    /// <inheritdoc />
    public void GegluForward(int rows, int hidden, Tensor x, Tensor y)
    {
        float* px = Ptr(x);
        float* py = Ptr(y);
        For(rows, hidden * 8, r =>
        {
            float* xr = px + (long)r * 2 * hidden;
            var yr = Span(py + (long)r * hidden, hidden);
            Activations.Gelu(Span(xr + hidden, hidden), yr);
            TensorPrimitives.Multiply(Span(xr, hidden), yr, yr);
        });
    }

    /// <inheritdoc />
    public void GegluBackward(int rows, int hidden, Tensor x, Tensor dy, Tensor dx)
    {
        float* px = Ptr(x);
        float* pdy = Ptr(dy);
        float* pdx = Ptr(dx);
        For(rows, hidden * 12, r =>
        {
            float* xr = px + (long)r * 2 * hidden;
            var dyr = Span(pdy + (long)r * hidden, hidden);
            float* dxr = pdx + (long)r * 2 * hidden;
            var da = Span(dxr, hidden);
            var dg = Span(dxr + hidden, hidden);

            // d(a) = dy * gelu(g); d(g) = dy * a * gelu'(g): both from one tanh of g.
            TensorPrimitives.Multiply(dyr, Span(xr, hidden), dg);
            Activations.GeluGrad(Span(xr + hidden, hidden), dg, dg, da, dyr, withGelu: true);
        });
    }

    /// <inheritdoc />
    public void SoftmaxForward(int rows, int cols, Tensor x, Tensor y)
    {
        float* px = Ptr(x);
        float* py = Ptr(y);
        For(rows, cols * 4, r => TensorPrimitives.SoftMax(Span(px + (long)r * cols, cols), Span(py + (long)r * cols, cols)));
    }

    /// <inheritdoc />
    public void SoftmaxBackward(int rows, int cols, Tensor y, Tensor dy, Tensor dx)
    {
        float* py = Ptr(y);
        float* pdy = Ptr(dy);
        float* pdx = Ptr(dx);
        For(rows, cols * 4, r =>
        {
            var yr = Span(py + (long)r * cols, cols);
            var gr = Span(pdy + (long)r * cols, cols);
            var dr = Span(pdx + (long)r * cols, cols);
            float dot = TensorPrimitives.Dot(yr, gr);
            TensorPrimitives.Subtract(gr, dot, dr);
            TensorPrimitives.Multiply(dr, yr, dr);
        });
    }

    private sealed class HostMemory(long limit) : IRawMemory
    {
        private long _held;

        public nint Alloc(long bytes)
        {
            if (limit > 0 && Interlocked.Add(ref _held, bytes) > limit)
            {
                Interlocked.Add(ref _held, -bytes);
                return 0;
            }

            try
            {
                return (nint)NativeMemory.AlignedAlloc((nuint)bytes, 64);
            }
            catch (OutOfMemoryException)
            {
                return 0;
            }
        }

        public void Free(nint handle, long bytes)
        {
            NativeMemory.AlignedFree((void*)handle);
            if (limit > 0)
            {
                Interlocked.Add(ref _held, -bytes);
            }
        }

        public void Poison(nint handle, long bytes) => new Span<uint>((void*)handle, checked((int)(bytes / 4))).Fill(0x7FC07FC0u);
    }
}
