using Mobius.Cuda;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// <see cref="CudaBackend.TimeCalls"/>: while a scope is open every kernel launch and library call is timed between
/// a pair of CUDA events and its time added to its name (<see cref="CudaBackend.CallMilliseconds"/>). These check that
/// the names timed are exactly the names counted, that the calls' times fit in the scope's own events, that the events
/// are read in batches without losing one, and that nothing is timed outside a scope. No test compares durations: on the
/// simulator they are the host's, which a busy machine stretches. The class has its
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
        float whole;
        using (var timer = B.StartTimer())
        {
            using (B.TimeCalls())
            {
                Assert.Throws<InvalidOperationException>(() => B.TimeCalls());
                B.Gemm(new GemmShape(n, n, n), 1f, a, b, 0f, c);
                B.Add(small, small, sum);
            }

            whole = timer.Stop();
        }

        var ms = B.CallMilliseconds.ToDictionary(kv => kv.Key, kv => kv.Value);
        Assert.Equal(B.CallCounts.Keys.Order(StringComparer.Ordinal), ms.Keys.Order(StringComparer.Ordinal));
        Assert.Equal(["cublasSgemm", "ew_add_f32"], ms.Keys.Order(StringComparer.Ordinal));
        Assert.All(B.CallsTimed.Values, v => Assert.Equal(1, v));

        // Each call's time is the interval between its own pair of events: within the scope's, and the two calls' intervals
        // follow each other on the stream, so together they fit in it too. (Which call is the slower is not asserted: on the
        // simulator these are the host's times, and a busy machine can stall the small one.)
        Assert.All(ms.Values, v => Assert.InRange(v, 0, whole));
        Assert.InRange(ms.Values.Sum(), 0, whole);

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
