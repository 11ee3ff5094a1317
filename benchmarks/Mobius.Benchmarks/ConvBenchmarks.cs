using BenchmarkDotNet.Attributes;
using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Benchmarks;

/// <summary>Conv2d forward, backward-data and backward-filter of the CPU backend on the model's shapes.</summary>
public class Conv2dBenchmarks
{
    private CpuBackend _cpu = null!;
    private Tensor _x = null!, _w = null!, _bias = null!, _y = null!, _dw = null!, _dbias = null!;

    public static IEnumerable<ConvCase> Cases() => ModelShapes.Convs;

    [ParamsSource(nameof(Cases))]
    public ConvCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var s = Case.Shape;
        _cpu = new CpuBackend();
        var rng = new Random(1);
        Tensor Rand(params int[] dims)
        {
            var shape = new Shape(dims);
            var data = new float[shape.Numel];
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = (float)(rng.NextDouble() * 2 - 1);
            }

            return Tensor.FromArray(_cpu, data, shape);
        }

        _x = Rand(s.N, s.Cin, s.H, s.W);
        _w = Rand(s.Cout, s.Cin, s.Kernel, s.Kernel);
        _bias = Rand(s.Cout);
        _y = Rand(s.N, s.Cout, s.OutH, s.OutW);
        _dw = Rand(s.Cout, s.Cin, s.Kernel, s.Kernel);
        _dbias = Rand(s.Cout);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _x, _w, _bias, _y, _dw, _dbias })
        {
            t.Dispose();
        }

        _cpu.Dispose();
    }

    [Benchmark]
    public void Forward() => _cpu.Conv2dForward(Case.Shape, _x, _w, _bias, _y);

    /// <summary>dx from dy (the y buffer) into the x buffer.</summary>
    [Benchmark]
    public void BackwardData() => _cpu.Conv2dBackwardData(Case.Shape, _y, _w, _x);

    [Benchmark]
    public void BackwardFilter() => _cpu.Conv2dBackwardFilter(Case.Shape, _x, _y, _dw, _dbias);
}

/// <summary>Temporal conv forward, backward-data and backward-weight of the CPU backend on the model's shapes.</summary>
public class TemporalConvBenchmarks
{
    private CpuBackend _cpu = null!;
    private Tensor _x = null!, _w = null!, _bias = null!, _y = null!, _dw = null!, _dbias = null!;

    public static IEnumerable<TemporalConvCase> Cases() => ModelShapes.TemporalConvs;

    [ParamsSource(nameof(Cases))]
    public TemporalConvCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        var s = Case.Shape;
        _cpu = new CpuBackend();
        var rng = new Random(1);
        Tensor Rand(params int[] dims)
        {
            var shape = new Shape(dims);
            var data = new float[shape.Numel];
            for (int i = 0; i < data.Length; i++)
            {
                data[i] = (float)(rng.NextDouble() * 2 - 1);
            }

            return Tensor.FromArray(_cpu, data, shape);
        }

        _x = Rand(s.B * s.F, s.Cin, s.S);
        _w = Rand(s.Cout, s.Cin, 3);
        _bias = Rand(s.Cout);
        _y = Rand(s.B * s.F, s.Cout, s.S);
        _dw = Rand(s.Cout, s.Cin, 3);
        _dbias = Rand(s.Cout);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        foreach (var t in new[] { _x, _w, _bias, _y, _dw, _dbias })
        {
            t.Dispose();
        }

        _cpu.Dispose();
    }

    [Benchmark]
    public void Forward() => _cpu.TemporalConvForward(Case.Shape, _x, _w, _bias, _y);

    [Benchmark]
    public void BackwardData() => _cpu.TemporalConvBackwardData(Case.Shape, _y, _w, _x);

    [Benchmark]
    public void BackwardWeight() => _cpu.TemporalConvBackwardWeight(Case.Shape, _x, _y, _dw, _dbias);
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
