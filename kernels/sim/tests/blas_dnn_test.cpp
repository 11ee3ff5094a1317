// The simulated cuBLAS and cuDNN subsets against double references: cuBLAS's column-major conventions,
// cuDNN's NCHW convolution with padding, stride, dilation and both modes, and alpha/beta blending.
#include <bit>
#include <cmath>
#include <cstring>
#include <tuple>

#include "harness.h"

namespace {

// ---- cuBLAS ------------------------------------------------------------------------------------------------------

struct Blas {
    cublasHandle_t h = nullptr;
    Blas() { EXPECT_EQ(cublasCreate_v2(&h), CUBLAS_STATUS_SUCCESS); }
    ~Blas() { cublasDestroy_v2(h); }
};

// Column-major reference: C = alpha op(A) op(B) + beta C, element (i, j) at i + j*ld.
std::vector<double> gemm_reference(bool ta, bool tb, int m, int n, int k, double alpha, const std::vector<float>& A, int lda,
                                   const std::vector<float>& B, int ldb, double beta, const std::vector<float>& C, int ldc) {
    std::vector<double> out(C.begin(), C.end());
    for (int j = 0; j < n; ++j)
        for (int i = 0; i < m; ++i) {
            double acc = 0.0;
            for (int p = 0; p < k; ++p) acc += double(ta ? A[p + i * lda] : A[i + p * lda]) * (tb ? B[j + p * ldb] : B[p + j * ldb]);
            out[i + j * ldc] = alpha * acc + (beta == 0.0 ? 0.0 : beta * C[i + j * ldc]);
        }
    return out;
}

TEST(Cublas, SgemmHonoursColumnMajorTransposesLeadingDimensionsAlphaAndBeta) {
    mt::Gpu gpu;
    Blas blas;
    const int m = 13, n = 7, k = 19;
    for (int ta : {0, 1})
        for (int tb : {0, 1}) {
            const int lda = (ta ? k : m) + 3, ldb = (tb ? n : k) + 1, ldc = m + 2;
            const auto A = mt::random_vector(lda * (ta ? m : k), 1 + ta), B = mt::random_vector(ldb * (tb ? k : n), 3 + tb);
            auto C = mt::random_vector(ldc * n, 5);
            for (float beta : {0.0f, 0.5f}) {
                if (beta == 0.0f)
                    for (int j = 0; j < n; ++j) C[m + j * ldc] = NAN;  // padding rows: never touched
                std::vector<float> c0 = C;
                if (beta == 0.0f) std::fill(c0.begin(), c0.end(), NAN);  // beta == 0 must not read C
                for (int j = 0; j < n; ++j) c0[m + j * ldc] = c0[m + 1 + j * ldc] = 7.0f;
                mt::DeviceArray<float> dA(A), dB(B), dC(c0);
                const float alpha = 1.25f;
                ASSERT_EQ(cublasSgemm_v2(blas.h, ta ? CUBLAS_OP_T : CUBLAS_OP_N, tb ? CUBLAS_OP_T : CUBLAS_OP_N, m, n, k, &alpha, dA.get(), lda,
                                         dB.get(), ldb, &beta, dC.get(), ldc),
                          CUBLAS_STATUS_SUCCESS);
                const auto ref = gemm_reference(ta, tb, m, n, k, alpha, A, lda, B, ldb, beta, c0, ldc);
                // k = 19 products of |x| < 1, fp32 accumulation
                mt::expect_close(dC.read(), ref, 1e-5, 1e-5, "sgemm ta=" + std::to_string(ta) + " tb=" + std::to_string(tb));
            }
        }
}

TEST(Cublas, RowMajorProductIsTheColumnMajorProductOfTheTransposes) {
    // The C# backend's row-major C [M, N] = A [M, K] B [K, N] is cuBLAS's C^T = B^T A^T: Sgemm(N, N, N, M, K, B, A).
    mt::Gpu gpu;
    Blas blas;
    const int M = 5, N = 9, K = 4;
    const auto A = mt::random_vector(M * K, 7), B = mt::random_vector(K * N, 8);
    mt::DeviceArray<float> dA(A), dB(B), dC(M * N);
    const float alpha = 1.0f, beta = 0.0f;
    ASSERT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, N, M, K, &alpha, dB.get(), N, dA.get(), K, &beta, dC.get(), N), CUBLAS_STATUS_SUCCESS);
    std::vector<double> ref(M * N, 0.0);
    for (int i = 0; i < M; ++i)
        for (int j = 0; j < N; ++j)
            for (int p = 0; p < K; ++p) ref[i * N + j] += double(A[i * K + p]) * B[p * N + j];
    mt::expect_close(dC.read(), ref, 1e-6, 1e-6, "row-major product");
}

TEST(Cublas, StridedBatchedWithASharedOperand) {
    mt::Gpu gpu;
    Blas blas;
    const int m = 6, n = 5, k = 3, batch = 4;
    const auto A = mt::random_vector(m * k, 1), B = mt::random_vector(batch * k * n, 2);
    mt::DeviceArray<float> dA(A), dB(B), dC(batch * m * n);
    const float alpha = -0.5f, beta = 0.0f;
    ASSERT_EQ(cublasSgemmStridedBatched(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &alpha, dA.get(), m, 0, dB.get(), k, k * n, &beta, dC.get(), m,
                                        m * n, batch),
              CUBLAS_STATUS_SUCCESS);
    const std::vector<float> got = dC.read();
    for (int b = 0; b < batch; ++b) {
        const std::vector<float> Bb(B.begin() + b * k * n, B.begin() + (b + 1) * k * n);
        const auto ref = gemm_reference(false, false, m, n, k, alpha, A, m, Bb, k, 0.0, std::vector<float>(m * n, 0.0f), m);
        mt::expect_close(std::vector<float>(got.begin() + b * m * n, got.begin() + (b + 1) * m * n), ref, 1e-6, 1e-6, "batch " + std::to_string(b));
    }
}

std::uint16_t to_bf16(float f) {
    std::uint32_t bits;
    std::memcpy(&bits, &f, 4);
    bits += 0x7FFF + ((bits >> 16) & 1);
    return static_cast<std::uint16_t>(bits >> 16);
}
float from_bf16(std::uint16_t v) {
    const std::uint32_t bits = std::uint32_t{v} << 16;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
}

TEST(Cublas, GemmStridedBatchedExInFp32AndBf16) {
    mt::Gpu gpu;
    Blas blas;
    const int m = 9, n = 4, k = 33, batch = 2;
    const auto A = mt::random_vector(batch * m * k, 3), B = mt::random_vector(batch * k * n, 4);
    const float alpha = 1.0f, beta = 0.0f;
    mt::DeviceArray<float> dA(A), dB(B), dC(batch * m * n);
    ASSERT_EQ(cublasGemmStridedBatchedEx(blas.h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, dA.get(), CUDA_R_32F, k, m * k, dB.get(), CUDA_R_32F,
                                         k, k * n, &beta, dC.get(), CUDA_R_32F, m, m * n, batch, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    // bf16 inputs, fp32 and bf16 outputs; the reference uses the same bf16-rounded inputs
    std::vector<std::uint16_t> A16(A.size()), B16(B.size());
    std::vector<float> Ar(A.size()), Br(B.size());
    for (std::size_t i = 0; i < A.size(); ++i) Ar[i] = from_bf16(A16[i] = to_bf16(A[i]));
    for (std::size_t i = 0; i < B.size(); ++i) Br[i] = from_bf16(B16[i] = to_bf16(B[i]));
    mt::DeviceArray<std::uint16_t> dA16(A16), dB16(B16), dC16(batch * m * n);
    mt::DeviceArray<float> dC32(batch * m * n);
    ASSERT_EQ(cublasGemmStridedBatchedEx(blas.h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, dA16.get(), CUDA_R_16BF, k, m * k, dB16.get(),
                                         CUDA_R_16BF, k, k * n, &beta, dC32.get(), CUDA_R_32F, m, m * n, batch, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT_TENSOR_OP),
              CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasGemmStridedBatchedEx(blas.h, CUBLAS_OP_T, CUBLAS_OP_N, m, n, k, &alpha, dA16.get(), CUDA_R_16BF, k, m * k, dB16.get(),
                                         CUDA_R_16BF, k, k * n, &beta, dC16.get(), CUDA_R_16BF, m, m * n, batch, CUBLAS_COMPUTE_32F,
                                         CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_SUCCESS);
    const std::vector<float> c32 = dC.read(), cbf = dC32.read();
    const std::vector<std::uint16_t> c16 = dC16.read();
    for (int b = 0; b < batch; ++b) {
        auto slice = [&](const std::vector<float>& v, int size, int i) { return std::vector<float>(v.begin() + i * size, v.begin() + (i + 1) * size); };
        const auto ref = gemm_reference(true, false, m, n, k, 1.0, slice(A, m * k, b), k, slice(B, k * n, b), k, 0.0, std::vector<float>(m * n), m);
        const auto ref16 = gemm_reference(true, false, m, n, k, 1.0, slice(Ar, m * k, b), k, slice(Br, k * n, b), k, 0.0, std::vector<float>(m * n), m);
        mt::expect_close(slice(c32, m * n, b), ref, 1e-5, 1e-5, "GemmEx fp32");
        mt::expect_close(slice(cbf, m * n, b), ref16, 1e-5, 1e-5, "GemmEx bf16 -> fp32");
        std::vector<float> c16f(m * n);
        for (int i = 0; i < m * n; ++i) c16f[i] = from_bf16(c16[b * m * n + i]);
        mt::expect_close(c16f, ref16, 1e-5, 4e-3, "GemmEx bf16 -> bf16");  // one bf16 rounding of the result: 2^-8
    }
}

// TF32 as a tensor core reads an fp32 value, computed another way than the simulator does: 11 significant bits,
// rounded to nearest even (nearbyint in the default rounding mode).
float tf32_reference(float v) {
    int e = 0;
    const double m = std::frexp(double(v), &e);  // v = m 2^e, 0.5 <= |m| < 1
    return float(std::ldexp(std::nearbyint(std::ldexp(m, 11)), e - 11));
}

double max_difference(const std::vector<float>& a, const std::vector<double>& b) {
    double d = 0.0;
    for (std::size_t i = 0; i < a.size(); ++i) d = std::max(d, std::abs(double(a[i]) - b[i]));
    return d;
}

TEST(Cublas, Tf32MathModeReadsFp32InputsAsTf32) {
    mt::Gpu gpu;
    Blas blas;
    const int m = 17, n = 11, k = 64;
    const auto A = mt::random_vector(m * k, 21), B = mt::random_vector(k * n, 22);
    std::vector<float> At(A.size()), Bt(B.size());
    for (std::size_t i = 0; i < A.size(); ++i) At[i] = tf32_reference(A[i]);
    for (std::size_t i = 0; i < B.size(); ++i) Bt[i] = tf32_reference(B[i]);
    const auto exact = gemm_reference(false, false, m, n, k, 1.0, A, m, B, k, 0.0, std::vector<float>(m * n), m);
    const auto rounded = gemm_reference(false, false, m, n, k, 1.0, At, m, Bt, k, 0.0, std::vector<float>(m * n), m);
    const float one = 1.0f, zero = 0.0f;
    mt::DeviceArray<float> dA(A), dB(B), dC(m * n);
    auto sgemm = [&] {
        EXPECT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.get(), m, dB.get(), k, &zero, dC.get(), m), CUBLAS_STATUS_SUCCESS);
        return dC.read();
    };
    auto ex = [&](cublasComputeType_t compute) {
        EXPECT_EQ(cublasGemmStridedBatchedEx(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.get(), CUDA_R_32F, m, 0, dB.get(), CUDA_R_32F, k, 0,
                                             &zero, dC.get(), CUDA_R_32F, m, 0, 1, compute, CUBLAS_GEMM_DEFAULT),
                  CUBLAS_STATUS_SUCCESS);
        return dC.read();
    };

    cublasMath_t mode = CUBLAS_TF32_TENSOR_OP_MATH;
    ASSERT_EQ(cublasGetMathMode(blas.h, &mode), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(mode, CUBLAS_DEFAULT_MATH);
    mt::expect_close(sgemm(), exact, 1e-5, 1e-5, "default math is exact fp32");
    mt::expect_close(ex(CUBLAS_COMPUTE_32F_FAST_TF32), rounded, 1e-5, 1e-5, "FAST_TF32 compute rounds in default math");
    std::vector<float> Ab(A.size()), Bb(B.size());
    for (std::size_t i = 0; i < A.size(); ++i) Ab[i] = from_bf16(to_bf16(A[i]));
    for (std::size_t i = 0; i < B.size(); ++i) Bb[i] = from_bf16(to_bf16(B[i]));
    const auto as_bf16 = gemm_reference(false, false, m, n, k, 1.0, Ab, m, Bb, k, 0.0, std::vector<float>(m * n), m);
    const auto fast16 = ex(CUBLAS_COMPUTE_32F_FAST_16BF);
    mt::expect_close(fast16, as_bf16, 1e-5, 1e-5, "FAST_16BF compute reads fp32 inputs as bf16");
    EXPECT_GT(max_difference(fast16, rounded), 1e-3);  // 8 significant bits, not TF32's 11

    ASSERT_EQ(cublasSetMathMode(blas.h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    ASSERT_EQ(cublasGetMathMode(blas.h, &mode), CUBLAS_STATUS_SUCCESS);
    EXPECT_EQ(mode, CUBLAS_TF32_TENSOR_OP_MATH);
    const auto tf32 = sgemm();
    mt::expect_close(tf32, rounded, 1e-5, 1e-5, "TF32 math reads rounded inputs");
    // 64 products of inputs each off by up to 2^-11 relative: the rounding shows well above fp32's error
    EXPECT_GT(max_difference(tf32, exact), 1e-4);
    mt::expect_close(ex(CUBLAS_COMPUTE_32F), rounded, 1e-5, 1e-5, "GemmEx COMPUTE_32F follows the math mode");
    mt::expect_close(ex(CUBLAS_COMPUTE_32F_PEDANTIC), exact, 1e-5, 1e-5, "PEDANTIC compute ignores it");

    EXPECT_EQ(cublasSetMathMode(blas.h, static_cast<cublasMath_t>(9)), CUBLAS_STATUS_INVALID_VALUE);
    ASSERT_EQ(cublasSetMathMode(blas.h, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_SUCCESS);
    mt::expect_close(sgemm(), exact, 1e-5, 1e-5, "back to default math");
    EXPECT_EQ(cublasSetMathMode(nullptr, CUBLAS_DEFAULT_MATH), CUBLAS_STATUS_NOT_INITIALIZED);

    // One product at a time: ties to even, a rounding that carries into the exponent, infinities
    ASSERT_EQ(cublasSetMathMode(blas.h, CUBLAS_TF32_TENSOR_OP_MATH), CUBLAS_STATUS_SUCCESS);
    for (float v : {1.0f + 0x1p-11f, 1.0f + 0x3p-11f, 0x1.FFFFFEp0f, -0x1.7FF001p-3f, INFINITY, -INFINITY}) {
        mt::DeviceArray<float> x(std::vector<float>{v}), y(std::vector<float>{1.0f}), z(1);
        ASSERT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, 1, 1, 1, &one, x.get(), 1, y.get(), 1, &zero, z.get(), 1), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(z.read()[0], tf32_reference(v)) << v;
    }
}

// ---- cuBLASLt ------------------------------------------------------------------------------------------------------

struct Lt {
    cublasLtHandle_t h = nullptr;
    cublasLtMatmulDesc_t desc = nullptr;
    cublasLtMatmulPreference_t pref = nullptr;
    std::vector<cublasLtMatrixLayout_t> layouts;
    Lt(cublasComputeType_t compute, int ta, int tb, std::uint32_t epilogue) {
        EXPECT_EQ(cublasLtCreate(&h), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulDescCreate(&desc, compute, CUDA_R_32F), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSA, &ta, sizeof ta), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_TRANSB, &tb, sizeof tb), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epilogue, sizeof epilogue), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(cublasLtMatmulPreferenceCreate(&pref), CUBLAS_STATUS_SUCCESS);
    }
    ~Lt() {
        for (auto l : layouts) cublasLtMatrixLayoutDestroy(l);
        cublasLtMatmulPreferenceDestroy(pref);
        cublasLtMatmulDescDestroy(desc);
        cublasLtDestroy(h);
    }
    cublasLtMatrixLayout_t layout(int rows, int cols, int ld) {
        cublasLtMatrixLayout_t l = nullptr;
        EXPECT_EQ(cublasLtMatrixLayoutCreate(&l, CUDA_R_32F, rows, cols, ld), CUBLAS_STATUS_SUCCESS);
        layouts.push_back(l);
        return l;
    }
    void align(std::uint32_t bytes) {
        for (int a = CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES; a <= CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES; ++a)
            EXPECT_EQ(cublasLtMatmulPreferenceSetAttribute(pref, static_cast<cublasLtMatmulPreferenceAttributes_t>(a), &bytes, sizeof bytes),
                      CUBLAS_STATUS_SUCCESS);
    }
    // D = op(A) op(B) (+ epilogue) with A, B, D given as device arrays and layouts; returns the status of the matmul.
    cublasStatus_t run(const float* a, cublasLtMatrixLayout_t al, const float* b, cublasLtMatrixLayout_t bl, float* d, cublasLtMatrixLayout_t dl,
                       float* bias) {
        EXPECT_EQ(cublasLtMatmulDescSetAttribute(desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias, sizeof bias), CUBLAS_STATUS_SUCCESS);
        cublasLtMatmulHeuristicResult_t r{};
        int returned = 0;
        EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(h, desc, al, bl, dl, dl, pref, 1, &r, &returned), CUBLAS_STATUS_SUCCESS);
        EXPECT_EQ(returned, 1);
        const float one = 1.0f, zero = 0.0f;
        return cublasLtMatmul(h, desc, &one, a, al, b, bl, &zero, d, dl, d, dl, &r.algo, nullptr, 0, nullptr);
    }
};

TEST(CublasLt, BiasAndBiasGradientEpiloguesWithTransposesAndTensorCoreRounding) {
    mt::Gpu gpu;
    const int m = 13, n = 9, k = 21;
    for (int ta : {0, 1})
        for (int tb : {0, 1}) {
            const int lda = ta ? k : m, ldb = tb ? n : k, ldd = m;
            const auto A = mt::random_vector(m * k, 31 + ta), B = mt::random_vector(k * n, 33 + tb), bias = mt::random_vector(m, 35);
            const auto ref = gemm_reference(ta, tb, m, n, k, 1.0, A, lda, B, ldb, 0.0, std::vector<float>(m * n), ldd);
            mt::DeviceArray<float> dA(A), dB(B), dD(std::vector<float>(m * n, NAN)), dBias(bias), dGrad(std::vector<float>(std::max(m, n), NAN));
            const std::string what = " ta=" + std::to_string(ta) + " tb=" + std::to_string(tb);
            {
                Lt lt(CUBLAS_COMPUTE_32F, ta, tb, CUBLASLT_EPILOGUE_BIAS);
                ASSERT_EQ(lt.run(dA.get(), lt.layout(ta ? k : m, ta ? m : k, lda), dB.get(), lt.layout(tb ? n : k, tb ? k : n, ldb), dD.get(),
                                 lt.layout(m, n, ldd), dBias.get()),
                          CUBLAS_STATUS_SUCCESS);
                auto want = ref;
                for (int j = 0; j < n; ++j)
                    for (int i = 0; i < m; ++i) want[i + j * ldd] += bias[i];
                mt::expect_close(dD.read(), want, 1e-5, 1e-5, "BIAS" + what);
            }
            for (std::uint32_t e : {(std::uint32_t)CUBLASLT_EPILOGUE_BGRADA, (std::uint32_t)CUBLASLT_EPILOGUE_BGRADB}) {
                Lt lt(CUBLAS_COMPUTE_32F, ta, tb, e);
                ASSERT_EQ(lt.run(dA.get(), lt.layout(ta ? k : m, ta ? m : k, lda), dB.get(), lt.layout(tb ? n : k, tb ? k : n, ldb), dD.get(),
                                 lt.layout(m, n, ldd), dGrad.get()),
                          CUBLAS_STATUS_SUCCESS);
                mt::expect_close(dD.read(), ref, 1e-5, 1e-5, "product beside the bias gradient" + what);
                const bool a_side = e == CUBLASLT_EPILOGUE_BGRADA;
                std::vector<double> sums(a_side ? m : n, 0.0);
                for (int x = 0; x < (a_side ? m : n); ++x)
                    for (int kk = 0; kk < k; ++kk)
                        sums[x] += a_side ? (ta ? A[kk + x * lda] : A[x + kk * lda]) : (tb ? B[x + kk * ldb] : B[kk + x * ldb]);
                auto grad = dGrad.read();
                grad.resize(sums.size());
                mt::expect_close(grad, sums, 1e-5, 1e-5, (a_side ? "BGRADA" : "BGRADB") + what);
            }
        }

    // Tensor-core compute types read the inputs rounded; a buffer less aligned than the preference allows is refused
    const auto A = mt::random_vector(8 * 64, 41), B = mt::random_vector(64 * 8, 42);
    std::vector<float> At(A.size()), Bt(B.size()), Ab(A.size()), Bb(B.size());
    for (std::size_t i = 0; i < A.size(); ++i) At[i] = tf32_reference(A[i]), Ab[i] = from_bf16(to_bf16(A[i]));
    for (std::size_t i = 0; i < B.size(); ++i) Bt[i] = tf32_reference(B[i]), Bb[i] = from_bf16(to_bf16(B[i]));
    mt::DeviceArray<float> dA(A), dB(B), dD(64 + 1), dBias(std::vector<float>(8, 0.0f));
    for (auto [compute, a, b, name] : {std::tuple{CUBLAS_COMPUTE_32F_FAST_TF32, &At, &Bt, "FAST_TF32"}, std::tuple{CUBLAS_COMPUTE_32F_FAST_16BF, &Ab, &Bb, "FAST_16BF"}}) {
        Lt lt(compute, 0, 0, CUBLASLT_EPILOGUE_DEFAULT);
        ASSERT_EQ(lt.run(dA.get(), lt.layout(8, 64, 8), dB.get(), lt.layout(64, 8, 64), dD.get(), lt.layout(8, 8, 8), nullptr), CUBLAS_STATUS_SUCCESS);
        auto got = dD.read();
        got.resize(64);
        mt::expect_close(got, gemm_reference(false, false, 8, 8, 64, 1.0, *a, 8, *b, 64, 0.0, std::vector<float>(64), 8), 1e-5, 1e-5, name);
    }
    Lt lt(CUBLAS_COMPUTE_32F, 0, 0, CUBLASLT_EPILOGUE_DEFAULT);
    const auto al = lt.layout(8, 64, 8), bl = lt.layout(64, 8, 64), dl = lt.layout(8, 8, 8);
    EXPECT_EQ(lt.run(dA.get(), al, dB.get(), bl, dD.get() + 1, dl, nullptr), CUBLAS_STATUS_INVALID_VALUE);  // 4 bytes off 256
    lt.align(4);
    EXPECT_EQ(lt.run(dA.get(), al, dB.get(), bl, dD.get() + 1, dl, nullptr), CUBLAS_STATUS_SUCCESS);
    Lt wrong(CUBLAS_COMPUTE_32F, 0, 0, CUBLASLT_EPILOGUE_DEFAULT);
    cublasLtMatmulHeuristicResult_t r{};
    int returned = 0;
    EXPECT_EQ(cublasLtMatmulAlgoGetHeuristic(wrong.h, wrong.desc, wrong.layout(8, 63, 8), wrong.layout(64, 8, 64), wrong.layout(8, 8, 8),
                                             wrong.layout(8, 8, 8), wrong.pref, 1, &r, &returned),
              CUBLAS_STATUS_INVALID_VALUE);  // op(A) is 8 x 63, op(B) 64 x 8
    cublasLtMatmulDesc_t fp16 = nullptr;
    EXPECT_EQ(cublasLtMatmulDescCreate(&fp16, CUBLAS_COMPUTE_32F_FAST_16F, CUDA_R_32F), CUBLAS_STATUS_NOT_SUPPORTED);
}

TEST(Cublas, ArgumentErrorsAndStatusStrings) {
    mt::Gpu gpu;
    Blas blas;
    mt::DeviceArray<float> d(64);
    const float one = 1.0f, zero = 0.0f;
    EXPECT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, 8, 4, 2, &one, d.get(), 7, d.get(), 2, &zero, d.get(), 8), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, -1, 4, 2, &one, d.get(), 8, d.get(), 2, &zero, d.get(), 8), CUBLAS_STATUS_INVALID_VALUE);
    EXPECT_EQ(cublasGemmStridedBatchedEx(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, 2, 2, 2, &one, d.get(), CUDA_R_16F, 2, 4, d.get(), CUDA_R_16F, 2, 4, &zero,
                                         d.get(), CUDA_R_16F, 2, 4, 1, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
              CUBLAS_STATUS_NOT_SUPPORTED);
    EXPECT_EQ(cublasSetStream_v2(nullptr, nullptr), CUBLAS_STATUS_NOT_INITIALIZED);
    EXPECT_NE(std::string(cublasGetStatusString(CUBLAS_STATUS_INVALID_VALUE)).size(), 0u);
    // reading past the end of device memory fails the call and poisons the context like a fault would
    EXPECT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, 16, 16, 16, &one, d.get(), 16, d.get(), 16, &zero, d.get(), 16),
              CUBLAS_STATUS_EXECUTION_FAILED);
    EXPECT_EQ(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
}

// ---- cuDNN -------------------------------------------------------------------------------------------------------

struct Dnn {
    cudnnHandle_t h = nullptr;
    std::vector<cudnnTensorDescriptor_t> tensors;
    std::vector<cudnnFilterDescriptor_t> filters;
    std::vector<cudnnConvolutionDescriptor_t> convs;
    Dnn() { EXPECT_EQ(cudnnCreate(&h), CUDNN_STATUS_SUCCESS); }
    ~Dnn() {
        for (auto t : tensors) cudnnDestroyTensorDescriptor(t);
        for (auto f : filters) cudnnDestroyFilterDescriptor(f);
        for (auto c : convs) cudnnDestroyConvolutionDescriptor(c);
        cudnnDestroy(h);
    }
    cudnnTensorDescriptor_t tensor(int n, int c, int h_, int w) {
        cudnnTensorDescriptor_t t;
        EXPECT_EQ(cudnnCreateTensorDescriptor(&t), CUDNN_STATUS_SUCCESS);
        EXPECT_EQ(cudnnSetTensor4dDescriptor(t, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h_, w), CUDNN_STATUS_SUCCESS);
        tensors.push_back(t);
        return t;
    }
    cudnnFilterDescriptor_t filter(int k, int c, int r, int s) {
        cudnnFilterDescriptor_t f;
        EXPECT_EQ(cudnnCreateFilterDescriptor(&f), CUDNN_STATUS_SUCCESS);
        EXPECT_EQ(cudnnSetFilter4dDescriptor(f, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, k, c, r, s), CUDNN_STATUS_SUCCESS);
        filters.push_back(f);
        return f;
    }
    cudnnConvolutionDescriptor_t conv(int pad, int stride, int dilation, cudnnConvolutionMode_t mode, cudnnMathType_t math = CUDNN_FMA_MATH) {
        cudnnConvolutionDescriptor_t c;
        EXPECT_EQ(cudnnCreateConvolutionDescriptor(&c), CUDNN_STATUS_SUCCESS);
        EXPECT_EQ(cudnnSetConvolution2dDescriptor(c, pad, pad, stride, stride, dilation, dilation, mode, CUDNN_DATA_FLOAT), CUDNN_STATUS_SUCCESS);
        EXPECT_EQ(cudnnSetConvolutionMathType(c, math), CUDNN_STATUS_SUCCESS);
        convs.push_back(c);
        return c;
    }
};

struct ConvCase {
    int N, C, H, W, K, R, pad, stride, dilation;
    cudnnConvolutionMode_t mode;
};

TEST(Cudnn, ConvolutionForwardBackwardDataFilterAndBias) {
    mt::Gpu gpu;
    const ConvCase cases[] = {{2, 3, 8, 8, 4, 3, 1, 1, 1, CUDNN_CROSS_CORRELATION}, {1, 5, 9, 7, 2, 3, 1, 2, 1, CUDNN_CROSS_CORRELATION},
                              {1, 2, 6, 6, 3, 1, 0, 1, 1, CUDNN_CROSS_CORRELATION}, {2, 2, 7, 9, 3, 3, 2, 1, 2, CUDNN_CONVOLUTION}};
    // FMA math is exact fp32; default math lets fp32 convolutions read their inputs as TF32 (sm_80 and later)
    for (cudnnMathType_t math : {CUDNN_FMA_MATH, CUDNN_DEFAULT_MATH})
    for (const ConvCase& cc : cases) {
        Dnn dnn;
        const int P = (cc.H + 2 * cc.pad - ((cc.R - 1) * cc.dilation + 1)) / cc.stride + 1;
        const int Q = (cc.W + 2 * cc.pad - ((cc.R - 1) * cc.dilation + 1)) / cc.stride + 1;
        auto xd = dnn.tensor(cc.N, cc.C, cc.H, cc.W);
        auto yd = dnn.tensor(cc.N, cc.K, P, Q);
        auto bd = dnn.tensor(1, cc.K, 1, 1);
        auto wd = dnn.filter(cc.K, cc.C, cc.R, cc.R);
        auto cd = dnn.conv(cc.pad, cc.stride, cc.dilation, cc.mode, math);
        int n = 0, c = 0, h = 0, w = 0;
        ASSERT_EQ(cudnnGetConvolution2dForwardOutputDim(cd, xd, wd, &n, &c, &h, &w), CUDNN_STATUS_SUCCESS);
        EXPECT_EQ((std::array{n, c, h, w}), (std::array{cc.N, cc.K, P, Q}));
        int returned = 0;
        cudnnConvolutionFwdAlgoPerf_t perf[8];
        ASSERT_EQ(cudnnGetConvolutionForwardAlgorithm_v7(dnn.h, xd, wd, cd, yd, 8, &returned, perf), CUDNN_STATUS_SUCCESS);
        ASSERT_GE(returned, 1);
        EXPECT_EQ(perf[0].status, CUDNN_STATUS_SUCCESS);
        cudnnConvolutionBwdDataAlgoPerf_t dperf[2];
        cudnnConvolutionBwdFilterAlgoPerf_t fperf[2];
        ASSERT_EQ(cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn.h, wd, yd, cd, xd, 2, &returned, dperf), CUDNN_STATUS_SUCCESS);
        ASSERT_EQ(cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn.h, xd, yd, cd, wd, 2, &returned, fperf), CUDNN_STATUS_SUCCESS);
        size_t ws = 1;
        ASSERT_EQ(cudnnGetConvolutionForwardWorkspaceSize(dnn.h, xd, wd, cd, yd, perf[0].algo, &ws), CUDNN_STATUS_SUCCESS);
        EXPECT_EQ(ws, 0u);

        const int nx = cc.N * cc.C * cc.H * cc.W, ny = cc.N * cc.K * P * Q, nw = cc.K * cc.C * cc.R * cc.R;
        const auto x = mt::random_vector(nx, nx), wt = mt::random_vector(nw, nw), dy = mt::random_vector(ny, ny), y0 = mt::random_vector(ny, 3);
        const bool tf32 = math != CUDNN_FMA_MATH;
        auto as_read = [&](std::vector<float> v) {
            if (tf32)
                for (float& e : v) e = tf32_reference(e);
            return v;
        };
        const auto xr = as_read(x), wr = as_read(wt), dyr = as_read(dy);
        auto X = [&](int i, int ch, int hh, int ww) { return double(xr[((i * cc.C + ch) * cc.H + hh) * cc.W + ww]); };
        auto Wt = [&](int k, int ch, int r, int s) {
            if (cc.mode == CUDNN_CONVOLUTION) r = cc.R - 1 - r, s = cc.R - 1 - s;
            return double(wr[((k * cc.C + ch) * cc.R + r) * cc.R + s]);
        };
        std::vector<double> ry(ny), rdx(nx, 0.0), rdw(nw, 0.0), rdb(cc.K, 0.0);
        const float alpha = 2.0f, beta = 0.5f;
        for (int i = 0; i < cc.N; ++i)
            for (int k = 0; k < cc.K; ++k)
                for (int p = 0; p < P; ++p)
                    for (int q = 0; q < Q; ++q) {
                        const int yi = ((i * cc.K + k) * P + p) * Q + q;
                        double acc = 0.0;
                        for (int ch = 0; ch < cc.C; ++ch)
                            for (int r = 0; r < cc.R; ++r)
                                for (int s = 0; s < cc.R; ++s) {
                                    const int hh = p * cc.stride - cc.pad + r * cc.dilation, ww = q * cc.stride - cc.pad + s * cc.dilation;
                                    if (hh < 0 || hh >= cc.H || ww < 0 || ww >= cc.W) continue;
                                    acc += Wt(k, ch, r, s) * X(i, ch, hh, ww);
                                    rdx[((i * cc.C + ch) * cc.H + hh) * cc.W + ww] += Wt(k, ch, r, s) * dyr[yi];
                                    int rr = r, ss = s;
                                    if (cc.mode == CUDNN_CONVOLUTION) rr = cc.R - 1 - r, ss = cc.R - 1 - s;
                                    rdw[((k * cc.C + ch) * cc.R + rr) * cc.R + ss] += dyr[yi] * X(i, ch, hh, ww);
                                }
                        ry[yi] = alpha * acc + beta * y0[yi];
                        rdb[k] += dy[yi];
                    }
        mt::DeviceArray<float> dx_(x), dw_(wt), ddy(dy), y(y0), dx(std::vector<float>(nx, NAN)), dw(std::vector<float>(nw, NAN)), db(cc.K);
        const float one = 1.0f, zero = 0.0f;
        ASSERT_EQ(cudnnConvolutionForward(dnn.h, &alpha, xd, dx_.get(), wd, dw_.get(), cd, perf[0].algo, nullptr, 0, &beta, yd, y.get()),
                  CUDNN_STATUS_SUCCESS);
        // beta == 0: the NaN already in dx and dw must not leak into the result
        ASSERT_EQ(cudnnConvolutionBackwardData(dnn.h, &one, wd, dw_.get(), yd, ddy.get(), cd, dperf[0].algo, nullptr, 0, &zero, xd, dx.get()),
                  CUDNN_STATUS_SUCCESS);
        ASSERT_EQ(cudnnConvolutionBackwardFilter(dnn.h, &one, xd, dx_.get(), yd, ddy.get(), cd, fperf[0].algo, nullptr, 0, &zero, wd, dw.get()),
                  CUDNN_STATUS_SUCCESS);
        ASSERT_EQ(cudnnConvolutionBackwardBias(dnn.h, &one, yd, ddy.get(), &zero, bd, db.get()), CUDNN_STATUS_SUCCESS);
        const std::string what = std::string(tf32 ? "TF32 " : "") + "conv C" + std::to_string(cc.C) + " R" + std::to_string(cc.R) + " stride " + std::to_string(cc.stride);
        // sums of up to C*R*R = 45 products (forward), N*P*Q = 128 (filter): fp32 accumulation
        mt::expect_close(y.read(), ry, 2e-5, 1e-5, what + " forward");
        mt::expect_close(dx.read(), rdx, 2e-5, 1e-5, what + " backward data");
        mt::expect_close(dw.read(), rdw, 5e-5, 1e-5, what + " backward filter");
        mt::expect_close(db.read(), rdb, 5e-5, 1e-5, what + " backward bias");
    }
}

TEST(Cudnn, AddTensorBroadcastsAndStridedDescriptorsAddressViews) {
    mt::Gpu gpu;
    Dnn dnn;
    // C is a view of every other column of a [2, 3, 4, 10] buffer: W stride 2
    cudnnTensorDescriptor_t cdesc;
    ASSERT_EQ(cudnnCreateTensorDescriptor(&cdesc), CUDNN_STATUS_SUCCESS);
    dnn.tensors.push_back(cdesc);
    ASSERT_EQ(cudnnSetTensor4dDescriptorEx(cdesc, CUDNN_DATA_FLOAT, 2, 3, 4, 5, 120, 40, 10, 2), CUDNN_STATUS_SUCCESS);
    auto bias = dnn.tensor(1, 3, 1, 1);
    const auto c0 = mt::random_vector(240, 1), b = mt::random_vector(3, 2);
    mt::DeviceArray<float> dc(c0), dbias(b);
    const float alpha = 1.0f, beta = 1.0f;
    ASSERT_EQ(cudnnAddTensor(dnn.h, &alpha, bias, dbias.get(), &beta, cdesc, dc.get()), CUDNN_STATUS_SUCCESS);
    std::vector<double> ref(c0.begin(), c0.end());
    for (int n = 0; n < 2; ++n)
        for (int c = 0; c < 3; ++c)
            for (int h = 0; h < 4; ++h)
                for (int w = 0; w < 5; ++w) ref[n * 120 + c * 40 + h * 10 + w * 2] += b[c];
    mt::expect_close(dc.read(), ref, 0.0, 1.2e-7, "add tensor through a strided view");  // odd columns untouched
    auto wrong = dnn.tensor(1, 2, 1, 1);
    EXPECT_EQ(cudnnAddTensor(dnn.h, &alpha, wrong, dbias.get(), &beta, cdesc, dc.get()), CUDNN_STATUS_BAD_PARAM);
}

TEST(Cudnn, ShapeMismatchUnsupportedTypesAndErrorStrings) {
    mt::Gpu gpu;
    Dnn dnn;
    auto xd = dnn.tensor(1, 3, 8, 8);
    auto yd = dnn.tensor(1, 4, 7, 8);  // wrong height for a 3x3, pad 1 convolution
    auto wd = dnn.filter(4, 3, 3, 3);
    auto cd = dnn.conv(1, 1, 1, CUDNN_CROSS_CORRELATION);
    mt::DeviceArray<float> buf(1024);
    const float one = 1.0f, zero = 0.0f;
    EXPECT_EQ(cudnnConvolutionForward(dnn.h, &one, xd, buf.get(), wd, buf.get(), cd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero, yd,
                                      buf.get()),
              CUDNN_STATUS_BAD_PARAM);
    cudnnTensorDescriptor_t half;
    ASSERT_EQ(cudnnCreateTensorDescriptor(&half), CUDNN_STATUS_SUCCESS);
    dnn.tensors.push_back(half);
    ASSERT_EQ(cudnnSetTensor4dDescriptor(half, CUDNN_TENSOR_NCHW, CUDNN_DATA_HALF, 1, 3, 8, 8), CUDNN_STATUS_SUCCESS);
    auto yok = dnn.tensor(1, 4, 8, 8);
    EXPECT_EQ(cudnnConvolutionForward(dnn.h, &one, half, buf.get(), wd, buf.get(), cd, CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM, nullptr, 0, &zero,
                                      yok, buf.get()),
              CUDNN_STATUS_NOT_SUPPORTED);
    EXPECT_STREQ(cudnnGetErrorString(CUDNN_STATUS_BAD_PARAM), "CUDNN_STATUS_BAD_PARAM");
    EXPECT_EQ(cudnnGetVersion() / 10000, 9u);
}

// MOBIUS_SIM_DRY: every call still checked, nothing computed, new memory zeros; copies still run.
TEST(Simulator, DryRunChecksEveryCallButComputesNothing) {
    mt::Gpu gpu;
    Blas blas;
    struct Dry {
        Dry() { mobius_sim::options().dry = true; }
        ~Dry() { mobius_sim::options().dry = false; }
    } dry;
    const int m = 8, n = 4, k = 16;
    const auto A = mt::random_vector(m * k, 31), B = mt::random_vector(k * n, 32);
    mt::DeviceArray<float> dA(A), dB(B), dC(m * n);
    EXPECT_EQ(dA.read(), A);  // copies run
    for (float f : dC.read()) ASSERT_EQ(std::bit_cast<std::uint32_t>(f), 0u);  // not NaN-poisoned

    CUfunction fill = gpu.kernel("elementwise", "ew_fill_f32");
    CU_CHECK(gpu.launch(fill, "ew_fill_f32", {1}, {64}, 0, dC.get(), static_cast<long long>(m * n), 1.0f));
    for (float f : dC.read()) ASSERT_EQ(f, 0.0f);  // launched, not run
    EXPECT_EQ(gpu.launch(fill, "ew_fill_f32", {1}, {512}, 0, dC.get(), static_cast<long long>(m * n), 1.0f), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);

    const float one = 1.0f, zero = 0.0f;
    EXPECT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.get(), m, dB.get(), k, &zero, dC.get(), m), CUBLAS_STATUS_SUCCESS);
    for (float f : dC.read()) ASSERT_EQ(f, 0.0f);
    EXPECT_EQ(cublasSgemm_v2(blas.h, CUBLAS_OP_N, CUBLAS_OP_N, m, n, k, &one, dA.get(), m - 1, dB.get(), k, &zero, dC.get(), m),
              CUBLAS_STATUS_INVALID_VALUE);  // lda < m: still refused
}

}  // namespace
