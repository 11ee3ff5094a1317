// Group norm over x viewed [N, T, C, S] (optionally fused with SiLU) and layer norm over the last dimension,
// forward and backward, with deterministic parameter-gradient reductions.
//
// Group norm design: one block per (n, group), grid-stride over the N*G groups. In memory a group is T runs
// (one per frame t) of (C/G)*S contiguous floats, C*S apart, so every pass walks those runs with consecutive
// threads on consecutive floats (coalesced). Statistics take two passes (mean, then the mean of squared
// deviations): exact where sum-of-squares would cancel, and the second read hits L2 (a group is a few MB at
// most). Backward reduces, channel by channel, sum(g) and sum(g*xhat) over the channel's T*S elements:
// those are the per-(n, c) partials of dbeta and dgamma (written to [N, C] buffers, reduced over n by
// column_sum_f32), and gamma-weighted they give the two group means dx needs. No atomics.
//
// Layer norm design: rows are a few hundred to a few thousand floats, so one warp per row (rows grid-strided
// over all warps) with lane-strided coalesced reads and shuffle reductions, no shared memory. The parameter
// gradients are column sums over rows: one thread per column walks a chunk of rows (chunks over gridDim.y),
// writing one partial row per chunk that column_sum_f32 reduces.
#include "mobius_cuda.h"

namespace {

// silu'(pre) times the incoming gradient, where pre = xhat*gamma + beta is the normalised, affine value.
MOBIUS_DEVICE float through_silu(float grad, float pre) {
    const float s = gpu::sigmoid(pre);
    return grad * s * (1.0f + pre * (1.0f - s));
}

struct Group {
    long long n;
    int g;
    int channels_per_group;
    int run;  // (C/G)*S contiguous floats per frame
    // offset of frame t's run of this group in x [N, T, C, S]
    MOBIUS_DEVICE long long frame(int t, int T, int C, int S) const {
        return ((n * T + t) * C + static_cast<long long>(g) * channels_per_group) * S;
    }
};

template <class T>
MOBIUS_DEVICE void group_norm_forward(const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd, int N,
                                      int frames, int C, int S, int G, float eps, bool silu) {
    __shared__ float scratch[32];
    const int cg = C / G;
    const float inv_count = 1.0f / (static_cast<float>(frames) * static_cast<float>(cg) * static_cast<float>(S));
    for (long long ng = blockIdx.x; ng < static_cast<long long>(N) * G; ng += gridDim.x) {
        const Group grp{ng / G, static_cast<int>(ng % G), cg, cg * S};
        float acc = 0.0f;
        for (int t = 0; t < frames; ++t) {
            const T* run = x + grp.frame(t, frames, C, S);
            for (int e = threadIdx.x; e < grp.run; e += blockDim.x) acc += gpu::load(run + e);
        }
        const float mu = gpu::block_sum(acc, scratch) * inv_count;
        acc = 0.0f;
        for (int t = 0; t < frames; ++t) {
            const T* run = x + grp.frame(t, frames, C, S);
            for (int e = threadIdx.x; e < grp.run; e += blockDim.x) {
                const float d = gpu::load(run + e) - mu;
                acc += d * d;
            }
        }
        const float rs = gpu::rsqrt(gpu::block_sum(acc, scratch) * inv_count + eps);
        for (int t = 0; t < frames; ++t) {
            const long long off = grp.frame(t, frames, C, S);
            for (int e = threadIdx.x; e < grp.run; e += blockDim.x) {
                const int c = grp.g * cg + e / S;
                float v = (gpu::load(x + off + e) - mu) * rs * gpu::load(gamma + c) + gpu::load(beta + c);
                if (silu) v *= gpu::sigmoid(v);
                gpu::store(y + off + e, v);
            }
        }
        if (threadIdx.x == 0) {
            mean[ng] = mu;
            rstd[ng] = rs;
        }
    }
}

template <class T>
MOBIUS_DEVICE void group_norm_backward(const T* x, const T* gamma, const T* beta, const float* mean, const float* rstd,
                                       const T* dy, T* dx, float* dgamma_partial, float* dbeta_partial, int N, int frames,
                                       int C, int S, int G, bool silu) {
    __shared__ float scratch[32];
    const int cg = C / G;
    const float inv_count = 1.0f / (static_cast<float>(frames) * static_cast<float>(cg) * static_cast<float>(S));
    for (long long ng = blockIdx.x; ng < static_cast<long long>(N) * G; ng += gridDim.x) {
        const Group grp{ng / G, static_cast<int>(ng % G), cg, cg * S};
        const float mu = mean[ng], rs = rstd[ng];
        // the gradient reaching the affine output, and xhat, at element `i` of channel c
        auto grad_at = [&](long long i, int c, float* xhat) {
            *xhat = (gpu::load(x + i) - mu) * rs;
            const float g = gpu::load(dy + i);
            return silu ? through_silu(g, *xhat * gpu::load(gamma + c) + gpu::load(beta + c)) : g;
        };
        float sum_g = 0.0f, sum_gx = 0.0f;  // sum of gamma*g and gamma*g*xhat over the group; same in every thread
        for (int cl = 0; cl < cg; ++cl) {
            const int c = grp.g * cg + cl;
            float a = 0.0f, b = 0.0f;
            for (int t = 0; t < frames; ++t) {
                const long long off = grp.frame(t, frames, C, S) + static_cast<long long>(cl) * S;
                for (int s = threadIdx.x; s < S; s += blockDim.x) {
                    float xhat;
                    const float g = grad_at(off + s, c, &xhat);
                    a += g;
                    b += g * xhat;
                }
            }
            a = gpu::block_sum(a, scratch);
            b = gpu::block_sum(b, scratch);
            if (threadIdx.x == 0) {
                if (dbeta_partial != nullptr) dbeta_partial[grp.n * C + c] = a;
                if (dgamma_partial != nullptr) dgamma_partial[grp.n * C + c] = b;
            }
            const float gm = gpu::load(gamma + c);
            sum_g += gm * a;
            sum_gx += gm * b;
        }
        if (dx == nullptr) continue;
        const float k1 = sum_g * inv_count, k2 = sum_gx * inv_count;
        for (int t = 0; t < frames; ++t) {
            const long long off = grp.frame(t, frames, C, S);
            for (int e = threadIdx.x; e < grp.run; e += blockDim.x) {
                const int c = grp.g * cg + e / S;
                float xhat;
                const float g = grad_at(off + e, c, &xhat);
                gpu::store(dx + off + e, rs * (g * gpu::load(gamma + c) - k1 - xhat * k2));
            }
        }
    }
}

template <class T>
MOBIUS_DEVICE void layer_norm_forward(const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd,
                                      long long rows, int cols, float eps) {
    const int lane = threadIdx.x & 31;
    const float inv_cols = 1.0f / static_cast<float>(cols);
    for (long long r = gpu::global_warp(); r < rows; r += gpu::global_warps()) {
        const T* xr = x + r * cols;
        float acc = 0.0f;
        for (int j = lane; j < cols; j += 32) acc += gpu::load(xr + j);
        const float mu = gpu::warp_sum(acc) * inv_cols;
        acc = 0.0f;
        for (int j = lane; j < cols; j += 32) {
            const float d = gpu::load(xr + j) - mu;
            acc += d * d;
        }
        const float rs = gpu::rsqrt(gpu::warp_sum(acc) * inv_cols + eps);
        T* yr = y + r * cols;
        for (int j = lane; j < cols; j += 32)
            gpu::store(yr + j, (gpu::load(xr + j) - mu) * rs * gpu::load(gamma + j) + gpu::load(beta + j));
        if (lane == 0) {
            mean[r] = mu;
            rstd[r] = rs;
        }
    }
}

template <class T>
MOBIUS_DEVICE void layer_norm_backward(const T* x, const T* gamma, const float* mean, const float* rstd, const T* dy, T* dx,
                                       long long rows, int cols) {
    const int lane = threadIdx.x & 31;
    const float inv_cols = 1.0f / static_cast<float>(cols);
    for (long long r = gpu::global_warp(); r < rows; r += gpu::global_warps()) {
        const T* xr = x + r * cols;
        const T* dyr = dy + r * cols;
        const float mu = mean[r], rs = rstd[r];
        float a = 0.0f, b = 0.0f;
        for (int j = lane; j < cols; j += 32) {
            const float gg = gpu::load(dyr + j) * gpu::load(gamma + j);
            a += gg;
            b += gg * (gpu::load(xr + j) - mu) * rs;
        }
        const float k1 = gpu::warp_sum(a) * inv_cols, k2 = gpu::warp_sum(b) * inv_cols;
        T* dxr = dx + r * cols;
        for (int j = lane; j < cols; j += 32) {
            const float xhat = (gpu::load(xr + j) - mu) * rs;
            gpu::store(dxr + j, rs * (gpu::load(dyr + j) * gpu::load(gamma + j) - k1 - xhat * k2));
        }
    }
}

template <class T>
MOBIUS_DEVICE void layer_norm_param_grad(const T* x, const float* mean, const float* rstd, const T* dy, float* dgamma_partial,
                                         float* dbeta_partial, long long rows, int cols, long long rows_per_split) {
    const long long splits = (rows + rows_per_split - 1) / rows_per_split;
    for (long long sp = blockIdx.y; sp < splits; sp += gridDim.y) {
        const long long r_end = rows < (sp + 1) * rows_per_split ? rows : (sp + 1) * rows_per_split;
        for (long long j = gpu::global_thread(); j < cols; j += gpu::global_threads()) {
            float dg = 0.0f, db = 0.0f;
            for (long long r = sp * rows_per_split; r < r_end; ++r) {
                const float g = gpu::load(dy + r * cols + j);
                dg += g * (gpu::load(x + r * cols + j) - mean[r]) * rstd[r];
                db += g;
            }
            if (dgamma_partial != nullptr) dgamma_partial[sp * cols + j] = dg;
            if (dbeta_partial != nullptr) dbeta_partial[sp * cols + j] = db;
        }
    }
}

}  // namespace

// Group norm of x [N, T, C, S] with G groups (C % G == 0): y = (x - mean) * rstd * gamma[c] + beta[c], then
// SiLU when silu != 0; mean and rstd [N, G]. One block per (n, g), grid-stride: grid min(N*G, 65535);
// blockDim.x a multiple of 32 (<= 1024; 256 or 512 intended).
extern "C" __global__ void __launch_bounds__(1024)
    group_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                       float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, int N, int T, int C, int S,
                       int G, float eps, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && blockDim.x % 32 == 0);
    group_norm_forward(x, gamma, beta, y, mean, rstd, N, T, C, S, G, eps, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_fwd_f32);

// Backward of group_norm_fwd_f32 (same silu flag, mean and rstd from the forward). Writes dx (if not null)
// and the per-(n, c) partial sums dgamma_partial[n*C + c] = sum of g*xhat and dbeta_partial[n*C + c] = sum of g
// over t and s (each may be null), where g = dy, times silu' when fused; dgamma = column_sum over n.
// Launch as the forward.
extern "C" __global__ void __launch_bounds__(1024)
    group_norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                       const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
                       float* __restrict__ dx, float* __restrict__ dgamma_partial, float* __restrict__ dbeta_partial, int N, int T,
                       int C, int S, int G, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && blockDim.x % 32 == 0);
    group_norm_backward(x, gamma, beta, mean, rstd, dy, dx, dgamma_partial, dbeta_partial, N, T, C, S, G, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_bwd_f32);

// Layer norm of x [rows, cols] over cols; mean and rstd [rows]. One warp per row: blockDim.x a multiple of 32
// (<= 256; 256 = 8 rows per block), any grid (ceil(rows/8) or a cap).
extern "C" __global__ void __launch_bounds__(256)
    layer_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                       float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, long long rows, int cols, float eps) {
    layer_norm_forward(x, gamma, beta, y, mean, rstd, rows, cols, eps);
}
MOBIUS_REGISTER_KERNEL(layer_norm_fwd_f32);

// dx of layer_norm_fwd_f32. Launch as the forward.
extern "C" __global__ void __launch_bounds__(256)
    layer_norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
                       const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx, long long rows, int cols) {
    layer_norm_backward(x, gamma, mean, rstd, dy, dx, rows, cols);
}
MOBIUS_REGISTER_KERNEL(layer_norm_bwd_f32);

// Partial parameter gradients of layer norm: for split s (rows [s*rows_per_split, ...)),
// dgamma_partial[s, j] = sum of dy*xhat and dbeta_partial[s, j] = sum of dy (either may be null).
// dgamma = column_sum over the ceil(rows/rows_per_split) splits. Grid: x covers cols (any), y the splits
// (any, grid-stride); blockDim.x <= 256.
extern "C" __global__ void __launch_bounds__(256)
    layer_norm_param_grad_f32(const float* __restrict__ x, const float* __restrict__ mean, const float* __restrict__ rstd,
                              const float* __restrict__ dy, float* __restrict__ dgamma_partial, float* __restrict__ dbeta_partial,
                              long long rows, int cols, long long rows_per_split) {
    layer_norm_param_grad(x, mean, rstd, dy, dgamma_partial, dbeta_partial, rows, cols, rows_per_split);
}
MOBIUS_REGISTER_KERNEL(layer_norm_param_grad_f32);
