using System.Runtime.InteropServices;

namespace Mobius.Cuda.Interop;

/// <summary>The cuBLAS subset Mobius uses (cublas_api.h of CUDA 13). All matrices column-major, as cuBLAS defines.</summary>
internal static partial class Cublas
{
    static Cublas() => NativeLibraries.EnsureRegistered();

    public const int OpN = 0;
    public const int OpT = 1;
    public const int R32F = 0;
    public const int R16BF = 14;
    public const int Compute32F = 68;
    public const int Compute32FFast16BF = 75;
    public const int Compute32FFastTf32 = 77; // CUBLAS_COMPUTE_32F_FAST_TF32: fp32 data, TF32 tensor-core products // cublasComputeType_t CUBLAS_COMPUTE_32F_FAST_16BF: fp32 data, bf16 tensor-core products
    public const int GemmDefault = -1;
    public const int DefaultMath = 0;        // cublasMath_t CUBLAS_DEFAULT_MATH: strict fp32 for Sgemm
    public const int Tf32TensorOpMath = 3;   // CUBLAS_TF32_TENSOR_OP_MATH: fp32 GEMMs on TF32 tensor cores

    [LibraryImport(NativeLibraries.Blas, EntryPoint = "cublasCreate_v2")]
    public static partial int cublasCreate(out nint handle);

    [LibraryImport(NativeLibraries.Blas, EntryPoint = "cublasDestroy_v2")]
    public static partial int cublasDestroy(nint handle);

    [LibraryImport(NativeLibraries.Blas, EntryPoint = "cublasSetStream_v2")]
    public static partial int cublasSetStream(nint handle, nint stream);

    [LibraryImport(NativeLibraries.Blas)]
    public static partial int cublasSetMathMode(nint handle, int mode);

    [LibraryImport(NativeLibraries.Blas, EntryPoint = "cublasSgemm_v2")]
    public static unsafe partial int cublasSgemm(nint handle, int transA, int transB, int m, int n, int k, float* alpha,
        ulong a, int lda, ulong b, int ldb, float* beta, ulong c, int ldc);

    [LibraryImport(NativeLibraries.Blas)]
    public static unsafe partial int cublasSgemmStridedBatched(nint handle, int transA, int transB, int m, int n, int k, float* alpha,
        ulong a, int lda, long strideA, ulong b, int ldb, long strideB, float* beta, ulong c, int ldc, long strideC, int batch);

    [LibraryImport(NativeLibraries.Blas)]
    public static unsafe partial int cublasGemmStridedBatchedEx(nint handle, int transA, int transB, int m, int n, int k, void* alpha,
        ulong a, int aType, int lda, long strideA, ulong b, int bType, int ldb, long strideB, void* beta,
        ulong c, int cType, int ldc, long strideC, int batch, int computeType, int algo);

    [LibraryImport(NativeLibraries.Blas)]
    public static partial nint cublasGetStatusString(int status);

    public static void Check(int status, string call)
    {
        if (status != 0)
        {
            string text = Marshal.PtrToStringUTF8(cublasGetStatusString(status)) ?? "unknown cuBLAS status";
            throw new CudaException(call, status, StatusName(status), text);
        }
    }

    /// <summary>The cublasStatus_t name of a status code (cublasGetStatusString gives a description).</summary>
    private static string StatusName(int status) => "CUBLAS_STATUS_" + status switch
    {
        1 => "NOT_INITIALIZED",
        3 => "ALLOC_FAILED",
        7 => "INVALID_VALUE",
        8 => "ARCH_MISMATCH",
        11 => "MAPPING_ERROR",
        13 => "EXECUTION_FAILED",
        14 => "INTERNAL_ERROR",
        15 => "NOT_SUPPORTED",
        16 => "LICENSE_ERROR",
        _ => status.ToString(System.Globalization.CultureInfo.InvariantCulture),
    };
}
