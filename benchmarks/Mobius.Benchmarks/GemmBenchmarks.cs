using System.Runtime.InteropServices;
using BenchmarkDotNet.Attributes;
using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Benchmarks;

/// <summary>
/// The CPU SGEMM on square sizes (both cores) and on the products the model issues, each called the way
/// the engine calls it (leading dimensions, transpositions, threaded or not).
/// </summary>
[Config(typeof(BenchmarkConfig))]
public unsafe class GemmBenchmarks
{
    private CpuBackend _cpu = null!;
    private float* _a, _b, _c;

    public static IEnumerable<GemmCase> Cases() =>
    [
        GemmCase.Square(128), GemmCase.Square(256), GemmCase.Square(512), GemmCase.Square(1024),
        .. ModelShapes.Gemms,
    ];

    [ParamsSource(nameof(Cases))]
    public GemmCase Case { get; set; } = null!;

    [GlobalSetup]
    public void Setup()
    {
        _cpu = new CpuBackend();
        var g = Case;
        _a = Random((long)Math.Max(g.M, g.K) * g.Lda);
        _b = Random((long)Math.Max(g.K, g.N) * g.Ldb);
        _c = Random((long)g.M * g.N);
    }

    [GlobalCleanup]
    public void Cleanup()
    {
        NativeMemory.AlignedFree(_a);
        NativeMemory.AlignedFree(_b);
        NativeMemory.AlignedFree(_c);
        _cpu.Dispose();
    }

    [Benchmark]
    public void Sgemm()
    {
        var g = Case;
        Engine.Cpu.Sgemm.Run(_cpu, g.TransA, g.TransB, g.M, g.N, g.K, 1f, _a, g.Lda, _b, g.Ldb, 0f, _c, g.N, g.Parallel);
    }

    private static float* Random(long count)
    {
        var p = (float*)NativeMemory.AlignedAlloc((nuint)(count * sizeof(float)), 64);
        var rng = new Random(1);
        for (long i = 0; i < count; i++)
        {
            p[i] = (float)(rng.NextDouble() * 2 - 1);
        }

        return p;
    }
}

/// <summary>
/// One product C[m x n] = op(A) op(B): A stored k x m when transposed, B stored n x k when transposed,
/// with the given leading dimensions (0: packed).
/// </summary>
public sealed record GemmCase(string Name, int M, int N, int K, bool TransA, bool TransB, bool Parallel, int LdA = 0, int LdB = 0) : IFlopCount
{
    public int Lda => LdA > 0 ? LdA : TransA ? M : K;

    public int Ldb => LdB > 0 ? LdB : TransB ? K : N;

    public double Flops => new GemmShape(M, N, K).Flops;

    public static GemmCase Square(int n) => new($"square {n}^3", n, n, n, false, false, Parallel: true);

    public override string ToString() => $"{Name} {M}x{N}x{K}{(TransA ? " tA" : "")}{(TransB ? " tB" : "")}{(Parallel ? "" : " 1T")}";
}
