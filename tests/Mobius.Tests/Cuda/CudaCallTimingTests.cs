using Mobius.Cuda;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// <see cref="CudaBackend.TimeCalls"/>: while a scope is open every kernel launch and library call is timed between
/// a pair of CUDA events and its time added to its name (<see cref="CudaBackend.CallMilliseconds"/>). These check that
/// the names timed are exactly the names counted, that a call's time is its own (a large GEMM against a small kernel),
/// that the events are read in batches without losing one, and that nothing is timed outside a scope. The class has its
/// own backend instance, so its timing reaches no other test.
/// </summary>
public sealed class CudaCallTimingTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Fact]
    public void Each_call_is_timed_under_its_name_and_only_inside_a_scope()
    {
        var r = new Rng(Seeds.One * 7 + 3);
        const int n = 192;
        using var a = Tensor.FromArray(B, r.Uniform(n * n), new Shape(n, n));
        using var b = Tensor.FromArray(B, r.Uniform(n * n), new Shape(n, n));
        using var c = Tensor.Empty(B, new Shape(n, n));
        using var small = Tensor.FromArray(B, r.Uniform(64), new Shape(64));
        using var sum = Tensor.Empty(B, new Shape(64));
        B.Synchronize();

        // Outside a scope: counted, not timed.
        B.ResetCallCounts();
        B.Add(small, small, sum);
        Assert.Equal(1, B.CallCounts.GetValueOrDefault("ew_add_f32"));
        Assert.Empty(B.CallMilliseconds);

        B.ResetCallCounts();
        using (B.TimeCalls())
        {
            Assert.Throws<InvalidOperationException>(() => B.TimeCalls());
            B.Gemm(new GemmShape(n, n, n), 1f, a, b, 0f, c);
            B.Add(small, small, sum);
        }

        var ms = B.CallMilliseconds.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(B.CallCounts.Keys.Order(StringComparer.Ordinal), ms.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(["cublasSgemm", "ew_add_f32"], ms.Keys.Order(StringComparer.Ordinal));
        Assert.All(B.CallsTimed.Values, v => Assert.Equal(1, v));

        // 2 n^3 = 14 MFLOP against 64 additions: on the simulator (the host's time) as on a GPU, the GEMM takes longer.
        Assert.True(ms["cublasSgemm"] > ms["ew_add_f32"], $"GEMM {ms["cublasSgemm"]} ms, add {ms["ew_add_f32"]} ms");
        Assert.All(ms.Values, v => Assert.True(v >= 0));

        // After the scope: nothing more is timed, and a reset clears the times.
        B.Add(small, small, sum);
        Assert.Equal(ms["ew_add_f32"], B.CallMilliseconds["ew_add_f32"]);
        Assert.Equal(1, B.CallsTimed["ew_add_f32"]);
        B.ResetCallCounts();
        Assert.Empty(B.CallMilliseconds);
    }

    [Fact]
    public void Thousands_of_calls_are_read_in_batches_and_none_is_lost()
    {
        // More calls than one batch of events (1,024): each batch is read and its events reused; a lost batch or a
        // call timed twice would show in the sum against the scope's own events.
        var r = new Rng(Seeds.One * 7 + 5);
        using var x = Tensor.FromArray(B, r.Uniform(4096), new Shape(4096));
        using var y = Tensor.Empty(B, new Shape(4096));
        B.Synchronize();
        B.ResetCallCounts();
        const int calls = 2_500;
        float whole;
        using (var timer = B.StartTimer())
        {
            using (B.TimeCalls())
            {
                for (int i = 0; i < calls; i++)
                {
                    B.Mul(x, x, y);
                }
            }

            whole = timer.Stop();
        }

        Assert.Equal(calls, B.CallCounts["ew_mul_f32"]);
        Assert.Equal(calls, B.CallsTimed["ew_mul_f32"]);
        double timed = B.CallMilliseconds["ew_mul_f32"];
        Assert.InRange(timed, 1e-6, whole);
        Assert.All(y.ToArray().Zip(x.ToArray()), p => Assert.Equal(p.Second * p.Second, p.First));
    }
}
