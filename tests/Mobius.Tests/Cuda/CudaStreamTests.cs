using Mobius.Cuda;
using Mobius.Engine;
using Xunit;

namespace Mobius.Tests.Cuda;

/// <summary>
/// The CUDA backend's second stream: switching, events, and the allocator's per-stream caches and fences, in a
/// pipeline that writes on one stream what the other reads and frees and reuses the buffers as it goes. On the
/// simulated driver every op's reads and writes are checked against the streams' order (kernels/README.md), so a
/// missing event or fence fails the test with a "stream race" error instead of passing by the simulator's luck of
/// running everything at once. The class has its own backend instance.
/// </summary>
public sealed class CudaStreamTests(CudaFixture fixture) : IClassFixture<CudaFixture>
{
    private CudaBackend B => (CudaBackend)fixture.Backend;

    [Fact]
    public void The_streams_setting_takes_one_or_two()
    {
        Assert.Equal(2, CudaBackend.StreamsSetting(null));
        Assert.Equal(2, CudaBackend.StreamsSetting(""));
        Assert.Equal(2, CudaBackend.StreamsSetting("2"));
        Assert.Equal(1, CudaBackend.StreamsSetting("1"));
        var e = Assert.Throws<ArgumentException>(() => CudaBackend.StreamsSetting("3"));
        Assert.Contains("MOBIUS_STREAMS=3", e.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void Buffers_belong_to_the_stream_they_were_allocated_on()
    {
        if (B.StreamCount < 2)
        {
            return; // MOBIUS_STREAMS=1
        }

        Assert.Equal(0, B.CurrentStream);
        nint main = B.Stream;
        B.CurrentStream = 1;
        try
        {
            Assert.NotEqual(main, B.Stream);
            using var t = Tensor.Zeros(B, new Shape(333));
            Assert.Equal(1, t.Storage.Stream);
        }
        finally
        {
            B.CurrentStream = 0;
        }

        Assert.Equal(main, B.Stream);
        Assert.Throws<ArgumentOutOfRangeException>(() => B.CurrentStream = 2);
        Assert.Throws<ArgumentOutOfRangeException>(() => B.CurrentStream = -1);
    }

    [Theory]
    [InlineData(1)]
    [InlineData(2)]
    public void A_pipeline_across_the_two_streams_computes_what_one_stream_does(int seed)
    {
        // The side stream makes a product of a frozen weight and an input per step and hands it over; the main stream
        // adds it into a running sum; buffers of both streams are freed as soon as each is done with them, so every
        // step reuses the blocks of the one before (the allocator's fences keep the side stream from overwriting a
        // block the main stream still reads).
        var r = new Rng(Seeds.One * 17 + seed);
        int n = r.Int(3, 9), k = r.Int(2, 7), steps = r.Int(4, 7);
        using var w = Tensor.FromArray(B, r.Uniform(n * k), new Shape(n, k));
        var inputs = Enumerable.Range(0, steps).Select(_ => r.Uniform(k * n)).ToArray();

        float[] Run(bool twoStreams)
        {
            var sum = Tensor.Zeros(B, new Shape(n, n));
            using var side = SideStream.Fork(B, twoStreams);
            Assert.Equal(twoStreams && B.StreamCount > 1, side.IsActive);
            side.Share(w);
            foreach (var input in inputs)
            {
                Tensor product;
                using (side.Use())
                {
                    using var x = Tensor.FromArray(B, input, new Shape(k, n));
                    using var y = Ops.MatMul(w, x);
                    product = Ops.Silu(y);
                }

                side.Handoff(product);
                using (product)
                {
                    sum = sum.Then(s => Ops.Add(s, product));
                }
            }

            side.Dispose();
            using (sum)
            {
                return sum.ToArray();
            }
        }

        var one = Run(false);
        var two = Run(true);
        Assert.Contains(one, v => Math.Abs(v) > 1e-3);
        Assert.Equal(one, two);
    }

    [Fact]
    public void An_error_on_the_side_stream_leaves_the_main_stream_current_and_the_backend_usable()
    {
        var r = new Rng(Seeds.One * 23);
        var data = r.Uniform(12);
        using var a = Tensor.FromArray(B, data, new Shape(3, 4));
        using var wrong = Tensor.FromArray(B, r.Uniform(10), new Shape(2, 5));
        using (var side = SideStream.Fork(B))
        {
            Assert.Throws<ShapeMismatchException>(() =>
            {
                using (side.Use())
                {
                    using var bad = Ops.Add(a, wrong);
                }
            });
            Assert.Equal(0, B.CurrentStream);
            if (side.IsActive)
            {
                Assert.Throws<InvalidOperationException>(() =>
                {
                    using (side.Use())
                    {
                        side.Handoff(a); // on the side stream: refused, and the scope still ends on the main stream
                    }
                });
                Assert.Equal(0, B.CurrentStream);
            }
        }

        using var twice = Ops.Add(a, a);
        Assert.Equal(data.Select(v => v + v).ToArray(), twice.ToArray());
    }

    [Fact]
    public void A_block_freed_on_the_side_stream_after_the_main_stream_read_it_is_fenced()
    {
        if (B.StreamCount < 2)
        {
            return;
        }

        var r = new Rng(Seeds.One * 19);
        var data = r.Uniform(1000);
        using var sink = Tensor.Zeros(B, new Shape(1000));
        nint handle;
        using (var side = SideStream.Fork(B))
        {
            Tensor shared;
            using (side.Use())
            {
                shared = Tensor.FromArray(B, data, new Shape(1000));
            }

            side.Handoff(shared);
            B.Cast(shared, sink); // the main stream reads it
            handle = shared.Storage.Handle;
            using (side.Use())
            {
                shared.Dispose(); // freed while the side stream is current: still fenced on the main stream's read
                using var again = Tensor.Zeros(B, new Shape(1000)); // the same block, after the fence
                Assert.Equal(handle, again.Storage.Handle);
                B.Fill(again, 3f); // a write on the side stream: ordered after the main stream's read
            }
        }

        Assert.Equal(data, sink.ToArray());
    }
}
