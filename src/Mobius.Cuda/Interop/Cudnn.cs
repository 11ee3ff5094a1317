using System.Runtime.InteropServices;

namespace Mobius.Cuda.Interop;

/// <summary>
/// The cuDNN 9 legacy convolution API subset Mobius uses (deprecated but present; in the cudnn_cnn
/// sub-library). NCHW fp32 tensors, cross-correlation like every framework's "convolution".
/// </summary>
internal static partial class Cudnn
{
    static Cudnn() => NativeLibraries.EnsureRegistered();

    public const int TensorNchw = 0;
    public const int DataFloat = 0;
    public const int CrossCorrelation = 1;
    public const int DefaultMath = 0;
    public const int FmaMath = 3;
    public const int Deterministic = 1;  // cudnnDeterminism_t CUDNN_DETERMINISTIC

    /// <summary>cudnnConvolution{Fwd,BwdData,BwdFilter}AlgoPerf_t: the same layout for the three.</summary>
    [StructLayout(LayoutKind.Sequential)]
    public struct AlgoPerf
    {
        public int Algo;
        public int Status;
        public float Time;
        public nuint Memory;
        public int Determinism;
        public int MathType;
        public int Reserved0;
        public int Reserved1;
        public int Reserved2;
    }

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnCreate(out nint handle);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnDestroy(nint handle);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnSetStream(nint handle, nint stream);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial nint cudnnGetErrorString(int status);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnCreateTensorDescriptor(out nint desc);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnSetTensor4dDescriptor(nint desc, int format, int dataType, int n, int c, int h, int w);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnDestroyTensorDescriptor(nint desc);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnCreateFilterDescriptor(out nint desc);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnSetFilter4dDescriptor(nint desc, int dataType, int format, int k, int c, int h, int w);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnDestroyFilterDescriptor(nint desc);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnCreateConvolutionDescriptor(out nint desc);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnSetConvolution2dDescriptor(nint desc, int padH, int padW, int strideH, int strideW, int dilationH, int dilationW, int mode, int computeType);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnSetConvolutionMathType(nint desc, int mathType);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnDestroyConvolutionDescriptor(nint desc);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnGetConvolutionForwardAlgorithm_v7(nint handle, nint x, nint w, nint conv, nint y, int requested, out int returned, [Out] AlgoPerf[] results);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnGetConvolutionBackwardDataAlgorithm_v7(nint handle, nint w, nint dy, nint conv, nint dx, int requested, out int returned, [Out] AlgoPerf[] results);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnGetConvolutionBackwardFilterAlgorithm_v7(nint handle, nint x, nint dy, nint conv, nint dw, int requested, out int returned, [Out] AlgoPerf[] results);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnGetConvolutionForwardWorkspaceSize(nint handle, nint x, nint w, nint conv, nint y, int algo, out nuint bytes);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnGetConvolutionBackwardDataWorkspaceSize(nint handle, nint w, nint dy, nint conv, nint dx, int algo, out nuint bytes);

    [LibraryImport(NativeLibraries.Dnn)]
    public static partial int cudnnGetConvolutionBackwardFilterWorkspaceSize(nint handle, nint x, nint dy, nint conv, nint dw, int algo, out nuint bytes);

    [LibraryImport(NativeLibraries.Dnn)]
    public static unsafe partial int cudnnConvolutionForward(nint handle, float* alpha, nint xDesc, ulong x, nint wDesc, ulong w, nint conv, int algo,
        ulong workspace, nuint workspaceBytes, float* beta, nint yDesc, ulong y);

    [LibraryImport(NativeLibraries.Dnn)]
    public static unsafe partial int cudnnConvolutionBackwardData(nint handle, float* alpha, nint wDesc, ulong w, nint dyDesc, ulong dy, nint conv, int algo,
        ulong workspace, nuint workspaceBytes, float* beta, nint dxDesc, ulong dx);

    [LibraryImport(NativeLibraries.Dnn)]
    public static unsafe partial int cudnnConvolutionBackwardFilter(nint handle, float* alpha, nint xDesc, ulong x, nint dyDesc, ulong dy, nint conv, int algo,
        ulong workspace, nuint workspaceBytes, float* beta, nint dwDesc, ulong dw);

    [LibraryImport(NativeLibraries.Dnn)]
    public static unsafe partial int cudnnConvolutionBackwardBias(nint handle, float* alpha, nint dyDesc, ulong dy, float* beta, nint dbDesc, ulong db);

    [LibraryImport(NativeLibraries.Dnn)]
    public static unsafe partial int cudnnAddTensor(nint handle, float* alpha, nint aDesc, ulong a, float* beta, nint cDesc, ulong c);

    public static void Check(int status, string call)
    {
        if (status != 0)
        {
            string text = Marshal.PtrToStringUTF8(cudnnGetErrorString(status)) ?? "unknown cuDNN status";
            string name = text.StartsWith("CUDNN_STATUS", StringComparison.Ordinal) ? text.Split(' ')[0] : $"CUDNN_STATUS {status}";
            throw new CudaException(call, status, name, text);
        }
    }
}
