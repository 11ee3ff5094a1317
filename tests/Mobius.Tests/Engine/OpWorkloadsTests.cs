using Mobius.Engine.Cpu;
using Mobius.Engine.Profiling;
using Xunit;

namespace Mobius.Tests.Engine;

/// <summary>
/// The workloads of `mobius profile` and the kernel benchmarks: every one, in every direction it has, builds its
/// inputs at its default shape and runs on the CPU backend, with positive work and time.
/// </summary>
public sealed class OpWorkloadsTests
{
    private static string[] Directions(string workload) => workload switch
    {
        "temporal_conv" or "conv2d" => ["fwd", "bwd_data", "bwd_filter"],
        "copy" or "gemm" => ["fwd"],
        _ => ["fwd", "bwd"],
    };

    [Fact]
    public void Every_workload_runs_in_every_direction_on_the_cpu()
    {
        using var cpu = new CpuBackend();
        Assert.Contains(OpWorkloads.All, w => w.Name == "geglu");
        foreach (var w in OpWorkloads.All)
        {
            foreach (var dir in Directions(w.Name))
            {
                using var run = w.Create(cpu, OpWorkloads.Shape(w, null), dir);
                var t = OpWorkload.Time(cpu, run, iterations: 1, warmup: 1);
                Assert.True(t.Milliseconds > 0 && double.IsFinite(t.Milliseconds), $"{w.Name} {dir}: {t.Milliseconds} ms");
                Assert.True(run.Bytes > 0, $"{w.Name} {dir} moves no bytes");
                Assert.True(w.Name == "copy" || run.Flops > 0, $"{w.Name} {dir} does no work");
            }
        }
    }

    [Fact]
    public void Warm_up_runs_its_count_then_settles_within_its_time()
    {
        using var cpu = new CpuBackend(threads: 1);
        int runs = 0;
        using var run = new OpRun(() => runs++, 1, 1, []);
        OpWorkload.Time(cpu, run, iterations: 2, warmup: 1);
        Assert.Equal(3, runs);

        // A steady op settles after two seconds (two agreeing rounds); the time limit caps a run that never does.
        runs = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        OpWorkload.Time(cpu, run, iterations: 2, warmup: 1, settleSeconds: 5);
        Assert.InRange(clock.Elapsed.TotalSeconds, 2.0, 4.9);
        Assert.True(runs > 3, $"{runs} runs: no settling rounds ran");

        var slower = 0;
        using var drifting = new OpRun(() => Thread.Sleep(++slower), 1, 1, []); // each run 1 ms longer than the last
        clock.Restart();
        OpWorkload.Time(cpu, drifting, iterations: 1, warmup: 0, settleSeconds: 0.3);
        Assert.InRange(clock.Elapsed.TotalSeconds, 0.3, 2.0);
    }

    [Fact]
    public void An_unknown_workload_names_the_known_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => OpWorkloads.Get("softmax2"));
        Assert.Contains("geglu", e.Message);
    }
}
