using System.Runtime.InteropServices;

namespace Mobius.Cuda.Interop;

/// <summary>
/// The NCCL subset Mobius uses (nccl.h of NCCL 2.x): communicators for every device of one process made at once
/// (ncclCommInitAll), and grouped fp32 all-reduce and broadcast on each rank's stream.
/// </summary>
internal static partial class Nccl
{
    static Nccl() => NativeLibraries.EnsureRegistered();

    public const int Float32 = 7;  // ncclDataType_t ncclFloat32
    public const int Sum = 0;      // ncclRedOp_t ncclSum
    public const int Avg = 4;      // ncclRedOp_t ncclAvg (NCCL 2.10 and later)

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclGetVersion(out int version);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial nint ncclGetErrorString(int result);

    [LibraryImport(NativeLibraries.Nccl)]
    public static unsafe partial int ncclCommInitAll(nint* comms, int ndev, int* devlist);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclCommDestroy(nint comm);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclGroupStart();

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclGroupEnd();

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclAllReduce(ulong sendbuff, ulong recvbuff, nuint count, int datatype, int op, nint comm, nint stream);

    [LibraryImport(NativeLibraries.Nccl)]
    public static partial int ncclBroadcast(ulong sendbuff, ulong recvbuff, nuint count, int datatype, int root, nint comm, nint stream);

    /// <summary>Throws <see cref="CudaException"/> for a result other than ncclSuccess.</summary>
    public static void Check(int result, string call)
    {
        if (result != 0)
        {
            string text = Marshal.PtrToStringUTF8(ncclGetErrorString(result)) ?? "unknown NCCL result";
            throw new CudaException(call, result, ResultName(result), text);
        }
    }

    private static string ResultName(int result) => result switch
    {
        1 => "ncclUnhandledCudaError",
        2 => "ncclSystemError",
        3 => "ncclInternalError",
        4 => "ncclInvalidArgument",
        5 => "ncclInvalidUsage",
        6 => "ncclRemoteError",
        7 => "ncclInProgress",
        _ => result.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
