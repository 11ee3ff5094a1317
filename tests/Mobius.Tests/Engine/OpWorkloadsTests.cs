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
    public void An_unknown_workload_names_the_known_ones()
    {
        var e = Assert.Throws<ArgumentException>(() => OpWorkloads.Get("softmax2"));
        Assert.Contains("geglu", e.Message);
    }
}
