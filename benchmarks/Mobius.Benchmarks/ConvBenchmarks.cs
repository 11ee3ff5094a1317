using BenchmarkDotNet.Attributes;
using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Benchmarks;

/// <summary>
/// What the CPU convolution benchmarks share: the backend and random x, w, bias, y (also dy), dw and
/// dbias, released after the run.
/// </summary>
public abstract class CpuConvBenchmark
{
    protected CpuBackend Cpu { get; private set; } = null!;

    protected Tensor X { get; private set; } = null!;

    protected Tensor W { get; private set; } = null!;

    protected Tensor Bias { get; private set; } = null!;

    protected Tensor Y { get; private set; } = null!;

    protected Tensor Dw { get; private set; } = null!;

    protected Tensor Dbias { get; private set; } = null!;

    /// <summary>Allocates every tensor with values in [-1, 1] from a fixed seed; bias and dbias have w's first dimension.</summary>
    protected void Allocate(int[] x, int[] w, int[] y)
    {
        Cpu = new CpuBackend();
        var rng = new Random(1);
        Tensor Rand(params int[] dims)
        {
            var shape = new Shape(dims);
            var data = new float[shape.Numel];
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = (float)(rng.NextDouble() * 2 - 1);
            }

            return Tensor.FromArray(Cpu, data, shape);
        }

        X = Rand(x);
        W = Rand(w);
        Bias = Rand(w[0]);
        Y = Rand(y);
        Dw = Rand(w);
        Dbias = Rand(w[0]);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { X, W, Bias, Y, Dw, Dbias })
        {
            t.Dispose();
        }

        Cpu.Dispose();
    }
}

/// <summary>Conv2d forward, backward-data and backward-filter of the CPU backend on the model's shapes.</summary>
[Config(typeof(BenchmarkConfig))]
public class Conv2dBenchmarks : CpuConvBenchmark
{
    public static IEnumerable<ConvCase> Cases() => ModelShapes.Convs;

    [ParamsSource(nameof(Cases))]
    public ConvCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var s = Case.Shape;
        Allocate([s.N, s.Cin, s.H, s.W], [s.Cout, s.Cin, s.Kernel, s.Kernel], [s.N, s.Cout, s.OutH, s.OutW]);
    }

    [Benchmark]
    public void Forward() => Cpu.Conv2dForward(Case.Shape, X, W, Bias, Y);

    /// <summary>dx from dy (the y buffer) into the x buffer.</summary>
    [Benchmark]
    public void BackwardData() => Cpu.Conv2dBackwardData(Case.Shape, Y, W, X);

    [Benchmark]
    public void BackwardFilter() => Cpu.Conv2dBackwardFilter(Case.Shape, X, Y, Dw, Dbias);
}

/// <summary>Temporal conv forward, backward-data and backward-weight of the CPU backend on the model's shapes.</summary>
[Config(typeof(BenchmarkConfig))]
public class TemporalConvBenchmarks : CpuConvBenchmark
{
    public static IEnumerable<TemporalConvCase> Cases() => ModelShapes.TemporalConvs;

    [ParamsSource(nameof(Cases))]
    public TemporalConvCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var s = Case.Shape;
        Allocate([s.B * s.F, s.Cin, s.S], [s.Cout, s.Cin, 3], [s.B * s.F, s.Cout, s.S]);
    }

    [Benchmark]
    public void Forward() => Cpu.TemporalConvForward(Case.Shape, X, W, Bias, Y);

    [Benchmark]
    public void BackwardData() => Cpu.TemporalConvBackwardData(Case.Shape, Y, W, X);

    [Benchmark]
    public void BackwardWeight() => Cpu.TemporalConvBackwardWeight(Case.Shape, X, Y, Dw, Dbias);
}

/// <summary>A conv2d benchmark case; every direction does the forward's multiply-adds.</summary>
public sealed record ConvCase(string Name, Conv2dShape Shape) : IFlopCount
{
    public double Flops => Shape.Flops;

    public override string ToString() =>
        $"{Name} {Shape.Cin}→{Shape.Cout} {Shape.H}x{Shape.W}";
}

/// <summary>A temporal conv benchmark case; every direction does the forward's multiply-adds.</summary>
public sealed record TemporalConvCase(TemporalConvShape Shape) : IFlopCount
{
    public double Flops => Shape.Flops;

    public override string ToString() => $"{Shape.Cin}→{Shape.Cout} F{Shape.F} S{Shape.S}";
}
