using System.Text;
using Mobius.Cuda.Interop;

namespace Mobius.Cuda;

/// <summary>What the driver reports about a device.</summary>
/// <param name="Ordinal">Device index.</param>
/// <param name="Name">Marketing name ("NVIDIA H100 80GB HBM3").</param>
/// <param name="Major">Compute capability major.</param>
/// <param name="Minor">Compute capability minor.</param>
/// <param name="Multiprocessors">Streaming multiprocessors.</param>
/// <param name="TotalMemory">Device memory in bytes.</param>
/// <param name="MaxSharedPerBlockOptin">Most shared memory a block may opt into.</param>
/// <param name="DriverVersion">Driver API version (13000 = 13.0).</param>
public sealed record CudaDeviceInfo(int Ordinal, string Name, int Major, int Minor, int Multiprocessors, long TotalMemory, int MaxSharedPerBlockOptin, int DriverVersion)
{
    /// <summary>"sm_90".</summary>
    public string Arch => $"sm_{Major}{Minor}";

    /// <inheritdoc />
    public override string ToString() =>
        $"{Name} ({Arch}, {Multiprocessors} SMs, {Mobius.Engine.Units.Bytes(TotalMemory)}, driver {DriverVersion / 1000}.{DriverVersion % 1000 / 10})";
}

/// <summary>Device discovery through the driver API.</summary>
public static class CudaDevice
{
    private static readonly Lock Gate = new();
    private static bool _initialised;

    /// <summary>Initialises the driver once; throws <see cref="CudaLibraryNotFoundException"/> or <see cref="CudaException"/>.</summary>
    public static void Initialise()
    {
        lock (Gate)
        {
            if (!_initialised)
            {
                Driver.Check(Driver.cuInit(0), "cuInit");
                _initialised = true;
            }
        }
    }

    /// <summary>Every device the driver sees.</summary>
    public static IReadOnlyList<CudaDeviceInfo> List()
    {
        Initialise();
        Driver.Check(Driver.cuDeviceGetCount(out int count), "cuDeviceGetCount");
        return Enumerable.Range(0, count).Select(Query).ToList();
    }

    /// <summary>Attributes of one device.</summary>
    public static unsafe CudaDeviceInfo Query(int ordinal)
    {
        Initialise();
        Driver.Check(Driver.cuDeviceGet(out int dev, ordinal), "cuDeviceGet");
        byte* name = stackalloc byte[256];
        Driver.Check(Driver.cuDeviceGetName(name, 256, dev), "cuDeviceGetName");
        int Attr(DeviceAttribute a)
        {
            Driver.Check(Driver.cuDeviceGetAttribute(out int v, a, dev), "cuDeviceGetAttribute");
            return v;
        }

        Driver.Check(Driver.cuDeviceTotalMem(out nuint total, dev), "cuDeviceTotalMem_v2");
        Driver.Check(Driver.cuDriverGetVersion(out int version), "cuDriverGetVersion");
        int len = 0;
        while (len < 256 && name[len] != 0)
        {
            len++;
        }

        return new CudaDeviceInfo(ordinal, Encoding.UTF8.GetString(name, len), Attr(DeviceAttribute.ComputeCapabilityMajor),
            Attr(DeviceAttribute.ComputeCapabilityMinor), Attr(DeviceAttribute.MultiprocessorCount), (long)total,
            Attr(DeviceAttribute.MaxSharedMemoryPerBlockOptin), version);
    }
}
