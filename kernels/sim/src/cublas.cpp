// The simulated cuBLAS subset: column-major GEMM with cuBLAS's argument checks and alpha/beta semantics
// (beta == 0 never reads C, alpha == 0 never reads A and B), fp32 accumulation like CUBLAS_COMPUTE_32F, bf16 storage through GemmEx.
// In CUBLAS_TF32_TENSOR_OP_MATH (or with CUBLAS_COMPUTE_32F_FAST_TF32) fp32 inputs are read rounded to TF32, and with
// CUBLAS_COMPUTE_32F_FAST_16BF rounded to bf16, as tensor cores read them.
// Scalars are host pointers (CUBLAS_POINTER_MODE_HOST, the default mode).
// Each call is an operation of the handle's stream (cublasSetStream) for the stream-order check: A and B read, C written.
#include <cmath>
#include <cstring>
#include <set>
#include <string>
#include <vector>

#include "internal.h"
#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"

struct cublasContext {
    cudaStream_t stream = nullptr;
    cublasMath_t math = CUBLAS_DEFAULT_MATH;
};

float mobius_sim::detail::tf32_round(float v) {
    std::uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if ((bits & 0x7F800000u) == 0x7F800000u) return v;  // Inf and NaN pass unchanged
    bits += 0xFFFu + ((bits >> 13) & 1u);
    bits &= ~0x1FFFu;
    float r;
    std::memcpy(&r, &bits, 4);
    return r;
}

namespace {

using mobius_sim::detail::api_mutex;

std::set<cublasContext*>& handles() {
    static std::set<cublasContext*> h;
    return h;
}

float bf16_to_float(std::uint16_t v) {
    const std::uint32_t bits = std::uint32_t{v} << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

std::uint16_t float_to_bf16(float f) {  // round to nearest even, NaN stays NaN
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    if (std::isnan(f)) return static_cast<std::uint16_t>((bits >> 16) | 0x40);
    bits += 0x7FFF + ((bits >> 16) & 1);
    return static_cast<std::uint16_t>(bits >> 16);
}

std::size_t element_bytes(cudaDataType t) { return t == CUDA_R_32F ? 4 : 2; }

float load(const void* base, long long index, cudaDataType t) {
    if (t == CUDA_R_32F) return static_cast<const float*>(base)[index];
    return bf16_to_float(static_cast<const std::uint16_t*>(base)[index]);
}

// An input element as the GEMM's multiplier reads it.
float read(const void* base, long long index, cudaDataType t, bool tf32, bool bf16) {
    const float v = load(base, index, t);
    if (bf16) return bf16_to_float(float_to_bf16(v));
    return tf32 ? mobius_sim::detail::tf32_round(v) : v;
}

void store(void* base, long long index, cudaDataType t, float v) {
    if (t == CUDA_R_32F) static_cast<float*>(base)[index] = v;
    else static_cast<std::uint16_t*>(base)[index] = float_to_bf16(v);
}

// Elements a column-major rows x cols matrix with leading dimension ld spans.
long long extent(int rows, int cols, int ld) { return rows == 0 || cols == 0 ? 0 : (long long)(cols - 1) * ld + rows; }

bool in_device_memory(const void* p, long long elements, std::size_t elem_bytes) {
    if (elements == 0) return true;
    return mobius_sim::find_allocation(reinterpret_cast<std::uint64_t>(p), static_cast<std::size_t>(elements) * elem_bytes, nullptr);
}

struct Gemm {
    cublasOperation_t ta, tb;
    int m, n, k;
    float alpha, beta;
    const void* a;
    cudaDataType at;
    int lda;
    long long sa;
    const void* b;
    cudaDataType bt;
    int ldb;
    long long sb;
    void* c;
    cudaDataType ct;
    int ldc;
    long long sc;
    int batch;
    bool tf32 = false;  // set by run() from the handle's math mode, or by a FAST_TF32 compute type
    bool bf16 = false;  // fp32 inputs read as bf16 (a FAST_16BF compute type)
};

cublasStatus_t fail(cublasStatus_t s, const std::string& message) {
    mobius_sim::detail::set_last_error(message);
    return s;
}

cublasStatus_t run_on(cudaStream_t stream, const Gemm& g, const char* call);

// `call` names the product in a stream-order report.
cublasStatus_t run(cublasHandle_t handle, const char* call, Gemm g, bool pedantic = false) {
    std::lock_guard lock(api_mutex());
    if (handles().count(handle) == 0) return fail(CUBLAS_STATUS_NOT_INITIALIZED, "cublas: invalid handle");
    const bool fp32_inputs = g.at == CUDA_R_32F && g.bt == CUDA_R_32F;
    g.bf16 = fp32_inputs && g.bf16;
    g.tf32 = fp32_inputs && !g.bf16 && (g.tf32 || (!pedantic && (handle->math & 0xF) == CUBLAS_TF32_TENSOR_OP_MATH));
    return run_on(handle->stream, g, call);
}

// The product itself, its arguments checked as cuBLAS checks them; the caller holds the API lock. A null `call`: the
// caller has ordered the product on its stream already (cuBLASLt, whose matmul touches more than A, B and C).
cublasStatus_t run_on(cudaStream_t stream, const Gemm& g, const char* call) {
    auto valid_op = [](cublasOperation_t o) { return o == CUBLAS_OP_N || o == CUBLAS_OP_T || o == CUBLAS_OP_C; };
    const bool ta = g.ta != CUBLAS_OP_N, tb = g.tb != CUBLAS_OP_N;  // real data: conjugate transpose == transpose
    const int a_rows = ta ? g.k : g.m, a_cols = ta ? g.m : g.k;
    const int b_rows = tb ? g.n : g.k, b_cols = tb ? g.k : g.n;
    if (!valid_op(g.ta) || !valid_op(g.tb) || g.m < 0 || g.n < 0 || g.k < 0 || g.batch < 0 ||
        g.lda < std::max(1, a_rows) || g.ldb < std::max(1, b_rows) || g.ldc < std::max(1, g.m))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublas gemm: invalid operation, size or leading dimension");
    if (!mobius_sim::detail::context_ready())
        return fail(CUBLAS_STATUS_EXECUTION_FAILED, "cublas gemm: no usable CUDA context");
    if (!mobius_sim::detail::valid_stream(stream)) return fail(CUBLAS_STATUS_EXECUTION_FAILED, "cublas gemm: stream destroyed");
    if (g.m == 0 || g.n == 0 || g.batch == 0) return CUBLAS_STATUS_SUCCESS;

    const std::size_t ab = element_bytes(g.at), bb = element_bytes(g.bt), cb = element_bytes(g.ct);
    for (int p = 0; p < g.batch; ++p) {
        const auto* a = static_cast<const unsigned char*>(g.a) + p * g.sa * (long long)ab;
        const auto* b = static_cast<const unsigned char*>(g.b) + p * g.sb * (long long)bb;
        auto* c = static_cast<unsigned char*>(g.c) + p * g.sc * (long long)cb;
        if ((g.k > 0 && (!in_device_memory(a, extent(a_rows, a_cols, g.lda), ab) || !in_device_memory(b, extent(b_rows, b_cols, g.ldb), bb))) ||
            !in_device_memory(c, extent(g.m, g.n, g.ldc), cb)) {
            mobius_sim::detail::make_sticky(CUDA_ERROR_ILLEGAL_ADDRESS,
                                            "cublas gemm: batch " + std::to_string(p) + " reads or writes outside device memory");
            return CUBLAS_STATUS_EXECUTION_FAILED;
        }
    }
    if (call != nullptr) {  // A and B read, C written (and read when beta != 0), on the handle's stream
        mobius_sim::detail::StreamOperation order(stream, call);
        for (int p = 0; p < g.batch; ++p) {
            if (g.k > 0) {
                order.read(static_cast<const unsigned char*>(g.a) + p * g.sa * (long long)ab);
                order.read(static_cast<const unsigned char*>(g.b) + p * g.sb * (long long)bb);
            }
            order.write(static_cast<unsigned char*>(g.c) + p * g.sc * (long long)cb);
        }
        if (const std::string race = order.enqueue(); !race.empty()) {
            mobius_sim::detail::make_sticky(CUDA_ERROR_LAUNCH_FAILED, race);
            return CUBLAS_STATUS_EXECUTION_FAILED;
        }
    }

    if (mobius_sim::options().dry) return CUBLAS_STATUS_SUCCESS;

    // op(A) packed column-major (m x k) so that each output column is a sum of contiguous axpy updates.
    constexpr int kRowChunk = 64;  // keeps a chunk of op(A) in cache across all output columns
    std::vector<float> ap(static_cast<std::size_t>(g.m) * g.k), acc(kRowChunk);
    for (int p = 0; p < g.batch; ++p) {
        const void* a = static_cast<const unsigned char*>(g.a) + p * g.sa * (long long)ab;
        const void* b = static_cast<const unsigned char*>(g.b) + p * g.sb * (long long)bb;
        void* c = static_cast<unsigned char*>(g.c) + p * g.sc * (long long)cb;
        for (int kk = 0; kk < g.k; ++kk)
            for (int i = 0; i < g.m; ++i)
                ap[(std::size_t)kk * g.m + i] = read(a, ta ? (long long)i * g.lda + kk : (long long)kk * g.lda + i, g.at, g.tf32, g.bf16);
        for (int i0 = 0; i0 < g.m; i0 += kRowChunk) {
            const int rows = std::min(kRowChunk, g.m - i0);
            for (int j = 0; j < g.n; ++j) {
                std::fill(acc.begin(), acc.end(), 0.0f);
                for (int kk = 0; kk < g.k; ++kk) {
                    const float bv = read(b, tb ? (long long)kk * g.ldb + j : (long long)j * g.ldb + kk, g.bt, g.tf32, g.bf16);
                    const float* col = &ap[(std::size_t)kk * g.m + i0];
                    for (int i = 0; i < rows; ++i) acc[i] += col[i] * bv;
                }
                for (int i = 0; i < rows; ++i) {
                    const long long ci = (long long)j * g.ldc + i0 + i;
                    const float old = g.beta == 0.0f ? 0.0f : g.beta * load(c, ci, g.ct);
                    store(c, ci, g.ct, (g.alpha == 0.0f ? 0.0f : g.alpha * acc[i]) + old);
                }
            }
        }
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // namespace

int mobius_sim::detail::fp32_gemm(void* stream, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b,
                                  int ldb, float beta, float* c, int ldc, bool tf32, bool bf16) {
    Gemm g{static_cast<cublasOperation_t>(ta), static_cast<cublasOperation_t>(tb), m, n, k, alpha, beta, a, CUDA_R_32F, lda, 0, b, CUDA_R_32F, ldb, 0,
           c, CUDA_R_32F, ldc, 0, 1, tf32 && !bf16, bf16};
    return run_on(static_cast<cudaStream_t>(stream), g, nullptr);
}

extern "C" {

cublasStatus_t cublasCreate_v2(cublasHandle_t* handle) {
    std::lock_guard lock(api_mutex());
    if (handle == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *handle = new cublasContext{};
    handles().insert(*handle);
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasDestroy_v2(cublasHandle_t handle) {
    std::lock_guard lock(api_mutex());
    if (handles().erase(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
    delete handle;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId) {
    std::lock_guard lock(api_mutex());
    if (handles().count(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
    handle->stream = streamId;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode) {
    std::lock_guard lock(api_mutex());
    if (handles().count(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
    const int base = mode & ~CUBLAS_MATH_DISALLOW_REDUCED_PRECISION_REDUCTION;
    if (base < CUBLAS_DEFAULT_MATH || base > CUBLAS_TF32_TENSOR_OP_MATH) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasSetMathMode: unknown mode");
    handle->math = mode;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasGetMathMode(cublasHandle_t handle, cublasMath_t* mode) {
    std::lock_guard lock(api_mutex());
    if (handles().count(handle) == 0) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (mode == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *mode = handle->math;
    return CUBLAS_STATUS_SUCCESS;
}

const char* cublasGetStatusString(cublasStatus_t status) {
    switch (status) {
        case CUBLAS_STATUS_SUCCESS: return "the operation completed successfully";
        case CUBLAS_STATUS_NOT_INITIALIZED: return "the library was not initialized";
        case CUBLAS_STATUS_ALLOC_FAILED: return "the resource allocation failed";
        case CUBLAS_STATUS_INVALID_VALUE: return "an invalid numeric value was used as an argument";
        case CUBLAS_STATUS_ARCH_MISMATCH: return "an absent device architectural feature is required";
        case CUBLAS_STATUS_MAPPING_ERROR: return "an access to GPU memory space failed";
        case CUBLAS_STATUS_EXECUTION_FAILED: return "the GPU program failed to execute";
        case CUBLAS_STATUS_INTERNAL_ERROR: return "an internal operation failed";
        case CUBLAS_STATUS_NOT_SUPPORTED: return "the functionality requested is not supported";
        case CUBLAS_STATUS_LICENSE_ERROR: return "an error was detected when checking the current licensing";
    }
    return "unknown error";
}

cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n,
                              int k, const float* alpha, const float* A, int lda, const float* B, int ldb,
                              const float* beta, float* C, int ldc) {
    if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    return run(handle, "cublasSgemm",
               {transa, transb, m, n, k, *alpha, *beta, A, CUDA_R_32F, lda, 0, B, CUDA_R_32F, ldb, 0, C, CUDA_R_32F, ldc, 0, 1});
}

cublasStatus_t cublasSgemmStridedBatched(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                         int m, int n, int k, const float* alpha, const float* A, int lda,
                                         long long int strideA, const float* B, int ldb, long long int strideB,
                                         const float* beta, float* C, int ldc, long long int strideC, int batchCount) {
    if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    return run(handle, "cublasSgemmStridedBatched",
               {transa, transb, m, n, k, *alpha, *beta, A, CUDA_R_32F, lda, strideA, B, CUDA_R_32F, ldb, strideB, C, CUDA_R_32F, ldc, strideC,
                batchCount});
}

cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb,
                                          int m, int n, int k, const void* alpha, const void* A, cudaDataType Atype,
                                          int lda, long long int strideA, const void* B, cudaDataType Btype, int ldb,
                                          long long int strideB, const void* beta, void* C, cudaDataType Ctype, int ldc,
                                          long long int strideC, int batchCount, cublasComputeType_t computeType,
                                          cublasGemmAlgo_t algo) {
    (void)algo;  // every algorithm computes the same product here
    if (alpha == nullptr || beta == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    const bool compute32 = computeType == CUBLAS_COMPUTE_32F || computeType == CUBLAS_COMPUTE_32F_PEDANTIC ||
                           computeType == CUBLAS_COMPUTE_32F_FAST_16F || computeType == CUBLAS_COMPUTE_32F_FAST_16BF ||
                           computeType == CUBLAS_COMPUTE_32F_FAST_TF32;
    const bool fp32 = Atype == CUDA_R_32F && Btype == CUDA_R_32F && Ctype == CUDA_R_32F;
    const bool bf16 = Atype == CUDA_R_16BF && Btype == CUDA_R_16BF && (Ctype == CUDA_R_16BF || Ctype == CUDA_R_32F);
    if (!compute32 || !(fp32 || bf16))
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasGemmStridedBatchedEx: only fp32 compute over fp32 or bf16 data is simulated");
    return run(handle, "cublasGemmStridedBatchedEx",
               {transa, transb, m, n, k, *static_cast<const float*>(alpha), *static_cast<const float*>(beta), A, Atype, lda, strideA, B, Btype,
                ldb, strideB, C, Ctype, ldc, strideC, batchCount, computeType == CUBLAS_COMPUTE_32F_FAST_TF32,
                computeType == CUBLAS_COMPUTE_32F_FAST_16BF},
               computeType == CUBLAS_COMPUTE_32F_PEDANTIC);
}

}  // extern "C"
