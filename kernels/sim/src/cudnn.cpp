// The simulated cuDNN subset: the legacy convolution API over fp32 tensors with arbitrary 4-D strides,
// CROSS_CORRELATION and CONVOLUTION (flipped kernel) modes, padding, stride and dilation, with cuDNN's
// blending out = alpha * result + beta * out (beta == 0 never reads out). No workspace is needed.
// A descriptor in any math type but CUDNN_FMA_MATH lets fp32 convolutions read their inputs as TF32, as cuDNN
// does on sm_80 and later: the simulator rounds them so (FMA math is exact fp32).
// Each computing call is an operation of the handle's stream (cudnnSetStream) for the stream-order check: x, w and dy
// read; y, dx, dw, db and a given workspace written.
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "internal.h"
#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"

struct cudnnContext {
    cudaStream_t stream = nullptr;
};

struct cudnnTensorStruct {
    bool set = false;
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    int dims[4] = {};     // n, c, h, w
    long long strides[4] = {};
};

struct cudnnFilterStruct {
    bool set = false;
    cudnnDataType_t type = CUDNN_DATA_FLOAT;
    cudnnTensorFormat_t format = CUDNN_TENSOR_NCHW;
    int dims[4] = {};  // k, c, r, s
};

struct cudnnConvolutionStruct {
    bool set = false;
    int pad[2] = {}, stride[2] = {}, dilation[2] = {};
    cudnnConvolutionMode_t mode = CUDNN_CROSS_CORRELATION;
    cudnnMathType_t math = CUDNN_DEFAULT_MATH;
};

namespace {

using mobius_sim::detail::api_mutex;

template <class T>
std::set<T*>& live() {
    static std::set<T*> s;
    return s;
}

template <class T>
cudnnStatus_t create(T** out) {
    std::lock_guard lock(api_mutex());
    if (out == nullptr) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *out = new T{};
    live<T>().insert(*out);
    return CUDNN_STATUS_SUCCESS;
}

template <class T>
cudnnStatus_t destroy(T* p) {
    std::lock_guard lock(api_mutex());
    if (p == nullptr) return CUDNN_STATUS_SUCCESS;  // cuDNN accepts null descriptors here
    if (live<T>().erase(p) == 0) return CUDNN_STATUS_BAD_PARAM;
    delete p;
    return CUDNN_STATUS_SUCCESS;
}

template <class T>
bool valid(const T* p) {
    return live<T>().count(const_cast<T*>(p)) != 0 && p->set;
}

cudnnStatus_t fail(cudnnStatus_t s, const std::string& message) {
    mobius_sim::detail::set_last_error(message);
    return s;
}

long long tensor_extent(const cudnnTensorStruct& t) {
    long long e = 1;
    for (int i = 0; i < 4; ++i) e += (long long)(t.dims[i] - 1) * t.strides[i];
    return e;
}

long long at(const cudnnTensorStruct& t, int n, int c, int h, int w) {
    return n * t.strides[0] + c * t.strides[1] + h * t.strides[2] + w * t.strides[3];
}

bool in_memory(const void* p, long long elements) {
    return mobius_sim::find_allocation(reinterpret_cast<std::uint64_t>(p), static_cast<std::size_t>(elements) * 4, nullptr);
}

int output_dim(int in, int pad, int filter, int dilation, int stride) {
    return (in + 2 * pad - ((filter - 1) * dilation + 1)) / stride + 1;
}

// The checked-out view of one convolution call.
struct Conv {
    int N, C, H, W, K, R, S, P, Q;
    const cudnnTensorStruct* x;
    const cudnnTensorStruct* y;
    const cudnnConvolutionStruct* conv;
    // Filter tap (r, s) as stored: CONVOLUTION mode flips the kernel.
    long long w_index(int k, int c, int r, int s) const {
        if (conv->mode == CUDNN_CONVOLUTION) r = R - 1 - r, s = S - 1 - s;
        return ((long long)(k * C + c) * R + r) * S + s;
    }
    int in_h(int p, int r) const { return p * conv->stride[0] - conv->pad[0] + r * conv->dilation[0]; }
    int in_w(int q, int s) const { return q * conv->stride[1] - conv->pad[1] + s * conv->dilation[1]; }
    // An input element as the multiplier reads it.
    float in(float v) const { return conv->math == CUDNN_FMA_MATH ? v : mobius_sim::detail::tf32_round(v); }
};

cudnnStatus_t check_conv(cudnnHandle_t handle, const cudnnTensorStruct* x, const cudnnFilterStruct* w,
                         const cudnnConvolutionStruct* conv, const cudnnTensorStruct* y, const char* call, Conv& out) {
    if (live<cudnnContext>().count(handle) == 0) return fail(CUDNN_STATUS_NOT_INITIALIZED, std::string(call) + ": invalid handle");
    if (!valid(x) || !valid(w) || !valid(conv) || !valid(y)) return fail(CUDNN_STATUS_BAD_PARAM, std::string(call) + ": invalid descriptor");
    if (x->type != CUDNN_DATA_FLOAT || w->type != CUDNN_DATA_FLOAT || y->type != CUDNN_DATA_FLOAT ||
        w->format != CUDNN_TENSOR_NCHW)
        return fail(CUDNN_STATUS_NOT_SUPPORTED, std::string(call) + ": only fp32 data and NCHW filters are simulated");
    out = {x->dims[0], x->dims[1], x->dims[2], x->dims[3], w->dims[0], w->dims[2], w->dims[3], 0, 0, x, y, conv};
    out.P = output_dim(out.H, conv->pad[0], out.R, conv->dilation[0], conv->stride[0]);
    out.Q = output_dim(out.W, conv->pad[1], out.S, conv->dilation[1], conv->stride[1]);
    if (w->dims[1] != out.C || y->dims[0] != out.N || y->dims[1] != out.K || y->dims[2] != out.P || y->dims[3] != out.Q || out.P <= 0 || out.Q <= 0)
        return fail(CUDNN_STATUS_BAD_PARAM, std::string(call) + ": tensor, filter and convolution shapes do not agree");
    if (!mobius_sim::detail::context_ready()) return fail(CUDNN_STATUS_EXECUTION_FAILED, std::string(call) + ": no usable CUDA context");
    if (!mobius_sim::detail::valid_stream(handle->stream)) return fail(CUDNN_STATUS_EXECUTION_FAILED, std::string(call) + ": stream destroyed");
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t out_of_memory(const char* call) {
    mobius_sim::detail::make_sticky(CUDA_ERROR_ILLEGAL_ADDRESS, std::string(call) + ": a tensor lies outside device memory");
    return CUDNN_STATUS_EXECUTION_FAILED;
}

// The call's accesses on the handle's stream, checked and recorded by the stream-order check; a race fails the call
// like a faulting kernel, before it runs.
cudnnStatus_t order(cudnnHandle_t handle, const char* call, std::initializer_list<const void*> reads,
                    std::initializer_list<const void*> writes) {
    mobius_sim::detail::StreamOperation op(handle->stream, call);
    for (const void* p : reads) op.read(p);
    for (const void* p : writes) op.write(p);
    if (const std::string race = op.enqueue(); !race.empty()) {
        mobius_sim::detail::make_sticky(CUDA_ERROR_LAUNCH_FAILED, race);
        return CUDNN_STATUS_EXECUTION_FAILED;
    }
    return CUDNN_STATUS_SUCCESS;
}

// What the three convolution calls check before they compute, in this order: descriptors and shapes (check_conv), the
// scalars, that every tensor lies in device memory, and the call's accesses on the handle's stream. `x`, `w` and `y`
// are the convolution's input, filter and output in the forward sense; `written` names the one the call writes
// (0, 1, 2), and it reads the other two.
cudnnStatus_t begin_conv(cudnnHandle_t handle, const char* call, const void* alpha, const void* beta,
                         const cudnnTensorStruct* xDesc, const void* x, const cudnnFilterStruct* wDesc, const void* w,
                         const cudnnConvolutionStruct* convDesc, const cudnnTensorStruct* yDesc, const void* y, int written,
                         void* workSpace, size_t workSpaceSizeInBytes, Conv& c) {
    if (cudnnStatus_t s = check_conv(handle, xDesc, wDesc, convDesc, yDesc, call, c); s != CUDNN_STATUS_SUCCESS) return s;
    if (!alpha || !beta) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    if (!in_memory(x, tensor_extent(*xDesc)) || !in_memory(w, (long long)c.K * c.C * c.R * c.S) || !in_memory(y, tensor_extent(*yDesc)))
        return out_of_memory(call);
    const void* operands[3] = {x, w, y};
    const void* reads[2];
    for (int i = 0, r = 0; i < 3; ++i)
        if (i != written) reads[r++] = operands[i];
    return order(handle, call, {reads[0], reads[1]}, {operands[written], workSpaceSizeInBytes ? workSpace : nullptr});
}

void blend(float* out, long long index, float alpha, float value, float beta) {
    out[index] = alpha * value + (beta == 0.0f ? 0.0f : beta * out[index]);
}

template <class Perf, class Algo>
cudnnStatus_t list_algorithms(cudnnHandle_t handle, const cudnnConvolutionStruct* conv, int requested, int* returned,
                              Perf* results, std::initializer_list<Algo> algos) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnContext>().count(handle) == 0) return CUDNN_STATUS_NOT_INITIALIZED;
    if (!valid(conv) || requested < 1 || returned == nullptr || results == nullptr) return CUDNN_STATUS_BAD_PARAM;
    int n = 0;
    for (Algo a : algos) {
        if (n == requested) break;
        results[n] = Perf{};
        results[n].algo = a;
        results[n].status = CUDNN_STATUS_SUCCESS;
        results[n].time = 0.0f;
        results[n].memory = 0;
        results[n].determinism = CUDNN_DETERMINISTIC;
        results[n].mathType = conv->math;
        ++n;
    }
    *returned = n;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t workspace(cudnnHandle_t handle, size_t* size) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnContext>().count(handle) == 0) return CUDNN_STATUS_NOT_INITIALIZED;
    if (size == nullptr) return CUDNN_STATUS_BAD_PARAM_NULL_POINTER;
    *size = 0;
    return CUDNN_STATUS_SUCCESS;
}

}  // namespace

extern "C" {

cudnnStatus_t cudnnCreate(cudnnHandle_t* handle) { return create(handle); }
cudnnStatus_t cudnnDestroy(cudnnHandle_t handle) { return handle == nullptr ? CUDNN_STATUS_BAD_PARAM : destroy(handle); }

cudnnStatus_t cudnnSetStream(cudnnHandle_t handle, cudaStream_t streamId) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnContext>().count(handle) == 0) return CUDNN_STATUS_NOT_INITIALIZED;
    handle->stream = streamId;
    return CUDNN_STATUS_SUCCESS;
}

const char* cudnnGetErrorString(cudnnStatus_t status) {
    switch (status) {
        case CUDNN_STATUS_SUCCESS: return "CUDNN_STATUS_SUCCESS";
        case CUDNN_STATUS_NOT_INITIALIZED: return "CUDNN_STATUS_NOT_INITIALIZED";
        case CUDNN_STATUS_BAD_PARAM: return "CUDNN_STATUS_BAD_PARAM";
        case CUDNN_STATUS_BAD_PARAM_NULL_POINTER: return "CUDNN_STATUS_BAD_PARAM_NULL_POINTER";
        case CUDNN_STATUS_NOT_SUPPORTED: return "CUDNN_STATUS_NOT_SUPPORTED";
        case CUDNN_STATUS_INTERNAL_ERROR: return "CUDNN_STATUS_INTERNAL_ERROR";
        case CUDNN_STATUS_EXECUTION_FAILED: return "CUDNN_STATUS_EXECUTION_FAILED";
    }
    return "CUDNN_STATUS_UNKNOWN";
}

size_t cudnnGetVersion(void) { return 91300; }  // reports cuDNN 9.13, the version paired with CUDA 13.0

cudnnStatus_t cudnnCreateTensorDescriptor(cudnnTensorDescriptor_t* tensorDesc) { return create(tensorDesc); }
cudnnStatus_t cudnnDestroyTensorDescriptor(cudnnTensorDescriptor_t tensorDesc) { return destroy(tensorDesc); }

cudnnStatus_t cudnnSetTensor4dDescriptorEx(cudnnTensorDescriptor_t t, cudnnDataType_t dataType, int n, int c, int h, int w,
                                           int nStride, int cStride, int hStride, int wStride) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnTensorStruct>().count(t) == 0) return CUDNN_STATUS_BAD_PARAM;
    if (n <= 0 || c <= 0 || h <= 0 || w <= 0 || nStride <= 0 || cStride <= 0 || hStride <= 0 || wStride <= 0)
        return CUDNN_STATUS_BAD_PARAM;
    *t = {true, dataType, {n, c, h, w}, {nStride, cStride, hStride, wStride}};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetTensor4dDescriptor(cudnnTensorDescriptor_t t, cudnnTensorFormat_t format, cudnnDataType_t dataType,
                                         int n, int c, int h, int w) {
    if (format == CUDNN_TENSOR_NCHW) return cudnnSetTensor4dDescriptorEx(t, dataType, n, c, h, w, c * h * w, h * w, w, 1);
    if (format == CUDNN_TENSOR_NHWC) return cudnnSetTensor4dDescriptorEx(t, dataType, n, c, h, w, h * w * c, 1, w * c, c);
    return CUDNN_STATUS_NOT_SUPPORTED;
}

cudnnStatus_t cudnnCreateFilterDescriptor(cudnnFilterDescriptor_t* filterDesc) { return create(filterDesc); }
cudnnStatus_t cudnnDestroyFilterDescriptor(cudnnFilterDescriptor_t filterDesc) { return destroy(filterDesc); }

cudnnStatus_t cudnnSetFilter4dDescriptor(cudnnFilterDescriptor_t f, cudnnDataType_t dataType, cudnnTensorFormat_t format,
                                         int k, int c, int h, int w) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnFilterStruct>().count(f) == 0 || k <= 0 || c <= 0 || h <= 0 || w <= 0) return CUDNN_STATUS_BAD_PARAM;
    *f = {true, dataType, format, {k, c, h, w}};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnCreateConvolutionDescriptor(cudnnConvolutionDescriptor_t* convDesc) { return create(convDesc); }
cudnnStatus_t cudnnDestroyConvolutionDescriptor(cudnnConvolutionDescriptor_t convDesc) { return destroy(convDesc); }

cudnnStatus_t cudnnSetConvolution2dDescriptor(cudnnConvolutionDescriptor_t d, int pad_h, int pad_w, int u, int v,
                                              int dilation_h, int dilation_w, cudnnConvolutionMode_t mode,
                                              cudnnDataType_t computeType) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnConvolutionStruct>().count(d) == 0 || pad_h < 0 || pad_w < 0 || u <= 0 || v <= 0 || dilation_h <= 0 ||
        dilation_w <= 0 || (mode != CUDNN_CONVOLUTION && mode != CUDNN_CROSS_CORRELATION))
        return CUDNN_STATUS_BAD_PARAM;
    if (computeType != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    const cudnnMathType_t math = d->math;
    *d = {true, {pad_h, pad_w}, {u, v}, {dilation_h, dilation_w}, mode, math};
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnSetConvolutionMathType(cudnnConvolutionDescriptor_t d, cudnnMathType_t mathType) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnConvolutionStruct>().count(d) == 0 || mathType < CUDNN_DEFAULT_MATH || mathType > CUDNN_FMA_MATH)
        return CUDNN_STATUS_BAD_PARAM;
    d->math = mathType;
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnGetConvolution2dForwardOutputDim(const cudnnConvolutionDescriptor_t convDesc,
                                                    const cudnnTensorDescriptor_t inputTensorDesc,
                                                    const cudnnFilterDescriptor_t filterDesc, int* n, int* c, int* h, int* w) {
    std::lock_guard lock(api_mutex());
    if (!valid(convDesc) || !valid(inputTensorDesc) || !valid(filterDesc) || !n || !c || !h || !w) return CUDNN_STATUS_BAD_PARAM;
    if (filterDesc->dims[1] != inputTensorDesc->dims[1]) return CUDNN_STATUS_BAD_PARAM;
    *n = inputTensorDesc->dims[0];
    *c = filterDesc->dims[0];
    *h = output_dim(inputTensorDesc->dims[2], convDesc->pad[0], filterDesc->dims[2], convDesc->dilation[0], convDesc->stride[0]);
    *w = output_dim(inputTensorDesc->dims[3], convDesc->pad[1], filterDesc->dims[3], convDesc->dilation[1], convDesc->stride[1]);
    return *h > 0 && *w > 0 ? CUDNN_STATUS_SUCCESS : CUDNN_STATUS_BAD_PARAM;
}

cudnnStatus_t cudnnGetConvolutionForwardAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t, const cudnnFilterDescriptor_t,
                                                     const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t,
                                                     const int requestedAlgoCount, int* returnedAlgoCount,
                                                     cudnnConvolutionFwdAlgoPerf_t* perfResults) {
    return list_algorithms(handle, convDesc, requestedAlgoCount, returnedAlgoCount, perfResults,
                           {CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_PRECOMP_GEMM,
                            CUDNN_CONVOLUTION_FWD_ALGO_GEMM, CUDNN_CONVOLUTION_FWD_ALGO_DIRECT});
}

cudnnStatus_t cudnnGetConvolutionBackwardDataAlgorithm_v7(cudnnHandle_t handle, const cudnnFilterDescriptor_t, const cudnnTensorDescriptor_t,
                                                          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t,
                                                          const int requestedAlgoCount, int* returnedAlgoCount,
                                                          cudnnConvolutionBwdDataAlgoPerf_t* perfResults) {
    return list_algorithms(handle, convDesc, requestedAlgoCount, returnedAlgoCount, perfResults,
                           {CUDNN_CONVOLUTION_BWD_DATA_ALGO_1, CUDNN_CONVOLUTION_BWD_DATA_ALGO_0});
}

cudnnStatus_t cudnnGetConvolutionBackwardFilterAlgorithm_v7(cudnnHandle_t handle, const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
                                                            const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t,
                                                            const int requestedAlgoCount, int* returnedAlgoCount,
                                                            cudnnConvolutionBwdFilterAlgoPerf_t* perfResults) {
    return list_algorithms(handle, convDesc, requestedAlgoCount, returnedAlgoCount, perfResults,
                           {CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_0});
}

cudnnStatus_t cudnnGetConvolutionForwardWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t, const cudnnFilterDescriptor_t,
                                                      const cudnnConvolutionDescriptor_t, const cudnnTensorDescriptor_t,
                                                      cudnnConvolutionFwdAlgo_t, size_t* sizeInBytes) {
    return workspace(handle, sizeInBytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardDataWorkspaceSize(cudnnHandle_t handle, const cudnnFilterDescriptor_t, const cudnnTensorDescriptor_t,
                                                           const cudnnConvolutionDescriptor_t, const cudnnTensorDescriptor_t,
                                                           cudnnConvolutionBwdDataAlgo_t, size_t* sizeInBytes) {
    return workspace(handle, sizeInBytes);
}
cudnnStatus_t cudnnGetConvolutionBackwardFilterWorkspaceSize(cudnnHandle_t handle, const cudnnTensorDescriptor_t, const cudnnTensorDescriptor_t,
                                                             const cudnnConvolutionDescriptor_t, const cudnnFilterDescriptor_t,
                                                             cudnnConvolutionBwdFilterAlgo_t, size_t* sizeInBytes) {
    return workspace(handle, sizeInBytes);
}

cudnnStatus_t cudnnConvolutionForward(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,
                                      const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
                                      cudnnConvolutionFwdAlgo_t, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
                                      const cudnnTensorDescriptor_t yDesc, void* y) {
    std::lock_guard lock(api_mutex());
    Conv c;
    if (cudnnStatus_t s = begin_conv(handle, "cudnnConvolutionForward", alpha, beta, xDesc, x, wDesc, w, convDesc, yDesc, y, 2,
                                     workSpace, workSpaceSizeInBytes, c);
        s != CUDNN_STATUS_SUCCESS)
        return s;
    if (mobius_sim::options().dry) return CUDNN_STATUS_SUCCESS;
    const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    const auto* xs = static_cast<const float*>(x);
    const auto* ws = static_cast<const float*>(w);
    auto* ys = static_cast<float*>(y);
    std::vector<float> acc(static_cast<std::size_t>(c.P) * c.Q);
    for (int n = 0; n < c.N; ++n) {
        for (int k = 0; k < c.K; ++k) {
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int ci = 0; ci < c.C; ++ci)
                for (int r = 0; r < c.R; ++r)
                    for (int s = 0; s < c.S; ++s) {
                        const float wv = c.in(ws[c.w_index(k, ci, r, s)]);
                        for (int p = 0; p < c.P; ++p) {
                            const int h = c.in_h(p, r);
                            if (h < 0 || h >= c.H) continue;
                            for (int q = 0; q < c.Q; ++q) {
                                const int wi = c.in_w(q, s);
                                if (wi >= 0 && wi < c.W) acc[(std::size_t)p * c.Q + q] += wv * c.in(xs[at(*xDesc, n, ci, h, wi)]);
                            }
                        }
                    }
            for (int p = 0; p < c.P; ++p)
                for (int q = 0; q < c.Q; ++q) blend(ys, at(*yDesc, n, k, p, q), a, acc[(std::size_t)p * c.Q + q], b);
        }
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardData(cudnnHandle_t handle, const void* alpha, const cudnnFilterDescriptor_t wDesc, const void* w,
                                           const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                           const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionBwdDataAlgo_t, void* workSpace,
                                           size_t workSpaceSizeInBytes,
                                           const void* beta, const cudnnTensorDescriptor_t dxDesc, void* dx) {
    std::lock_guard lock(api_mutex());
    Conv c;
    if (cudnnStatus_t s = begin_conv(handle, "cudnnConvolutionBackwardData", alpha, beta, dxDesc, dx, wDesc, w, convDesc, dyDesc, dy, 0,
                                     workSpace, workSpaceSizeInBytes, c);
        s != CUDNN_STATUS_SUCCESS)
        return s;
    if (mobius_sim::options().dry) return CUDNN_STATUS_SUCCESS;
    const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    const auto* ws = static_cast<const float*>(w);
    const auto* dys = static_cast<const float*>(dy);
    auto* dxs = static_cast<float*>(dx);
    std::vector<float> acc(static_cast<std::size_t>(c.H) * c.W);
    for (int n = 0; n < c.N; ++n) {
        for (int ci = 0; ci < c.C; ++ci) {
            std::fill(acc.begin(), acc.end(), 0.0f);
            for (int k = 0; k < c.K; ++k)
                for (int r = 0; r < c.R; ++r)
                    for (int s = 0; s < c.S; ++s) {
                        const float wv = c.in(ws[c.w_index(k, ci, r, s)]);
                        for (int p = 0; p < c.P; ++p) {
                            const int h = c.in_h(p, r);
                            if (h < 0 || h >= c.H) continue;
                            for (int q = 0; q < c.Q; ++q) {
                                const int wi = c.in_w(q, s);
                                if (wi >= 0 && wi < c.W) acc[(std::size_t)h * c.W + wi] += wv * c.in(dys[at(*dyDesc, n, k, p, q)]);
                            }
                        }
                    }
            for (int h = 0; h < c.H; ++h)
                for (int wi = 0; wi < c.W; ++wi) blend(dxs, at(*dxDesc, n, ci, h, wi), a, acc[(std::size_t)h * c.W + wi], b);
        }
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardFilter(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,
                                             const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                             const cudnnConvolutionDescriptor_t convDesc, cudnnConvolutionBwdFilterAlgo_t, void* workSpace,
                                             size_t workSpaceSizeInBytes,
                                             const void* beta, const cudnnFilterDescriptor_t dwDesc, void* dw) {
    std::lock_guard lock(api_mutex());
    Conv c;
    if (cudnnStatus_t s = begin_conv(handle, "cudnnConvolutionBackwardFilter", alpha, beta, xDesc, x, dwDesc, dw, convDesc, dyDesc, dy, 1,
                                     workSpace, workSpaceSizeInBytes, c);
        s != CUDNN_STATUS_SUCCESS)
        return s;
    if (mobius_sim::options().dry) return CUDNN_STATUS_SUCCESS;
    const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    const auto* xs = static_cast<const float*>(x);
    const auto* dys = static_cast<const float*>(dy);
    auto* dws = static_cast<float*>(dw);
    for (int k = 0; k < c.K; ++k)
        for (int ci = 0; ci < c.C; ++ci)
            for (int r = 0; r < c.R; ++r)
                for (int s = 0; s < c.S; ++s) {
                    float acc = 0.0f;
                    for (int n = 0; n < c.N; ++n)
                        for (int p = 0; p < c.P; ++p) {
                            const int h = c.in_h(p, r);
                            if (h < 0 || h >= c.H) continue;
                            for (int q = 0; q < c.Q; ++q) {
                                const int wi = c.in_w(q, s);
                                if (wi >= 0 && wi < c.W) acc += c.in(dys[at(*dyDesc, n, k, p, q)]) * c.in(xs[at(*xDesc, n, ci, h, wi)]);
                            }
                        }
                    blend(dws, c.w_index(k, ci, r, s), a, acc, b);
                }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnConvolutionBackwardBias(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t dyDesc, const void* dy,
                                           const void* beta, const cudnnTensorDescriptor_t dbDesc, void* db) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnContext>().count(handle) == 0) return CUDNN_STATUS_NOT_INITIALIZED;
    if (!valid(dyDesc) || !valid(dbDesc) || !alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    const int* d = dyDesc->dims;
    const int* e = dbDesc->dims;
    if (e[0] != 1 || e[1] != d[1] || e[2] != 1 || e[3] != 1)
        return fail(CUDNN_STATUS_BAD_PARAM, "cudnnConvolutionBackwardBias: the bias descriptor must be 1 x C x 1 x 1");
    if (dyDesc->type != CUDNN_DATA_FLOAT || dbDesc->type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    if (!mobius_sim::detail::context_ready()) return fail(CUDNN_STATUS_EXECUTION_FAILED, "cudnnConvolutionBackwardBias: no usable CUDA context");
    if (!in_memory(dy, tensor_extent(*dyDesc)) || !in_memory(db, tensor_extent(*dbDesc))) return out_of_memory("cudnnConvolutionBackwardBias");
    if (cudnnStatus_t s = order(handle, "cudnnConvolutionBackwardBias", {dy}, {db}); s != CUDNN_STATUS_SUCCESS) return s;
    if (mobius_sim::options().dry) return CUDNN_STATUS_SUCCESS;
    const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    const auto* dys = static_cast<const float*>(dy);
    for (int ci = 0; ci < d[1]; ++ci) {
        float acc = 0.0f;
        for (int n = 0; n < d[0]; ++n)
            for (int h = 0; h < d[2]; ++h)
                for (int w = 0; w < d[3]; ++w) acc += dys[at(*dyDesc, n, ci, h, w)];
        blend(static_cast<float*>(db), at(*dbDesc, 0, ci, 0, 0), a, acc, b);
    }
    return CUDNN_STATUS_SUCCESS;
}

cudnnStatus_t cudnnAddTensor(cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t aDesc, const void* A,
                             const void* beta, const cudnnTensorDescriptor_t cDesc, void* C) {
    std::lock_guard lock(api_mutex());
    if (live<cudnnContext>().count(handle) == 0) return CUDNN_STATUS_NOT_INITIALIZED;
    if (!valid(aDesc) || !valid(cDesc) || !alpha || !beta) return CUDNN_STATUS_BAD_PARAM;
    for (int i = 0; i < 4; ++i)
        if (aDesc->dims[i] != 1 && aDesc->dims[i] != cDesc->dims[i])
            return fail(CUDNN_STATUS_BAD_PARAM, "cudnnAddTensor: each dimension of A must be 1 or equal to C's");
    if (aDesc->type != CUDNN_DATA_FLOAT || cDesc->type != CUDNN_DATA_FLOAT) return CUDNN_STATUS_NOT_SUPPORTED;
    if (!mobius_sim::detail::context_ready()) return fail(CUDNN_STATUS_EXECUTION_FAILED, "cudnnAddTensor: no usable CUDA context");
    if (!in_memory(A, tensor_extent(*aDesc)) || !in_memory(C, tensor_extent(*cDesc))) return out_of_memory("cudnnAddTensor");
    if (cudnnStatus_t s = order(handle, "cudnnAddTensor", {A}, {C}); s != CUDNN_STATUS_SUCCESS) return s;
    if (mobius_sim::options().dry) return CUDNN_STATUS_SUCCESS;
    const float a = *static_cast<const float*>(alpha), b = *static_cast<const float*>(beta);
    const auto* as = static_cast<const float*>(A);
    auto* cs = static_cast<float*>(C);
    const int* d = cDesc->dims;
    const int* ad = aDesc->dims;
    for (int n = 0; n < d[0]; ++n)
        for (int ci = 0; ci < d[1]; ++ci)
            for (int h = 0; h < d[2]; ++h)
                for (int w = 0; w < d[3]; ++w) {
                    const float av = as[at(*aDesc, ad[0] == 1 ? 0 : n, ad[1] == 1 ? 0 : ci, ad[2] == 1 ? 0 : h, ad[3] == 1 ? 0 : w)];
                    blend(cs, at(*cDesc, n, ci, h, w), a, av, b);
                }
    return CUDNN_STATUS_SUCCESS;
}

}  // extern "C"
