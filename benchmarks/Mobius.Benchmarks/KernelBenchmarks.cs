using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Running;
using Mobius.Engine;
using Mobius.Engine.Profiling;

namespace Mobius.Benchmarks;

/// <summary>
/// The op workloads of `mobius profile` on each backend, each against its alternative: the dedicated
/// temporal-attention kernel against the general attention path (cuBLAS GEMMs and a softmax on the GPU),
/// and every op on the cpu backend. Achieved GFLOP/s and GB/s stand next to the two reference rates
/// measured in the same run: the streaming copy bandwidth ("copy") and a large GEMM ("gemm 2048").
/// </summary>
[Config(typeof(BenchmarkConfig))]
public class KernelBenchmarks
{
    private const int Runs = 10;
    private IBackend _backend = null!;
    private OpRun _run = null!;

    public static IEnumerable<KernelCase> Cases()
    {
        foreach (var backend in Backends.Names)
        {
            yield return new KernelCase("copy", "fwd", backend, null);
            yield return new KernelCase("gemm", "fwd", backend, backend == "cpu" ? "m=512,n=512,k=512" : "m=2048,n=2048,k=2048");
            foreach (var dir in new[] { "fwd", "bwd" })
            {
                yield return new KernelCase("temporal_attention", dir, backend, null);
                yield return new KernelCase("attention", dir, backend, "n=512,h=2,l=8,lk=8,d=32");
                yield return new KernelCase("group_norm", dir, backend, null);
                yield return new KernelCase("geglu", dir, backend, null);
            }

            foreach (var dir in new[] { "fwd", "bwd_data", "bwd_filter" })
            {
                yield return new KernelCase("temporal_conv", dir, backend, null);
                yield return new KernelCase("conv2d", dir, backend, null);
            }
        }
    }

    [ParamsSource(nameof(Cases))]
    public KernelCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        _backend = Backends.Create(Case.Backend);
        var w = OpWorkloads.Get(Case.Workload);
        _run = w.Create(_backend, OpWorkloads.Shape(w, Case.Shape), Case.Direction);
    }

    [Benchmark(OperationsPerInvoke = Runs)]
    public void Run()
    {
        for (int i = 0; i < Runs; i++)
        {
            _run.Run();
        }

        _backend.Synchronize();
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        _run.Dispose();
        _backend.Dispose();
    }
}

/// <summary>A workload, direction, backend and optional shape override; the flop and byte counts come from the workload.</summary>
public sealed record KernelCase(string Workload, string Direction, string Backend, string? Shape) : IFlopCount, IByteCount
{
    private (double Flops, double Bytes)? _counts;

    public double Flops => Counts().Flops;

    public double Bytes => Counts().Bytes;

    public override string ToString() => $"{Workload} {Direction} {Backend}{(Shape is null ? "" : $" [{Shape}]")}";

    private (double Flops, double Bytes) Counts()
    {
        if (_counts is null)
        {
            using var meta = new MetaCounts();
            _counts = meta.Of(this);
        }

        return _counts.Value;
    }

    /// <summary>Flop and byte counts of a case, read from the workload without running it.</summary>
    private sealed class MetaCounts : IDisposable
    {
        private readonly Mobius.Engine.Cpu.CpuBackend _cpu = new(threads: 1);

        public (double, double) Of(KernelCase c)
        {
            var w = OpWorkloads.Get(c.Workload);
            using var run = w.Create(_cpu, OpWorkloads.Shape(w, c.Shape), c.Direction);
            return (run.Flops, run.Bytes);
        }

        public void Dispose() => _cpu.Dispose();
    }
}

/// <summary>A case that knows how many bytes one invocation must move.</summary>
public interface IByteCount
{
    double Bytes { get; }
}

/// <summary>GB/s = the case's compulsory bytes / the mean time.</summary>
public sealed class GbpsColumn : IColumn
{
    public string Id => nameof(GbpsColumn);

    public string ColumnName => "GB/s";

    public bool AlwaysShow => true;

    public ColumnCategory Category => ColumnCategory.Custom;

    public int PriorityInCategory => 1;

    public bool IsNumeric => true;

    public UnitType UnitType => UnitType.Dimensionless;

    public string Legend => "Compulsory bytes per invocation / mean time, in 10^9 per second";

    public bool IsAvailable(Summary summary) => true;

    public bool IsDefault(Summary summary, BenchmarkCase benchmarkCase) => false;

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase) => GetValue(summary, benchmarkCase, SummaryStyle.Default);

    public string GetValue(Summary summary, BenchmarkCase benchmarkCase, SummaryStyle style)
    {
        var bytes = benchmarkCase.Parameters.Items.Select(p => p.Value).OfType<IByteCount>().FirstOrDefault();
        var mean = summary[benchmarkCase]?.ResultStatistics?.Mean;
        return bytes is null || mean is null ? "-" : (bytes.Bytes / mean.Value).ToString("0.0", System.Globalization.CultureInfo.InvariantCulture);
    }
}
