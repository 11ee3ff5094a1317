using System.Reflection;
using System.Runtime.InteropServices;

namespace Mobius.Cuda.Interop;

/// <summary>A CUDA library could not be loaded; the message lists every place that was tried.</summary>
public sealed class CudaLibraryNotFoundException(string library, IReadOnlyList<string> tried)
    : DllNotFoundException($"{library} could not be loaded. Looked for:{Environment.NewLine}  " + string.Join(Environment.NewLine + "  ", tried)
        + $"{Environment.NewLine}Set {NativeLibraries.PathVariable} to folders holding the CUDA libraries (a Python venv's site-packages/nvidia works), or {NativeLibraries.ModeVariable}=sim to use the simulator.")
{
    /// <summary>The library that failed.</summary>
    public string Library { get; } = library;

    /// <summary>Every path or name tried, in order.</summary>
    public IReadOnlyList<string> Tried { get; } = tried;
}

/// <summary>
/// Finds the driver, cuBLAS, cuBLASLt, cuDNN and NCCL. The bindings import the logical names <see cref="Driver"/>,
/// <see cref="Blas"/>, <see cref="BlasLt"/>, <see cref="Dnn"/> and <see cref="Nccl"/>; this resolver maps them to files:
/// with MOBIUS_CUDA=sim, all five to the simulated driver library built from kernels/sim; otherwise
/// libcuda.so.1, libcublas.so.13 (after libcublasLt.so.13), libcublasLt.so.13, libcudnn.so.9 (after its sub-libraries) and libnccl.so.2,
/// first in the folders of MOBIUS_CUDA_PATH (each folder, its lib/ and nvidia/*/lib below it, as a
/// PyTorch venv lays them out), then through the system search path.
/// </summary>
public static class NativeLibraries
{
    /// <summary>Logical name of the driver API library.</summary>
    public const string Driver = "mobius-cuda-driver";

    /// <summary>Logical name of cuBLAS.</summary>
    public const string Blas = "mobius-cublas";

    /// <summary>Logical name of cuBLASLt.</summary>
    public const string BlasLt = "mobius-cublaslt";

    /// <summary>Logical name of cuDNN.</summary>
    public const string Dnn = "mobius-cudnn";

    /// <summary>Logical name of NCCL (loaded only by data-parallel training across devices).</summary>
    public const string Nccl = "mobius-nccl";

    /// <summary>"sim" selects the simulated driver.</summary>
    public const string ModeVariable = "MOBIUS_CUDA";

    /// <summary>Colon-separated folders to search for the CUDA libraries.</summary>
    public const string PathVariable = "MOBIUS_CUDA_PATH";

    /// <summary>Full path of the simulated driver library (optional; otherwise searched next to the app and in kernels/sim/build).</summary>
    public const string SimVariable = "MOBIUS_SIM_LIBRARY";

    private const string SimFile = "libmobius_simcuda.so";
    private static readonly Lock Gate = new();
    private static readonly Dictionary<string, nint> Loaded = new();
    private static readonly List<string> Log = new();

    /// <summary>True when the simulated driver is selected.</summary>
    public static bool Simulated => string.Equals(Environment.GetEnvironmentVariable(ModeVariable), "sim", StringComparison.OrdinalIgnoreCase);

    /// <summary>Where each library was found, for `mobius info`.</summary>
    public static IReadOnlyList<string> Report
    {
        get
        {
            lock (Gate)
            {
                return Log.ToList();
            }
        }
    }

    private static int _registered;

    /// <summary>Installs the resolver for this assembly's imports (idempotent; the binding classes call it first).</summary>
    internal static void EnsureRegistered()
    {
        if (Interlocked.Exchange(ref _registered, 1) == 0)
        {
            NativeLibrary.SetDllImportResolver(typeof(NativeLibraries).Assembly, Resolve);
        }
    }

    /// <summary>Loads (once) the library behind a logical name; throws <see cref="CudaLibraryNotFoundException"/>.</summary>
    public static nint Load(string logical)
    {
        lock (Gate)
        {
            if (Loaded.TryGetValue(logical, out var h))
            {
                return h;
            }

            h = Simulated ? LoadSimulator() : logical switch
            {
                Driver => LoadFirst("the CUDA driver", [], "libcuda.so.1", "libcuda.so"),
                Blas => LoadFirst("cuBLAS", ["libcublasLt.so.13"], "libcublas.so.13"),
                BlasLt => LoadFirst("cuBLASLt", [], "libcublasLt.so.13"),
                Dnn => LoadFirst("cuDNN", ["libcudnn_graph.so.9", "libcudnn_ops.so.9", "libcudnn_cnn.so.9", "libcudnn_adv.so.9",
                    "libcudnn_heuristic.so.9", "libcudnn_engines_precompiled.so.9", "libcudnn_engines_runtime_compiled.so.9"], "libcudnn.so.9"),
                Nccl => LoadFirst("NCCL", [], "libnccl.so.2"),
                _ => throw new ArgumentException($"unknown CUDA library '{logical}'."),
            };
            Loaded[logical] = h;
            return h;
        }
    }

    private static nint Resolve(string name, Assembly assembly, DllImportSearchPath? path) =>
        name is Driver or Blas or BlasLt or Dnn or Nccl ? Load(name) : 0;

    private static nint LoadSimulator()
    {
        var tried = new List<string>();
        var candidates = new List<string>();
        if (Environment.GetEnvironmentVariable(SimVariable) is { Length: > 0 } explicitPath)
        {
            candidates.Add(explicitPath);
        }

        candidates.Add(Path.Combine(AppContext.BaseDirectory, SimFile));
        for (var dir = new DirectoryInfo(AppContext.BaseDirectory); dir is not null; dir = dir.Parent)
        {
            candidates.Add(Path.Combine(dir.FullName, "kernels", "sim", "build", SimFile));
        }

        foreach (var c in candidates)
        {
            tried.Add(c);
            if (File.Exists(c) && NativeLibrary.TryLoad(c, out var h))
            {
                Log.Add($"simulated CUDA driver: {c}");
                return h;
            }
        }

        throw new CudaLibraryNotFoundException("The simulated CUDA driver (" + SimFile + "; build kernels/sim with CMake)", tried);
    }

    private static nint LoadFirst(string what, string[] dependencies, params string[] names)
    {
        var tried = new List<string>();
        var dirs = SearchFolders();
        foreach (var dep in dependencies)
        {
            // Pre-load by path: the main library later finds them already loaded by their soname.
            foreach (var d in dirs)
            {
                string p = Path.Combine(d, dep);
                if (File.Exists(p) && NativeLibrary.TryLoad(p, out _))
                {
                    Log.Add($"{what} dependency: {p}");
                    break;
                }
            }
        }

        foreach (var name in names)
        {
            foreach (var d in dirs)
            {
                string p = Path.Combine(d, name);
                tried.Add(p);
                if (File.Exists(p) && NativeLibrary.TryLoad(p, out var h))
                {
                    Log.Add($"{what}: {p}");
                    return h;
                }
            }

            tried.Add($"{name} (system search path)");
            if (NativeLibrary.TryLoad(name, out var sys))
            {
                Log.Add($"{what}: {name} (system search path)");
                return sys;
            }
        }

        throw new CudaLibraryNotFoundException(what, tried);
    }

    /// <summary>The folders named by MOBIUS_CUDA_PATH, with their lib/ and nvidia/*/lib sub-folders.</summary>
    public static IReadOnlyList<string> SearchFolders()
    {
        var result = new List<string>();
        foreach (var root in (Environment.GetEnvironmentVariable(PathVariable) ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            if (!Directory.Exists(root))
            {
                continue;
            }

            result.Add(root);
            foreach (var sub in new[] { "lib", "lib64" })
            {
                if (Directory.Exists(Path.Combine(root, sub)))
                {
                    result.Add(Path.Combine(root, sub));
                }
            }

            foreach (var nv in new[] { root, Path.Combine(root, "nvidia") })
            {
                if (!Directory.Exists(nv))
                {
                    continue;
                }

                foreach (var pkg in Directory.EnumerateDirectories(nv).OrderBy(d => d, StringComparer.Ordinal))
                {
                    if (Directory.Exists(Path.Combine(pkg, "lib")))
                    {
                        result.Add(Path.Combine(pkg, "lib"));
                    }
                }
            }
        }

        return result.Distinct().ToList();
    }
}
