using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;

namespace Mobius.Engine.Cpu;

/// <summary>
/// Single-precision row-major GEMM on host pointers:
/// C[m x n] (row stride ldc) = alpha * op(A) * op(B) + beta * C, where op(A) is m x k (A stored k x m with
/// row stride lda when transA) and op(B) is k x n (B stored n x k when transB). beta = 0 never reads C.
/// </summary>
/// <remarks>
/// GotoBLAS / BLIS structure: op(B) is packed KC x NC into NR-wide column panels, op(A) MC x KC into
/// MR-high row panels, and a register-blocked MR x NR micro-kernel runs over the packed panels, so its
/// loads are sequential and the panels stay in cache (B micro-panel in L1, A block in L2, B block in L3).
/// </remarks>
internal static unsafe partial class Sgemm
{
    /// <summary>Below this many flops a product runs on the calling thread: waking a second thread costs more.</summary>
    internal const double ParallelMinFlops = 2.0 * 64 * 64 * 64;

    /// <summary>Deepest product on the light path: its B strip (k x NR) must stay in L1/L2 without depth blocking.</summary>
    internal const int SmallMaxK = 512;

    /// <summary>Largest m*n*k on the light path.</summary>
    internal const long SmallMaxVolume = 64L * 64 * 64;

    /// <summary>Runs the product; <paramref name="parallel"/> allows using every thread of <paramref name="cpu"/>.</summary>
    public static void Run(CpuBackend cpu, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, bool parallel)
    {
        if (Avx2Ops.IsSupported)
        {
            Run<Avx2Ops, Vector256<float>>(cpu, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, parallel);
        }
        else
        {
            Run<PortableOps, Vector128<float>>(cpu, transA, transB, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, parallel);
        }
    }

    /// <summary>The product on one instruction set; the tests call it directly to cover the portable kernel.</summary>
    internal static void Run<TOps, TV>(CpuBackend cpu, bool transA, bool transB, int m, int n, int k, float alpha,
        float* a, int lda, float* b, int ldb, float beta, float* c, int ldc, bool parallel)
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

        // op(A)(i, p) = a[i*rs + p*cs], op(B)(p, j) = b[p*rs + j*cs].
        var opA = transA ? new Strided(a, 1, lda) : new Strided(a, lda, 1);
        var opB = transB ? new Strided(b, 1, ldb) : new Strided(b, ldb, 1);
        double flops = 2.0 * m * n * k;
        if (IsSmall(m, n, k))
        {
            Unpacked<TOps, TV>(opA, opB, m, n, k, alpha, beta, c, ldc);
            return;
        }

        int threads = parallel ? cpu.Threads : 1;
        if (threads == 1 || flops < ParallelMinFlops)
        {
            Blocked<TOps, TV>(opA, opB, m, n, k, alpha, beta, c, ldc);
            return;
        }

        // Independent sub-products on a grid of C blocks: each thread packs its own panels into its own
        // buffers, so the threads share nothing but read-only A and B, and write disjoint, tile-aligned
        // parts of C.
        int nr = NR<TOps, TV>();
        int mTiles = (m + MR - 1) / MR, nTiles = (n + nr - 1) / nr;
        var (gm, gn) = Grid(threads, mTiles, nTiles);
        cpu.For(gm * gn, flops / (gm * gn), t =>
        {
            int i0 = Math.Min(m, (int)((long)mTiles * (t / gn) / gm) * MR), i1 = Math.Min(m, (int)((long)mTiles * (t / gn + 1) / gm) * MR);
            int j0 = Math.Min(n, (int)((long)nTiles * (t % gn) / gn) * nr), j1 = Math.Min(n, (int)((long)nTiles * (t % gn + 1) / gn) * nr);
            if (i1 > i0 && j1 > j0)
            {
                Blocked<TOps, TV>(new Strided(opA.At(i0, 0), opA.Rs, opA.Cs), new Strided(opB.At(0, j0), opB.Rs, opB.Cs),
                    i1 - i0, j1 - j0, k, alpha, beta, c + i0 * (nint)ldc + j0, ldc);
            }
        });
    }

    /// <summary>
    /// Splits C into gm x gn = threads blocks minimising the largest block in micro-tiles; among equal
    /// splits the one with the squarest blocks, which packs the least A and B per thread.
    /// </summary>
    private static (int Gm, int Gn) Grid(int threads, int mTiles, int nTiles)
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
            long tiles = rows * cols, edge = rows * MR + cols * 16;
            if (tiles < bestTiles || (tiles == bestTiles && edge < bestEdge))
            {
                (best, bestTiles, bestEdge) = ((gm, gn), tiles, edge);
            }
        }

        return best;
    }

    /// <summary>
    /// Whether a product is small enough that packing costs more than it saves: the operands are read in
    /// place (they fit in L1/L2 anyway) and the product runs on the calling thread.
    /// </summary>
    private static bool IsSmall(int m, int n, int k) => k <= SmallMaxK && (long)m * n * k <= SmallMaxVolume;

    /// <summary>
    /// The light path: op(A) is read where it lies by the micro-kernel; op(B) too when its rows are
    /// contiguous, else (transposed B, or the ragged last column strip) one kc x NR strip at a time is
    /// packed, zero-padded, into scratch. No depth blocking: k is at most <see cref="SmallMaxK"/>.
    /// </summary>
    private static void Unpacked<TOps, TV>(Strided opA, Strided opB, int m, int n, int k, float alpha, float beta, float* c, nint ldc)
        where TOps : struct, ISimdOps<TV>
        where TV : struct
    {
        int nr = NR<TOps, TV>();
        float* strip = null;
        for (int jr = 0; jr < n; jr += nr)
        {
            int cols = Math.Min(nr, n - jr);
            float* bp = opB.At(0, jr);
            nint bStep = opB.Rs;
            if (opB.Cs != 1 || cols < nr)
            {
                strip = strip == null ? Scratch((long)k * nr) : strip;
                PackPanel(nr, cols, k, bp, opB.Cs, opB.Rs, strip);
                bp = strip;
                bStep = nr;
            }

            for (int ir = 0; ir < m; ir += MR)
            {
                MicroKernel<TOps, TV, No>(k, opA.At(ir, 0), opA.Rs, opA.Cs, Math.Min(MR, m - ir), bp, bStep, cols, c + ir * ldc + jr, ldc, alpha, beta);
            }
        }
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
                System.Numerics.Tensors.TensorPrimitives.Multiply(row, beta, row);
            }
        }
    }

    /// <summary>A matrix view: element (r, c) at p[r*Rs + c*Cs].</summary>
    private readonly struct Strided(float* p, nint rs, nint cs)
    {
        public readonly float* P = p;
        public readonly nint Rs = rs;
        public readonly nint Cs = cs;

        public float* At(nint r, nint c) => P + r * Rs + c * Cs;
    }
}
