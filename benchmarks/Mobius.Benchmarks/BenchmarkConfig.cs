using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using BenchmarkDotNet.Toolchains.InProcess.Emit;

namespace Mobius.Benchmarks;

/// <summary>
/// The configuration of every suite: in-process (no generated project, no SDK needed), the default
/// exporters (GitHub markdown among them), and a GFLOP/s column computed from each case's flop count
/// and the measured mean.
/// </summary>
public sealed class BenchmarkConfig : ManualConfig
{
    public BenchmarkConfig()
    {
        Add(DefaultConfig.Instance);

        // 15 measured iterations after 5 warm-ups: enough for a stable median on a shared 2-core machine
        // without the default's open-ended iteration count.
        AddJob(Job.Default
            .WithToolchain(InProcessEmitToolchain.Instance)
            .WithWarmupCount(5)
            .WithIterationCount(15)
            .AsDefault());
        AddColumn(StatisticColumn.Median, new GflopsColumn(), new GbpsColumn());
        WithSummaryStyle(SummaryStyle.Default.WithMaxParameterColumnWidth(48));
        WithOptions(ConfigOptions.JoinSummary);
    }
}

/// <summary>A benchmark case that knows how many floating-point operations one invocation performs.</summary>
public interface IFlopCount
{
    double Flops { get; }
}

/// <summary>GFLOP/s = the case's flops (from its <see cref="IFlopCount"/> parameter) / the mean time.</summary>
public sealed class GflopsColumn : IColumn
{
    public string Id => nameof(GflopsColumn);

    public string ColumnName => "GFLOP/s";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 0;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "Floating-point operations per invocation / mean time, in 10^9 per second";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var flops = benchmarkCase.Parameters.Items.Select(p => p.Value).OfType<IFlopCount>().FirstOrDefault();
        var stats = summary[benchmarkCase]?.ResultStatistics;
        if (flops is null || stats is null)
        {
            return "-";
        }

        // Mean is in nanoseconds: flops / ns = GFLOP/s.
        return (flops.Flops / stats.Mean).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
    }
}
