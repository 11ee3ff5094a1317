using System.Runtime.InteropServices;

namespace Mobius.Cuda.Interop;

/// <summary>
/// The cuBLASLt subset Mobius uses (cublasLt.h of CUDA 13): one fp32 matrix product per call with a bias or
/// bias-gradient epilogue. All matrices column-major, as cuBLAS defines; statuses are cublasStatus_t.
/// </summary>
internal static unsafe partial class CublasLt
{
    static CublasLt() => NativeLibraries.EnsureRegistered();

    public const int DescComputeType = 0;
    public const int DescTransA = 3;
    public const int DescTransB = 4;
    public const int DescEpilogue = 7;
    public const int DescBiasPointer = 8;

    public const int PrefMaxWorkspaceBytes = 1;
    public const int PrefMinAlignmentA = 5; // then B, C, D: 6, 7, 8

    public const uint EpilogueDefault = 1;
    public const uint EpilogueBias = 4;      // D += bias, one per row of D
    public const uint EpilogueBgradB = 512;  // bias = sums of op(B) over k, one per column of D

    /// <summary>cublasLtMatmulAlgo_t: opaque, 64 bytes.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct Algo
    {
        public fixed ulong Data[8];
    }

    /// <summary>cublasLtMatmulHeuristicResult_t.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct HeuristicResult
    {
        public Algo Algo;
        public nuint WorkspaceSize;
        public int State;
        public float WavesCount;
        public fixed int Reserved[4];
    }

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtCreate(out nint handle);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtDestroy(nint handle);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulDescCreate(out nint desc, int computeType, int scaleType);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulDescDestroy(nint desc);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulDescSetAttribute(nint desc, int attr, void* buf, nuint size);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatrixLayoutCreate(out nint layout, int type, ulong rows, ulong cols, long ld);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatrixLayoutDestroy(nint layout);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulPreferenceCreate(out nint pref);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulPreferenceDestroy(nint pref);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulPreferenceSetAttribute(nint pref, int attr, void* buf, nuint size);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmulAlgoGetHeuristic(nint handle, nint desc, nint a, nint b, nint c, nint d, nint pref, int requested,
        HeuristicResult* results, out int returned);

    [LibraryImport(NativeLibraries.BlasLt)]
    public static partial int cublasLtMatmul(nint handle, nint desc, float* alpha, ulong a, nint aDesc, ulong b, nint bDesc, float* beta,
        ulong c, nint cDesc, ulong d, nint dDesc, Algo* algo, ulong workspace, nuint workspaceSize, nint stream);
}
