using System.Runtime.InteropServices;

namespace Mobius.Cuda.Interop;

/// <summary>A failed CUDA, cuBLAS or cuDNN call: the call, the status and the library's own message.</summary>
public sealed class CudaException(string call, int status, string name, string message)
    : Exception($"{call} failed: {name} ({status}): {message}")
{
    /// <summary>The native function that failed.</summary>
    public string Call { get; } = call;

    /// <summary>The status code it returned.</summary>
    public int Status { get; } = status;

    /// <summary>The status name ("CUDA_ERROR_OUT_OF_MEMORY").</summary>
    public string StatusName { get; } = name;
}

/// <summary>Device attributes we query (values of CUdevice_attribute).</summary>
internal enum DeviceAttribute
{
    MaxThreadsPerBlock = 1,
    MaxSharedMemoryPerBlock = 8,
    WarpSize = 10,
    MultiprocessorCount = 16,
    ComputeCapabilityMajor = 75,
    ComputeCapabilityMinor = 76,
    MaxSharedMemoryPerBlockOptin = 97,
}

/// <summary>The CUDA Driver API subset Mobius uses (signatures as in cuda.h of CUDA 13).</summary>
internal static partial class Driver
{
    static Driver() => NativeLibraries.EnsureRegistered();

    public const int Success = 0;
    public const int ErrorOutOfMemory = 2;
    public const int JitInfoLogBuffer = 3;
    public const int JitInfoLogBufferSizeBytes = 4;
    public const int JitErrorLogBuffer = 5;
    public const int JitErrorLogBufferSizeBytes = 6;
    public const int FuncAttributeMaxDynamicSharedSizeBytes = 8;
    public const uint EventDisableTiming = 2; // CU_EVENT_DISABLE_TIMING: an ordering point only, cheaper to record

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuInit(uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDriverGetVersion(out int version);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGetCount(out int count);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGet(out int device, int ordinal);

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial int cuDeviceGetName(byte* name, int length, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDeviceGetAttribute(out int value, DeviceAttribute attribute, int device);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDeviceTotalMem_v2")]
    public static partial int cuDeviceTotalMem(out nuint bytes, int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuDevicePrimaryCtxRetain(out nint context, int device);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuDevicePrimaryCtxRelease_v2")]
    public static partial int cuDevicePrimaryCtxRelease(int device);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuCtxSetCurrent(nint context);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuCtxSynchronize();

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial int cuModuleLoadDataEx(out nint module, byte* image, uint numOptions, int* options, nint* optionValues);

    [LibraryImport(NativeLibraries.Driver, StringMarshalling = StringMarshalling.Utf8)]
    public static partial int cuModuleGetFunction(out nint function, nint module, string name);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuModuleUnload(nint module);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuFuncSetAttribute(nint function, int attribute, int value);

    [LibraryImport(NativeLibraries.Driver)]
    public static unsafe partial int cuLaunchKernel(nint function, uint gridX, uint gridY, uint gridZ, uint blockX, uint blockY, uint blockZ,
        uint sharedMemBytes, nint stream, void** kernelParams, void** extra);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemAlloc_v2")]
    public static partial int cuMemAlloc(out ulong devicePtr, nuint bytes);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemFree_v2")]
    public static partial int cuMemFree(ulong devicePtr);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyHtoD_v2")]
    public static unsafe partial int cuMemcpyHtoD(ulong dst, void* src, nuint bytes);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoH_v2")]
    public static unsafe partial int cuMemcpyDtoH(void* dst, ulong src, nuint bytes);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemcpyDtoDAsync_v2")]
    public static partial int cuMemcpyDtoDAsync(ulong dst, ulong src, nuint bytes, nint stream);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemsetD32Async")]
    public static partial int cuMemsetD32Async(ulong dst, uint value, nuint count, nint stream);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuMemGetInfo_v2")]
    public static partial int cuMemGetInfo(out nuint free, out nuint total);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamCreate(out nint stream, uint flags);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuStreamDestroy_v2")]
    public static partial int cuStreamDestroy(nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamSynchronize(nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuStreamWaitEvent(nint stream, nint ev, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventCreate(out nint ev, uint flags);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventRecord(nint ev, nint stream);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventSynchronize(nint ev);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuEventElapsedTime(out float milliseconds, nint start, nint end);

    [LibraryImport(NativeLibraries.Driver, EntryPoint = "cuEventDestroy_v2")]
    public static partial int cuEventDestroy(nint ev);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGetErrorName(int status, out nint name);

    [LibraryImport(NativeLibraries.Driver)]
    public static partial int cuGetErrorString(int status, out nint message);

    /// <summary>Throws <see cref="CudaException"/> naming <paramref name="call"/> unless <paramref name="status"/> is success.</summary>
    public static void Check(int status, string call)
    {
        if (status == Success)
        {
            return;
        }

        string name = cuGetErrorName(status, out var n) == Success && n != 0 ? Marshal.PtrToStringUTF8(n) ?? "?" : $"CUDA error {status}";
        string message = cuGetErrorString(status, out var m) == Success && m != 0 ? Marshal.PtrToStringUTF8(m) ?? "" : "unknown error";
        throw new CudaException(call, status, name, message);
    }
}
