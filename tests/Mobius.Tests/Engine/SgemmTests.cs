using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// The CPU SGEMM against a plain fp64 loop: every transposition, leading dimensions wider than the rows,
/// alpha and beta, shapes on both sides of every block boundary of the implementation (micro-tile,
/// cache blocks, the light-path limits), serial and threaded, on every kernel this machine runs (AVX-512, AVX2,
/// portable); and
/// the two extensions the convolutions use, k-segmented operands and op(A) packed beforehand.
/// Tolerance of every check: atol = gamma * max_ij (|alpha| sum_p |a_ip b_pj| + |beta c_ij|), rtol = 0,
/// with gamma = (k + 3) * 2^-24: the worst-case error of fp32 summation of k products in any order, fused
/// or not, plus the alpha and beta roundings. Typical errors are far below it, while a wrong or missing
/// term is of the size of the terms themselves (inputs are uniform in [-1, 1]).
/// </summary>
public sealed unsafe class SgemmTests : IDisposable
{
    private const float Sentinel = 12345f;

    // Four threads even on a two-core machine, so the grid split is exercised in both directions.
    private readonly CpuBackend _cpu = new(threads: 4);

    public void Dispose() => _cpu.Dispose();

    /// <summary>Sizes that straddle every block edge: 1, micro-tile rows and columns, MC, KC, twice KC (the light
    /// path's volume and row-stride limits are straddled by the boundary cases below).</summary>
    private static readonly int[] EdgeSizes =
    [
        1, 2, 5, Sgemm.MR - 1, Sgemm.MR, Sgemm.MR + 1, 7, 8, 9, 13, 15, 16, 17, 31, 33, 65,
        32, 63, 64, Sgemm.MC - 1, Sgemm.MC, Sgemm.MC + 1, 129, Sgemm.KC - 1, Sgemm.KC, Sgemm.KC + 1, 2 * Sgemm.KC + 1,
    ];

    /// <summary>Every kernel this machine runs, by name.</summary>
    public static TheoryData<string> Isas => new(Sgemm.SupportedIsas.Select(i => i.ToString()));

    [Fact]
    public void The_widest_kernel_this_machine_runs_is_the_one_used()
    {
        Assert.Contains(Sgemm.BestIsa, Sgemm.SupportedIsas);
        Assert.Equal(SgemmIsa.Portable, Sgemm.SupportedIsas[^1]);
        if (Environment.GetEnvironmentVariable("MOBIUS_CPU_GEMM") is null)
        {
            Assert.Equal(Sgemm.SupportedIsas[0], Sgemm.BestIsa);
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Random_shapes_match_the_reference(int seed)
    {
        var r = new Rng(seed);
        foreach (var isa in Sgemm.SupportedIsas)
        {
            for (int t = 0; t < 16; t++)
            {
                var g = Case.Random(r, EdgeSizes);

                // Keep the fp64 reference loop under a few million terms.
                while ((long)g.M * g.N * g.K > 3_000_000)
                {
                    g = g with { M = Math.Max(1, g.M / 2), N = Math.Max(1, g.N / 2) };
                }

                Check(g, r, isa);
            }
        }
    }

    [Theory]
    [InlineData(Sgemm.MR, 16, 1)]
    [InlineData(Sgemm.MR, 32, 1)]
    [InlineData(Sgemm.MR * 3 + 1, 16 * 3 + 1, Sgemm.KC + 1)]
    [InlineData(Sgemm.MR * 2 - 1, 32 * 2 + 1, Sgemm.KC - 1)]
    [InlineData(Sgemm.MC + 1, 17, Sgemm.KC * 2 + 3)]
    [InlineData(Sgemm.MC * 2 + 5, 40, 30)]
    [InlineData(13, Sgemm.NC + 19, 70)]
    [InlineData(1, 300, 300)]
    [InlineData(300, 1, 300)]
    [InlineData(64, 64, (int)(Sgemm.SmallMaxVolume / (64 * 64)))]
    [InlineData(65, 64, (int)(Sgemm.SmallMaxVolume / (64 * 64)))]
    [InlineData(9, 9, Sgemm.KC)]
    [InlineData(9, 9, 2 * Sgemm.KC + 1)]
    [InlineData(9, Sgemm.DirectRowStride, 40)]
    [InlineData(9, Sgemm.DirectRowStride + 1, 40)]
    public void Block_boundaries_in_every_transposition_serial_and_threaded(int m, int n, int k)
    {
        var r = new Rng(Seeds.One + m * 7 + n * 3 + k);
        foreach (bool ta in new[] { false, true })
        {
            foreach (bool tb in new[] { false, true })
            {
                foreach (bool parallel in new[] { false, true })
                {
                    foreach (var isa in Sgemm.SupportedIsas)
                    {
                        Check(new Case(m, n, k, ta, tb, 0, 0, 0, r.Pick(1f, -0.75f), r.Pick(0f, 1f, 0.5f), parallel), r, isa);
                    }
                }
            }
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void Beta_zero_never_reads_c_and_padding_stays_untouched(bool parallel)
    {
        var r = new Rng(Seeds.One);
        foreach (var (m, n, k) in new[] { (7, 9, 5), (Sgemm.MC + 7, 100, Sgemm.KC + 9), (37, 45, 300) })
        {
            // C holds NaN when beta = 0, and its padding columns a sentinel that must survive.
            foreach (var isa in Sgemm.SupportedIsas)
            {
                Check(new Case(m, n, k, r.Pick(false, true), r.Pick(false, true), 3, 5, 11, 1.5f, 0f, parallel), r, isa);
            }
        }
    }

    [Fact]
    public void Empty_depth_or_zero_alpha_only_scales_c()
    {
        var r = new Rng(Seeds.One);
        foreach (var isa in Sgemm.SupportedIsas)
        {
            Check(new Case(5, 9, 0, false, false, 0, 0, 2, 1f, 0.5f, false), r, isa);
            Check(new Case(5, 9, 0, false, false, 0, 0, 2, 1f, 0f, false), r, isa);
            Check(new Case(70, 90, 80, true, false, 0, 0, 2, 0f, 2f, true), r, isa);
        }
    }

    [Fact]
    public void Empty_output_touches_nothing()
    {
        float[] c = [42f];
        fixed (float* pc = c)
        {
            Sgemm.Run(_cpu, false, false, 0, 1, 5, 1f, null, 5, null, 1, 0f, pc, 1, parallel: true);
            Sgemm.Run(_cpu, false, false, 1, 0, 5, 1f, null, 5, null, 1, 0f, pc, 1, parallel: true);
        }

        Assert.Equal(42f, c[0]);
    }

    /// <summary>
    /// C = alpha sum_s op(A_s) op(B_s) + beta C with A_s, B_s a fixed stride apart (with gaps between
    /// them), segment depths around the block edges, both operands segmented or only one.
    /// </summary>
    [Theory]
    [MemberData(nameof(Isas))]
    public void Segmented_depth_is_a_sum_of_products(string isaName)
    {
        var isa = Enum.Parse<SgemmIsa>(isaName);
        var r = new Rng(Seeds.One);
        for (int t = 0; t < 12; t++)
        {
            int m = r.Pick(1, 7, 40, 150), n = r.Pick(1, 16, 33, 100), seg = r.Pick(1, 5, 16, 64, Sgemm.KC - 1, Sgemm.KC + 1);
            int count = r.Int(1, 4);
            bool ta = r.Pick(false, true), tb = r.Pick(false, true), segA = r.Pick(false, true), segB = !segA || r.Pick(false, true);
            int lda = (ta ? m : seg) + r.Pick(0, 3), ldb = (tb ? seg : n) + r.Pick(0, 2);
            long sizeA = (long)(ta ? seg : m) * lda, sizeB = (long)(tb ? n : seg) * ldb;

            // An unsegmented operand is one matrix of depth count*seg.
            int ldaFull = segA ? lda : (ta ? m : seg * count), ldbFull = segB ? ldb : (tb ? seg * count : n);
            long strideA = sizeA + r.Pick(0, 7), strideB = sizeB + r.Pick(0, 9);
            float[] a = r.Uniform(segA ? count * strideA : (long)(ta ? seg * count : m) * ldaFull);
            float[] b = r.Uniform(segB ? count * strideB : (long)(tb ? n : seg * count) * ldbFull);
            double A(int i, int p) => segA
                ? a[p / seg * strideA + (ta ? p % seg * lda + i : i * lda + p % seg)]
                : a[ta ? (long)p * ldaFull + i : (long)i * ldaFull + p];
            double B(int p, int j) => segB
                ? b[p / seg * strideB + (tb ? j * ldb + p % seg : p % seg * ldb + j)]
                : b[tb ? (long)j * ldbFull + p : (long)p * ldbFull + j];

            string what = $"segments m={m} n={n} seg={seg} x{count} transA={ta} transB={tb} segA={segA} segB={segB} ({r})";
            Verify(m, n, seg * count, A, B, 1.25f, r.Pick(0f, 1f), 0, r, what, (pc, ldc, alpha, beta) =>
            {
                fixed (float* pa = a, pb = b)
                {
                    var opA = GemmOperand.A(pa, segA ? lda : ldaFull, ta);
                    var opB = GemmOperand.B(pb, segB ? ldb : ldbFull, tb);
                    Sgemm.Run(_cpu, segA ? opA.Segmented(seg, (nint)strideA) : opA, segB ? opB.Segmented(seg, (nint)strideB) : opB,
                        m, n, seg * count, alpha, beta, (float*)pc, ldc, parallel: r.Pick(false, true), isa);
                }
            });
        }
    }

    /// <summary>op(A) packed once (from a plain or a segmented operand), then used whole or by a depth slice.</summary>
    [Theory]
    [MemberData(nameof(Isas))]
    public void Prepacked_a_and_its_depth_slices_match_the_reference(string isaName)
    {
        var isa = Enum.Parse<SgemmIsa>(isaName);
        var r = new Rng(Seeds.One + 1);
        for (int t = 0; t < 12; t++)
        {
            int m = r.Pick(1, 5, 6, 13, 64, 150), n = r.Pick(1, 16, 20, 64, 300), k = r.Pick(3, 32, 96, Sgemm.KC + 5, 900);
            bool ta = r.Pick(false, true), tb = r.Pick(false, true), parallel = r.Pick(false, true);
            int k0 = r.Pick(0, 0, k / 3), len = k - k0 - r.Pick(0, k0);
            int lda = (ta ? m : k) + r.Pick(0, 4), ldb = (tb ? len : n) + r.Pick(0, 4);
            float[] a = r.Uniform((long)(ta ? k : m) * lda);
            float[] b = r.Uniform((long)(tb ? n : len) * ldb);
            var packed = new float[PackedA.Size(m, k)];
            double A(int i, int p) => a[ta ? (long)(p + k0) * lda + i : (long)i * lda + p + k0];
            double B(int p, int j) => b[tb ? (long)j * ldb + p : (long)p * ldb + j];

            string what = $"prepacked m={m} n={n} k={k} slice [{k0}, {k0 + len}) transA={ta} transB={tb} parallel={parallel} ({r})";
            Verify(m, n, len, A, B, -0.5f, r.Pick(0f, 2f), 3, r, what, (pc, ldc, alpha, beta) =>
            {
                fixed (float* pa = a, pb = b, pp = packed)
                {
                    var pa2 = Sgemm.PackA(GemmOperand.A(pa, lda, ta), m, k, pp);
                    Sgemm.Run(_cpu, pa2.Slice(k0, len), GemmOperand.B(pb, ldb, tb), n, alpha, beta, (float*)pc, ldc, parallel, isa);
                }
            });
        }
    }

    /// <summary>One product: op(A) m x k, op(B) k x n, each leading dimension padded by the given amount.</summary>
    private sealed record Case(int M, int N, int K, bool TransA, bool TransB, int PadA, int PadB, int PadC, float Alpha, float Beta, bool Parallel)
    {
        public static Case Random(Rng r, int[] sizes) => new(
            r.Pick(sizes), r.Pick(sizes), r.Pick(sizes), r.Pick(false, true), r.Pick(false, true),
            r.Pick(0, 0, 3, 17), r.Pick(0, 0, 1, 16), r.Pick(0, 0, 5),
            r.Pick(1f, -0.5f, 2.25f), r.Pick(0f, 0f, 1f, -1.5f), r.Pick(false, true));

        public override string ToString() =>
            $"m={M} n={N} k={K} transA={TransA} transB={TransB} pads={PadA},{PadB},{PadC} alpha={Alpha} beta={Beta} parallel={Parallel}";
    }

    /// <summary>The BLAS-shaped entry point on one instruction set.</summary>
    private void Check(Case g, Rng r, SgemmIsa isa)
    {
        // Stored shapes: A is k x m when transposed, B is n x k when transposed.
        int lda = (g.TransA ? g.M : g.K) + g.PadA, ldb = (g.TransB ? g.K : g.N) + g.PadB;
        float[] a = r.Uniform(Math.Max(1, (long)(g.TransA ? g.K : g.M) * lda));
        float[] b = r.Uniform(Math.Max(1, (long)(g.TransB ? g.N : g.K) * ldb));
        double A(int i, int p) => g.TransA ? a[p * lda + i] : a[i * lda + p];
        double B(int p, int j) => g.TransB ? b[j * ldb + p] : b[p * ldb + j];
        Verify(g.M, g.N, g.K, A, B, g.Alpha, g.Beta, g.PadC, r, $"{g} {isa} ({r})", (pc, ldc, alpha, beta) =>
        {
            fixed (float* pa = a, pb = b)
            {
                Sgemm.Run(_cpu, GemmOperand.A(pa, lda, g.TransA), GemmOperand.B(pb, ldb, g.TransB), g.M, g.N, g.K, alpha, beta, (float*)pc, ldc, g.Parallel, isa);
            }
        });
    }

    /// <summary>
    /// Runs <paramref name="run"/> on a C with <paramref name="padC"/> padding columns (holding a sentinel that
    /// must survive; NaN everywhere else when beta = 0, which must not leak) and compares with the fp64
    /// product of the element functions.
    /// </summary>
    private static void Verify(int m, int n, int k, Func<int, int, double> opA, Func<int, int, double> opB, float alpha, float beta,
        int padC, Rng r, string what, Action<IntPtr, int, float, float> runOnC)
    {
        int ldc = n + padC;
        float[] c = r.Uniform((long)m * ldc);
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < ldc; j++)
            {
                c[i * ldc + j] = j >= n ? Sentinel : beta == 0f ? float.NaN : c[i * ldc + j];
            }
        }

        var want = new double[m * n];
        double worst = 0;
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < n; j++)
            {
                double acc = 0, mag = 0;
                for (int p = 0; p < k; p++)
                {
                    double x = opA(i, p) * opB(p, j);
                    acc += x;
                    mag += Math.Abs(x);
                }

                double c0 = beta == 0f ? 0 : c[i * ldc + j];
                want[i * n + j] = alpha * acc + beta * c0;
                worst = Math.Max(worst, Math.Abs(alpha) * mag + Math.Abs(beta * c0));
            }
        }

        fixed (float* pc = c)
        {
            runOnC((IntPtr)pc, ldc, alpha, beta);
        }

        var got = new float[m * n];
        for (int i = 0; i < m; i++)
        {
            for (int j = 0; j < ldc; j++)
            {
                if (j < n)
                {
                    got[i * n + j] = c[i * ldc + j];
                }
                else
                {
                    Assert.True(c[i * ldc + j] == Sentinel, $"{what}: C[{i}, {j}] past the row was written ({c[i * ldc + j]}).");
                }
            }
        }

        Close.All(got, want, atol: (k + 3) * Math.Pow(2, -24) * worst, rtol: 0, what);
    }
}
