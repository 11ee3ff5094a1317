using Mobius.Cuda;
using Mobius.Cuda.Interop;
using Mobius.Engine;
using Mobius.Engine.Cpu;

namespace Mobius.Cli;

/// <summary>Creates the backend named on the command line.</summary>
public static class Backends
{
    /// <summary>
    /// "cpu" or "cuda"; a cuda backend that cannot start raises <see cref="BackendUnavailableException"/>.
    /// <paramref name="math"/> (--math): null keeps the backend's own (fp32, or MOBIUS_MATH on cuda), else fp32 or tf32.
    /// </summary>
    public static IBackend Create(string name, int threads, long memoryLimitMb, string? math = null)
    {
        bool? tf32 = math?.ToLowerInvariant() switch
        {
            null => null,
            "fp32" => false,
            "tf32" => true,
            _ => throw new UsageException($"--math must be fp32 or tf32, got '{math}'."),
        };
        if (threads < 0)
        {
            throw new UsageException($"--threads must be 0 (all cores) or more, got {threads}.");
        }

        if (memoryLimitMb < 0)
        {
            throw new UsageException($"--memory-limit-mb must be 0 (no limit) or more, got {memoryLimitMb}.");
        }

        string kind = name.ToLowerInvariant();
        if (kind == "cpu" && tf32 == true)
        {
            throw new UsageException("--math tf32 needs --backend cuda: TF32 is a tensor-core mode of cuBLAS and cuDNN; the cpu backend computes in fp32.");
        }

        return kind switch
        {
            "cpu" => new CpuBackend(threads, memoryLimitMb * 1048576),
            "cuda" => CreateCuda(tf32),
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
            string math = Environment.GetEnvironmentVariable("MOBIUS_MATH") is { Length: > 0 } m ? $"MOBIUS_MATH={m}" : "fp32";
            string tf32 = devices.Any(d => d.Major >= 8) ? "--math tf32 for TF32 tensor cores" : "no TF32 below sm_80";
            return devices.Count == 0
                ? $"the driver reports no device ({where})"
                : string.Join(", ", devices.Select(d => $"#{d.Ordinal} {d}")) + (NativeLibraries.Simulated ? " [simulated]" : "") + $"; math {math} ({tf32}) ({where})";
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            return "not available: " + e.Message;
        }
    }

    private static IBackend CreateCuda(bool? tf32)
    {
        CudaBackend backend;
        try
        {
            backend = new CudaBackend();
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            throw new BackendUnavailableException("cuda backend not available: " + e.Message, e);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message); // MOBIUS_MATH or MOBIUS_TEMPORAL_CONV with a value it does not know
        }

        if (tf32 is { } on)
        {
            backend.Tf32 = on;
        }

        return backend;
    }
}
