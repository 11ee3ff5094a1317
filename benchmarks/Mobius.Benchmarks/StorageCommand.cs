using System.Globalization;
using System.Text;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// `Mobius.Benchmarks storage [--config tiny] [--backend cpu] [--steps 30]`: both topologies with fp32, bf16 frozen
/// weights, bf16 saved activations, both, int8 saved activations, bf16 frozen weights with int8 saved activations, bf16
/// optimizer state, and all three narrowest, all sixteen cases' steps taking turns (<see cref="Frontier.MeasureCases"/>), so a machine whose speed drifts moves
/// them alike: what each storage option costs in time and saves in memory.
/// </summary>
public static class StorageCommand
{
    private const string Usage = "Mobius.Benchmarks storage [--config tiny] [--backend cpu|cuda] [--steps 30] [--warmup 3]";

    private static readonly (string Name, DType Weights, DType Activations, DType Optimizer)[] Storages =
    [
        ("fp32", DType.Float32, DType.Float32, DType.Float32),
        ("bf16 frozen weights", DType.BFloat16, DType.Float32, DType.Float32),
        ("bf16 saved activations", DType.Float32, DType.BFloat16, DType.Float32),
        ("both", DType.BFloat16, DType.BFloat16, DType.Float32),
        ("int8 saved activations", DType.Float32, DType.Int8Blocks, DType.Float32),
        ("bf16 frozen weights, int8 saved activations", DType.BFloat16, DType.Int8Blocks, DType.Float32),
        ("bf16 optimizer state", DType.Float32, DType.Float32, DType.BFloat16),
        ("bf16 weights, int8 activations, bf16 optimizer state", DType.BFloat16, DType.Int8Blocks, DType.BFloat16),
    ];

    public static int Run(string[] args)
    {
        if (CommandArgs.Timing(args, Usage, 30, out int code) is not var (config, backend, steps, warmup))
        {
            return code;
        }

        var cases = (from s in Storages
                     from topology in new[] { Topology.Serial, Topology.Parallel }
                     select (topology, new TrainOptions { Seed = 1, FrozenWeights = s.Weights, SavedActivations = s.Activations, OptimizerState = s.Optimizer })).ToList();
        // On a GPU eight large models may not fit at once: the two topologies of a storage take turns there.
        var timed = Frontier.MeasureCases(ModelConfig.Get(config), () => Backends.Create(backend), cases, steps, warmup, backend == "cpu" ? cases.Count : 2,
            new Progress<(int Done, int Total)>(p => Console.Error.Write($"\rstorage {config} on {backend}: round {p.Done}/{p.Total}   ")));
        Console.Error.WriteLine();

        var ci = CultureInfo.InvariantCulture;
        string Mb(long b) => (b / 1048576.0).ToString("0.0", ci);
        var sb = new StringBuilder();
        sb.AppendLine("| storage | serial ms | parallel ms | serial / fp32's | parallel / fp32's | serial peak MiB | parallel peak MiB | serial saved MiB | parallel saved MiB |");
        sb.AppendLine("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (int k = 0; k < Storages.Length; k++)
        {
            var s = timed[2 * k];
            var p = timed[(2 * k) + 1];
            sb.AppendLine(ci, $"| {Storages[k].Name} | {s.StepMsMedian:0.0} | {p.StepMsMedian:0.0} | {s.StepMsMedian / timed[0].StepMsMedian:0.000} | {p.StepMsMedian / timed[1].StepMsMedian:0.000} | {Mb(s.PeakBytes)} | {Mb(p.PeakBytes)} | {Mb(s.SavedActivationBytes)} | {Mb(p.SavedActivationBytes)} |");
        }

        Console.WriteLine(sb.ToString());
        Console.WriteLine(string.Create(ci, $"{config} on {backend}: median of {steps} steps per case after {warmup} warm-up steps, the cases taking turns."));
        return 0;
    }
}
