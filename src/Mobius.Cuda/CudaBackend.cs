using Mobius.Cuda.Interop;
using Mobius.Engine;

namespace Mobius.Cuda;

/// <summary>
/// The CUDA backend: device memory through a caching allocator over cuMemAlloc, every op queued on the
/// current one of two streams (<see cref="CurrentStream"/>; the second is made when first used, with cuBLAS and
/// cuDNN handles of its own), GEMMs on cuBLAS, spatial convolutions on cuDNN, everything else on our PTX kernels. The
/// host waits only where a result must reach it (<see cref="CopyToHost"/>, <see cref="Synchronize"/>).
/// With MOBIUS_CUDA=sim the same code runs against the simulated driver built from kernels/sim.
/// </summary>
public sealed unsafe partial class CudaBackend : IBackend
{
    [ThreadStatic]
    private static nint _currentContext;

    private readonly CachingAllocator _allocator;
    private readonly nint _context;
    private readonly Lane[] _lanes;
    private Lane _lane;
    private readonly Stack<nint> _events = new();
    private readonly Dictionary<nint, (int Lane, long Frees)> _recorded = new(); // what each recorded event follows
    private readonly List<nint> _allEvents = [];
    private bool _disposed;

    /// <summary>Opens device <paramref name="ordinal"/> (primary context), its stream, cuBLAS, cuDNN and our kernels.</summary>
    public CudaBackend(int ordinal = 0)
    {
        var math = MathSetting(Environment.GetEnvironmentVariable("MOBIUS_MATH")); // refused before anything is opened
        _lanes = new Lane[StreamsSetting(Environment.GetEnvironmentVariable("MOBIUS_STREAMS"))];
        Device = CudaDevice.Query(ordinal);
        Driver.Check(Driver.cuDeviceGet(out int dev, ordinal), "cuDeviceGet");
        Driver.Check(Driver.cuDevicePrimaryCtxRetain(out _context, dev), "cuDevicePrimaryCtxRetain");
        _deviceHandle = dev;
        MakeCurrent();
        _lane = _lanes[0] = Lane.Open();
        TensorCores = math;
        LoadKernels();
        _allocator = new CachingAllocator(new DeviceMemory(this), this);
    }

    private readonly int _deviceHandle;
    private TensorCoreMath _tensorCores;

    /// <summary>The device.</summary>
    public CudaDeviceInfo Device { get; }

    /// <inheritdoc />
    public string Name => "cuda";

    /// <inheritdoc />
    public string DeviceName => (NativeLibraries.Simulated ? "simulated " : "") + Device;

    /// <inheritdoc />
    public MemoryTracker Memory { get; } = new();

    /// <summary>
    /// What tensor cores may do with the fp32 products of cuBLAS and cuDNN (MOBIUS_MATH when the backend opens,
    /// `--math` on the command line). <see cref="TensorCoreMath.None"/> (the default): strict fp32, as the CPU
    /// backend. <see cref="TensorCoreMath.Tf32"/>: every GEMM in CUBLAS_TF32_TENSOR_OP_MATH and every convolution in
    /// CUDNN_DEFAULT_MATH, reading the inputs with 11 significant bits and accumulating in fp32, as PyTorch's
    /// allow_tf32. <see cref="TensorCoreMath.Bf16"/>: every GEMM rounds its fp32 inputs to bf16 (8 significant bits)
    /// and accumulates in fp32 (CUBLAS_COMPUTE_32F_FAST_16BF), twice TF32's tensor-core rate; convolutions as in TF32
    /// (cuDNN's legacy API does not round fp32 to bf16). In every mode a large temporal convolution runs on cuBLAS
    /// (<see cref="TemporalConvOnCublas"/>), in that mode, unless MOBIUS_TEMPORAL_CONV=kernel; tensors stay fp32 in memory; our
    /// own kernels (attention over frames, norms, elementwise ops, the optimiser) compute in fp32. sm_80 and later;
    /// older devices compute in fp32 whatever this says.
    /// </summary>
    public TensorCoreMath TensorCores
    {
        get => _tensorCores;
        set
        {
            if (!Enum.IsDefined(value))
            {
                throw new ArgumentOutOfRangeException(nameof(value), value, "not a TensorCoreMath.");
            }

            MakeCurrent();
            foreach (var lane in _lanes)
            {
                lane?.SetMath(value);
            }

            if ((value == TensorCoreMath.None) != (_tensorCores == TensorCoreMath.None))
            {
                FreeConvDescriptors(); // planned again with the other math type
            }

            _tensorCores = value;
        }
    }

    /// <inheritdoc />
    public string MathMode => MathName(_tensorCores);

    /// <summary>The name of a mode, as MOBIUS_MATH and `--math` spell it.</summary>
    public static string MathName(TensorCoreMath mode) => mode switch
    {
        TensorCoreMath.Tf32 => "tf32",
        TensorCoreMath.Bf16 => "bf16",
        _ => "fp32",
    };

    /// <summary>MOBIUS_MATH (and `--math`): unset, empty or fp32 (strict fp32, the default), tf32 or bf16.</summary>
    public static TensorCoreMath MathSetting(string? value) => value switch
    {
        null or "" or "fp32" => TensorCoreMath.None,
        "tf32" => TensorCoreMath.Tf32,
        "bf16" => TensorCoreMath.Bf16,
        var other => throw new ArgumentException($"MOBIUS_MATH={other}: expected fp32 (the default), tf32 (TF32 tensor cores in cuBLAS and cuDNN) or bf16 (bf16 tensor cores in cuBLAS, TF32 in cuDNN)."),
    };

    /// <summary>
    /// MOBIUS_STREAMS: unset, empty or 2 (the default: a second stream, which the parallel topology's spatial chain runs
    /// on beside the temporal ring) or 1 (every op on one stream, in issue order).
    /// </summary>
    public static int StreamsSetting(string? value) => value switch
    {
        null or "" or "2" => 2,
        "1" => 1,
        var other => throw new ArgumentException($"MOBIUS_STREAMS={other}: expected 2 (the default: the parallel topology's spatial chain on a second stream) or 1 (one stream)."),
    };

    /// <summary>Fill new blocks with NaN bits, fp32 and bf16 alike (0x7FC07FC0; on in the tests).</summary>
    public bool PoisonAllocations
    {
        get => _allocator.PoisonAllocations;
        set => _allocator.PoisonAllocations = value;
    }

    /// <summary>The stream ops are queued on now (<see cref="CurrentStream"/>).</summary>
    public nint Stream => _lane.Stream;

    /// <inheritdoc />
    public int StreamCount => _lanes.Length;

    /// <inheritdoc />
    public int CurrentStream
    {
        get => Array.IndexOf(_lanes, _lane);
        set
        {
            ArgumentOutOfRangeException.ThrowIfNegative(value);
            ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(value, _lanes.Length);
            ObjectDisposedException.ThrowIf(_disposed, this);
            if (_lanes[value] is null)
            {
                MakeCurrent();
                var lane = Lane.Open();
                lane.SetMath(_tensorCores);
                _lanes[value] = lane;
            }

            _lane = _lanes[value];
        }
    }

    /// <inheritdoc />
    public StreamEvent RecordEvent() => new(RecordOn(_lane));

    /// <inheritdoc />
    public void WaitEvent(StreamEvent e)
    {
        if (e.IsNone)
        {
            return;
        }

        MakeCurrent();
        Driver.Check(Driver.cuStreamWaitEvent(_lane.Stream, e.Handle, 0), "cuStreamWaitEvent");
        if (_recorded.Remove(e.Handle, out var origin))
        {
            // This stream is now after the frees that stream made before the event: their blocks may serve it.
            _allocator.Ordered(CurrentStream, origin.Lane, origin.Frees);
        }

        _events.Push(e.Handle); // the wait has taken the event's state: it may be recorded again
    }

    /// <inheritdoc />
    public void RecordStream(Tensor t, int stream)
    {
        ArgumentNullException.ThrowIfNull(t);
        ArgumentOutOfRangeException.ThrowIfNegative(stream);
        ArgumentOutOfRangeException.ThrowIfGreaterThanOrEqual(stream, _lanes.Length);
        if (!ReferenceEquals(t.Backend, this))
        {
            throw new ArgumentException("RecordStream: the tensor belongs to another backend.", nameof(t));
        }

        t.Storage.MarkUsedOn(stream);
    }

    private nint RecordOn(Lane lane)
    {
        MakeCurrent();
        if (!_events.TryPop(out nint e))
        {
            Driver.Check(Driver.cuEventCreate(out e, Driver.EventDisableTiming), "cuEventCreate");
            _allEvents.Add(e);
        }

        Driver.Check(Driver.cuEventRecord(e, lane.Stream), "cuEventRecord");
        _recorded[e] = (Array.IndexOf(_lanes, lane), _allocator.Frees);
        return e;
    }

    /// <summary>A stream with cuBLAS and cuDNN handles of its own (a handle's workspace must not serve two streams at once).</summary>
    private sealed class Lane
    {
        public nint Stream;
        public nint Blas;
        public nint Dnn;

        public static Lane Open()
        {
            var lane = new Lane();
            // Blocking streams (flags 0): the legacy-stream copies of CopyFromHost and CopyToHost are ordered after both.
            Driver.Check(Driver.cuStreamCreate(out lane.Stream, 0), "cuStreamCreate");
            Cublas.Check(Cublas.cublasCreate(out lane.Blas), "cublasCreate_v2");
            Cublas.Check(Cublas.cublasSetStream(lane.Blas, lane.Stream), "cublasSetStream_v2");
            Cudnn.Check(Cudnn.cudnnCreate(out lane.Dnn), "cudnnCreate");
            Cudnn.Check(Cudnn.cudnnSetStream(lane.Dnn, lane.Stream), "cudnnSetStream");
            return lane;
        }

        public void SetMath(TensorCoreMath math) =>
            Cublas.Check(Cublas.cublasSetMathMode(Blas, math == TensorCoreMath.None ? Cublas.DefaultMath : Cublas.Tf32TensorOpMath), "cublasSetMathMode");

        public void Close()
        {
            Driver.cuStreamSynchronize(Stream);
            Cudnn.cudnnDestroy(Dnn);
            Cublas.cublasDestroy(Blas);
            Driver.cuStreamDestroy(Stream);
        }
    }

    /// <summary>Free and total device memory as the driver reports them.</summary>
    public (long Free, long Total) DeviceMemoryInfo()
    {
        MakeCurrent();
        Driver.Check(Driver.cuMemGetInfo(out nuint free, out nuint total), "cuMemGetInfo_v2");
        return ((long)free, (long)total);
    }

    /// <inheritdoc />
    public Storage Allocate(long bytes, MemoryCategory category)
    {
        MakeCurrent();
        return _allocator.Allocate(bytes, category);
    }

    /// <inheritdoc />
    public void EmptyCache()
    {
        MakeCurrent();
        Synchronize();
        _allocator.EmptyCache();
    }

    /// <inheritdoc />
    public void Synchronize()
    {
        MakeCurrent();
        foreach (var lane in _lanes)
        {
            if (lane is not null)
            {
                Driver.Check(Driver.cuStreamSynchronize(lane.Stream), "cuStreamSynchronize");
            }
        }
    }

    /// <summary>Creates a pair of events for timing a section of the stream.</summary>
    public CudaTimer StartTimer() => new(this);

    /// <inheritdoc />
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _callTimer?.Dispose(); // its events, before the context goes
        _disposed = true;
        MakeCurrent();
        foreach (var lane in _lanes)
        {
            if (lane is not null)
            {
                Driver.cuStreamSynchronize(lane.Stream);
            }
        }

        _allocator.Dispose();
        FreeConvDescriptors();
        FreeLt();
        UnloadKernels();
        foreach (var e in _allEvents)
        {
            Driver.cuEventDestroy(e);
        }

        for (int i = _lanes.Length - 1; i >= 0; i--)
        {
            _lanes[i]?.Close();
        }
        Driver.cuDevicePrimaryCtxRelease(_deviceHandle);
    }

    /// <summary>Makes this backend's context current on the calling thread (cheap when it already is).</summary>
    internal void MakeCurrent()
    {
        if (_currentContext != _context)
        {
            Driver.Check(Driver.cuCtxSetCurrent(_context), "cuCtxSetCurrent");
            _currentContext = _context;
        }
    }

    /// <summary>
    /// Forgets which context this thread last made current, so that the next <see cref="MakeCurrent"/> sets it again:
    /// for after a library that switches devices through the runtime API (NCCL's communicator set-up and grouped
    /// launches call cudaSetDevice) may have left another context current.
    /// </summary>
    internal static void ForgetCurrentContext() => _currentContext = 0;

    /// <summary>The device address of a tensor's first element.</summary>
    internal static ulong Ptr(Tensor t) => (ulong)t.Storage.Handle + (ulong)(t.Offset * t.DType.Size());

    // ---- data movement ---------------------------------------------------------------------------

    /// <inheritdoc />
    public void CopyFromHost(ReadOnlySpan<float> src, Tensor dst)
    {
        MakeCurrent();
        fixed (float* p = src)
        {
            // The legacy-stream copy is ordered after the work queued on our blocking stream.
            Driver.Check(Driver.cuMemcpyHtoD(Ptr(dst), p, (nuint)(src.Length * 4)), "cuMemcpyHtoD_v2");
        }
    }

    /// <inheritdoc />
    public void CopyToHost(Tensor src, Span<float> dst)
    {
        MakeCurrent();
        Synchronize();
        fixed (float* p = dst)
        {
            Driver.Check(Driver.cuMemcpyDtoH(p, Ptr(src), (nuint)(dst.Length * 4)), "cuMemcpyDtoH_v2");
        }
    }

    /// <inheritdoc />
    public void Cast(Tensor x, Tensor y)
    {
        switch (x.DType, y.DType)
        {
            case (DType.Float32, DType.BFloat16):
                Launch1D("cast_f32_bf16", x.Numel, [Ptr(x), Ptr(y), x.Numel]);
                break;
            case (DType.BFloat16, DType.Float32):
                Launch1D("cast_bf16_f32", x.Numel, [Ptr(x), Ptr(y), x.Numel]);
                break;
            case (DType.Float32, DType.Int8Blocks):
                // A warp per block of 128 elements.
                Launch1D("quantize_f32_i8b", 32 * ((x.Numel + DTypeExtensions.Int8Block - 1) / DTypeExtensions.Int8Block),
                    [Ptr(x), Ptr(y), Ptr(y) + (ulong)DTypeExtensions.Int8ScalesOffset(x.Numel), x.Numel]);
                break;
            case (DType.Int8Blocks, DType.Float32):
                Launch1D("dequantize_i8b_f32", x.Numel, [Ptr(x), Ptr(x) + (ulong)DTypeExtensions.Int8ScalesOffset(x.Numel), Ptr(y), x.Numel]);
                break;
            case var (from, to) when from != to:
                throw new NotSupportedException($"cast from {from.Name()} to {to.Name()}.");
            default:
                MakeCurrent();
                Driver.Check(Driver.cuMemcpyDtoDAsync(Ptr(y), Ptr(x), (nuint)x.Bytes, _lane.Stream), "cuMemcpyDtoDAsync");
                break;
        }
    }

    /// <inheritdoc />
    public void Fill(Tensor dst, float value)
    {
        if (dst.DType == DType.BFloat16)
        {
            Launch1D("fill_bf16", dst.Numel, [Ptr(dst), (int)BFloat16Bits.FromFloat(value), dst.Numel]);
            return;
        }

        MakeCurrent();
        Driver.Check(Driver.cuMemsetD32Async(Ptr(dst), BitConverter.SingleToUInt32Bits(value), (nuint)dst.Numel, _lane.Stream), "cuMemsetD32Async");
    }

    // ---- GEMM on cuBLAS ----------------------------------------------------------------------------

    /// <inheritdoc />
    public void Gemm(in GemmShape s, float alpha, Tensor a, Tensor b, float beta, Tensor c)
    {
        MakeCurrent();

        // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
        int lda = s.TransA ? s.M : s.K;
        int ldb = s.TransB ? s.K : s.N;
        int opB = s.TransB ? Cublas.OpT : Cublas.OpN;
        int opA = s.TransA ? Cublas.OpT : Cublas.OpN;
        Products(opB, opA, s.N, s.M, s.K, alpha, Ptr(b), ldb, s.StrideB, Ptr(a), lda, s.StrideA, beta, Ptr(c), s.N, s.StrideC, s.Batch);
    }

    /// <summary>
    /// The column-major product C = alpha op(A) op(B) + beta C of <paramref name="batch"/> strided matrices on cuBLAS:
    /// Sgemm for one, SgemmStridedBatched for several (both in the handle's math mode: strict fp32 or TF32), or in
    /// <see cref="TensorCoreMath.Bf16"/> GemmStridedBatchedEx over the same fp32 matrices with bf16 compute.
    /// </summary>
    private void Products(int opA, int opB, int m, int n, int k, float alpha, ulong a, int lda, long strideA, ulong b, int ldb, long strideB,
        float beta, ulong c, int ldc, long strideC, int batch)
    {
        MakeCurrent();
        if (_tensorCores == TensorCoreMath.Bf16)
        {
            using (Call("cublasGemmStridedBatchedEx"))
            {
                Cublas.Check(Cublas.cublasGemmStridedBatchedEx(_lane.Blas, opA, opB, m, n, k, &alpha, a, Cublas.R32F, lda, strideA, b, Cublas.R32F, ldb, strideB,
                    &beta, c, Cublas.R32F, ldc, strideC, batch, Cublas.Compute32FFast16BF, Cublas.GemmDefault), "cublasGemmStridedBatchedEx");
            }
        }
        else if (batch == 1)
        {
            using (Call("cublasSgemm"))
            {
                Cublas.Check(Cublas.cublasSgemm(_lane.Blas, opA, opB, m, n, k, &alpha, a, lda, b, ldb, &beta, c, ldc), "cublasSgemm_v2");
            }
        }
        else
        {
            using (Call("cublasSgemmStridedBatched"))
            {
                Cublas.Check(Cublas.cublasSgemmStridedBatched(_lane.Blas, opA, opB, m, n, k, &alpha, a, lda, strideA, b, ldb, strideB, &beta, c, ldc, strideC, batch),
                    "cublasSgemmStridedBatched");
            }
        }
    }

    private sealed class DeviceMemory(CudaBackend owner) : IRawMemory
    {
        public nint Alloc(long bytes)
        {
            int status = Driver.cuMemAlloc(out ulong p, (nuint)bytes);
            if (status == Driver.ErrorOutOfMemory)
            {
                return 0;
            }

            Driver.Check(status, "cuMemAlloc_v2");
            return (nint)p;
        }

        public void Free(nint handle, long bytes) => Driver.Check(Driver.cuMemFree((ulong)handle), "cuMemFree_v2");

        public void Poison(nint handle, long bytes) =>
            Driver.Check(Driver.cuMemsetD32Async((ulong)handle, 0x7FC07FC0u, (nuint)(bytes / 4), owner._lane.Stream), "cuMemsetD32Async");

        public int Stream => owner.CurrentStream;

        // An event on each stream of the mask, recorded now: the work those streams have queued so far.
        public object? Fence(int streams)
        {
            if (owner._disposed)
            {
                return null; // the streams are gone, and their work with them
            }

            var events = new List<nint>(2);
            for (int i = 0; i < owner._lanes.Length; i++)
            {
                if ((streams & (1 << i)) != 0 && owner._lanes[i] is { } lane)
                {
                    events.Add(owner.RecordOn(lane));
                }
            }

            return events.Count == 0 ? null : events;
        }

        public void Wait(object fence)
        {
            foreach (nint e in (List<nint>)fence)
            {
                owner.WaitEvent(new StreamEvent(e));
            }
        }

        public void Drop(object fence)
        {
            foreach (nint e in (List<nint>)fence)
            {
                owner._recorded.Remove(e);
                owner._events.Push(e);
            }
        }
    }
}

/// <summary>Times a section of a backend's stream with a pair of CUDA events.</summary>
public sealed class CudaTimer : IDisposable
{
    private readonly CudaBackend _backend;
    private readonly nint _start;
    private readonly nint _end;

    internal CudaTimer(CudaBackend backend)
    {
        _backend = backend;
        backend.MakeCurrent();
        Driver.Check(Driver.cuEventCreate(out _start, 0), "cuEventCreate");
        Driver.Check(Driver.cuEventCreate(out _end, 0), "cuEventCreate");
        Driver.Check(Driver.cuEventRecord(_start, backend.Stream), "cuEventRecord");
    }

    /// <summary>Records the end, waits for it and returns the elapsed device time in milliseconds.</summary>
    public float Stop()
    {
        _backend.MakeCurrent();
        Driver.Check(Driver.cuEventRecord(_end, _backend.Stream), "cuEventRecord");
        Driver.Check(Driver.cuEventSynchronize(_end), "cuEventSynchronize");
        Driver.Check(Driver.cuEventElapsedTime(out float ms, _start, _end), "cuEventElapsedTime");
        return ms;
    }

    /// <inheritdoc />
    public void Dispose()
    {
        Driver.cuEventDestroy(_start);
        Driver.cuEventDestroy(_end);
    }
}
