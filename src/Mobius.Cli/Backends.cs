using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Cli;

/// <summary>Creates the backend named on the command line.</summary>
public static class Backends
{
    /// <summary>"cpu" or "cuda"; a cuda backend that cannot start raises <see cref="BackendUnavailableException"/>.</summary>
    public static IBackend Create(string name, int threads, long memoryLimitMb) => name.ToLowerInvariant() switch
    {
        "cpu" => new CpuBackend(threads, memoryLimitMb * 1048576),
        "cuda" => CreateCuda(),
        _ => throw new UsageException($"unknown backend '{name}'; use cpu or cuda."),
    };

    /// <summary>One line about the CUDA backend: the devices found, or why there are none.</summary>
    public static string DescribeCuda() => "not built into this version of mobius";

    private static IBackend CreateCuda() => throw new BackendUnavailableException("the cuda backend is not built into this version of mobius.");
}
