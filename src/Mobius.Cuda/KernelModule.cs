using System.Reflection;
using System.Runtime.InteropServices;
using System.Text;
using Mobius.Cuda.Interop;

namespace Mobius.Cuda;

/// <summary>One kernel argument as the driver reads it: up to 8 bytes, little-endian, from a pointer.</summary>
public readonly struct KernelArg
{
    private KernelArg(ulong bits) => Bits = bits;

    /// <summary>The raw argument bytes.</summary>
    public ulong Bits { get; }

    /// <summary>A 32-bit integer argument.</summary>
    public static implicit operator KernelArg(int v) => new((uint)v);

    /// <summary>A 64-bit integer argument.</summary>
    public static implicit operator KernelArg(long v) => new((ulong)v);

    /// <summary>A float argument.</summary>
    public static implicit operator KernelArg(float v) => new(BitConverter.SingleToUInt32Bits(v));

    /// <summary>A device pointer argument.</summary>
    public static implicit operator KernelArg(ulong devicePtr) => new(devicePtr);
}

/// <summary>
/// Our PTX, loaded into the current context (the image matching the device's architecture, embedded
/// in this assembly), with functions looked up once by entry name. A PTX that does not load raises a
/// <see cref="CudaException"/> carrying the JIT compiler's error log.
/// </summary>
public sealed unsafe class KernelModule : IDisposable
{
    private readonly Dictionary<string, nint> _functions = new();
    private nint _module;

    /// <summary>Loads PTX text into the current context.</summary>
    public KernelModule(string ptx, string origin)
    {
        Origin = origin;
        const int LogSize = 16 * 1024;
        byte[] image = Encoding.UTF8.GetBytes(ptx + "\0");
        byte* errorLog = stackalloc byte[LogSize];
        errorLog[0] = 0;
        int* options = stackalloc int[] { Driver.JitErrorLogBuffer, Driver.JitErrorLogBufferSizeBytes };
        nint* values = stackalloc nint[] { (nint)errorLog, LogSize };
        int status;
        fixed (byte* p = image)
        {
            status = Driver.cuModuleLoadDataEx(out _module, p, 2, options, values);
        }

        if (status != Driver.Success)
        {
            string log = Marshal.PtrToStringUTF8((nint)errorLog) ?? "";
            try
            {
                Driver.Check(status, $"cuModuleLoadDataEx({origin})");
            }
            catch (CudaException e) when (log.Length > 0)
            {
                throw new CudaException(e.Call, e.Status, e.StatusName, $"{e.Message}{Environment.NewLine}JIT log:{Environment.NewLine}{log}");
            }
        }
    }

    /// <summary>Where the PTX came from (resource or file name).</summary>
    public string Origin { get; }

    /// <summary>
    /// The PTX images embedded for an architecture (one per kernel source): those of the newest
    /// architecture not above the device's ("sm_90" for an H100, "sm_80" for an A100).
    /// </summary>
    public static IReadOnlyList<(string Ptx, string Name)> Embedded(int major, int minor)
    {
        var asm = typeof(KernelModule).Assembly;
        var images = asm.GetManifestResourceNames()
            .Where(n => n.StartsWith("ptx/", StringComparison.Ordinal) && n.EndsWith(".ptx", StringComparison.Ordinal))
            .Select(n => (Name: n, Sm: ParseSm(n)))
            .Where(x => x.Sm > 0)
            .ToList();
        int want = major * 10 + minor;
        int arch = images.Select(i => i.Sm).Where(sm => sm <= want).DefaultIfEmpty(0).Max();
        if (arch == 0)
        {
            throw new InvalidOperationException($"no embedded PTX for sm_{want} (have: {string.Join(", ", images.Select(i => i.Name))}).");
        }

        return images.Where(i => i.Sm == arch).OrderBy(i => i.Name, StringComparer.Ordinal).Select(i =>
        {
            using var s = asm.GetManifestResourceStream(i.Name)!;
            using var reader = new StreamReader(s);
            return (reader.ReadToEnd(), i.Name);
        }).ToList();
    }

    /// <summary>The entry points a PTX text declares.</summary>
    public static IEnumerable<string> Entries(string ptx)
    {
        foreach (var line in ptx.Split('\n'))
        {
            var t = line.TrimStart();
            int at = t.IndexOf(".entry ", StringComparison.Ordinal);
            if (at < 0)
            {
                continue;
            }

            var rest = t[(at + 7)..].TrimStart();
            int end = rest.IndexOfAny(['(', ' ', '\t']);
            yield return end < 0 ? rest : rest[..end];
        }
    }

    /// <summary>The function of an entry point, cached.</summary>
    public nint Function(string entry)
    {
        if (!_functions.TryGetValue(entry, out var f))
        {
            Driver.Check(Driver.cuModuleGetFunction(out f, _module, entry), $"cuModuleGetFunction({entry})");
            _functions[entry] = f;
        }

        return f;
    }

    /// <summary>Launches <paramref name="entry"/> on <paramref name="stream"/>.</summary>
    public void Launch(string entry, (uint X, uint Y, uint Z) grid, (uint X, uint Y, uint Z) block, uint sharedBytes, nint stream, ReadOnlySpan<KernelArg> args)
    {
        nint f = Function(entry);
        ulong* slots = stackalloc ulong[Math.Max(1, args.Length)];
        void** pointers = stackalloc void*[Math.Max(1, args.Length)];
        for (int i = 0; i < args.Length; i++)
        {
            slots[i] = args[i].Bits;
            pointers[i] = &slots[i];
        }

        Driver.Check(Driver.cuLaunchKernel(f, grid.X, grid.Y, grid.Z, block.X, block.Y, block.Z, sharedBytes, stream, pointers, null), $"cuLaunchKernel({entry})");
    }

    /// <inheritdoc />
    public void Dispose()
    {
        if (_module != 0)
        {
            Driver.cuModuleUnload(_module);
            _module = 0;
        }
    }

    private static int ParseSm(string name)
    {
        int i = name.IndexOf("sm_", StringComparison.Ordinal);
        if (i < 0)
        {
            return 0;
        }

        int j = i + 3;
        while (j < name.Length && char.IsAsciiDigit(name[j]))
        {
            j++;
        }

        return int.TryParse(name.AsSpan(i + 3, j - i - 3), out int sm) ? sm : 0;
    }
}
