using Mobius.Cuda;
using Mobius.Cuda.Interop;
using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Cli;

/// <summary>Creates the backend named on the command line.</summary>
public static class Backends
{
    /// <summary>"cpu" or "cuda"; a cuda backend that cannot start raises <see cref="BackendUnavailableException"/>.</summary>
    public static IBackend Create(string name, int threads, long memoryLimitMb)
    {
        if (threads < 0)
        {
            throw new UsageException($"--threads must be 0 (all cores) or more, got {threads}.");
        }

        if (memoryLimitMb < 0)
        {
            throw new UsageException($"--memory-limit-mb must be 0 (no limit) or more, got {memoryLimitMb}.");
        }

        return name.ToLowerInvariant() switch
        {
            "cpu" => new CpuBackend(threads, memoryLimitMb * 1048576),
            "cuda" => CreateCuda(),
            _ => throw new UsageException($"unknown backend '{name}'; use cpu or cuda."),
        };
    }

    /// <summary>The devices the driver sees, and where the libraries came from; or why there are none.</summary>
    public static string DescribeCuda()
    {
        try
        {
            var devices = CudaDevice.List();
            string where = string.Join("; ", NativeLibraries.Report);
            return devices.Count == 0
                ? $"the driver reports no device ({where})"
                : string.Join(", ", devices.Select(d => $"#{d.Ordinal} {d}")) + (NativeLibraries.Simulated ? " [simulated]" : "") + $" ({where})";
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            return "not available: " + e.Message;
        }
    }

    private static IBackend CreateCuda()
    {
        try
        {
            return new CudaBackend();
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            throw new BackendUnavailableException("cuda backend not available: " + e.Message, e);
        }
    }
}
