using System.Numerics.Tensors;
using System.Runtime.Intrinsics;

namespace Mobius.Engine.Cpu;

/// <summary>The instruction sets the GEMM kernel is compiled for.</summary>
internal enum SgemmIsa
{
    /// <summary>512-bit AVX-512F: a 6 x 32 micro-tile.</summary>
    Avx512,

    /// <summary>256-bit AVX2 with FMA: a 6 x 16 micro-tile.</summary>
    Avx2,

    /// <summary>128-bit portable vectors (SSE, NEON, or scalar emulation): a 6 x 8 micro-tile.</summary>
    Portable,
}

/// <summary>
/// Single-precision row-major GEMM on host pointers:
/// C[m x n] (row stride ldc) = alpha * op(A) * op(B) + beta * C, where op(A) is m x k (A stored k x m with
/// row stride lda when transA) and op(B) is k x n (B stored n x k when transB). beta = 0 never reads C.
/// </summary>
/// <remarks>
/// GotoBLAS / BLIS structure: op(B) is packed KC x NC into NR-wide column panels, op(A) MC x KC into
/// MR-high row panels, and a register-blocked MR x NR micro-kernel runs over the packed panels, so its
/// loads are sequential and the panels stay in cache (B micro-panel in L1, A block in L2, B block in L3).
/// Small products skip the packing (see <see cref="IsSmall"/>). Beyond the BLAS contract the operands may
/// be k-segmented (<see cref="GemmOperand"/>: a sum of products in one call) and op(A) may come packed
/// once for many products (<see cref="PackedA"/>), which is how the convolutions use it.
/// </remarks>
internal static unsafe partial class Sgemm
{
    /// <summary>
    /// Below this many flops a product runs on the calling thread: a Parallel.For costs a few
    /// microseconds, about what 2*64^3 flops take on one core.
    /// </summary>
    internal const double ParallelMinFlops = 2.0 * 64 * 64 * 64;

    /// <summary>
    /// Largest m*n*k on the light path. Below it the light path measured up to 1.7x faster than packing
    /// (64 x 32 x 256 for example); around 128^3 to 256^3 the two are even, and past that packing wins
    /// (its MC x KC block of A stays in L2 where the light path re-reads all of A for every strip).
    /// </summary>
    internal const long SmallMaxVolume = 1L << 21;

    /// <summary>The instruction sets this machine runs, widest first (the tests check every one).</summary>
    internal static IReadOnlyList<SgemmIsa> SupportedIsas { get; } = Supported();

    /// <summary>
    /// The widest instruction set this machine runs, read once; <c>MOBIUS_CPU_GEMM=avx2</c> in the environment keeps
    /// an AVX-512 machine on the AVX2 kernel (to compare the two, or on a core where AVX-512 lowers the clock).
    /// </summary>
    internal static SgemmIsa BestIsa { get; } =
        Environment.GetEnvironmentVariable("MOBIUS_CPU_GEMM") == "avx2" && Avx2Ops.IsSupported ? SgemmIsa.Avx2 : SupportedIsas[0];

    private static List<SgemmIsa> Supported()
    {
        var isas = new List<SgemmIsa>();
        if (Avx512Ops.IsSupported)
        {
            isas.Add(SgemmIsa.Avx512);
        }

        if (Avx2Ops.IsSupported)
        {
            isas.Add(SgemmIsa.Avx2);
        }

        isas.Add(SgemmIsa.Portable);
        return isas;
    }

    /// <summary>Runs the product; <paramref name="parallel"/> allows using every thread of <paramref name="cpu"/>.</summary>
    public static void Run(CpuBackend cpu, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, bool parallel)
        => Run(cpu, GemmOperand.A(a, lda, transA), GemmOperand.B(b, ldb, transB), m, n, k, alpha, beta, c, ldc, parallel, BestIsa);

    /// <summary>C = alpha op(A) op(B) + beta C for operands that may be k-segmented, on a chosen instruction set.</summary>
    internal static void Run(CpuBackend cpu, in GemmOperand a, in GemmOperand b, int m, int n, int k, float alpha, float beta,
        float* c, int ldc, bool parallel, SgemmIsa isa)
        => Dispatch(cpu, new ASource(a), b, m, n, k, alpha, beta, c, ldc, parallel, isa);

    /// <summary>C = alpha op(A) op(B) + beta C with op(A) packed beforehand by <see cref="PackA"/>.</summary>
    internal static void Run(CpuBackend cpu, in PackedA a, in GemmOperand b, int n, float alpha, float beta,
        float* c, int ldc, bool parallel, SgemmIsa isa)
        => Dispatch(cpu, new ASource(a), b, a.M, n, a.K, alpha, beta, c, ldc, parallel, isa);

    /// <summary>Packs the m x k op(A) into <paramref name="dst"/> (<see cref="PackedA.Size"/> floats).</summary>
    internal static PackedA PackA(in GemmOperand a, int m, int k, float* dst)
    {
        nint panel = (nint)MR * k;
        PackBlock(MR, m, k, a, 0, 0, dst, panel);
        return new PackedA(dst, m, k, panel);
    }

    private static void Dispatch(CpuBackend cpu, in ASource a, in GemmOperand b, int m, int n, int k, float alpha, float beta,
        float* c, int ldc, bool parallel, SgemmIsa isa)
    {
        // A product at most 16 columns wide would leave half of every 32-wide AVX-512 tile empty: the AVX2 tile fits it.
        if (isa == SgemmIsa.Avx512 && n <= 16 && Avx2Ops.IsSupported)
        {
            isa = SgemmIsa.Avx2;
        }

        if (isa == SgemmIsa.Avx512)
        {
            Product<Avx512Ops, Vector512<float>>(cpu, a, b, m, n, k, alpha, beta, c, ldc, parallel);
        }
        else if (isa == SgemmIsa.Avx2)
        {
            Product<Avx2Ops, Vector256<float>>(cpu, a, b, m, n, k, alpha, beta, c, ldc, parallel);
        }
        else
        {
            Product<PortableOps, Vector128<float>>(cpu, a, b, m, n, k, alpha, beta, c, ldc, parallel);
        }
    }

    private static void Product<TOps, TV>(CpuBackend cpu, ASource a, GemmOperand b, int m, int n, int k, float alpha, float beta,
        float* c, int ldc, bool parallel)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
    {
        if (m <= 0 || n <= 0)
        {
            return;
        }

        if (k <= 0 || alpha == 0f)
        {
            ScaleC(m, n, beta, c, ldc);
            return;
        }

        double flops = 2.0 * m * n * k;
        int threads = parallel ? cpu.Threads : 1;
        if (threads == 1 || flops < ParallelMinFlops)
        {
            Serial<TOps, TV>(a, b, m, n, k, alpha, beta, c, ldc);
            return;
        }

        // Independent sub-products on a grid of C blocks: each thread packs its own panels into its own
        // buffers, so the threads share nothing but read-only A and B, and write disjoint, tile-aligned
        // parts of C.
        int nr = NR<TOps, TV>();
        int mTiles = (m + MR - 1) / MR, nTiles = (n + nr - 1) / nr;
        var (gm, gn) = Grid(threads, mTiles, nTiles, nr);
        cpu.For(gm * gn, flops / (gm * gn), t =>
        {
            int i0 = Math.Min(m, (int)((long)mTiles * (t / gn) / gm) * MR), i1 = Math.Min(m, (int)((long)mTiles * (t / gn + 1) / gm) * MR);
            int j0 = Math.Min(n, (int)((long)nTiles * (t % gn) / gn) * nr), j1 = Math.Min(n, (int)((long)nTiles * (t % gn + 1) / gn) * nr);
            if (i1 > i0 && j1 > j0)
            {
                Serial<TOps, TV>(a.FromRow(i0), b.FromLine(j0), i1 - i0, j1 - j0, k, alpha, beta, c + i0 * (nint)ldc + j0, ldc);
            }
        });
    }

    /// <summary>
    /// One product (or one thread's block of it) on the calling thread: packed blocks, or the light path
    /// when the product is small or A comes packed already (then the light path only lacks the MC
    /// blocking, and the convolutions that prepack A keep it in L2 anyway).
    /// </summary>
    private static void Serial<TOps, TV>(ASource a, GemmOperand b, int m, int n, int k, float alpha, float beta, float* c, int ldc)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
    {
        if (!(a.Packed != null || IsSmall(m, n, k)) || !a.IsPlain(k) || !b.IsPlain(k))
        {
            Blocked<TOps, TV>(a, b, m, n, k, alpha, beta, c, ldc);
        }
        else if (a.Packed != null)
        {
            Unpacked<TOps, TV, Yes>(a, b, m, n, k, alpha, beta, c, ldc);
        }
        else
        {
            Unpacked<TOps, TV, No>(a, b, m, n, k, alpha, beta, c, ldc);
        }
    }

    /// <summary>
    /// Whether a product is small enough that packing costs more than it saves: the operands are read in
    /// place (they fit in L1/L2 anyway).
    /// </summary>
    private static bool IsSmall(int m, int n, int k) => (long)m * n * k <= SmallMaxVolume;

    /// <summary>
    /// Splits C into gm x gn = threads blocks minimising the largest block in micro-tiles; among equal
    /// splits the one with the smallest block perimeter, which packs the least A and B per thread.
    /// </summary>
    private static (int Gm, int Gn) Grid(int threads, int mTiles, int nTiles, int nr)
    {
        (int, int) best = (threads, 1);
        long bestTiles = long.MaxValue, bestEdge = long.MaxValue;
        for (int gm = 1; gm <= threads; gm++)
        {
            if (threads % gm != 0)
            {
                continue;
            }

            int gn = threads / gm;
            long rows = (mTiles + gm - 1) / gm, cols = (nTiles + gn - 1) / gn;
            long tiles = rows * cols, edge = rows * MR + cols * nr;
            if (tiles < bestTiles || (tiles == bestTiles && edge < bestEdge))
            {
                (best, bestTiles, bestEdge) = ((gm, gn), tiles, edge);
            }
        }

        return best;
    }

    /// <summary>C = beta * C without reading C when beta is 0.</summary>
    private static void ScaleC(int m, int n, float beta, float* c, int ldc)
    {
        for (int i = 0; i < m; i++)
        {
            var row = new Span<float>(c + (long)i * ldc, n);
            if (beta == 0f)
            {
                row.Clear();
            }
            else if (beta != 1f)
            {
                TensorPrimitives.Multiply(row, beta, row);
            }
        }
    }

    /// <summary>Where op(A) comes from: an operand to pack (or read in place), or panels packed beforehand.</summary>
    private readonly struct ASource
    {
        public readonly GemmOperand Op;
        public readonly float* Packed;
        public readonly nint PanelStride;

        public ASource(in GemmOperand op)
        {
            Op = op;
        }

        public ASource(in PackedA packed)
        {
            Packed = packed.Data;
            PanelStride = packed.PanelStride;
        }

        private ASource(in GemmOperand op, float* packed, nint panelStride)
        {
            Op = op;
            Packed = packed;
            PanelStride = panelStride;
        }

        public bool IsPlain(int k) => Packed != null || Op.IsPlain(k);

        /// <summary>The rows from <paramref name="row"/> (a multiple of MR) on.</summary>
        public ASource FromRow(int row) => Packed != null
            ? new(default, Packed + row / MR * PanelStride, PanelStride)
            : new(Op.FromLine(row), null, 0);

        /// <summary>The packed panel of rows [row, row + MR) from depth p on.</summary>
        public float* Panel(int row, int p) => Packed + row / MR * PanelStride + (nint)p * MR;
    }
}
