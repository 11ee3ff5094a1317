// The stream-order check: work on two streams that touches one allocation must be ordered by an event, a stream
// wait, host synchronisation or the legacy stream's implicit barriers, or the later operation fails before it runs
// (CUDA_ERROR_LAUNCH_FAILED, sticky). Kernels from our PTX on streams made with cuStreamCreate; cuBLAS, cuBLASLt,
// cuDNN, NCCL and the copies on the streams they are given.
#include <bit>
#include <cstring>

#include "harness.h"

extern "C" {  // the simulated NCCL's entry points (nccl.h is not part of the simulator's headers)
typedef struct ncclComm* ncclComm_t;
int ncclCommInitAll(ncclComm_t* comm, int ndev, const int* devlist);
int ncclCommDestroy(ncclComm_t comm);
int ncclGroupStart();
int ncclGroupEnd();
int ncclAllReduce(const void* sendbuff, void* recvbuff, std::size_t count, int datatype, int op, ncclComm_t comm, void* stream);
}

namespace {

constexpr int kNcclSuccess = 0, kNcclUnhandledCudaError = 1, kNcclFloat32 = 7, kNcclSum = 0;

using Buffer = mt::DeviceArray<float>;

// Launches of ew_fill_f32 (writes y) and ew_scale_f32 (reads x, writes y) on any stream.
class Kernels {
public:
    explicit Kernels(mt::Gpu& gpu) : fill_(gpu.kernel("elementwise", "ew_fill_f32")), scale_(gpu.kernel("elementwise", "ew_scale_f32")) {}

    CUresult fill(CUstream s, const Buffer& y, float value) const {
        float* yp = y.get();
        long long n = static_cast<long long>(y.size());
        void* params[] = {&yp, &n, &value};
        return cuLaunchKernel(fill_, mt::blocks_for(n, 256), 1, 1, 256, 1, 1, 0, s, params, nullptr);
    }
    CUresult scale(CUstream s, const Buffer& x, const Buffer& y, float alpha) const {
        const float* xp = x.get();
        float* yp = y.get();
        long long n = static_cast<long long>(y.size());
        void* params[] = {&xp, &yp, &n, &alpha};
        return cuLaunchKernel(scale_, mt::blocks_for(n, 256), 1, 1, 256, 1, 1, 0, s, params, nullptr);
    }

private:
    CUfunction fill_, scale_;
};

// Streams made with cuStreamCreate, destroyed at the end of the test (which works in a failed context too).
struct Stream {
    CUstream s = nullptr;
    explicit Stream(unsigned flags = CU_STREAM_DEFAULT) { CU_CHECK(cuStreamCreate(&s, flags)); }
    ~Stream() { cuStreamDestroy_v2(s); }
    operator CUstream() const { return s; }
};

struct Event {
    CUevent e = nullptr;
    Event() { CU_CHECK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING)); }
    ~Event() { cuEventDestroy_v2(e); }
    operator CUevent() const { return e; }
};

std::string last_message() { return mobiusSimGetLastErrorMessage(); }

bool poisoned(const Buffer& b) { return std::bit_cast<std::uint32_t>(b.get()[0]) == mobius_sim::kNanPoisonBits; }

// The context failed with a stream race: every call returns the sticky error until the context is recreated.
void expect_sticky_race() {
    CUdeviceptr p = 0;
    EXPECT_EQ(cuMemAlloc_v2(&p, 64), CUDA_ERROR_LAUNCH_FAILED);
    EXPECT_EQ(cuCtxSynchronize(), CUDA_ERROR_LAUNCH_FAILED);
}

TEST(StreamOrder, KernelParameterTypesGiveTheAccessKinds) {
    using mobius_sim::ParamAccess;
    const mobius_sim::KernelSignature* add = mobius_sim::find_kernel("ew_add_f32");  // const float* a, b; float* y; n, alpha, beta
    ASSERT_NE(add, nullptr);
    const ParamAccess add_expected[] = {ParamAccess::Read, ParamAccess::Read, ParamAccess::Write, ParamAccess::None, ParamAccess::None,
                                        ParamAccess::None};
    ASSERT_EQ(add->num_params, 6);
    for (int i = 0; i < 6; ++i) EXPECT_EQ(add->param_access[i], add_expected[i]) << "parameter " << i;
    // __restrict__ pointers: float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, v, then scalars
    const mobius_sim::KernelSignature* adamw = mobius_sim::find_kernel("adamw_f32");
    ASSERT_NE(adamw, nullptr);
    EXPECT_EQ(adamw->param_access[0], ParamAccess::Write);
    EXPECT_EQ(adamw->param_access[1], ParamAccess::Read);
    EXPECT_EQ(adamw->param_access[2], ParamAccess::Write);
    EXPECT_EQ(adamw->param_access[4], ParamAccess::None);
    // a test kernel of its own library: const float* in, float* out
    const mobius_sim::KernelSignature* probe = mobius_sim::find_kernel("probe_with_barrier");
    ASSERT_NE(probe, nullptr);
    EXPECT_EQ(probe->param_access[0], ParamAccess::Read);
    EXPECT_EQ(probe->param_access[1], ParamAccess::Write);
    static_assert(mobius_sim::param_access<float* __restrict__>() == ParamAccess::Write);
    static_assert(mobius_sim::param_access<const float* __restrict__>() == ParamAccess::Read);
    static_assert(mobius_sim::param_access<float* const>() == ParamAccess::Write);
    static_assert(mobius_sim::param_access<long long>() == ParamAccess::None);
}

TEST(StreamOrder, AReadOnAnotherStreamWithoutAnEventFailsBeforeItRunsAndTheContextStaysFailed) {
    {
        mt::Gpu gpu;
        Kernels k(gpu);
        Buffer x(1000), y(1000);
        Stream a, b;
        CU_CHECK(k.fill(a, x, 2.0f));
        EXPECT_EQ(k.scale(b, x, y, 3.0f), CUDA_ERROR_LAUNCH_FAILED);
        const std::string message = last_message();
        EXPECT_NE(message.find("stream race: kernel 'ew_scale_f32' on stream 2 reads allocation #"), std::string::npos) << message;
        EXPECT_NE(message.find("(4000 bytes at 0x"), std::string::npos) << message;
        EXPECT_NE(message.find("that stream 1 wrote at its operation 1 (kernel 'ew_fill_f32'), with no event, stream or host"),
                  std::string::npos)
            << message;
        EXPECT_TRUE(poisoned(y)) << "the racing launch ran";
        expect_sticky_race();
        EXPECT_EQ(k.fill(a, y, 1.0f), CUDA_ERROR_LAUNCH_FAILED);
    }
    // Released to zero references and retained again: a fresh context, with fresh stream clocks.
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(1000), y(1000);
    Stream a, b;
    CU_CHECK(k.fill(a, x, 2.0f));
    CU_CHECK(cuStreamSynchronize(a));
    CU_CHECK(k.scale(b, x, y, 3.0f));
    CU_CHECK(cuStreamSynchronize(b));
    EXPECT_EQ(y.read()[999], 6.0f);
}

TEST(StreamOrder, AnEventRecordedAfterTheWriteAndWaitedForByTheReaderOrdersThem) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(1000), y(1000), z(1000), w(1000);
    Stream a, b;
    Event done;
    CU_CHECK(k.fill(a, x, 2.0f));
    CU_CHECK(cuEventRecord(done, a));
    CU_CHECK(cuStreamWaitEvent(b, done, 0));
    CU_CHECK(k.scale(b, x, y, 3.0f));
    CU_CHECK(k.scale(b, y, z, 0.5f));  // the same stream: ordered
    CU_CHECK(cuStreamSynchronize(b));
    EXPECT_EQ(z.read()[0], 3.0f);

    // Re-recording moves the event: a wait on it now orders b after a's later fill as well.
    CU_CHECK(k.fill(a, w, 4.0f));
    CU_CHECK(cuEventRecord(done, a));
    CU_CHECK(cuStreamWaitEvent(b, done, 0));
    CU_CHECK(k.scale(b, w, y, 1.0f));
}

TEST(StreamOrder, AnEventRecordedBeforeTheWriteOrdersNothingAfterIt) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(256), y(256);
    Stream a, b;
    Event early, never;
    CU_CHECK(cuEventRecord(early, a));
    CU_CHECK(k.fill(a, x, 1.0f));
    CU_CHECK(cuStreamWaitEvent(b, early, 0));
    CU_CHECK(cuStreamWaitEvent(b, never, 0));  // never recorded: no dependency at all
    EXPECT_EQ(k.scale(b, x, y, 1.0f), CUDA_ERROR_LAUNCH_FAILED);
    EXPECT_NE(last_message().find("stream race"), std::string::npos) << last_message();
}

TEST(StreamOrder, HostSynchronisationOrdersTheStreams) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x1(512), x2(512), x3(512), x4(512), x5(512), y(512);  // allocated first: cuMemAlloc is a barrier itself
    Stream a, b;
    Event done;
    CU_CHECK(k.fill(a, x1, 1.0f));
    CU_CHECK(cuStreamSynchronize(a));
    CU_CHECK(k.scale(b, x1, y, 2.0f));

    CU_CHECK(k.fill(a, x2, 3.0f));
    CU_CHECK(cuEventRecord(done, a));
    CU_CHECK(cuEventSynchronize(done));
    CU_CHECK(k.scale(b, x2, y, 2.0f));

    CU_CHECK(k.fill(a, x3, 5.0f));  // cuStreamQuery and cuEventQuery answer done: the host may rely on that
    CU_CHECK(cuStreamQuery(a));
    CU_CHECK(k.scale(b, x3, y, 2.0f));
    CU_CHECK(k.fill(a, x4, 6.0f));
    CU_CHECK(cuEventRecord(done, a));
    CU_CHECK(cuEventQuery(done));
    CU_CHECK(k.scale(b, x4, y, 2.0f));

    CU_CHECK(k.fill(a, x5, 7.0f));  // cuCtxSynchronize waits for every stream
    CU_CHECK(cuCtxSynchronize());
    CU_CHECK(k.scale(b, x5, y, 2.0f));
    CU_CHECK(cuStreamSynchronize(b));  // and b's read of x5 before a overwrites it
    CU_CHECK(k.fill(a, x5, 8.0f));
    EXPECT_EQ(y.read()[511], 14.0f);
}

TEST(StreamOrder, AWriteAfterAReadOnAnotherStreamNeedsADependencyToo) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(300), y(300), z(300);
    Stream a, b;
    Event read, written;
    CU_CHECK(k.fill(b, x, 1.0f));
    CU_CHECK(k.scale(b, x, y, 2.0f));  // b reads x
    CU_CHECK(cuEventRecord(read, b));
    CU_CHECK(cuStreamWaitEvent(a, read, 0));
    CU_CHECK(k.fill(a, x, 5.0f));  // a overwrites x after b's read: ordered by the event

    CU_CHECK(cuEventRecord(written, a));  // b is ordered after a's write of x ...
    CU_CHECK(cuStreamWaitEvent(b, written, 0));
    CU_CHECK(k.scale(a, x, z, 1.0f));  // ... but not after a's read that follows it
    EXPECT_EQ(k.fill(b, x, 9.0f), CUDA_ERROR_LAUNCH_FAILED);
    const std::string message = last_message();
    EXPECT_NE(message.find("kernel 'ew_fill_f32' on stream 2 writes allocation #"), std::string::npos) << message;
    EXPECT_NE(message.find("that stream 1 read at its operation 2 (kernel 'ew_scale_f32')"), std::string::npos) << message;
    EXPECT_EQ(x.get()[0], 5.0f) << "the racing fill ran";
    expect_sticky_race();
}

TEST(StreamOrder, AWriteAfterAWriteOnAnotherStreamFails) {
    // What a caching allocator must avoid: a block that one stream wrote handed to a tensor of another stream.
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer block(1024);
    Stream side, trainable;
    CU_CHECK(k.fill(side, block, 1.0f));
    EXPECT_EQ(k.fill(trainable, block, 2.0f), CUDA_ERROR_LAUNCH_FAILED);
    EXPECT_NE(last_message().find("writes allocation #"), std::string::npos) << last_message();
    EXPECT_NE(last_message().find("that stream 1 wrote at its operation 1"), std::string::npos) << last_message();
}

TEST(StreamOrder, FreeingAndAllocatingAreFullBarriers) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Stream a, b;
    Buffer y(64);
    {
        Buffer x(64);
        CU_CHECK(k.fill(a, x, 1.0f));
        CU_CHECK(k.scale(a, x, y, 1.0f));
    }  // cuMemFree: the host waits for everything
    CU_CHECK(k.fill(b, y, 2.0f));
    Buffer z(64);  // cuMemAlloc as well
    CU_CHECK(k.scale(a, y, z, 1.0f));
}

TEST(StreamOrder, TwoStreamsMayReadOneBufferAtOnce) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(mt::random_vector(2000, 5)), y1(2000), y2(2000);  // x written by a copy on the legacy stream
    Stream a, b;
    CU_CHECK(k.scale(a, x, y1, 2.0f));
    CU_CHECK(k.scale(b, x, y2, 3.0f));
    CU_CHECK(k.scale(a, x, y1, 4.0f));
    CU_CHECK(cuCtxSynchronize());
    EXPECT_EQ(y2.read()[7], 3.0f * mt::random_vector(2000, 5)[7]);
}

TEST(StreamOrder, EverythingOnOneStreamIsOrdered) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Stream s(CU_STREAM_NON_BLOCKING);
    const auto host = mt::random_vector(700, 6);
    Buffer x(700), y(700), z(700);
    std::vector<float> back(700);
    for (int round = 0; round < 3; ++round) {
        CU_CHECK(cuMemcpyHtoDAsync_v2(x.ptr(), host.data(), 700 * sizeof(float), s));
        CU_CHECK(k.scale(s, x, y, 2.0f));
        CU_CHECK(k.scale(s, y, x, 0.5f));
        CU_CHECK(cuMemcpyDtoDAsync_v2(z.ptr(), x.ptr(), 700 * sizeof(float), s));
        CU_CHECK(cuMemsetD32Async(y.ptr(), 0, 700, s));
        CU_CHECK(cuMemcpyDtoHAsync_v2(back.data(), z.ptr(), 700 * sizeof(float), s));
    }
    CU_CHECK(cuStreamSynchronize(s));
    EXPECT_EQ(back, host);
}

TEST(StreamOrder, TheLegacyStreamOrdersBlockingStreamsButNotNonBlockingOnes) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(500), y(500), w(500), z(500);
    Stream a, b;
    Stream loose(CU_STREAM_NON_BLOCKING);
    CU_CHECK(k.fill(a, x, 1.0f));
    CU_CHECK(k.scale(nullptr, x, y, 2.0f));  // the legacy stream waits for blocking stream a
    CU_CHECK(k.fill(b, x, 3.0f));            // and blocking stream b waits for the legacy stream
    CU_CHECK(k.scale(CU_STREAM_LEGACY, x, y, 2.0f));
    EXPECT_EQ(y.read()[0], 6.0f);  // a synchronous copy: a legacy-stream operation, the host waits for it
    CU_CHECK(k.fill(b, y, 0.0f));
    CU_CHECK(cuMemcpyHtoD_v2(y.ptr(), std::vector<float>(500, 1.0f).data(), 500 * sizeof(float)));
    CU_CHECK(k.fill(CU_STREAM_PER_THREAD, w, 4.0f));  // the per-thread stream is a blocking stream, as in CUDA
    CU_CHECK(k.scale(nullptr, w, y, 1.0f));

    CU_CHECK(k.fill(loose, z, 5.0f));  // a non-blocking stream: no implicit order with the legacy stream
    EXPECT_EQ(k.scale(nullptr, z, y, 1.0f), CUDA_ERROR_LAUNCH_FAILED);
    const std::string message = last_message();
    EXPECT_NE(message.find("kernel 'ew_scale_f32' on the legacy stream reads allocation #"), std::string::npos) << message;
    EXPECT_NE(message.find("that stream 3 wrote at its operation 1"), std::string::npos) << message;
}

TEST(StreamOrder, AsyncCopiesAndFillsAreOperationsOfTheirStream) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x(128), y(128);
    Stream a, b;
    CU_CHECK(cuMemsetD32Async(x.ptr(), 0x3f800000u, 128, a));
    Event filled;
    CU_CHECK(cuEventRecord(filled, a));
    CU_CHECK(cuStreamWaitEvent(b, filled, 0));
    CU_CHECK(cuMemcpyDtoDAsync_v2(y.ptr(), x.ptr(), 128 * sizeof(float), b));
    EXPECT_EQ(cuMemcpyDtoDAsync_v2(x.ptr(), y.ptr(), 128 * sizeof(float), a), CUDA_ERROR_LAUNCH_FAILED);  // a: y written by b
    const std::string message = last_message();
    EXPECT_NE(message.find("stream race: cuMemcpyDtoDAsync on stream 1 reads allocation #"), std::string::npos) << message;
    EXPECT_NE(message.find("that stream 2 wrote at its operation 1 (cuMemcpyDtoDAsync)"), std::string::npos) << message;
}

TEST(StreamOrder, ACublasGemmOnTheStreamOfItsHandleMustWaitForItsInputs) {
    mt::Gpu gpu;
    Kernels k(gpu);
    const int m = 8, n = 4, kk = 16;
    Buffer A(m * kk), B(kk * n), C(m * n);
    Stream a, b;
    cublasHandle_t h = nullptr;
    ASSERT_EQ(cublasCreate_v2(&h), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasSetStream_v2(h, b), CUBLAS_STATUS_SUCCESS);
    const float one = 1.0f, zero = 0.0f;
    CU_CHECK(k.fill(b, A, 1.0f));
    CU_CHECK(k.fill(a, B, 2.0f));
    Event ready;
    CU_CHECK(cuEventRecord(ready, a));
    CU_CHECK(cuStreamWaitEvent(b, ready, 0));
    EXPECT_EQ(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, kk, &one, A.get(), m, B.get(), kk, &zero, C.get(), m),
              CUBLAS_STATUS_SUCCESS);
    CU_CHECK(cuStreamSynchronize(b));
    EXPECT_EQ(C.read()[0], 32.0f);

    CU_CHECK(k.fill(a, B, 3.0f));  // no event this time
    EXPECT_EQ(cublasSgemm_v2(h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, kk, &one, A.get(), m, B.get(), kk, &zero, C.get(), m),
              CUBLAS_STATUS_EXECUTION_FAILED);
    const std::string message = last_message();
    EXPECT_NE(message.find("stream race: cublasSgemm on stream 2 reads allocation #"), std::string::npos) << message;
    EXPECT_NE(message.find("that stream 1 wrote at its operation 2 (kernel 'ew_fill_f32')"), std::string::npos) << message;
    EXPECT_EQ(C.get()[0], 32.0f) << "the racing GEMM ran";
    expect_sticky_race();
    cublasDestroy_v2(h);
}

TEST(StreamOrder, CublasLtMatmulRunsOnTheStreamOfTheCall) {
    mt::Gpu gpu;
    Kernels k(gpu);
    const int m = 4, n = 4, kk = 8;
    Buffer A(m * kk), B(kk * n), D(m * n);
    Stream a, b;
    cublasLtHandle_t h = nullptr;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    cublasLtMatrixLayout_t al = nullptr, bl = nullptr, dl = nullptr;
    ASSERT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulDescCreate(&desc, CUBLAS_COMPUTE_32F, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&al, CUDA_R_32F, m, kk, m), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&bl, CUDA_R_32F, kk, n, kk), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasLtMatrixLayoutCreate(&dl, CUDA_R_32F, m, n, m), CUBLAS_STATUS_SUCCESS);
    cublasLtMatmulHeuristicResult_t r{};
    int returned = 0;
    ASSERT_EQ(cublasLtMatmulAlgoGetHeuristic(h, desc, al, bl, dl, dl, pref, 1, &r, &returned), CUBLAS_STATUS_SUCCESS);
    const float one = 1.0f, zero = 0.0f;
    CU_CHECK(k.fill(a, A, 1.0f));
    CU_CHECK(k.fill(a, B, 1.0f));
    EXPECT_EQ(cublasLtMatmul(h, desc, &one, A.get(), al, B.get(), bl, &zero, D.get(), dl, D.get(), dl, &r.algo, nullptr, 0, a),
              CUBLAS_STATUS_SUCCESS);
    CU_CHECK(cuStreamSynchronize(a));
    EXPECT_EQ(D.read()[0], 8.0f);
    CU_CHECK(k.fill(a, D, 0.0f));  // D written on a, then the product overwrites it on b
    EXPECT_EQ(cublasLtMatmul(h, desc, &one, A.get(), al, B.get(), bl, &zero, D.get(), dl, D.get(), dl, &r.algo, nullptr, 0, b),
              CUBLAS_STATUS_EXECUTION_FAILED);
    EXPECT_NE(last_message().find("stream race: cublasLtMatmul on stream 2 writes allocation #"), std::string::npos) << last_message();
    for (auto l : {al, bl, dl}) cublasLtMatrixLayoutDestroy(l);
    cublasLtMatmulPreferenceDestroy(pref);
    cublasLtMatmulDescDestroy(desc);
    cublasLtDestroy(h);
}

TEST(StreamOrder, ACudnnCallOnTheStreamOfItsHandleMustWaitForItsInputs) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer bias(3), y(2 * 3 * 4 * 4);
    Stream a, b;
    cudnnHandle_t h = nullptr;
    cudnnTensorDescriptor_t bd = nullptr, yd = nullptr;
    ASSERT_EQ(cudnnCreate(&h), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudnnSetStream(h, b), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudnnCreateTensorDescriptor(&bd), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudnnCreateTensorDescriptor(&yd), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudnnSetTensor4dDescriptor(bd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 1, 3, 1, 1), CUDNN_STATUS_SUCCESS);
    ASSERT_EQ(cudnnSetTensor4dDescriptor(yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, 2, 3, 4, 4), CUDNN_STATUS_SUCCESS);
    const float one = 1.0f;
    CU_CHECK(k.fill(b, y, 1.0f));
    CU_CHECK(k.fill(a, bias, 2.0f));
    EXPECT_EQ(cudnnAddTensor(h, &one, bd, bias.get(), &one, yd, y.get()), CUDNN_STATUS_EXECUTION_FAILED);
    EXPECT_NE(last_message().find("stream race: cudnnAddTensor on stream 2 reads allocation #"), std::string::npos) << last_message();
    EXPECT_EQ(y.get()[0], 1.0f) << "the racing call ran";
    expect_sticky_race();
    cudnnDestroyTensorDescriptor(bd);
    cudnnDestroyTensorDescriptor(yd);
    cudnnDestroy(h);
}

TEST(StreamOrder, NcclCollectivesUseEachRanksStream) {
    mt::Gpu gpu;
    Kernels k(gpu);
    Buffer x0(64), x1(64), y(64);
    Stream s0, s1;
    ncclComm_t comms[2] = {};
    ASSERT_EQ(ncclCommInitAll(comms, 2, nullptr), kNcclSuccess);
    auto all_reduce = [&](CUstream first, CUstream second) {
        ncclGroupStart();
        const int r0 = ncclAllReduce(x0.get(), x0.get(), 64, kNcclFloat32, kNcclSum, comms[0], first);
        const int r1 = ncclAllReduce(x1.get(), x1.get(), 64, kNcclFloat32, kNcclSum, comms[1], second);
        const int end = ncclGroupEnd();
        return r0 != kNcclSuccess ? r0 : r1 != kNcclSuccess ? r1 : end;
    };
    CU_CHECK(k.fill(s0, x0, 1.0f));
    CU_CHECK(k.fill(s1, x1, 2.0f));
    EXPECT_EQ(all_reduce(s0, s1), kNcclSuccess);
    CU_CHECK(k.scale(s1, x0, y, 1.0f));  // the all-reduce ordered rank 1's later work after rank 0's
    CU_CHECK(cuStreamSynchronize(s1));
    EXPECT_EQ(y.read()[63], 3.0f);

    CU_CHECK(k.fill(s1, x0, 1.0f));  // rank 0's buffer written on rank 1's stream, then reduced on rank 0's
    EXPECT_EQ(all_reduce(s0, s1), kNcclUnhandledCudaError);
    EXPECT_NE(last_message().find("stream race: ncclAllReduce on stream 1 writes allocation #"), std::string::npos) << last_message();
    expect_sticky_race();
    ncclCommDestroy(comms[0]);
    ncclCommDestroy(comms[1]);
}

}  // namespace
