using System.CommandLine;
using Mobius.Engine;
using Mobius.Engine.Cpu;
using Spectre.Console;

namespace Mobius.Cli;

/// <content><c>mobius profile</c>: one kernel workload, repeated.</content>
public static partial class Commands
{
    // ---- profile ----------------------------------------------------------------------------------

    private static Command Profile()
    {
        var kernel = new Option<string>("--kernel") { Description = "workload: " + string.Join(", ", Mobius.Engine.Profiling.OpWorkloads.All.Select(w => w.Name)), Required = true };
        var shape = new Option<string?>("--shape") { Description = "shape overrides, e.g. n=512,h=2,f=8,d=32 (defaults: the tiny model's)" };
        var direction = new Option<string>("--direction") { Description = "fwd or bwd (convolutions: bwd_data, bwd_filter)", DefaultValueFactory = _ => "fwd" };
        var iterations = new Option<int>("--iterations") { Description = "timed runs", DefaultValueFactory = _ => 100 };
        var cmd = new Command("profile", "Run one kernel workload repeatedly (for an ncu or nsys session, e.g. ncu --kernel-name temporal_attention_fwd_f32 mobius profile --kernel temporal_attention --backend cuda) and print its time.")
            { kernel, shape, direction, iterations, BackendOption, MathOption, ThreadsOption };
        cmd.SetAction(p =>
        {
            Mobius.Engine.Profiling.OpWorkload w;
            Dictionary<string, int> dims;
            try
            {
                w = Mobius.Engine.Profiling.OpWorkloads.Get(p.GetValue(kernel)!);
                dims = Mobius.Engine.Profiling.OpWorkloads.Shape(w, p.GetValue(shape));
            }
            catch (ArgumentException e)
            {
                throw new UsageException(e.Message);
            }

            string dir = p.GetValue(direction)!;
            if (dir is not ("fwd" or "bwd" or "bwd_data" or "bwd_filter"))
            {
                throw new UsageException($"--direction must be fwd, bwd, bwd_data or bwd_filter, got '{dir}'.");
            }

            int n = p.GetValue(iterations);
            if (n < 1)
            {
                throw new UsageException($"--iterations must be at least 1, got {n}.");
            }

            using var backend = Backends.Create(p.GetValue(BackendOption)!, p.GetValue(ThreadsOption), 0, p.GetValue(MathOption));
            using var run = w.Create(backend, dims, dir);
            // On the host the warm-up goes on until the JIT has settled the op's code; a device run warms up 3 launches
            // (an ncu session profiles every launch).
            var t = Mobius.Engine.Profiling.OpWorkload.Time(backend, run, n, settleSeconds: backend is Mobius.Engine.Cpu.CpuBackend ? 5 : 0);
            AnsiConsole.MarkupLine($"{w.Name} {dir} [[{string.Join(", ", dims.Select(kv => $"{kv.Key}={kv.Value}"))}]] on {Markup.Escape(backend.DeviceName)}");
            AnsiConsole.MarkupLine($"  {t.Milliseconds:0.000} ms per run over {n} runs, {t.GFlops:0.0} GFLOP/s, {t.GBytes:0.0} GB/s of compulsory traffic");
            return ExitCodes.Success;
        });
        return cmd;
    }
}
