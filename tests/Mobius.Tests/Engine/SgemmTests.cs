using System.Runtime.Intrinsics;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// The CPU SGEMM against a plain fp64 loop: every transposition, leading dimensions wider than the rows,
/// alpha and beta, shapes on both sides of every block boundary of the implementation (micro-tile,
/// cache blocks, the light-path limits), serial and threaded, on the AVX2 and the portable kernel.
/// Tolerance: atol = gamma * max_ij (|alpha| sum_p |a_ip b_pj| + |beta c_ij|), rtol = 0, with
/// gamma = (k + 3) * 2^-24: the worst-case error of fp32 summation of k products in any order, fused or
/// not, plus the alpha and beta roundings. Typical errors are far below it, while a wrong or missing
/// term is of the size of the terms themselves (inputs are uniform in [-1, 1]).
/// </summary>
public sealed unsafe class SgemmTests : IDisposable
{
    // Four threads even on a two-core machine, so the grid split is exercised in both directions.
    private readonly CpuBackend _cpu = new(threads: 4);

    public void Dispose() => _cpu.Dispose();

    /// <summary>Sizes that straddle every block edge: 1, micro-tile rows / columns, MC, KC, the light path's k limit.</summary>
    private static readonly int[] EdgeSizes =
    [
        1, 2, 5, Sgemm.MR - 1, Sgemm.MR, Sgemm.MR + 1, 7, 8, 9, 13, 15, 16, 17, 31, 33, 65,
        Sgemm.MC - 1, Sgemm.MC, Sgemm.MC + 1, 129, Sgemm.KC - 1, Sgemm.KC, Sgemm.KC + 1, Sgemm.SmallMaxK + 1,
    ];

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Random_shapes_match_the_reference(int seed)
    {
        var r = new Rng(seed);
        for (int t = 0; t < 24; t++)
        {
            var g = Case.Random(r, EdgeSizes);

            // Keep the fp64 reference loop under a few tens of millions of terms.
            while ((long)g.M * g.N * g.K > 20_000_000)
            {
                g = g with { M = Math.Max(1, g.M / 2), N = Math.Max(1, g.N / 2) };
            }

            Check(g, r, Avx2Ops.IsSupported);
        }
    }

    [Theory]
    [InlineData(Sgemm.MR, 16, 1)]
    [InlineData(Sgemm.MR * 3 + 1, 16 * 3 + 1, Sgemm.KC + 1)]
    [InlineData(Sgemm.MC + 1, 17, Sgemm.KC * 2 + 3)]
    [InlineData(Sgemm.MC * 2 + 5, 40, 30)]
    [InlineData(13, Sgemm.NC + 19, 70)]
    [InlineData(1, 300, 300)]
    [InlineData(300, 1, 300)]
    [InlineData(64, 64, 64)]
    [InlineData(65, 64, 64)]
    [InlineData(9, 9, Sgemm.SmallMaxK)]
    [InlineData(9, 9, Sgemm.SmallMaxK + 1)]
    public void Block_boundaries_in_every_transposition_serial_and_threaded(int m, int n, int k)
    {
        var r = new Rng(Seeds.One + m * 7 + n * 3 + k);
        foreach (bool ta in new[] { false, true })
        {
            foreach (bool tb in new[] { false, true })
            {
                foreach (bool parallel in new[] { false, true })
                {
                    var g = new Case(m, n, k, ta, tb, 0, 0, 0, r.Pick(1f, -0.75f), r.Pick(0f, 1f, 0.5f), parallel);
                    Check(g, r, Avx2Ops.IsSupported);
                }
            }
        }
    }

    [Theory]
    [MemberData(nameof(Seeds.Three), MemberType = typeof(Seeds))]
    public void Portable_kernel_matches_the_reference(int seed)
    {
        var r = new Rng(seed);
        for (int t = 0; t < 16; t++)
        {
            Check(Case.Random(r, [1, 3, 4, 5, 6, 7, 8, 9, 17, 33, 70, 145, 257]), r, avx: false);
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
            // Check fills C with NaN when beta = 0 and its padding columns with a sentinel it verifies.
            Check(new Case(m, n, k, r.Pick(false, true), r.Pick(false, true), 3, 5, 11, 1.5f, 0f, parallel), r, Avx2Ops.IsSupported);
        }
    }

    [Fact]
    public void Empty_depth_or_zero_alpha_only_scales_c()
    {
        var r = new Rng(Seeds.One);
        Check(new Case(5, 9, 0, false, false, 0, 0, 2, 1f, 0.5f, false), r, Avx2Ops.IsSupported);
        Check(new Case(5, 9, 0, false, false, 0, 0, 2, 1f, 0f, false), r, Avx2Ops.IsSupported);
        Check(new Case(70, 90, 80, true, false, 0, 0, 2, 0f, 2f, true), r, Avx2Ops.IsSupported);
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

    private void Check(Case g, Rng r, bool avx)
    {
        // Stored shapes: A is k x m when transposed, B is n x k when transposed.
        int aRows = g.TransA ? g.K : g.M, aCols = g.TransA ? g.M : g.K;
        int bRows = g.TransB ? g.N : g.K, bCols = g.TransB ? g.K : g.N;
        int lda = aCols + g.PadA, ldb = bCols + g.PadB, ldc = g.N + g.PadC;
        float[] a = r.Uniform(Math.Max(1, (long)aRows * lda));
        float[] b = r.Uniform(Math.Max(1, (long)bRows * ldb));
        float[] c = r.Uniform((long)g.M * ldc);
        const float Sentinel = 12345f;
        for (int i = 0; i < g.M; i++)
        {
            for (int j = 0; j < ldc; j++)
            {
                // beta = 0 must not read C: NaN there would leak into every result it touched.
                c[i * ldc + j] = j >= g.N ? Sentinel : g.Beta == 0f ? float.NaN : c[i * ldc + j];
            }
        }

        var want = new double[g.M * g.N];
        double worst = 0;
        double gamma = (g.K + 3) * Math.Pow(2, -24);
        for (int i = 0; i < g.M; i++)
        {
            for (int j = 0; j < g.N; j++)
            {
                double acc = 0, mag = 0;
                for (int p = 0; p < g.K; p++)
                {
                    double x = g.TransA ? a[p * lda + i] : a[i * lda + p];
                    double y = g.TransB ? b[j * ldb + p] : b[p * ldb + j];
                    acc += x * y;
                    mag += Math.Abs(x * y);
                }

                double c0 = g.Beta == 0f ? 0 : c[i * ldc + j];
                want[i * g.N + j] = g.Alpha * acc + g.Beta * c0;
                worst = Math.Max(worst, Math.Abs(g.Alpha) * mag + Math.Abs(g.Beta * c0));
            }
        }

        fixed (float* pa = a, pb = b, pc = c)
        {
            if (avx)
            {
                Sgemm.Run<Avx2Ops, Vector256<float>>(_cpu, g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, pa, lda, pb, ldb, g.Beta, pc, ldc, g.Parallel);
            }
            else
            {
                Sgemm.Run<PortableOps, Vector128<float>>(_cpu, g.TransA, g.TransB, g.M, g.N, g.K, g.Alpha, pa, lda, pb, ldb, g.Beta, pc, ldc, g.Parallel);
            }
        }

        var got = new float[g.M * g.N];
        for (int i = 0; i < g.M; i++)
        {
            for (int j = 0; j < ldc; j++)
            {
                if (j < g.N)
                {
                    got[i * g.N + j] = c[i * ldc + j];
                }
                else
                {
                    Assert.True(c[i * ldc + j] == Sentinel, $"{g} ({r}): C[{i}, {j}] past the row was written ({c[i * ldc + j]}).");
                }
            }
        }

        Close.All(got, want, atol: gamma * worst, rtol: 0, $"{g} ({r})");
    }
}
