// Workbench: temporal convolution (kernels/temporal_conv.cu), kernel 3 along frames, x [B, F, Cin, S], w [Cout, Cin, 3].
//
//   v1  direct: one thread per output y[b, f, o, s], looping over input channels and taps straight from global
//       memory (w is re-read by every thread, x by Cout threads).
//   v2  the engine kernel temporal_conv_fwd_f32: 64x64 implicit-GEMM tiles in shared memory, 4x4 outputs per
//       thread, one-step register prefetch.
//   v3  the engine kernel temporal_conv_fwd_128_f32: the same on 128x128 tiles, 8x8 outputs per thread (the
//       backend takes it where the wider grid still gives every SM a block).
//   v4  candidate (not in the engine yet): 128x128 tiles whose per-thread fragments are 2x2 blocks of 4x4
//       outputs, so each k step reads A and B with four 16-byte shared loads instead of sixteen 4-byte ones
//       (v3 measured 8-11 % over v2 on an H200 where ~1.7x was predicted: the shared-memory pipe is the lead),
//       and two shared buffers, one barrier per k step.
//   v5  reference point (not ours): the convolution as cuBLAS SGEMMs over three-frame windows. In [B, F, C, S]
//       the frames f-1, f, f+1 are one contiguous [3C, S] matrix, so y_f = W' x_{f-1..f+1} with W' [Cout, 3 Cin]
//       (w's taps laid out tap-major by a small kernel): one strided-batched GEMM over every frame with a whole
//       window (it also writes the frames at clip edges, wrongly), then one per edge (first frames: taps 1, 2;
//       last frames: taps 0, 1) over the clips, and the bias. Backward data is the same with W'' [Cin, 3 Cout]
//       (taps reversed). The weight gradient as the engine runs it on cuBLAS: x and dy copied channel-major,
//       [C, F, B, S], where tap t is one GEMM over columns shifted by (t-1) B S. Each in strict fp32 (cuBLAS's
//       default math: how far the engine kernels are from cuBLAS's) and in TF32 (the engine's --math tf32).
//   backward-data and backward-weight (split-K, splits reduced by column_sum_f32): the engine kernels at both
//       tile widths.
//
// usage: temporal_conv [B F Cin Cout S]
#include "../../kernels/bias.cu"
#include "../../kernels/sim/tests/reference.h"
#include "../../kernels/temporal_conv.cu"
#include "common.h"

#if defined(__NVCC__)
#include <cublas_v2.h>  // link with -lcublas
#endif

extern "C" __global__ void __launch_bounds__(256)
    temporal_conv_fwd_v1(const float* x, const float* w, const float* bias, float* y, int B, int F, int Cin, int Cout, int S) {
    const long long outputs = static_cast<long long>(B) * F * Cout * S;
    for (long long idx = gpu::global_thread(); idx < outputs; idx += gpu::global_threads()) {
        const int s = static_cast<int>(idx % S), o = static_cast<int>(idx / S % Cout);
        const long long bf = idx / (static_cast<long long>(S) * Cout);
        const int f = static_cast<int>(bf % F);
        float acc = bias[o];
        for (int i = 0; i < Cin; ++i)
            for (int k = 0; k < 3; ++k)
                if (f + k - 1 >= 0 && f + k - 1 < F) acc += w[(o * Cin + i) * 3 + k] * x[((bf + k - 1) * Cin + i) * S + s];
        y[idx] = acc;
    }
}

// A 16-byte fragment read with one vector load: nvcc's float4, clang's ext_vector_type; a plain struct for the simulator.
#if defined(__NVCC__)
using Float4 = float4;
MOBIUS_DEVICE float lane(const Float4& f, int i) { return i == 0 ? f.x : i == 1 ? f.y : i == 2 ? f.z : f.w; }
#elif defined(__clang__) && defined(__CUDA__)
typedef float Float4 __attribute__((ext_vector_type(4)));
MOBIUS_DEVICE float lane(const Float4& f, int i) { return f[i]; }
#else
struct alignas(16) Float4 {
    float v[4];
};
MOBIUS_DEVICE float lane(const Float4& f, int i) { return f.v[i]; }
#endif

// Four floats at a 16-byte aligned address (every row of Tiles<128> is 132 floats; fragments start at multiples of 4).
MOBIUS_DEVICE Float4 fragment(const float* p) { return *static_cast<const Float4*>(__builtin_assume_aligned(p, 16)); }

struct alignas(16) TwoTiles {  // rows of 132 floats keep every 4-float fragment 16-byte aligned
    Tiles<128> t[2];
};

// v4: the engine's loads (FrameLoader<float, false, 128>) into two shared buffers; thread (ty, tx) = (t / 16, t % 16)
// owns rows ty*4 + i and 64 + ty*4 + i, columns tx*4 + j and 64 + tx*4 + j (i, j < 4).
extern "C" __global__ void __launch_bounds__(256)
    temporal_conv_fwd_v4(const float* x, const float* w, const float* bias, float* y, int B, int F, int Cin, int Cout, int S) {
    __shared__ TwoTiles two;
    Tiles<128>* tiles = two.t;
    const long long columns = static_cast<long long>(B) * F * S;
    const long long n0 = static_cast<long long>(blockIdx.x) * 128;
    const int m0 = blockIdx.y * 128, M = Cout;
    const long long n = n0 + threadIdx.x % 128;
    const long long bf = n / S;
    const FrameLoader<float, false, 128> loader{w, x, M, Cin, F, S, 3LL * Cin, m0, n < columns, bf * Cin * S + (n - bf * S), static_cast<int>(bf % F)};
    const int ty = threadIdx.x / 16, tx = threadIdx.x % 16;
    float acc[8][8] = {};
    float ra[8], rb[8];
    loader.load(0, ra, rb);
    loader.store(tiles[0], ra, rb);
    __syncthreads();
    int cur = 0;
    for (long long k0 = 0; k0 < loader.K; k0 += kBK) {
        const bool next = k0 + kBK < loader.K;
        if (next) loader.load(k0 + kBK, ra, rb);
        const Tiles<128>& t = tiles[cur];
        MOBIUS_UNROLL
        for (int kk = 0; kk < kBK; ++kk) {
            const Float4 a0 = fragment(&t.a[kk][ty * 4]), a1 = fragment(&t.a[kk][64 + ty * 4]);
            const Float4 b0 = fragment(&t.b[kk][tx * 4]), b1 = fragment(&t.b[kk][64 + tx * 4]);
            MOBIUS_UNROLL
            for (int i = 0; i < 8; ++i) {
                const float a = i < 4 ? lane(a0, i) : lane(a1, i - 4);
                MOBIUS_UNROLL
                for (int j = 0; j < 8; ++j) acc[i][j] += a * (j < 4 ? lane(b0, j) : lane(b1, j - 4));
            }
        }
        if (next) loader.store(tiles[cur ^ 1], ra, rb);  // the other buffer: last read before the previous barrier
        __syncthreads();
        cur ^= 1;
    }
    MOBIUS_UNROLL
    for (int j = 0; j < 8; ++j) {
        const long long col = n0 + (j < 4 ? tx * 4 + j : 64 + tx * 4 + j - 4);
        if (col >= columns) continue;
        const long long cbf = col / S, s = col - cbf * S;
        MOBIUS_UNROLL
        for (int i = 0; i < 8; ++i) {
            const int m = m0 + (i < 4 ? ty * 4 + i : 64 + ty * 4 + i - 4);
            if (m < M) y[(cbf * M + m) * S + s] = acc[i][j] + (bias != nullptr ? bias[m] : 0.0f);
        }
    }
}

// v5's weight layouts: taps[o, t * C + i] = w[o, i, t] (forward: rows Cout, C = Cin) or, with reverse,
// taps[i, t * C + o] = w[o, i, 2 - t] (backward data: rows Cin, C = Cout).
extern "C" __global__ void __launch_bounds__(256) temporal_conv_taps_v5(const float* w, float* taps, int Cin, int Cout, int reverse) {
    const long long n = 3LL * Cin * Cout;
    for (long long idx = gpu::global_thread(); idx < n; idx += gpu::global_threads()) {
        const int t = static_cast<int>(idx % 3), i = static_cast<int>(idx / 3 % Cin), o = static_cast<int>(idx / (3LL * Cin));
        if (reverse)
            taps[(static_cast<long long>(i) * 3 + (2 - t)) * Cout + o] = w[idx];
        else
            taps[(static_cast<long long>(o) * 3 + t) * Cin + i] = w[idx];
    }
}

// out_f [M, S] = taps [M, 3 K] in_{f-1..f+1} [3 K, S] for every frame of B clips of F frames, zero past the clip's
// ends; row-major operands to column-major cuBLAS as out^T = in^T taps^T.
void window_gemms(cublasHandle_t h, const float* in, const float* taps, float* out, int B, int F, int K, int M, int S) {
    const float one = 1.0f, zero = 0.0f;
    const long long in_frame = 1LL * K * S, out_frame = 1LL * M * S;
    auto gemm = [&](const float* a, const float* b, int k, float* c, long long stride_a, long long stride_c, int count) {
        if (count <= 0) return;
        const cublasStatus_t st = cublasSgemmStridedBatched(h, CUBLAS_OP_N, CUBLAS_OP_N, S, M, k, &one, a, S, stride_a, b, 3 * K, 0, &zero, c, S,
                                                            stride_c, count);
        if (st != CUBLAS_STATUS_SUCCESS) {
            std::fprintf(stderr, "cublasSgemmStridedBatched failed: %d\n", static_cast<int>(st));
            std::exit(1);
        }
    };
    const int frames = B * F;
    // Every frame with a whole window in the flattened [B F] order (clip edges written wrongly, then rewritten).
    gemm(in, taps, 3 * K, out + out_frame, in_frame, out_frame, frames - 2);
    // First frames of each clip: taps 1 and 2 over frames f, f+1 (just tap 1 when F = 1).
    gemm(in, taps + K, F > 1 ? 2 * K : K, out, F * in_frame, F * out_frame, B);
    // Last frames: taps 0 and 1 over frames f-1, f.
    if (F > 1) gemm(in + (F - 2) * in_frame, taps, 2 * K, out + (F - 1) * out_frame, F * in_frame, F * out_frame, B);
}

// taps[o, t * Cin + i] = sum over the columns where frame f + t - 1 exists of dy'[o, n] x'[i, n + (t-1) B S], with x'
// [Cin, F B S] and dy' [Cout, F B S] channel-major; row-major to column-major cuBLAS as taps^T = x' dy'^T per tap.
void weight_gemms(cublasHandle_t h, const float* xt, const float* dyt, float* taps, int B, int F, int Cin, int Cout, int S) {
    const float one = 1.0f, zero = 0.0f;
    const int columns = B * F * S, shift = B * S;
    auto gemm = [&](int t, const float* x, const float* d, int k) {
        const cublasStatus_t st = cublasSgemm_v2(h, CUBLAS_OP_T, CUBLAS_OP_N, Cin, Cout, k, &one, x, columns, d, columns, &zero, taps + t * Cin, 3 * Cin);
        if (st != CUBLAS_STATUS_SUCCESS) {
            std::fprintf(stderr, "cublasSgemm failed: %d\n", static_cast<int>(st));
            std::exit(1);
        }
    };
    gemm(1, xt, dyt, columns);
    if (F > 1) {  // (with one frame per clip, taps 0 and 2 stay zero: zero_side_taps_v5)
        gemm(0, xt, dyt + shift, columns - shift);
        gemm(2, xt + shift, dyt, columns - shift);
    }
}

extern "C" __global__ void __launch_bounds__(256) zero_side_taps_v5(float* taps, int Cin, int Cout) {
    for (long long idx = gpu::global_thread(); idx < 2LL * Cin * Cout; idx += gpu::global_threads()) {
        const long long o = idx / (2 * Cin);
        const int r = static_cast<int>(idx % (2 * Cin));
        taps[(o * 3 + (r < Cin ? 0 : 2)) * Cin + r % Cin] = 0.0f;
    }
}

int main(int argc, char** argv) {
    // GPU default: a 320-channel temporal layer over 2 clips of 16 frames at 32x32 latent pixels.
    int B = 2, F = wb::kOnGpu ? 16 : 5, Cin = wb::kOnGpu ? 320 : 17, Cout = wb::kOnGpu ? 320 : 70, S = wb::kOnGpu ? 1024 : 33;
    if (argc == 6) B = std::atoi(argv[1]), F = std::atoi(argv[2]), Cin = std::atoi(argv[3]), Cout = std::atoi(argv[4]), S = std::atoi(argv[5]);
    std::printf("temporal conv B=%d F=%d Cin=%d Cout=%d S=%d\n", B, F, Cin, Cout, S);
    const long long nx = 1LL * B * F * Cin * S, ny = 1LL * B * F * Cout * S, nw = 3LL * Cout * Cin, columns = 1LL * B * F * S;
    const auto x = wb::random_vector(nx, 1), w = wb::random_vector(nw, 2), bias = wb::random_vector(Cout, 3), dy = wb::random_vector(ny, 4);
    const reference::TemporalConv ref = reference::temporal_conv(B, F, Cin, Cout, S, x, w, bias, dy);

    float *dx_in = wb::alloc<float>(nx), *dw_in = wb::alloc<float>(nw), *db_in = wb::alloc<float>(Cout), *ddy = wb::alloc<float>(ny);
    float *y = wb::alloc<float>(ny), *dx = wb::alloc<float>(nx), *dw = wb::alloc<float>(nw);
    wb::upload(dx_in, x);
    wb::upload(dw_in, w);
    wb::upload(db_in, bias);
    wb::upload(ddy, dy);

    // Tolerances: each output sums 3*Cin (forward), 3*Cout (backward data) or B*F*S (weight) products of
    // |values| < 1 in fp32: rounding grows like sqrt(terms) * 6e-8, bounded here by terms * 1e-7.
    const double tol_fwd = 1e-7 * 3 * Cin + 1e-6, tol_bwd = 1e-7 * 3 * Cout + 1e-6, tol_w = 1e-7 * columns + 1e-6;
    bool ok = true;
    const double flops = 2.0 * columns * Cout * Cin * 3, bytes = 4.0 * (nx + ny + nw);
    auto v1 = [&] {
        WB_LAUNCH(temporal_conv_fwd_v1, {unsigned(std::min<long long>((ny + 255) / 256, 1 << 20))}, {256}, 0, dx_in, dw_in, db_in, y, B, F, Cin,
                  Cout, S);
    };
    wb::poison(y, ny);
    v1();
    ok &= wb::validate("v1 forward", wb::download(y, ny), ref.y, tol_fwd, 1e-5);
    wb::report_time("v1 forward (direct)", wb::time_ms(v1), bytes, flops);

    const unsigned col_tiles = unsigned((columns + 63) / 64);
    auto v2 = [&] {
        WB_LAUNCH(temporal_conv_fwd_f32, {col_tiles, unsigned((Cout + 63) / 64)}, {256}, 0, dx_in, dw_in, db_in, y, B, F, Cin, Cout, S);
    };
    wb::poison(y, ny);
    v2();
    ok &= wb::validate("v2 forward", wb::download(y, ny), ref.y, tol_fwd, 1e-5);
    wb::report_time("v2 forward (engine)", wb::time_ms(v2), bytes, flops);

    const unsigned col_tiles128 = unsigned((columns + 127) / 128);
    auto v3 = [&] {
        WB_LAUNCH(temporal_conv_fwd_128_f32, {col_tiles128, unsigned((Cout + 127) / 128)}, {256}, 0, dx_in, dw_in, db_in, y, B, F, Cin, Cout, S);
    };
    wb::poison(y, ny);
    v3();
    ok &= wb::validate("v3 forward", wb::download(y, ny), ref.y, tol_fwd, 1e-5);
    wb::report_time("v3 forward (engine, 128 tiles)", wb::time_ms(v3), bytes, flops);

    auto v4 = [&] {
        WB_LAUNCH(temporal_conv_fwd_v4, {col_tiles128, unsigned((Cout + 127) / 128)}, {256}, 0, dx_in, dw_in, db_in, y, B, F, Cin, Cout, S);
    };
    wb::poison(y, ny);
    v4();
    ok &= wb::validate("v4 forward", wb::download(y, ny), ref.y, tol_fwd, 1e-5);
    wb::report_time("v4 forward (16-byte fragments)", wb::time_ms(v4), bytes, flops);

    wb::library_context();
    cublasHandle_t blas = nullptr;
    if (cublasCreate_v2(&blas) != CUBLAS_STATUS_SUCCESS) {
        std::fprintf(stderr, "cublasCreate failed\n");
        return 1;
    }
    float *taps = wb::alloc<float>(nw), *xt = wb::alloc<float>(nx), *dyt = wb::alloc<float>(ny);
    const unsigned gx = unsigned(std::min<long long>((nx + 255) / 256, 1 << 16)), gy = unsigned(std::min<long long>((ny + 255) / 256, 1 << 16));
    const unsigned gw = unsigned((nw + 255) / 256);
    // Strict fp32 (cuBLAS's default math, the engine's default), then TF32 tensor cores (--math tf32): inputs read
    // with 11 significant bits, so each product errs by up to 2^-10 of itself and a sum of n terms of random sign
    // by about sqrt(n) 2^-10 of a typical one; the bound allows four times that.
    for (bool tf32 : {false, true}) {
        if (cublasSetMathMode(blas, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH) != CUBLAS_STATUS_SUCCESS) {
            std::fprintf(stderr, "cublasSetMathMode failed\n");
            return 1;
        }
        auto tol = [&](double strict, long long terms) { return tf32 ? 4e-3 * std::sqrt(double(terms)) + 1e-3 : strict; };
        const std::string mode = tf32 ? ", TF32)" : ")";
        auto v5 = [&] {
            WB_LAUNCH(temporal_conv_taps_v5, {gw}, {256}, 0, dw_in, taps, Cin, Cout, 0);
            window_gemms(blas, dx_in, taps, y, B, F, Cin, Cout, S);
            WB_LAUNCH(add_channel_bias_f32, {gy}, {256}, 0, y, db_in, y, 1LL * B * F, Cout, 1LL * S, 0);
        };
        wb::poison(y, ny);
        v5();
        ok &= wb::validate("v5 forward", wb::download(y, ny), ref.y, tol(tol_fwd, 3LL * Cin), 1e-5);
        wb::report_time(("v5 forward (cuBLAS windows" + mode).c_str(), wb::time_ms(v5), bytes, flops);
        auto v5_data = [&] {
            WB_LAUNCH(temporal_conv_taps_v5, {gw}, {256}, 0, dw_in, taps, Cin, Cout, 1);
            window_gemms(blas, ddy, taps, dx, B, F, Cout, Cin, S);
        };
        wb::poison(dx, nx);
        v5_data();
        ok &= wb::validate("v5 backward data", wb::download(dx, nx), ref.dx, tol(tol_bwd, 3LL * Cout), 1e-5);
        wb::report_time(("v5 backward data (cuBLAS windows" + mode).c_str(), wb::time_ms(v5_data), bytes, flops);
        // The engine's cuBLAS weight gradient: channel-major copies [C, F, B, S] in which tap t is one GEMM over
        // columns shifted by (t-1) B S (CudaBackend.TemporalConvBackwardWeight with TemporalConvOnCublas).
        auto v5_weight = [&] {
            WB_LAUNCH(temporal_conv_channel_major_f32, {gx}, {256}, 0, dx_in, xt, B, F, Cin, S);
            WB_LAUNCH(temporal_conv_channel_major_f32, {gy}, {256}, 0, ddy, dyt, B, F, Cout, S);
            if (F == 1) WB_LAUNCH(zero_side_taps_v5, {gw}, {256}, 0, taps, Cin, Cout);
            weight_gemms(blas, xt, dyt, taps, B, F, Cin, Cout, S);
            WB_LAUNCH(temporal_conv_taps_to_weight_f32, {gw}, {256}, 0, taps, dw, Cin, Cout);
        };
        wb::poison(dw, nw);
        v5_weight();
        ok &= wb::validate("v5 backward weight", wb::download(dw, nw), ref.dw, tol(tol_w, columns), 1e-5);
        wb::report_time(("v5 backward weight (channel-major GEMMs" + mode).c_str(), wb::time_ms(v5_weight), bytes, flops);
    }
    for (float* p : {taps, xt, dyt}) wb::release(p);
    cublasDestroy_v2(blas);

    float* partial = nullptr;
    for (int W : {64, 128}) {
        const std::string tag = " (engine, " + std::to_string(W) + " tiles)";
        auto data = [&] {
            if (W == 64)
                WB_LAUNCH(temporal_conv_bwd_data_f32, {col_tiles, unsigned((Cin + 63) / 64)}, {256}, 0, ddy, dw_in, dx, B, F, Cin, Cout, S);
            else
                WB_LAUNCH(temporal_conv_bwd_data_128_f32, {col_tiles128, unsigned((Cin + 127) / 128)}, {256}, 0, ddy, dw_in, dx, B, F, Cin, Cout,
                          S);
        };
        wb::poison(dx, nx);
        data();
        ok &= wb::validate("backward data", wb::download(dx, nx), ref.dx, tol_bwd, 1e-5);
        wb::report_time(("backward data" + tag).c_str(), wb::time_ms(data), bytes, flops);

        // Enough splits that the weight gradient has about four blocks per SM of an H100 (132 SMs).
        const unsigned wx = unsigned((3 * Cin + W - 1) / W), wy = unsigned((Cout + W - 1) / W);
        const unsigned splits = unsigned(std::max<long long>(1, std::min<long long>(4 * 132 / (wx * wy) + 1, (columns + 255) / 256)));
        const long long per_split = (columns + splits - 1) / splits;
        if (partial != nullptr) wb::release(partial);
        partial = wb::alloc<float>(splits * nw);
        auto weight = [&] {
            if (W == 64)
                WB_LAUNCH(temporal_conv_bwd_weight_f32, {wx, wy, splits}, {256}, 0, dx_in, ddy, partial, B, F, Cin, Cout, S, per_split);
            else
                WB_LAUNCH(temporal_conv_bwd_weight_128_f32, {wx, wy, splits}, {256}, 0, dx_in, ddy, partial, B, F, Cin, Cout, S, per_split);
            WB_LAUNCH(column_sum_f32, {unsigned((nw + 255) / 256)}, {256}, 0, partial, dw, (long long)splits, int(nw), (long long)splits);
        };
        wb::poison(dw, nw);
        weight();
        ok &= wb::validate("backward weight", wb::download(dw, nw), ref.dw, tol_w, 1e-5);
        wb::report_time(("backward weight" + tag).c_str(), wb::time_ms(weight), bytes, flops);
    }

    for (float* p : {dx_in, dw_in, db_in, ddy, y, dx, dw, partial}) wb::release(p);
    std::printf("%s\n", ok ? "all versions agree with the reference" : "MISMATCH");
    return ok ? 0 : 1;
}
