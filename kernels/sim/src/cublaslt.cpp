// The simulated cuBLASLt subset: one column-major fp32 matrix product per call (no batches, no row order), in
// compute types 32F (exact fp32), 32F_FAST_TF32 and 32F_FAST_16BF (inputs read as TF32 or bf16, as tensor cores read
// them), with the DEFAULT, BIAS, BGRADA and BGRADB epilogues. The heuristic returns one algorithm that remembers the
// buffer alignments the preference allowed; cublasLtMatmul refuses buffers less aligned than that, as an algorithm
// assuming the default 256 bytes could not read them on a GPU.
// Each matmul is an operation of its stream argument for the stream-order check (what it reads and writes: cublasLtMatmul).
#include <cstring>
#include <set>
#include <string>

#include "internal.h"
#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"

struct cublasLtContext {};

struct cublasLtMatmulDescSim {
    cublasComputeType_t compute;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    std::uint32_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    void* bias = nullptr;
};

struct cublasLtMatrixLayoutSim {
    std::uint64_t rows, cols;
    std::int64_t ld;
};

struct cublasLtMatmulPreferenceSim {
    std::uint64_t workspace = 0;
    std::uint32_t align[4] = {256, 256, 256, 256};  // A, B, C, D
};

namespace {

using mobius_sim::detail::api_mutex;

constexpr std::uint64_t kAlgoMagic = 0x4d6f62697573'4c74ull;

template <class T>
std::set<T*>& live() {
    static std::set<T*> s;
    return s;
}

template <class T>
bool alive(T* p) {
    return p != nullptr && live<T>().count(p) != 0;
}

template <class T, class... Args>
cublasStatus_t create(T** out, Args&&... args) {
    std::lock_guard lock(api_mutex());
    if (out == nullptr) return CUBLAS_STATUS_INVALID_VALUE;
    *out = new T{std::forward<Args>(args)...};
    live<T>().insert(*out);
    return CUBLAS_STATUS_SUCCESS;
}

template <class T>
cublasStatus_t destroy(T* p) {
    std::lock_guard lock(api_mutex());
    if (p == nullptr) return CUBLAS_STATUS_SUCCESS;
    if (live<T>().erase(p) == 0) return CUBLAS_STATUS_INVALID_VALUE;
    delete p;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t fail(cublasStatus_t s, const std::string& message) {
    mobius_sim::detail::set_last_error(message);
    return s;
}

template <class T>
bool read_attr(const void* buf, std::size_t size, T& out) {
    if (buf == nullptr || size != sizeof(T)) return false;
    std::memcpy(&out, buf, sizeof(T));
    return true;
}

bool power_of_two(std::uint32_t v) { return v != 0 && (v & (v - 1)) == 0; }

// op(X) of a layout: rows and columns after the operation.
void op_shape(const cublasLtMatrixLayoutSim* l, cublasOperation_t op, std::uint64_t& rows, std::uint64_t& cols) {
    rows = op == CUBLAS_OP_N ? l->rows : l->cols;
    cols = op == CUBLAS_OP_N ? l->cols : l->rows;
}

cublasStatus_t check_shapes(const cublasLtMatmulDescSim* d, const cublasLtMatrixLayoutSim* a, const cublasLtMatrixLayoutSim* b,
                            const cublasLtMatrixLayoutSim* c, const cublasLtMatrixLayoutSim* dd) {
    std::uint64_t am, ak, bk, bn;
    op_shape(a, d->ta, am, ak);
    op_shape(b, d->tb, bk, bn);
    if (ak != bk || c->rows != am || c->cols != bn || dd->rows != am || dd->cols != bn)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLt matmul: op(A), op(B), C and D do not agree in shape");
    return CUBLAS_STATUS_SUCCESS;
}

// The preference's alignments are of the buffers' addresses (the heuristic sees the leading dimensions itself).
bool aligned(const void* p, std::uint32_t alignment) { return reinterpret_cast<std::uintptr_t>(p) % alignment == 0; }

bool in_memory(const void* p, const cublasLtMatrixLayoutSim* l) {
    if (l->rows == 0 || l->cols == 0) return true;
    const std::size_t elements = (l->cols - 1) * static_cast<std::size_t>(l->ld) + l->rows;
    return mobius_sim::find_allocation(reinterpret_cast<std::uint64_t>(p), elements * 4, nullptr);
}

// out[i] = sum over kk < k of x[i * index_stride + kk * k_stride], in order of kk, in fp32.
void sums_over_k(const float* x, long long index_stride, long long k_stride, int count, std::uint64_t k, float* out) {
    for (int i = 0; i < count; ++i) {
        float s = 0.0f;
        for (std::uint64_t kk = 0; kk < k; ++kk) s += x[i * index_stride + static_cast<long long>(kk) * k_stride];
        out[i] = s;
    }
}

}  // namespace

extern "C" {

cublasStatus_t cublasLtCreate(cublasLtHandle_t* handle) { return create(handle); }

cublasStatus_t cublasLtDestroy(cublasLtHandle_t handle) { return handle == nullptr ? CUBLAS_STATUS_NOT_INITIALIZED : destroy(handle); }

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t* desc, cublasComputeType_t computeType, cudaDataType scaleType) {
    if (computeType != CUBLAS_COMPUTE_32F && computeType != CUBLAS_COMPUTE_32F_FAST_TF32 && computeType != CUBLAS_COMPUTE_32F_FAST_16BF)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulDescCreate: only the fp32 compute types are simulated");
    if (scaleType != CUDA_R_32F) return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulDescCreate: only fp32 scales are simulated");
    return create(desc, computeType);
}

cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t desc) { return destroy(desc); }

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t desc, cublasLtMatmulDescAttributes_t attr, const void* buf, std::size_t size) {
    std::lock_guard lock(api_mutex());
    if (!alive(desc)) return CUBLAS_STATUS_INVALID_VALUE;
    std::int32_t op = 0;
    switch (attr) {
        case CUBLASLT_MATMUL_DESC_TRANSA:
        case CUBLASLT_MATMUL_DESC_TRANSB:
            if (!read_attr(buf, size, op) || (op != CUBLAS_OP_N && op != CUBLAS_OP_T))
                return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute: TRANSA/TRANSB take an int32 N or T");
            (attr == CUBLASLT_MATMUL_DESC_TRANSA ? desc->ta : desc->tb) = static_cast<cublasOperation_t>(op);
            return CUBLAS_STATUS_SUCCESS;
        case CUBLASLT_MATMUL_DESC_EPILOGUE: {
            std::uint32_t e = 0;
            if (!read_attr(buf, size, e) ||
                (e != CUBLASLT_EPILOGUE_DEFAULT && e != CUBLASLT_EPILOGUE_BIAS && e != CUBLASLT_EPILOGUE_BGRADA && e != CUBLASLT_EPILOGUE_BGRADB))
                return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute: the epilogue is a uint32 DEFAULT, BIAS, BGRADA or BGRADB");
            desc->epilogue = e;
            return CUBLAS_STATUS_SUCCESS;
        }
        case CUBLASLT_MATMUL_DESC_BIAS_POINTER:
            if (!read_attr(buf, size, desc->bias)) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulDescSetAttribute: BIAS_POINTER takes a pointer");
            return CUBLAS_STATUS_SUCCESS;
        default:
            return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulDescSetAttribute: attribute " + std::to_string(attr) + " is not simulated");
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t* layout, cudaDataType type, std::uint64_t rows, std::uint64_t cols, std::int64_t ld) {
    if (type != CUDA_R_32F) return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatrixLayoutCreate: only fp32 matrices are simulated");
    if (ld < static_cast<std::int64_t>(std::max<std::uint64_t>(rows, 1)))
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatrixLayoutCreate: the leading dimension is below the rows");
    return create(layout, rows, cols, ld);
}

cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t layout) { return destroy(layout); }

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t* pref) { return create(pref); }

cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t pref) { return destroy(pref); }

cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t pref, cublasLtMatmulPreferenceAttributes_t attr, const void* buf,
                                                    std::size_t size) {
    std::lock_guard lock(api_mutex());
    if (!alive(pref)) return CUBLAS_STATUS_INVALID_VALUE;
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES)
        return read_attr(buf, size, pref->workspace) ? CUBLAS_STATUS_SUCCESS
                                                      : fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: the workspace is a uint64");
    if (attr >= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES && attr <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES) {
        std::uint32_t a = 0;
        if (!read_attr(buf, size, a) || !power_of_two(a))
            return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulPreferenceSetAttribute: an alignment is a uint32 power of two");
        pref->align[attr - CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES] = a;
        return CUBLAS_STATUS_SUCCESS;
    }
    return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmulPreferenceSetAttribute: attribute " + std::to_string(attr) + " is not simulated");
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t d, cublasLtMatmulPreference_t pref,
                                              int requested, cublasLtMatmulHeuristicResult_t* results, int* returned) {
    std::lock_guard lock(api_mutex());
    if (!alive(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alive(desc) || !alive(a) || !alive(b) || !alive(c) || !alive(d) || !alive(pref) || requested < 1 || results == nullptr || returned == nullptr)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmulAlgoGetHeuristic: invalid argument");
    if (cublasStatus_t s = check_shapes(desc, a, b, c, d); s != CUBLAS_STATUS_SUCCESS) return s;
    cublasLtMatmulHeuristicResult_t r{};
    r.algo.data[0] = kAlgoMagic;
    for (int i = 0; i < 4; ++i) r.algo.data[1 + i] = pref->align[i];
    r.workspaceSize = 0;
    r.state = CUBLAS_STATUS_SUCCESS;
    r.wavesCount = 1.0f;
    results[0] = r;
    *returned = 1;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t handle, cublasLtMatmulDesc_t desc, const void* alpha, const void* A, cublasLtMatrixLayout_t Adesc,
                              const void* B, cublasLtMatrixLayout_t Bdesc, const void* beta, const void* C, cublasLtMatrixLayout_t Cdesc, void* D,
                              cublasLtMatrixLayout_t Ddesc, const cublasLtMatmulAlgo_t* algo, void* workspace, std::size_t workspaceSize,
                              cudaStream_t stream) {
    std::lock_guard lock(api_mutex());
    if (!alive(handle)) return CUBLAS_STATUS_NOT_INITIALIZED;
    if (!alive(desc) || !alive(Adesc) || !alive(Bdesc) || !alive(Cdesc) || !alive(Ddesc) || alpha == nullptr || beta == nullptr)
        return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: invalid argument");
    if (algo == nullptr || algo->data[0] != kAlgoMagic) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: not an algorithm from the heuristic");
    if (cublasStatus_t s = check_shapes(desc, Adesc, Bdesc, Cdesc, Ddesc); s != CUBLAS_STATUS_SUCCESS) return s;
    if (C != D && *static_cast<const float*>(beta) != 0.0f)
        return fail(CUBLAS_STATUS_NOT_SUPPORTED, "cublasLtMatmul: a C apart from D with beta != 0 is not simulated");
    const void* buffers[4] = {A, B, C, D};
    for (int i = 0; i < 4; ++i)
        if (!aligned(buffers[i], static_cast<std::uint32_t>(algo->data[1 + i])))
            return fail(CUBLAS_STATUS_INVALID_VALUE, std::string("cublasLtMatmul: matrix ") + "ABCD"[i] + " is less aligned than the " +
                                                         std::to_string(algo->data[1 + i]) + " bytes the heuristic's algorithm assumes");
    const bool bias = desc->epilogue != CUBLASLT_EPILOGUE_DEFAULT;
    if (bias && desc->bias == nullptr) return fail(CUBLAS_STATUS_INVALID_VALUE, "cublasLtMatmul: the epilogue needs BIAS_POINTER");
    const auto m = static_cast<int>(Ddesc->rows), n = static_cast<int>(Ddesc->cols);
    std::uint64_t am, k;
    op_shape(Adesc, desc->ta, am, k);
    const int bias_length = desc->epilogue == CUBLASLT_EPILOGUE_BGRADB ? n : m;
    if (!in_memory(A, Adesc) || !in_memory(B, Bdesc) || !in_memory(D, Ddesc) ||
        (bias && !mobius_sim::find_allocation(reinterpret_cast<std::uint64_t>(desc->bias), static_cast<std::size_t>(bias_length) * 4, nullptr))) {
        mobius_sim::detail::make_sticky(CUDA_ERROR_ILLEGAL_ADDRESS, "cublasLtMatmul: reads or writes outside device memory");
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }
    if (!mobius_sim::detail::context_ready()) return fail(CUBLAS_STATUS_EXECUTION_FAILED, "cublasLtMatmul: no usable CUDA context");
    if (!mobius_sim::detail::valid_stream(stream)) return fail(CUBLAS_STATUS_EXECUTION_FAILED, "cublasLtMatmul: stream destroyed");
    // On the call's stream: A and B read, C read where beta counts, D written, the bias read (BIAS) or written (the
    // BGRAD epilogues), the workspace written.
    mobius_sim::detail::StreamOperation order(stream, "cublasLtMatmul");
    order.read(A);
    order.read(B);
    if (*static_cast<const float*>(beta) != 0.0f) order.read(C);
    order.write(D);
    if (desc->epilogue == CUBLASLT_EPILOGUE_BIAS) order.read(desc->bias);
    else if (bias) order.write(desc->bias);
    if (workspaceSize > 0) order.write(workspace);
    if (const std::string race = order.enqueue(); !race.empty()) {
        mobius_sim::detail::make_sticky(CUDA_ERROR_LAUNCH_FAILED, race);
        return CUBLAS_STATUS_EXECUTION_FAILED;
    }

    const bool tf32 = desc->compute == CUBLAS_COMPUTE_32F_FAST_TF32, bf16 = desc->compute == CUBLAS_COMPUTE_32F_FAST_16BF;
    const auto* a = static_cast<const float*>(A);
    const auto* b = static_cast<const float*>(B);
    auto* d = static_cast<float*>(D);
    const int status = mobius_sim::detail::fp32_gemm(stream, desc->ta, desc->tb, m, n, static_cast<int>(k), *static_cast<const float*>(alpha), a,
                                                     static_cast<int>(Adesc->ld), b, static_cast<int>(Bdesc->ld), *static_cast<const float*>(beta), d,
                                                     static_cast<int>(Ddesc->ld), tf32, bf16);
    if (status != CUBLAS_STATUS_SUCCESS) return static_cast<cublasStatus_t>(status);
    if (mobius_sim::options().dry) return CUBLAS_STATUS_SUCCESS;

    auto* v = static_cast<float*>(desc->bias);
    const long long lda = Adesc->ld, ldb = Bdesc->ld, ldd = Ddesc->ld;
    switch (desc->epilogue) {
        case CUBLASLT_EPILOGUE_BIAS:  // one bias per row of D, added to every column
            for (int j = 0; j < n; ++j)
                for (int i = 0; i < m; ++i) d[j * ldd + i] += v[i];
            break;
        case CUBLASLT_EPILOGUE_BGRADA:  // sums of op(A) [m, k] over k: one per row of D
            sums_over_k(a, desc->ta == CUBLAS_OP_N ? 1 : lda, desc->ta == CUBLAS_OP_N ? lda : 1, m, k, v);
            break;
        case CUBLASLT_EPILOGUE_BGRADB:  // sums of op(B) [k, n] over k: one per column of D
            sums_over_k(b, desc->tb == CUBLAS_OP_N ? ldb : 1, desc->tb == CUBLAS_OP_N ? 1 : ldb, n, k, v);
            break;
        default:
            break;
    }
    return CUBLAS_STATUS_SUCCESS;
}

}  // extern "C"
