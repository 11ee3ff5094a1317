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
    /// <paramref name="math"/> (--math): null keeps the backend's own (fp32, or MOBIUS_MATH on cuda), else fp32, tf32 or bf16.
    /// </summary>
    public static IBackend Create(string name, int threads, long memoryLimitMb, string? math = null) => Create(name, threads, memoryLimitMb, math, ordinal: 0);

    /// <summary>As <see cref="Create(string, int, long, string?)"/>; a cuda backend opens device <paramref name="ordinal"/>.</summary>
    public static IBackend Create(string name, int threads, long memoryLimitMb, string? math, int ordinal)
    {
        TensorCoreMath? cores = math is null ? null : ParseMath(math);
        if (threads < 0)
        {
            throw new UsageException($"--threads must be 0 (all cores) or more, got {threads}.");
        }

        if (memoryLimitMb < 0)
        {
            throw new UsageException($"--memory-limit-mb must be 0 (no limit) or more, got {memoryLimitMb}.");
        }

        string kind = name.ToLowerInvariant();
        if (kind == "cpu" && cores is { } c && c != TensorCoreMath.None)
        {
            throw new UsageException($"--math {CudaBackend.MathName(c)} needs --backend cuda: it is a tensor-core mode of cuBLAS and cuDNN; the cpu backend computes in fp32.");
        }

        return kind switch
        {
            "cpu" => new CpuBackend(threads, memoryLimitMb * 1048576),
            "cuda" => CreateCuda(cores, ordinal),
            _ => throw new UsageException($"unknown backend '{name}'; use cpu or cuda."),
        };
    }

    private static TensorCoreMath ParseMath(string math)
    {
        try
        {
            return CudaBackend.MathSetting(math.ToLowerInvariant()); // the names MOBIUS_MATH takes
        }
        catch (ArgumentException)
        {
            throw new UsageException($"--math must be fp32, tf32 or bf16, got '{math}'.");
        }
    }

    /// <summary>The devices the driver sees, and where the libraries came from; or why there are none.</summary>
    public static string DescribeCuda()
    {
        try
        {
            var devices = CudaDevice.List();
            string where = string.Join("; ", NativeLibraries.Report);
            string math = Environment.GetEnvironmentVariable("MOBIUS_MATH") is { Length: > 0 } m ? $"MOBIUS_MATH={m}" : "fp32";
            string tf32 = devices.Any(d => d.Major >= 8) ? "--math tf32 or bf16 for tensor cores" : "no tensor-core math below sm_80";
            string streams = Environment.GetEnvironmentVariable("MOBIUS_STREAMS") is { Length: > 0 } st
                ? $"MOBIUS_STREAMS={st}"
                : "2 streams (with a ring bridge the parallel topology's spatial chain runs on the second; MOBIUS_STREAMS=1 for one)";
            return devices.Count == 0
                ? $"the driver reports no device ({where})"
                : string.Join(", ", devices.Select(d => $"#{d.Ordinal} {d}")) + (NativeLibraries.Simulated ? " [simulated]" : "") + $"; math {math} ({tf32}); {streams} ({where})";
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            return "not available: " + e.Message;
        }
    }

    /// <summary>NCCL's version and where it came from; or why it is not there.</summary>
    public static string DescribeNccl()
    {
        if (!NcclCollectives.Available(out int version, out var why))
        {
            return "not available (ranks on cuda average through host memory): " + why;
        }

        string where = NativeLibraries.Report.LastOrDefault(r => r.StartsWith("NCCL", StringComparison.Ordinal)) ?? (NativeLibraries.Simulated ? "simulated" : "");
        return FormattableString.Invariant($"{version / 10000}.{version / 100 % 100}.{version % 100} ({where})");
    }

    /// <summary>The devices the cuda driver reports (0 where it cannot start).</summary>
    public static int CudaDeviceCount()
    {
        try
        {
            return CudaDevice.List().Count;
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            return 0;
        }
    }

    private static IBackend CreateCuda(TensorCoreMath? cores, int ordinal)
    {
        CudaBackend backend;
        try
        {
            backend = new CudaBackend(ordinal);
        }
        catch (Exception e) when (e is DllNotFoundException or CudaException)
        {
            throw new BackendUnavailableException("cuda backend not available: " + e.Message, e);
        }
        catch (ArgumentException e)
        {
            throw new UsageException(e.Message); // MOBIUS_MATH or MOBIUS_TEMPORAL_CONV with a value it does not know
        }

        if (cores is { } mode)
        {
            backend.TensorCores = mode;
        }

        return backend;
    }
}
