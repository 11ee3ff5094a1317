using Mobius.Cuda;
using Mobius.Cuda.Interop;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// The CUDA backend's workspaces stay bounded however large the batch: attention cuts the batch into chunks
/// whose score buffers fit a budget, and convolutions take no cuDNN algorithm that wants more workspace than
/// a limit. On an H200, ms256 at batch 16 had asked for 5.4 GB a score buffer and overflowed a 32-bit
/// element count (benchmarks/results/2026-11-27-h200.md). The shared op tests use shapes that fit one
/// chunk, so these lower the budget until they do not, and check the same op against the same fp64
/// reference and finite differences. The class has its own backend instance, so the settings reach no other
/// test.
/// </summary>
public sealed class CudaWorkspaceTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Theory]
    [InlineData(false, 1)]
    [InlineData(true, 2)]
    [InlineData(false, 3)]
    public void Attention_cut_into_chunks_matches_the_reference(bool cross, int seed)
    {
        var r = new Rng(Seeds.One * 11 + seed);
        int n = r.Int(3, 5), heads = r.Int(1, 3), d = r.Pick(1, 3, 4), lq = r.Int(2, 6);
        int lk = cross ? r.Int(1, 5) : lq;
        int perItem = r.Int(1, 2);                 // items per chunk: N is cut into chunks, the last one short
        long before = B.AttentionScoresBudgetBytes;
        B.AttentionScoresBudgetBytes = 4L * heads * lq * lk * perItem;
        try
        {
            var shape = new AttentionShape(n, heads, lq, lk, d, 1f);
            Assert.Equal(perItem, B.AttentionChunk(shape));
            Assert.True(n > perItem, "the batch must be cut into chunks");

            OpCheck.Run(B, r, Mobius.Tests.Engine.OpGradientTests.AttentionCase($"attention in chunks of {perItem} N={n} cross={cross}", n, heads, d, lq, lk));
        }
        finally
        {
            B.AttentionScoresBudgetBytes = before;
        }
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void Chunked_forward_writes_the_same_output_and_log_sum_exp(int perItem)
    {
        // The op tests see o and the gradients; the log-sum-exp that forward saves is checked here, chunk by chunk.
        var r = new Rng(Seeds.One * 13 + perItem);
        int n = 5, heads = r.Int(2, 3), d = 4, lq = r.Int(3, 6), lk = r.Int(2, 5), w = heads * d;
        var shape = new AttentionShape(n, heads, lq, lk, d, 0.5f);
        using var q = Tensor.FromArray(B, r.Uniform(n * lq * w, 2f), new Shape(n, lq, w));
        using var k = Tensor.FromArray(B, r.Uniform(n * lk * w, 2f), new Shape(n, lk, w));
        using var v = Tensor.FromArray(B, r.Uniform(n * lk * w, 2f), new Shape(n, lk, w));
        (float[] O, float[] Lse) Run(long budget)
        {
            long before = B.AttentionScoresBudgetBytes;
            B.AttentionScoresBudgetBytes = budget;
            try
            {
                using var o = Tensor.Empty(B, new Shape(n, lq, w));
                using var lse = Tensor.Empty(B, new Shape(n, heads, lq));
                B.AttentionForward(shape, q, k, v, o, lse);
                return (o.ToArray(), lse.ToArray());
            }
            finally
            {
                B.AttentionScoresBudgetBytes = before;
            }
        }

        var whole = Run(long.MaxValue);
        var chunked = Run(4L * heads * lq * lk * perItem);
        for (int i = 0; i < whole.O.Length; i++)
        {
            Assert.True(Math.Abs(whole.O[i] - chunked.O[i]) <= 1e-5f * (1 + Math.Abs(whole.O[i])), $"o[{i}]: {whole.O[i]} vs {chunked.O[i]}");
        }

        for (int i = 0; i < whole.Lse.Length; i++)
        {
            Assert.True(Math.Abs(whole.Lse[i] - chunked.Lse[i]) <= 1e-5f * (1 + Math.Abs(whole.Lse[i])), $"lse[{i}]: {whole.Lse[i]} vs {chunked.Lse[i]}");
        }
    }

    [Fact]
    public void Attention_chunks_keep_the_score_buffer_within_the_budget()
    {
        long budget = B.AttentionScoresBudgetBytes;
        var ms256Clip = new AttentionShape(16, 5, 1024, 1024, 64, 0.125f);       // ms256 first level, one clip
        Assert.Equal(16, B.AttentionChunk(ms256Clip));                           // fits: one chunk, as before
        var batch33 = ms256Clip with { N = 33 * 16 };
        int chunk = B.AttentionChunk(batch33);
        Assert.InRange(4L * chunk * 5 * 1024 * 1024, 1, budget);
        Assert.True(4L * (chunk + 1) * 5 * 1024 * 1024 > budget, "as many items as fit");
        var huge = new AttentionShape(2, 64, 8192, 8192, 64, 0.125f);            // one item over the budget: still one
        Assert.Equal(1, B.AttentionChunk(huge));
    }

    [Fact]
    public void Workspace_shapes_hold_more_elements_than_an_int()
    {
        Assert.Equal(new Shape(7), CudaBackend.WorkspaceShape(7));
        Assert.Equal(new Shape(int.MaxValue), CudaBackend.WorkspaceShape(int.MaxValue));
        long big = 2_768_240_640;                                                // batch 33's scores before chunking
        var s = CudaBackend.WorkspaceShape(big);
        Assert.Equal(2, s.Rank);
        Assert.InRange(s.Numel, big, big + (1 << 20) - 1);
    }

    [Fact]
    public void Convolution_algorithms_are_chosen_within_the_workspace_limit()
    {
        const int det = Cudnn.Deterministic, nondet = 0;
        static Cudnn.AlgoPerf A(int algo, int status, long bytes, int determinism) =>
            new() { Algo = algo, Status = status, Memory = (nuint)bytes, Determinism = determinism };
        long limit = 1L << 30;
        Cudnn.AlgoPerf[] perf =
        [
            A(5, 0, 9L << 30, det),          // fastest, deterministic, but 9 GiB of workspace
            A(1, 3, 0, det),                 // failed
            A(2, 0, 64L << 20, nondet),      // within the limit, not deterministic
            A(0, 0, 256L << 20, det),        // within the limit and deterministic: taken
        ];
        Assert.Equal(0, CudaBackend.Best(perf, perf.Length, "forward", limit));
        Assert.Equal(5, CudaBackend.Best(perf, perf.Length, "forward", 16L << 30));          // a larger limit keeps the fastest
        Assert.Equal(2, CudaBackend.Best(perf, 3, "forward", limit));                        // no deterministic one fits
        Cudnn.AlgoPerf[] large = [A(7, 0, 3L << 30, det), A(6, 0, 2L << 30, nondet)];
        Assert.Equal(6, CudaBackend.Best(large, large.Length, "forward", limit));            // none fits: the least workspace
        Assert.Throws<CudaException>(() => CudaBackend.Best([A(1, 3, 0, det)], 1, "forward", limit));
    }
}
