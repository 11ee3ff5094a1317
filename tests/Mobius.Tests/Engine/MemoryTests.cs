using Mobius.Engine;
using Mobius.Engine.Autograd;
using Mobius.Engine.Cpu;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>Memory accounting: exact current and peak bytes by category on graphs checked by hand.</summary>
public sealed class MemoryTests
{
    [Fact]
    public void Peak_of_a_small_graph_equals_what_was_live_at_that_moment()
    {
        using var cpu = new CpuBackend(threads: 1);
        using var tape = Tape.Begin();
        const int n = 1000;
        const long t = n * 4;
        var r = new Rng(Seeds.One);

        using var a = Tensor.FromArray(cpu, r.Uniform(n), new Shape(n)).SetRequiresGrad();
        cpu.Memory.ResetPeak();
        var b = Ops.Scale(a, 2f);
        using var c = Ops.Silu(b);     // saves b
        b.Dispose();                   // the tape still holds b
        using var loss = Ops.Sum(c);

        // Live now: a, b (saved), c, loss.
        var fwd = cpu.Memory.Snapshot();
        Assert.Equal(3 * t + 4, fwd.CurrentBytes);
        Assert.Equal(3 * t + 4, fwd.PeakBytes);
        Assert.Equal(t, fwd.Current[MemoryCategory.SavedActivations]);

        loss.Backward();

        // Backward peaks inside silu's backward: a, b (saved), c, loss, the pending gradient of c and
        // the new gradient of b; the seed of the loss has already been freed.
        var after = cpu.Memory.Snapshot();
        Assert.Equal(5 * t + 4, after.PeakBytes);
        Assert.Equal(t, after.AtPeak[MemoryCategory.SavedActivations]);
        Assert.Equal(4 * t + 4, after.AtPeak[MemoryCategory.Temporaries]);

        // After: a, c, loss and a's gradient; nothing saved.
        Assert.Equal(3 * t + 4, after.CurrentBytes);
        Assert.Equal(t, after.Current[MemoryCategory.Gradients]);
        Assert.Equal(0, after.Current[MemoryCategory.SavedActivations]);
        a.ClearGrad();
    }

    [Fact]
    public void Categories_follow_weights_gradients_and_optimizer_state()
    {
        using var cpu = new CpuBackend(threads: 1);
        using var tape = Tape.Begin();
        var r = new Rng(Seeds.One);
        using var w = Parameter.Create(cpu, "w", new Shape(8, 4), r.Uniform(32));
        using var x = Tensor.FromArray(cpu, r.Uniform(12), new Shape(3, 4));
        Assert.Equal(128, cpu.Memory.Current(MemoryCategory.Weights));

        using (var y = Ops.Linear(x, w))
        using (var loss = Ops.Sum(y))
        {
            // dW needs x: the input becomes a saved activation while the tape holds it.
            Assert.Equal(x.Bytes, cpu.Memory.Current(MemoryCategory.SavedActivations));
            loss.Backward();
        }

        Assert.Equal(128, cpu.Memory.Current(MemoryCategory.Gradients));
        using var opt = new Mobius.Engine.Optim.AdamW([("w", w)]);
        opt.Step();
        Assert.Equal(256, cpu.Memory.Current(MemoryCategory.OptimizerState));
        Assert.Equal(0, cpu.Memory.Current(MemoryCategory.Gradients));
    }

    [Fact]
    public void Workspace_is_accounted_and_returned()
    {
        using var cpu = new CpuBackend(threads: 1);
        var r = new Rng(Seeds.One);
        using var x = Tensor.FromArray(cpu, r.Uniform(2 * 3 * 6 * 6), new Shape(2, 3, 6, 6));
        using var w = Tensor.FromArray(cpu, r.Uniform(4 * 3 * 9), new Shape(4, 3, 3, 3));
        cpu.Memory.ResetPeak();
        using var y = Ops.Conv2d(x, w, null, 1, 1);
        var s = cpu.Memory.Snapshot();
        Assert.True(s.Peak[MemoryCategory.Workspace] >= 3 * 9 * 36 * 4, "im2col buffer of one image");
        Assert.Equal(0, s.Current[MemoryCategory.Workspace]);
    }

    [Fact]
    public void The_allocator_reuses_freed_blocks()
    {
        using var cpu = new CpuBackend(threads: 1);
        var first = Tensor.Empty(cpu, new Shape(1000));
        nint handle = first.Storage.Handle;
        first.Dispose();
        using var second = Tensor.Empty(cpu, new Shape(990));
        Assert.Equal(handle, second.Storage.Handle);
        var s = cpu.Memory.Snapshot();
        Assert.Equal(990 * 4, s.CurrentBytes);
        Assert.Equal(2, s.Allocations);
        Assert.Equal(4096, s.ReservedBytes);
    }

    [Fact]
    public void Running_out_of_memory_raises_a_clear_error_and_nothing_is_lost()
    {
        using var cpu = new CpuBackend(threads: 1, memoryLimitBytes: 1 << 20);
        using var kept = Tensor.Full(cpu, new Shape(1000), 3f);
        var e = Assert.Throws<OutOfDeviceMemoryException>(() => Tensor.Empty(cpu, new Shape(1 << 20)));
        Assert.Contains("out of memory", e.Message);
        Assert.Equal(4 << 20, e.RequestedBytes);
        Assert.All(kept.ToArray(), v => Assert.Equal(3f, v));
        Assert.Equal(4000, cpu.Memory.CurrentBytes);
    }

    [Fact]
    public void Size_classes_waste_at_most_an_eighth()
    {
        var r = new Rng(Seeds.One);
        for (int i = 0; i < 1000; i++)
        {
            long bytes = (long)Math.Exp(r.Int(1, 2_300) / 100.0);
            long block = CachingAllocator.SizeClass(bytes);
            Assert.True(block >= bytes, $"{bytes} -> {block}");
            Assert.True(block <= Math.Max(512, bytes * 1.125 + 512), $"{bytes} -> {block}");
            Assert.True(block - bytes < CachingAllocator.LargeStep, $"{bytes} -> {block}");
        }
    }

    [Fact]
    public void The_tracker_counts_the_blocks_in_use_at_their_peak()
    {
        // Tensors of random sizes, some past 16 MiB, some released on the way: the block peak is the highest sum of the
        // live tensors' size classes, as a replay of the same sequence computes it; the requested peak is its own.
        var r = new Rng(Seeds.One);
        using var cpu = new CpuBackend(threads: 1);
        cpu.Memory.ResetPeak();
        var live = new List<Tensor>();
        long blocks = 0, blocksPeak = 0, bytes = 0, bytesPeak = 0;
        for (int i = 0; i < 40; i++)
        {
            if (live.Count > 0 && r.Int(0, 2) == 0)
            {
                var t = live[r.Int(0, live.Count - 1)];
                live.Remove(t);
                blocks -= CachingAllocator.SizeClass(t.Shape.Numel * 4);
                bytes -= t.Shape.Numel * 4;
                t.Dispose();
                continue;
            }

            int n = r.Int(0, 3) == 0 ? r.Int(4 << 20, 6 << 20) : r.Int(1, 300_000);
            live.Add(Tensor.Empty(cpu, new Shape(n)));
            blocks += CachingAllocator.SizeClass(n * 4L);
            bytes += n * 4L;
            blocksPeak = Math.Max(blocksPeak, blocks);
            bytesPeak = Math.Max(bytesPeak, bytes);
        }

        var s = cpu.Memory.Snapshot();
        Assert.Equal(bytesPeak, s.PeakBytes);
        Assert.Equal(blocksPeak, s.PeakBlockBytes);
        Assert.True(s.PeakBlockBytes > s.PeakBytes, $"{r}");
        live.ForEach(t => t.Dispose());
    }

    [Fact]
    public void Large_blocks_round_to_two_mebibytes()
    {
        // Above 16 MiB a block is the request rounded up to 2 MiB, whatever its size: a few GiB waste no more than a few MiB.
        var r = new Rng(Seeds.One);
        for (int i = 0; i < 1000; i++)
        {
            long bytes = (16L << 20) + ((long)r.Int(0, 1 << 30) * 64) + r.Int(0, 63);
            long block = CachingAllocator.SizeClass(bytes);
            Assert.True(block % CachingAllocator.LargeStep == 0 && block >= bytes && block - bytes < CachingAllocator.LargeStep, $"{r}: {bytes} -> {block}");
        }

        // The classes stay monotone and eight to the octave below, so small blocks keep being shared.
        Assert.Equal(9L << 20, CachingAllocator.SizeClass((8L << 20) + 1));
        Assert.Equal(18L << 20, CachingAllocator.SizeClass((16L << 20) + 1));
        long previous = 0;
        for (long bytes = 1; bytes < (1L << 36); bytes = (bytes * 9 / 8) + 1)
        {
            long block = CachingAllocator.SizeClass(bytes);
            Assert.True(block >= previous, $"{bytes} -> {block} after {previous}");
            previous = block;
        }
    }
}
