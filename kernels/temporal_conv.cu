// Temporal convolution (kernel 3 along frames, zero padding) of x [B, F, Cin, S] with w [Cout, Cin, 3]:
// forward, backward-data and backward-weight, each an implicit GEMM over channels.
//
// Design. Flatten (b, f, s) into one column index n < B*F*S and (c, k) into one reduction index
// kappa = 3c + k. Then
//   forward        y[n, o]       = sum_kappa w[o, kappa]              * x[(b, f+k-1, s), c]     M = Cout, K = 3 Cin
//   backward-data  dx[n, i]      = sum_kappa w[c=o, i, k]             * dy[(b, f-k+1, s), o]    M = Cin,  K = 3 Cout
//   backward-weight dw[o, kappa] = sum_n     dy[n, o]                 * x[(b, f+k-1, s), c]     M = Cout, N = 3 Cin
// and all three are one tiled GEMM, in two tile widths W: 64x64 tiles (each of the 256 threads owns a 4x4 block
// of outputs) and 128x128 tiles (8x8 per thread: twice the multiply-adds per shared-memory read, for shapes
// that still give every SM a block; the `_128` entries). A thread's outputs are spread 16 apart (rows
// tm + 16i, columns tn + 16j) so that shared-memory reads are broadcasts (A) or 16 consecutive floats (B). The A tile is stored transposed and both tiles have 4 floats of row padding
// so the transposing stores do not collide either. Each K step of 16 stages the tiles from registers and
// already loads the next step's values into registers while multiplying (one-deep prefetch), hiding global
// latency without a second shared buffer. Input reads walk consecutive s for consecutive threads
// (coalesced); the frame shift f +- 1 and the zero padding are applied while loading, so no padded copy of
// x exists. Channel counts and S need not be multiples of anything: every load is bounds-checked and
// out-of-range elements contribute zeros. Flattening (b, f, s) keeps tiles full even at S = 1.
// The weight gradient reduces over all B*F*S columns, so it is split over gridDim.z (each split writes its
// own partial [Cout, Cin, 3]; column_sum_f32 adds the splits) to give the GPU enough blocks, deterministically.
// The bias gradient is channel_bias_grad_f32(dy, db, B*F, Cout, S, 0). Storage type T (fp32 today) is converted
// to fp32 while loading; tiles and accumulation are fp32; the weight gradient stays fp32 (master weights).
#include "mobius_cuda.h"

namespace {

constexpr int kBK = 16, kThreads = 256, kPad = 4;

// Shared tiles of a W x W output tile: A transposed (a[kk][m]) and B (b[kk][n]). Each thread holds R = W / 16
// values of A and R of B per K step, and an R x R block of outputs.
template <int W>
struct Tiles {
    static constexpr int R = W / 16;
    float a[kBK][W + kPad];
    float b[kBK][W + kPad];
};

// acc[i][j] += sum over kk of a[kk][tm + 16i] * b[kk][tn + 16j]
template <int W>
MOBIUS_DEVICE void multiply_tiles(const Tiles<W>& t, int tm, int tn, float (&acc)[W / 16][W / 16]) {
    constexpr int R = W / 16;
    MOBIUS_UNROLL
    for (int kk = 0; kk < kBK; ++kk) {
        float a[R], b[R];
        MOBIUS_UNROLL
        for (int i = 0; i < R; ++i) a[i] = t.a[kk][tm + 16 * i];
        MOBIUS_UNROLL
        for (int j = 0; j < R; ++j) b[j] = t.b[kk][tn + 16 * j];
        MOBIUS_UNROLL
        for (int i = 0; i < R; ++i)
            MOBIUS_UNROLL
            for (int j = 0; j < R; ++j) acc[i][j] += a[i] * b[j];
    }
}

// The loop all three GEMMs share. Loader::load(k0, ra, rb) reads this thread's R A and R B values of the K step
// starting at k0 into registers; Loader::store(tiles, ra, rb) puts them in shared memory.
template <int W, class Loader>
MOBIUS_DEVICE void gemm_mainloop(const Loader& loader, long long k_begin, long long k_end, float (&acc)[W / 16][W / 16]) {
    __shared__ Tiles<W> tiles;
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
    float ra[W / 16], rb[W / 16];
    loader.load(k_begin, ra, rb);
    for (long long k0 = k_begin; k0 < k_end; k0 += kBK) {
        loader.store(tiles, ra, rb);
        __syncthreads();
        if (k0 + kBK < k_end) loader.load(k0 + kBK, ra, rb);
        multiply_tiles<W>(tiles, tm, tn, acc);
        __syncthreads();  // the next step overwrites the tiles
    }
}

// Forward (dir = +1) and backward-data (dir = -1): out[bf, m, s] = sum over c < Cc, k < 3 of
// A(m, c, k) * in[bf + dir (k - 1), c, s], where A is w[m, c, k] forward and w[c, m, k] backward.
// B loads: thread t owns column t % W and K rows t / W + (256 / W) r.
template <class T, bool BackwardData, int W>
struct FrameLoader {
    static constexpr int R = W / 16, kRowStep = kThreads / W;
    const T* w;
    const T* in;
    int M, Cc, F, S;
    long long K;
    int m0;
    bool column_valid;  // this thread's B column (fixed for the block)
    long long column_base;
    int f;

    static constexpr int dir = BackwardData ? -1 : 1;

    MOBIUS_DEVICE void load(long long k0, float (&ra)[R], float (&rb)[R]) const {
        const long long ka = k0 + threadIdx.x % 16;
        const long long ca = ka / 3;
        const int kka = static_cast<int>(ka - 3 * ca);
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) {
            const int m = m0 + static_cast<int>(threadIdx.x / 16) + 16 * r;
            ra[r] = m < M && ka < K ? gpu::load(w + (BackwardData ? (ca * M + m) * 3 + kka : m * K + ka)) : 0.0f;
        }
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) {
            const long long kb = k0 + threadIdx.x / W + kRowStep * r;
            const long long c = kb / 3;
            const int shift = dir * (static_cast<int>(kb - 3 * c) - 1);
            const int fs = f + shift;
            rb[r] = column_valid && kb < K && fs >= 0 && fs < F ? gpu::load(in + column_base + (shift * Cc + c) * S) : 0.0f;
        }
    }
    MOBIUS_DEVICE void store(Tiles<W>& t, const float (&ra)[R], const float (&rb)[R]) const {
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) t.a[threadIdx.x % 16][threadIdx.x / 16 + 16 * r] = ra[r];
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) t.b[threadIdx.x / W + kRowStep * r][threadIdx.x % W] = rb[r];
    }
};

template <class T, bool BackwardData, int W>
MOBIUS_DEVICE void frame_conv(const T* in, const T* w, const T* bias, T* out, int B, int F, int Cc, int M, int S) {
    constexpr int R = W / 16;
    const long long columns = static_cast<long long>(B) * F * S;
    const long long n0 = static_cast<long long>(blockIdx.x) * W;
    const int m0 = blockIdx.y * W;
    const long long n = n0 + threadIdx.x % W;
    const long long bf = n / S;
    FrameLoader<T, BackwardData, W> loader{w, in, M, Cc, F, S, 3LL * Cc, m0, n < columns, bf * Cc * S + (n - bf * S),
                                           static_cast<int>(bf % F)};
    float acc[R][R] = {};
    gemm_mainloop<W>(loader, 0, loader.K, acc);
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
    MOBIUS_UNROLL
    for (int j = 0; j < R; ++j) {
        const long long col = n0 + tn + 16 * j;
        if (col >= columns) continue;
        const long long cbf = col / S, s = col - cbf * S;
        MOBIUS_UNROLL
        for (int i = 0; i < R; ++i) {
            const int m = m0 + tm + 16 * i;
            if (m < M) gpu::store(out + (cbf * M + m) * S + s, acc[i][j] + (bias != nullptr ? gpu::load(bias + m) : 0.0f));
        }
    }
}

// dw[o, kappa] over the columns [k_begin, k_end) of this split; kappa = 3 i + k.
template <class T, int W>
struct WeightLoader {
    static constexpr int R = W / 16;
    const T* dy;
    const T* x;
    int Cout, Cin, F, S;
    long long k_end;
    int o0, q0;

    MOBIUS_DEVICE void load(long long k0, float (&ra)[R], float (&rb)[R]) const {
        const long long n = k0 + threadIdx.x % 16;
        const bool valid = n < k_end;
        const long long bf = valid ? n / S : 0;
        const long long s = n - bf * S;
        const int f = static_cast<int>(bf % F);
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) {
            const int o = o0 + static_cast<int>(threadIdx.x / 16) + 16 * r;
            ra[r] = valid && o < Cout ? gpu::load(dy + (bf * Cout + o) * S + s) : 0.0f;
        }
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) {
            const int q = q0 + static_cast<int>(threadIdx.x / 16) + 16 * r;
            const int i = q / 3, k = q - 3 * (q / 3);
            const int fs = f + k - 1;
            rb[r] = valid && q < 3 * Cin && fs >= 0 && fs < F ? gpu::load(x + ((bf + k - 1) * Cin + i) * S + s) : 0.0f;
        }
    }
    MOBIUS_DEVICE void store(Tiles<W>& t, const float (&ra)[R], const float (&rb)[R]) const {
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) t.a[threadIdx.x % 16][threadIdx.x / 16 + 16 * r] = ra[r];
        MOBIUS_UNROLL
        for (int r = 0; r < R; ++r) t.b[threadIdx.x % 16][threadIdx.x / 16 + 16 * r] = rb[r];
    }
};

template <class T, int W>
MOBIUS_DEVICE void weight_grad(const T* x, const T* dy, float* dw_partial, int B, int F, int Cin, int Cout, int S,
                               long long columns_per_split) {
    constexpr int R = W / 16;
    const long long columns = static_cast<long long>(B) * F * S;
    const long long k_begin = blockIdx.z * columns_per_split;
    const long long k_end = columns < k_begin + columns_per_split ? columns : k_begin + columns_per_split;
    const WeightLoader<T, W> loader{dy, x, Cout, Cin, F, S, k_end, static_cast<int>(blockIdx.y) * W, static_cast<int>(blockIdx.x) * W};
    float acc[R][R] = {};
    gemm_mainloop<W>(loader, k_begin, k_end, acc);
    const int tm = threadIdx.x / 16, tn = threadIdx.x % 16;
    float* out = dw_partial + static_cast<long long>(blockIdx.z) * Cout * 3 * Cin;
    MOBIUS_UNROLL
    for (int i = 0; i < R; ++i) {
        const int o = loader.o0 + tm + 16 * i;
        MOBIUS_UNROLL
        for (int j = 0; j < R; ++j) {
            const int q = loader.q0 + tn + 16 * j;
            if (o < Cout && q < 3 * Cin) out[static_cast<long long>(o) * 3 * Cin + q] = acc[i][j];
        }
    }
}

}  // namespace

// y [B, F, Cout, S] = conv(x [B, F, Cin, S], w [Cout, Cin, 3]) + bias [Cout] (bias may be null).
// Block 256 threads; grid (ceil(B*F*S / W), ceil(Cout / W)) with W = 64, or 128 for the _128 entry.
extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_conv_fwd_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
                         int B, int F, int Cin, int Cout, int S) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && blockDim.z == 1);
    frame_conv<float, false, 64>(x, w, bias, y, B, F, Cin, Cout, S);
}
MOBIUS_REGISTER_KERNEL(temporal_conv_fwd_f32);

extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_conv_fwd_128_f32(const float* __restrict__ x, const float* __restrict__ w, const float* __restrict__ bias, float* __restrict__ y,
                             int B, int F, int Cin, int Cout, int S) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && blockDim.z == 1);
    frame_conv<float, false, 128>(x, w, bias, y, B, F, Cin, Cout, S);
}
MOBIUS_REGISTER_KERNEL(temporal_conv_fwd_128_f32);

// dx [B, F, Cin, S] from dy [B, F, Cout, S] and w [Cout, Cin, 3] (overwritten, not accumulated).
// Block 256 threads; grid (ceil(B*F*S / W), ceil(Cin / W)).
extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_conv_bwd_data_f32(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx, int B, int F, int Cin,
                              int Cout, int S) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && blockDim.z == 1);
    frame_conv<float, true, 64>(dy, w, nullptr, dx, B, F, Cout, Cin, S);
}
MOBIUS_REGISTER_KERNEL(temporal_conv_bwd_data_f32);

extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_conv_bwd_data_128_f32(const float* __restrict__ dy, const float* __restrict__ w, float* __restrict__ dx, int B, int F, int Cin,
                                  int Cout, int S) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && blockDim.z == 1);
    frame_conv<float, true, 128>(dy, w, nullptr, dx, B, F, Cout, Cin, S);
}
MOBIUS_REGISTER_KERNEL(temporal_conv_bwd_data_128_f32);

// dw_partial[z, o, i, k] = sum over the columns n = (b, f, s) of split z of dy[b, f, o, s] * x[b, f+k-1, i, s];
// split z covers columns [z * columns_per_split, (z+1) * columns_per_split) of the B*F*S. With one split
// (gridDim.z == 1, columns_per_split >= B*F*S) dw_partial is dw itself; otherwise reduce with
// column_sum_f32(dw_partial, dw, splits, Cout*Cin*3, splits).
// Block 256 threads; grid (ceil(3 Cin / W), ceil(Cout / W), ceil(B*F*S / columns_per_split)).
extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_conv_bwd_weight_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dw_partial, int B, int F,
                                int Cin, int Cout, int S, long long columns_per_split) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && blockDim.z == 1 && columns_per_split > 0);
    weight_grad<float, 64>(x, dy, dw_partial, B, F, Cin, Cout, S, columns_per_split);
}
MOBIUS_REGISTER_KERNEL(temporal_conv_bwd_weight_f32);

extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_conv_bwd_weight_128_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dw_partial, int B, int F,
                                    int Cin, int Cout, int S, long long columns_per_split) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && blockDim.z == 1 && columns_per_split > 0);
    weight_grad<float, 128>(x, dy, dw_partial, B, F, Cin, Cout, S, columns_per_split);
}
MOBIUS_REGISTER_KERNEL(temporal_conv_bwd_weight_128_f32);

// The weight as the cuBLAS path's GEMM operand (CudaBackend.TemporalConvOnCublas): in [B, F, C, S] the frames
// f-1, f, f+1 are one contiguous [3C, S] matrix, so a frame's output is one GEMM with the taps laid out tap-major.
//   reverse == 0 (forward):       taps[o, t * Cin + i]  = w[o, i, t]       ([Cout, 3 Cin])
//   reverse != 0 (backward data): taps[i, t * Cout + o] = w[o, i, 2 - t]   ([Cin, 3 Cout]: dy's window f-1..f+1
//                                 meets taps 2, 1, 0)
// blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    temporal_conv_taps_f32(const float* __restrict__ w, float* __restrict__ taps, int Cin, int Cout, int reverse) {
    const long long n = 3LL * Cin * Cout;
    gpu::grid_stride(n, [&](long long idx) {
        const int t = static_cast<int>(idx % 3), i = static_cast<int>(idx / 3 % Cin);
        const long long o = idx / (3LL * Cin);
        if (reverse != 0)
            taps[(static_cast<long long>(i) * 3 + (2 - t)) * Cout + o] = w[idx];
        else
            taps[(o * 3 + t) * Cin + i] = w[idx];
    });
}
MOBIUS_REGISTER_KERNEL(temporal_conv_taps_f32);

// The cuBLAS weight gradient's result back in the weight's layout: w[o, i, t] = taps[o, t * Cin + i] (the inverse
// of temporal_conv_taps_f32's forward layout). blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    temporal_conv_taps_to_weight_f32(const float* __restrict__ taps, float* __restrict__ w, int Cin, int Cout) {
    const long long n = 3LL * Cin * Cout;
    gpu::grid_stride(n, [&](long long idx) {
        const int t = static_cast<int>(idx % 3), i = static_cast<int>(idx / 3 % Cin);
        const long long o = idx / (3LL * Cin);
        w[idx] = taps[(o * 3 + t) * Cin + i];
    });
}
MOBIUS_REGISTER_KERNEL(temporal_conv_taps_to_weight_f32);

// dst[c, f, b, s] = src[b, f, c, s]: B clips of F frames [C, S] to channel-major with the clips inside each frame.
// In that layout every channel is one row of F*B*S columns in which frame f+1 starts B*S columns after frame f of
// the same clip, and no clip's frame follows another clip's: the weight gradient's tap t is then one GEMM over
// columns shifted by (t-1)*B*S, with no clip edge to mend (CudaBackend.TemporalConvBackwardWeight on cuBLAS).
// blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    temporal_conv_channel_major_f32(const float* __restrict__ src, float* __restrict__ dst, int B, int F, int C, int S) {
    const long long n = static_cast<long long>(B) * F * C * S;
    gpu::grid_stride(n, [&](long long idx) {
        const int s = static_cast<int>(idx % S);
        long long r = idx / S;
        const int b = static_cast<int>(r % B);
        r /= B;
        const int f = static_cast<int>(r % F);
        const long long c = r / F;
        dst[idx] = src[((static_cast<long long>(b) * F + f) * C + c) * S + s];
    });
}
MOBIUS_REGISTER_KERNEL(temporal_conv_channel_major_f32);
