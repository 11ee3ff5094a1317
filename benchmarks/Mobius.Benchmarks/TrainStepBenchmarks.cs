using System.Collections.Concurrent;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Mobius.Data;
using Mobius.Engine;
using Mobius.Model;
using Mobius.Model.Training;

namespace Mobius.Benchmarks;

/// <summary>
/// One stage-2 training step (upload, forward, backward, AdamW) of the serial and the parallel topology,
/// same config, seed and batches, in the same process. Memory comes from the engine's allocator
/// (BenchmarkDotNet's memory diagnoser sees only managed memory): peak bytes of the step by category and
/// the bytes the tape saved for backward, in extra columns, with the parallel/serial ratios at the same
/// recompute policy. Every case runs at each policy of <see cref="MemoryPlan.Policies"/> (none, temporal,
/// spatial, spatial+temporal): recomputing trades time for memory, and both topologies' trades are measured.
/// At the first policy (none) each case also runs with bf16 frozen weights (<see cref="TrainOptions.FrozenWeights"/>),
/// bf16 saved activations (<see cref="TrainOptions.SavedActivations"/>), both, and int8 saved activations.
/// Configs: tiny on the CPU; small and ms256 on a GPU (MOBIUS_BENCH_CUDA=1).
/// </summary>
[Config(typeof(TrainStepConfig))]
public class TrainStepBenchmarks
{
    /// <summary>Memory of the last measured step of each case, filled in process (the in-process toolchain).</summary>
    public static readonly ConcurrentDictionary<string, StepStats> Measured = new();

    private IBackend _backend = null!;
    private TextToVideo _model = null!;
    private Trainer _trainer = null!;
    private StepStats? _last;

    public static IEnumerable<TrainCase> Cases() =>
        from backend in Backends.Names
        from config in backend == "cpu" ? new[] { "tiny" } : ["tiny", "small", "ms256"]
        from policy in MemoryPlan.Policies
        from storage in policy == MemoryPlan.Policies[0] ? new[] { ("fp32", "fp32"), ("bf16", "fp32"), ("fp32", "bf16"), ("bf16", "bf16"), ("fp32", "int8") } : [("fp32", "fp32")]
        from topology in new[] { Topology.Serial, Topology.Parallel }
        select new TrainCase(config, topology, backend, MemoryPlan.PolicyName(policy.Spatial, policy.Temporal), storage.Item1, storage.Item2);

    [ParamsSource(nameof(Cases))]
    public TrainCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var config = ModelConfig.Get(Case.Config);
        _backend = Backends.Create(Case.Backend);
        _model = TextToVideo.Create(_backend, config, Case.Topology, seed: 1);
        var (spatial, temporal) = MemoryPlan.Policies.Single(p => MemoryPlan.PolicyName(p.Spatial, p.Temporal) == Case.Recompute);
        _trainer = new Trainer(_model, Comparison.Data(config, 1, Split.Train), Stage.TextToVideo,
            new TrainOptions
            {
                Seed = 1, RecomputeSpatial = spatial, RecomputeTemporal = temporal,
                FrozenWeights = Case.Weights == "bf16" ? DType.BFloat16 : DType.Float32,
                SavedActivations = Case.Activations switch { "bf16" => DType.BFloat16, "int8" => DType.Int8Blocks, _ => DType.Float32 },
            });
        for (int i = 0; i < 2; i++)
        {
            _trainer.TrainStep();
        }
    }

    [Benchmark]
    public void TrainStep() => _last = _trainer.TrainStep();

    [GlobalCleanup]
    public void Cleanup()
    {
        if (_last is not null)
        {
            Measured[Case.ToString()] = _last;
        }

        _trainer.Dispose();
        _model.Dispose();
        _backend.Dispose();
    }
}

/// <summary>
/// A training-step case: config, topology, backend, recompute policy (<see cref="MemoryPlan.PolicyName"/>) and the
/// element types of the frozen weights ("fp32" or "bf16") and of the saved activations ("fp32", "bf16" or "int8").
/// </summary>
public sealed record TrainCase(string Config, Topology Topology, string Backend, string Recompute = "none", string Weights = "fp32", string Activations = "fp32")
{
    /// <summary>The other topology at the same config, backend and policy.</summary>
    public TrainCase Partner => this with { Topology = Topology == Topology.Serial ? Topology.Parallel : Topology.Serial };

    public override string ToString() => $"{Config} {Topology.ToString().ToLowerInvariant()} {Backend} recompute {Recompute}{(Weights == "fp32" ? "" : $" {Weights} weights")}{(Activations == "fp32" ? "" : $" {Activations} activations")}";
}

/// <summary>
/// Fifteen iterations of one step (a tiny step takes about a quarter of a second on two cores; seven left the
/// medians of neighbouring policies out of order) and the memory columns.
/// </summary>
public sealed class TrainStepConfig : BenchmarkDotNet.Configs.ManualConfig
{
    public TrainStepConfig()
    {
        AddJob(Job.Default
            .WithToolchain(BenchmarkDotNet.Toolchains.InProcess.Emit.InProcessEmitToolchain.Instance)
            .WithWarmupCount(3).WithIterationCount(15).WithInvocationCount(1).WithUnrollFactor(1).AsDefault());
        WithSummaryStyle(BenchmarkDotNet.Reports.SummaryStyle.Default.WithMaxParameterColumnWidth(80)); // the whole case name
        AddColumn(StatisticColumn.Median,
            new MemoryColumn("Peak MiB", s => s.Memory.PeakBytes),
            new MemoryColumn("Saved MiB", s => s.SavedActivationBytes),
            new MemoryColumn("Weights MiB", s => s.Memory.AtPeak[MemoryCategory.Weights]),
            new RatioColumn("Time P/S", (summary, c) => Median(summary, c)),
            new RatioColumn("Peak P/S", (_, c) => TrainStepBenchmarks.Measured.TryGetValue(c.ToString(), out var s) ? s.Memory.PeakBytes : double.NaN),
            new RatioColumn("Saved P/S", (_, c) => TrainStepBenchmarks.Measured.TryGetValue(c.ToString(), out var s) ? s.SavedActivationBytes : double.NaN));
    }

    private static double Median(Summary summary, TrainCase c)
    {
        var report = summary.Reports.FirstOrDefault(r => Case(r.BenchmarkCase) == c);
        return report?.ResultStatistics?.Median ?? double.NaN;
    }

    internal static TrainCase? Case(BenchmarkCase b) => b.Parameters.Items.FirstOrDefault(p => p.Name == "Case")?.Value as TrainCase;
}

/// <summary>A column of a step's memory figure, in MiB.</summary>
public sealed class MemoryColumn(string name, Func<StepStats, long> pick) : IColumn
{
    public string Id => "mem-" + name;

    public string ColumnName => name;

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 1;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => $"{name}: from the engine's allocator during the last measured step";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style) =>
        TrainStepConfig.Case(benchmarkCase) is { } c && TrainStepBenchmarks.Measured.TryGetValue(c.ToString(), out var s)
            ? (pick(s) / 1048576.0).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture)
            : "-";
}

/// <summary>Parallel divided by serial of a figure, shown on the parallel row.</summary>
public sealed class RatioColumn(string name, Func<Summary, TrainCase, double> figure) : IColumn
{
    public string Id => "ratio-" + name;

    public string ColumnName => name;

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 2;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => $"{name}: parallel / serial, same config and backend, same run";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        if (TrainStepConfig.Case(benchmarkCase) is not { Topology: Topology.Parallel } c)
        {
            return "-";
        }

        double r = figure(summary, c) / figure(summary, c.Partner);
        return double.IsFinite(r) ? r.ToString("0.000", System.Globalization.CultureInfo.InvariantCulture) : "-";
    }
}
