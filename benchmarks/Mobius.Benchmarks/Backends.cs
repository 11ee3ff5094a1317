using Mobius.Cuda;
using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Benchmarks;

/// <summary>
/// The backends a benchmark run covers: cpu always, cuda when MOBIUS_BENCH_CUDA=1 (the GPU-run script
/// sets it; MOBIUS_CUDA=sim with it benchmarks the simulator, which only checks the wiring).
/// </summary>
public static class Backends
{
    public static IReadOnlyList<string> Names =>
        Environment.GetEnvironmentVariable("MOBIUS_BENCH_CUDA") == "1" ? ["cpu", "cuda"] : ["cpu"];

    public static IBackend Create(string name) => name == "cuda" ? new CudaBackend() : new CpuBackend();
}
