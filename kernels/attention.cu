// Attention: the fused temporal kernels (sequence = the F <= 32 frames of one pixel) and the helpers that general
// (long-sequence) attention needs around its cuBLAS GEMMs.
//
// Temporal design. q, k, v are [N, F, H*D] with N = batch * pixels, so there are N*H independent tiny problems
// (F x F scores, D-wide rows). One block of 128 threads solves one (n, h) problem at a time (grid-stride over
// N*H), entirely on chip: K and V (F x D each) are loaded once into shared memory with coalesced row reads;
// each warp then takes query rows. A warp splits into segments of Fp lanes (Fp = F rounded up to a power of
// two, at least 4), one segment per query row and one lane per key: the lane computes its score from shared
// memory, and the softmax over the row is a segmented shuffle max / sum in registers. So one pass of a warp
// handles 32 / Fp rows at once (F = 8: four rows), keeping lanes busy for small F. The output row
// o = P v is then accumulated with lanes along the head dimension (coalesced store), the probabilities
// broadcast by shuffles. The F x F matrix never exists anywhere, the logsumexp is the only extra output.
// Shared rows have an odd stride (D | 1): lanes walking different rows at the same column hit different banks.
// D may be anything in 1..128 (at most 4 chunks of 32 lanes); F anything in 1..32.
//
// Backward recomputes P = exp(scale q k^T - lse) in the same layout. Phase 1 (per query row, K and V in
// shared memory): P, dP = dO v^T, Drow = dO . o, dS = P (dP - Drow), and dq = scale dS K written at once; P and
// dS go to shared memory (F x F each). Phase 2 reuses the K/V space for Q and dO and gives each warp key rows:
// dv = P^T dO, dk = scale dS^T Q. Shared memory stays below 48 KiB for every F <= 32, D <= 128.
//
// Dynamic shared memory (bytes), with Fp = max(4, next power of two >= F), R = 32 / Fp, Dp = D | 1:
//   forward:  4 * (2 F Dp + 4 R Dp)
//   backward: 4 * (2 F Dp + 8 R Dp + 2 F F)
// The kernels check that they received at least this much.
#include "mobius_cuda.h"

namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxFrames = 32;
constexpr int kMaxHeadDim = 128;
constexpr int kChunks = kMaxHeadDim / 32;

struct Layout {
    int F, D;
    int Dp;    // row stride in shared memory
    int Fp;    // lanes per query row
    int rows;  // query rows per warp pass, 32 / Fp

    MOBIUS_DEVICE static Layout make(int F, int D) {
        int fp = 4;
        while (fp < F) fp *= 2;
        return {F, D, D | 1, fp, 32 / fp};
    }
    MOBIUS_DEVICE unsigned forward_bytes() const { return 4u * (2 * F * Dp + kWarps * rows * Dp); }
    MOBIUS_DEVICE unsigned backward_bytes() const { return 4u * (2 * F * Dp + 2 * kWarps * rows * Dp + 2 * F * F); }
};

// One (n, h) problem: row r, column d of a [F, H*D] head slice is at base + r * stride + d.
struct Head {
    long long base;
    long long stride;
};

MOBIUS_DEVICE Head head(long long problem, int H, int F, int D) {
    const long long n = problem / H;
    const int h = static_cast<int>(problem - n * H);
    return {n * F * H * static_cast<long long>(D) + static_cast<long long>(h) * D, static_cast<long long>(H) * D};
}

// The whole F x D slice into tile[F][Dp], by all threads of the block.
template <class T>
MOBIUS_DEVICE void load_tile(const T* src, const Head& hd, const Layout& L, float* tile) {
    for (int idx = threadIdx.x; idx < L.F * L.D; idx += kThreads) {
        const int r = idx / L.D, d = idx - r * L.D;
        tile[r * L.Dp + d] = gpu::load(src + hd.base + r * hd.stride + d);
    }
}

// Rows row0 .. row0 + L.rows - 1 into buf[L.rows][Dp] by one warp; rows past F become zeros.
template <class T>
MOBIUS_DEVICE void stage_rows(const T* src, const Head& hd, const Layout& L, int row0, float* buf) {
    const int lane = threadIdx.x & 31;
    for (int s = 0; s < L.rows; ++s) {
        const int r = row0 + s;
        for (int d = lane; d < L.D; d += 32) buf[s * L.Dp + d] = r < L.F ? gpu::load(src + hd.base + r * hd.stride + d) : 0.0f;
    }
}

// Reductions within aligned groups of `width` lanes (a power of two).
MOBIUS_DEVICE float segment_max(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v = gpu::max(v, __shfl_xor_sync(gpu::kFullMask, v, o));
    return v;
}
MOBIUS_DEVICE float segment_sum(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v += __shfl_xor_sync(gpu::kFullMask, v, o);
    return v;
}

// acc[c] (head-dim column lane + 32c) = sum over j < F of w_j * tile[j][column], where lane (seg * Fp + j)
// holds w_j: the P v / dS K products with lanes along the head dimension.
MOBIUS_DEVICE void weighted_rows(float w, int seg, const Layout& L, const float* tile, float (&acc)[kChunks]) {
    const int lane = threadIdx.x & 31;
    for (int c = 0; c < kChunks; ++c) acc[c] = 0.0f;
    for (int j = 0; j < L.F; ++j) {
        const float wj = __shfl_sync(gpu::kFullMask, w, seg * L.Fp + j);
        for (int c = 0; c < kChunks; ++c) {
            const int d = lane + 32 * c;
            if (d < L.D) acc[c] += wj * tile[j * L.Dp + d];
        }
    }
}

template <class T>
MOBIUS_DEVICE void store_row(T* dst, const Head& hd, const Layout& L, int r, const float (&acc)[kChunks], float scale) {
    const int lane = threadIdx.x & 31;
    for (int c = 0; c < kChunks; ++c) {
        const int d = lane + 32 * c;
        if (d < L.D) gpu::store(dst + hd.base + r * hd.stride + d, scale * acc[c]);
    }
}

template <class T>
MOBIUS_DEVICE void temporal_forward(const T* q, const T* k, const T* v, T* o, float* lse, int N, int H, int F, int D, float scale) {
    MOBIUS_DYNAMIC_SHARED(float, smem);
    const Layout L = Layout::make(F, D);
    MOBIUS_REQUIRE(gpu::dynamic_smem_size() >= L.forward_bytes());
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int seg = lane / L.Fp, j = lane % L.Fp, jc = j < F ? j : 0;  // idle lanes compute on row 0, discarded
    float* ks = smem;
    float* vs = ks + F * L.Dp;
    float* qrows = vs + F * L.Dp + warp * L.rows * L.Dp;
    for (long long p = blockIdx.x; p < static_cast<long long>(N) * H; p += gridDim.x) {
        const Head hd = head(p, H, F, D);
        load_tile(k, hd, L, ks);
        load_tile(v, hd, L, vs);
        __syncthreads();
        for (int row0 = warp * L.rows; row0 < F; row0 += kWarps * L.rows) {
            stage_rows(q, hd, L, row0, qrows);
            __syncwarp();
            const int i = row0 + seg;
            const bool valid = i < F && j < F;
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot += qrows[seg * L.Dp + d] * ks[jc * L.Dp + d];
            const float score = valid ? dot * scale : -gpu::inf();
            const float m = segment_max(score, L.Fp);
            const float e = valid ? gpu::exp(score - m) : 0.0f;
            const float sum = segment_sum(e, L.Fp);
            const float prob = valid ? e / sum : 0.0f;
            if (valid && j == 0) lse[p * F + i] = m + gpu::log(sum);
            for (int s = 0; s < L.rows && row0 + s < F; ++s) {
                float acc[kChunks];
                weighted_rows(prob, s, L, vs, acc);
                store_row(o, hd, L, row0 + s, acc, 1.0f);
            }
            __syncwarp();  // the next pass restages qrows
        }
        __syncthreads();  // the next problem reloads ks and vs
    }
}

template <class T>
MOBIUS_DEVICE void temporal_backward(const T* q, const T* k, const T* v, const T* o, const float* lse, const T* dout, T* dq, T* dk,
                                     T* dv, int N, int H, int F, int D, float scale) {
    MOBIUS_DYNAMIC_SHARED(float, smem);
    const Layout L = Layout::make(F, D);
    MOBIUS_REQUIRE(gpu::dynamic_smem_size() >= L.backward_bytes());
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const int seg = lane / L.Fp, j = lane % L.Fp, jc = j < F ? j : 0;
    float* kq = smem;               // K in phase 1, Q in phase 2
    float* vdo = kq + F * L.Dp;     // V in phase 1, dO in phase 2
    float* qrows = vdo + F * L.Dp + warp * 2 * L.rows * L.Dp;
    float* dorows = qrows + L.rows * L.Dp;
    float* probs = smem + 2 * F * L.Dp + 2 * kWarps * L.rows * L.Dp;  // P [F][F]
    float* dscores = probs + F * F;                                  // dS [F][F]
    const bool recompute = o == nullptr || lse == nullptr;           // uniform: the same pointers for every thread
    for (long long p = blockIdx.x; p < static_cast<long long>(N) * H; p += gridDim.x) {
        const Head hd = head(p, H, F, D);
        load_tile(k, hd, L, kq);
        load_tile(v, hd, L, vdo);
        __syncthreads();
        for (int row0 = warp * L.rows; row0 < F; row0 += kWarps * L.rows) {
            stage_rows(q, hd, L, row0, qrows);
            stage_rows(dout, hd, L, row0, dorows);
            __syncwarp();
            // Drow_i = dO_i . o_i for the rows of this pass; each lane keeps its own row's value. Without o (the
            // recompute mode, below) it is sum_j P_ij dP_ij instead.
            float drow = 0.0f;
            for (int s = 0; s < L.rows && recompute == false; ++s) {
                const int r = row0 + s;
                float part = 0.0f;
                for (int d = lane; d < D && r < F; d += 32) part += dorows[s * L.Dp + d] * gpu::load(o + hd.base + r * hd.stride + d);
                part = gpu::warp_sum(part);
                if (s == seg) drow = part;
            }
            const int i = row0 + seg;
            const bool valid = i < F && j < F;
            float dot_s = 0.0f, dot_p = 0.0f;
            for (int d = 0; d < D; ++d) {
                dot_s += qrows[seg * L.Dp + d] * kq[jc * L.Dp + d];
                dot_p += dorows[seg * L.Dp + d] * vdo[jc * L.Dp + d];
            }
            float prob;
            if (recompute) {
                // The softmax of these q and k alone, as the forward computes it, and Drow from it: P, Drow and dS
                // all belong to the q, k, v given (a rounded copy of the forward's: activations kept narrower).
                const float score = valid ? dot_s * scale : -gpu::inf();
                const float m = segment_max(score, L.Fp);
                const float e = valid ? gpu::exp(score - m) : 0.0f;
                const float sum = segment_sum(e, L.Fp);  // every lane takes part in the shuffles
                prob = valid ? e / sum : 0.0f;
                drow = segment_sum(valid ? prob * dot_p : 0.0f, L.Fp);
            } else {
                prob = valid ? gpu::exp(dot_s * scale - lse[p * F + i]) : 0.0f;
            }
            const float ds = prob * (dot_p - drow);
            if (valid) {
                probs[i * F + j] = prob;
                dscores[i * F + j] = ds;
            }
            for (int s = 0; s < L.rows && row0 + s < F; ++s) {
                float acc[kChunks];
                weighted_rows(ds, s, L, kq, acc);
                store_row(dq, hd, L, row0 + s, acc, scale);
            }
            __syncwarp();
        }
        __syncthreads();  // P and dS complete; K and V no longer needed
        load_tile(q, hd, L, kq);
        load_tile(dout, hd, L, vdo);
        __syncthreads();
        for (int key = warp; key < F; key += kWarps) {
            float acc_v[kChunks] = {}, acc_k[kChunks] = {};
            for (int r = 0; r < F; ++r) {
                const float pr = probs[r * F + key], dsr = dscores[r * F + key];
                for (int c = 0; c < kChunks; ++c) {
                    const int d = lane + 32 * c;
                    if (d < D) {
                        acc_v[c] += pr * vdo[r * L.Dp + d];
                        acc_k[c] += dsr * kq[r * L.Dp + d];
                    }
                }
            }
            store_row(dv, hd, L, key, acc_v, 1.0f);
            store_row(dk, hd, L, key, acc_k, scale);
        }
        __syncthreads();  // the next problem reloads the tiles
    }
}

}  // namespace

// Temporal self-attention forward. q, k, v, o [N, F, H*D]; head h uses columns h*D .. h*D + D - 1;
// o = softmax(scale q k^T) v per (n, h); lse [N, H, F] = log sum_j exp(scale q_i . k_j).
// F in 1..32, D in 1..128. Block 128 threads; grid min(N*H, 65535 or any other count: grid-stride);
// dynamic shared memory 4 * (2 F Dp + 4 R Dp) bytes (see the top of this file).
extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_attention_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v, float* __restrict__ o,
                               float* __restrict__ lse, int N, int H, int F, int D, float scale) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && F >= 1 && F <= kMaxFrames && D >= 1 && D <= kMaxHeadDim);
    temporal_forward(q, k, v, o, lse, N, H, F, D, scale);
}
MOBIUS_REGISTER_KERNEL(temporal_attention_fwd_f32);

// Temporal self-attention backward: dq, dk, dv [N, F, H*D] from q, k, v, o, lse (forward) and dO. With o and lse
// null, the probabilities are recomputed from q and k (their softmax, as the forward's) and Drow = sum_j P dP.
// Block 128 threads; grid as the forward; dynamic shared memory 4 * (2 F Dp + 8 R Dp + 2 F F) bytes.
extern "C" __global__ void __launch_bounds__(kThreads)
    temporal_attention_bwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                               const float* __restrict__ o, const float* __restrict__ lse, const float* __restrict__ dout,
                               float* __restrict__ dq, float* __restrict__ dk, float* __restrict__ dv, int N, int H, int F, int D,
                               float scale) {
    MOBIUS_REQUIRE(blockDim.x == kThreads && blockDim.y == 1 && F >= 1 && F <= kMaxFrames && D >= 1 && D <= kMaxHeadDim);
    temporal_backward(q, k, v, o, lse, dout, dq, dk, dv, N, H, F, D, scale);
}
MOBIUS_REGISTER_KERNEL(temporal_attention_bwd_f32);

// General attention helper: drow [N, H, L] with drow[n, h, i] = sum_d dO[n, i, h*D + d] * o[n, i, h*D + d]
// (the Drow of ops.md) for dO, o [N, L, H*D]. One warp per output: blockDim.x a multiple of 32 (<= 256), any grid.
extern "C" __global__ void __launch_bounds__(256)
    attention_row_dot_f32(const float* __restrict__ dout, const float* __restrict__ o, float* __restrict__ drow, int N, int L, int H, int D) {
    const int lane = threadIdx.x & 31;
    const long long outputs = static_cast<long long>(N) * H * L;
    for (long long w = gpu::global_warp(); w < outputs; w += gpu::global_warps()) {
        const long long n = w / (static_cast<long long>(H) * L);
        const int h = static_cast<int>(w / L % H), i = static_cast<int>(w % L);
        const long long row = (n * L + i) * H * static_cast<long long>(D) + static_cast<long long>(h) * D;
        float acc = 0.0f;
        for (int d = lane; d < D; d += 32) acc += dout[row + d] * o[row + d];
        acc = gpu::warp_sum(acc);
        if (lane == 0) drow[w] = acc;
    }
}
MOBIUS_REGISTER_KERNEL(attention_row_dot_f32);

// General attention helper: ds[r, j] = p[r, j] * (dp[r, j] - drow[r]) for p, dp, ds [rows, cols] (rows = N*H*Lq
// in the [N, H, Lq, Lk] score layout, drow [N, H, Lq] from attention_row_dot_f32); ds may alias dp.
// blockDim.x <= 256, any grid. dq = scale ds k and dk = scale ds^T q are GEMMs on the caller's side.
extern "C" __global__ void __launch_bounds__(256)
    attention_dsoftmax_f32(const float* p, const float* dp, const float* __restrict__ drow, float* ds, long long rows, int cols) {
    gpu::grid_stride(rows * cols, [&](long long i) { ds[i] = p[i] * (dp[i] - drow[i / cols]); });
}
MOBIUS_REGISTER_KERNEL(attention_dsoftmax_f32);
