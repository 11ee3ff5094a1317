using Mobius.Engine;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// The caching allocator on a backend with several streams (a cache per stream, fences on blocks other streams used),
/// seen through a raw memory that records what the allocator asks of it; and the one-stream backends' stream API.
/// </summary>
public sealed class StreamTests
{
    private sealed record Fence(int Streams, int RecordedFrom);

    /// <summary>Raw memory with a current stream that logs allocations, fences, waits and drops.</summary>
    private sealed class LoggingStreams : IRawMemory
    {
        private long _next = 1 << 20;

        public int Current { get; set; }

        public List<string> Log { get; } = [];

        public nint Alloc(long bytes)
        {
            _next += 1 << 20;
            Log.Add($"alloc {_next:x}");
            return (nint)_next;
        }

        public void Free(nint handle, long bytes) => Log.Add($"free {handle:x}");

        public void Poison(nint handle, long bytes)
        {
        }

        public int Stream => Current;

        public object? Fence(int streams)
        {
            Log.Add($"fence {streams}");
            return new Fence(streams, Current);
        }

        public void Wait(object fence) => Log.Add($"wait {((Fence)fence).Streams} on {Current}");

        public void Drop(object fence) => Log.Add($"drop {((Fence)fence).Streams}");
    }

    private static (CachingAllocator Allocator, LoggingStreams Raw, CpuBackend Owner) Make()
    {
        var owner = new CpuBackend(threads: 1); // only its memory tracker is used
        var raw = new LoggingStreams();
        return (new CachingAllocator(raw, owner), raw, owner);
    }

    [Fact]
    public void Each_stream_has_a_cache_of_its_own()
    {
        var (alloc, raw, owner) = Make();
        using var _ = owner;
        int bytes = new Rng(Seeds.One).Int(1, 100_000);
        raw.Current = 1;
        var a = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(1, a.Stream);
        nint handle = a.Handle;
        alloc.Free(a);

        raw.Current = 0;
        var b = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.NotEqual(handle, b.Handle); // stream 1's cached block is not handed to stream 0
        Assert.Equal(0, b.Stream);

        raw.Current = 1;
        var c = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(handle, c.Handle); // it is handed back on its own stream, with nothing to wait for
        Assert.DoesNotContain(raw.Log, l => l.StartsWith("fence", StringComparison.Ordinal) || l.StartsWith("wait", StringComparison.Ordinal));
        alloc.Free(b);
        alloc.Free(c);
        alloc.Dispose();
        Assert.Equal(2, raw.Log.Count(l => l.StartsWith("free", StringComparison.Ordinal)));
    }

    [Fact]
    public void A_block_another_stream_used_waits_for_that_stream_before_it_is_handed_out_again()
    {
        var (alloc, raw, owner) = Make();
        using var _ = owner;
        int bytes = new Rng(Seeds.One + 1).Int(1, 100_000);
        raw.Current = 1;
        var a = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        nint handle = a.Handle;
        a.MarkUsedOn(1); // its own stream: nothing to record
        Assert.Equal(0, a.UsedOn);
        a.MarkUsedOn(0);
        Assert.Equal(1, a.UsedOn);
        alloc.Free(a);
        Assert.Equal("fence 1", raw.Log[^1]); // stream 0's work so far, recorded when the block is freed

        raw.Current = 1;
        raw.Log.Clear();
        var b = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(handle, b.Handle);
        Assert.Equal(["wait 1 on 1"], raw.Log); // stream 1 waits for it before the block is its again
        Assert.Equal(0, b.UsedOn);              // a new buffer: its own uses

        raw.Log.Clear();
        alloc.Free(b);
        var c = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(handle, c.Handle);
        Assert.Empty(raw.Log); // used on its own stream only: no fence, no wait
        alloc.Free(c);
    }

    [Fact]
    public void A_stream_ordered_after_another_borrows_the_blocks_that_stream_had_freed_by_then()
    {
        var (alloc, raw, owner) = Make();
        using var _ = owner;
        int bytes = new Rng(Seeds.One + 3).Int(1, 100_000);
        raw.Current = 1;
        var a = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        var b = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        var c = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        c.MarkUsedOn(0);
        alloc.Free(a);
        alloc.Free(c); // fenced: stream 0 read it
        long frees = alloc.Frees;
        alloc.Free(b); // after the event below: not stream 0's to take
        alloc.Ordered(0, 1, frees); // stream 0 waited for an event of stream 1 recorded after a and c were freed
        alloc.Ordered(1, 1, long.MaxValue); // a stream and itself: nothing to note

        raw.Current = 0;
        raw.Log.Clear();
        var first = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(a.Handle, first.Handle); // the oldest block freed before the event, with nothing to wait for
        Assert.Equal(0, first.Stream);        // stream 0's from now on
        Assert.Empty(raw.Log);
        var second = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(c.Handle, second.Handle);
        Assert.Equal(["wait 1 on 0"], raw.Log); // its fence still holds
        raw.Log.Clear();
        var third = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.NotEqual(b.Handle, third.Handle); // freed after the event: stream 0 is not ordered after that free
        Assert.StartsWith("alloc", Assert.Single(raw.Log), StringComparison.Ordinal);

        raw.Current = 1;
        var own = alloc.Allocate(bytes, MemoryCategory.Temporaries);
        Assert.Equal(b.Handle, own.Handle); // still stream 1's own
        foreach (var t in new[] { first, second, third, own })
        {
            alloc.Free(t);
        }
    }

    [Fact]
    public void Emptying_the_cache_drops_the_fences_of_the_blocks_it_frees()
    {
        var (alloc, raw, owner) = Make();
        using var _ = owner;
        raw.Current = 1;
        var a = alloc.Allocate(4096, MemoryCategory.Temporaries);
        a.MarkUsedOn(0);
        alloc.Free(a);
        raw.Log.Clear();
        alloc.EmptyCache();
        Assert.Equal(["drop 1", $"free {a.Handle:x}"], raw.Log);
        Assert.Equal(0, alloc.CachedBytes);
    }

    [Fact]
    public void The_cpu_backend_has_one_stream_and_the_side_stream_runs_in_issue_order()
    {
        using var cpu = new CpuBackend(threads: 1);
        IBackend b = cpu;
        Assert.Equal(1, b.StreamCount);
        Assert.Equal(0, b.CurrentStream);
        b.CurrentStream = 0;
        Assert.Throws<ArgumentOutOfRangeException>(() => b.CurrentStream = 1);
        Assert.True(b.RecordEvent().IsNone);

        var r = new Rng(Seeds.One + 2);
        var data = r.Uniform(64);
        using var x = Tensor.FromArray(cpu, data, new Shape(64));
        using var side = SideStream.Fork(cpu);
        Assert.False(side.IsActive);
        Tensor y;
        using (side.Use())
        {
            y = Ops.Scale(x, 2f);
        }

        using (y)
        {
            side.Handoff(y);
            side.Share(x);
            Assert.Equal(data.Select(v => 2f * v).ToArray(), y.ToArray());
        }
    }
}
