// Group norm over x viewed [N, T, C, S] (optionally fused with SiLU) and layer norm over the last dimension,
// forward and backward, with deterministic parameter-gradient reductions.
//
// Group norm design. A group is T runs (one per frame t) of (C/G)*S contiguous floats, C*S apart: at batch 1
// a video norm has only G (32) groups of up to a few MB each, too few blocks for a GPU, so each group is cut
// into `splits` chunks of its flattened elements (grid: splits x groups, groups grid-strided over y), and
// every pass walks a chunk's pieces of runs with consecutive threads on consecutive floats (coalesced).
// Forward: group_norm_stats_f32 writes each chunk's mean and sum of squared deviations about that mean (two
// passes over the chunk, the second from cache: exact where a sum of squares would cancel);
// group_norm_apply_f32 merges a group's chunk statistics in a fixed order (Chan et al.'s pairwise update),
// then normalises its own chunk. Backward: group_norm_bwd_reduce_f32 sums g and g*xhat per (n, c) over chunks
// of the channel's T*S elements; group_norm_bwd_dx_f32 adds those chunk sums up in a fixed order into the
// per-(n, c) partials of dbeta and dgamma (reduced over n by column_sum_f32) and, gamma-weighted, into the two
// group means dx needs, then writes dx for its own chunk. No atomics: results do not depend on the schedule.
// Where a group (forward) or every channel and group (backward) is one chunk, as in small models, one launch
// does both passes (group_norm_one_pass_f32, group_norm_bwd_one_pass_f32) with the same arithmetic, so the
// same bits: a small model's step is launch-bound.
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

struct GroupShape {
    int N, T, C, S, G;
    MOBIUS_DEVICE int cg() const { return C / G; }
    MOBIUS_DEVICE int run() const { return cg() * S; }  // contiguous floats of one group in one frame
    MOBIUS_DEVICE long long count() const { return static_cast<long long>(T) * run(); }
    // offset of frame t's run of group g of sample n
    MOBIUS_DEVICE long long frame(long long n, int g, int t) const {
        return ((n * T + t) * C + static_cast<long long>(g) * cg()) * S;
    }
};

// Chunk `k` of `splits` over `count` elements: [begin, end).
MOBIUS_DEVICE void chunk(long long count, int splits, int k, long long* begin, long long* end) {
    const long long size = (count + splits - 1) / splits;
    *begin = k * size < count ? k * size : count;
    *end = *begin + size < count ? *begin + size : count;
}

// Calls f(offset, e) for the elements [begin, end) of a group's flattened (t, e) index space, e being the
// position within the frame's run (channel = g*cg + e / S). Threads stride within each piece of a run.
template <class F>
MOBIUS_DEVICE void for_group_chunk(const GroupShape& sh, long long n, int g, long long begin, long long end, F&& f) {
    const int run = sh.run();
    for (int t = static_cast<int>(begin / run); t < sh.T && static_cast<long long>(t) * run < end; ++t) {
        const long long lo = static_cast<long long>(t) * run, base = sh.frame(n, g, t);
        const int e0 = static_cast<int>(begin > lo ? begin - lo : 0);
        const int e1 = static_cast<int>(end - lo < run ? end - lo : run);
        for (int e = e0 + static_cast<int>(threadIdx.x); e < e1; e += static_cast<int>(blockDim.x)) f(base + e, e);
    }
}

// The same for one channel's T*S elements (T runs of S floats, C*S apart).
template <class F>
MOBIUS_DEVICE void for_channel_chunk(const GroupShape& sh, long long n, int c, long long begin, long long end, F&& f) {
    const int S = sh.S;
    for (int t = static_cast<int>(begin / S); t < sh.T && static_cast<long long>(t) * S < end; ++t) {
        const long long lo = static_cast<long long>(t) * S, base = ((n * sh.T + t) * sh.C + c) * static_cast<long long>(S);
        const int s0 = static_cast<int>(begin > lo ? begin - lo : 0);
        const int s1 = static_cast<int>(end - lo < S ? end - lo : S);
        for (int s = s0 + static_cast<int>(threadIdx.x); s < s1; s += static_cast<int>(blockDim.x)) f(base + s);
    }
}

// The mean of elements [begin, end) of group g of sample n and the sum of their squared deviations about it
// (two passes, the second from cache), block-reduced: every thread gets them.
// dx plus the gradient already accumulated for the norm's input (a residual's other path), rounded once as a
// separate addition would round it, never fused into the multiply before it: the same bits as adding afterwards.
MOBIUS_DEVICE float plus_addend(float v, const float* addend, long long i) {
    if (addend == nullptr) return v;
#if defined(MOBIUS_SIM_BUILD)
    return v + addend[i];
#elif defined(__NVCC__)
    return __fadd_rn(v, addend[i]);
#else
    return __nvvm_add_rn_f(v, addend[i]);
#endif
}

template <class T>
MOBIUS_DEVICE void chunk_stats(const T* x, const GroupShape& sh, long long n, int g, long long begin, long long end, float* scratch, float* mu_out,
                               float* m2_out) {
    const float inv = end > begin ? 1.0f / static_cast<float>(end - begin) : 0.0f;
    float acc = 0.0f;
    for_group_chunk(sh, n, g, begin, end, [&](long long i, int) { acc += gpu::load(x + i); });
    const float mu = gpu::block_sum(acc, scratch) * inv;
    acc = 0.0f;
    for_group_chunk(sh, n, g, begin, end, [&](long long i, int) {
        const float d = gpu::load(x + i) - mu;
        acc += d * d;
    });
    *mu_out = mu;
    *m2_out = gpu::block_sum(acc, scratch);
}

// y = (x - mu) rs gamma[c] + beta[c], then SiLU when silu, over elements [begin, end) of group g of sample n.
template <class T>
MOBIUS_DEVICE void normalise_chunk(const T* x, const T* gamma, const T* beta, T* y, const GroupShape& sh, long long n, int g, long long begin,
                                   long long end, float mu, float rs, bool silu) {
    const int cg = sh.cg();
    for_group_chunk(sh, n, g, begin, end, [&](long long i, int e) {
        const int c = g * cg + e / sh.S;
        float v = (gpu::load(x + i) - mu) * rs * gpu::load(gamma + c) + gpu::load(beta + c);
        if (silu) v *= gpu::sigmoid(v);
        gpu::store(y + i, v);
    });
}

template <class T>
MOBIUS_DEVICE void group_norm_stats(const T* x, float* stats, const GroupShape& sh, int splits) {
    __shared__ float scratch[32];
    const long long groups = static_cast<long long>(sh.N) * sh.G, count = sh.count();
    const int k = static_cast<int>(blockIdx.x);
    for (long long ng = blockIdx.y; ng < groups; ng += gridDim.y) {
        const long long n = ng / sh.G;
        const int g = static_cast<int>(ng % sh.G);
        long long begin, end;
        chunk(count, splits, k, &begin, &end);
        float mu, m2;
        chunk_stats(x, sh, n, g, begin, end, scratch, &mu, &m2);
        if (threadIdx.x == 0) {
            stats[(ng * splits + k) * 2] = mu;
            stats[(ng * splits + k) * 2 + 1] = m2;
        }
    }
}

// A group's mean and rstd from its chunk statistics, merged in chunk order (every caller gets the same bits).
MOBIUS_DEVICE void merge_stats(const float* stats, long long ng, long long count, int splits, float eps, float* mean, float* rstd) {
    float n_acc = 0.0f, mu = 0.0f, m2 = 0.0f;
    for (int k = 0; k < splits; ++k) {
        long long begin, end;
        chunk(count, splits, k, &begin, &end);
        if (end <= begin) continue;
        const float nb = static_cast<float>(end - begin), mb = stats[(ng * splits + k) * 2], m2b = stats[(ng * splits + k) * 2 + 1];
        const float n = n_acc + nb, delta = mb - mu;
        mu += delta * (nb / n);
        m2 += m2b + delta * delta * (n_acc * nb / n);
        n_acc = n;
    }
    *mean = mu;
    *rstd = gpu::rsqrt(m2 / static_cast<float>(count) + eps);
}

template <class T>
MOBIUS_DEVICE void group_norm_apply(const T* x, const T* gamma, const T* beta, T* y, const float* stats, float* mean, float* rstd,
                                    const GroupShape& sh, int splits, float eps, bool silu) {
    __shared__ float stat[2];
    const long long groups = static_cast<long long>(sh.N) * sh.G, count = sh.count();
    const int k = static_cast<int>(blockIdx.x);
    for (long long ng = blockIdx.y; ng < groups; ng += gridDim.y) {
        __syncthreads();  // stat of the previous group is no longer read
        if (threadIdx.x == 0) {
            merge_stats(stats, ng, count, splits, eps, &stat[0], &stat[1]);
            if (k == 0) {
                mean[ng] = stat[0];
                rstd[ng] = stat[1];
            }
        }
        __syncthreads();
        const float mu = stat[0], rs = stat[1];
        const long long n = ng / sh.G;
        const int g = static_cast<int>(ng % sh.G);
        long long begin, end;
        chunk(count, splits, k, &begin, &end);
        normalise_chunk(x, gamma, beta, y, sh, n, g, begin, end, mu, rs, silu);
    }
}

// Statistics and normalisation of whole groups in one launch, where a group is one chunk (splits == 1): the
// same passes and reductions as group_norm_stats with one chunk, then group_norm_apply's merge of that one chunk
// (mean mu, rstd rsqrt(m2 / count + eps)) and normalisation, so the same bits in half the launches.
template <class T>
MOBIUS_DEVICE void group_norm_one_pass(const T* x, const T* gamma, const T* beta, T* y, float* mean, float* rstd, const GroupShape& sh,
                                       float eps, bool silu) {
    __shared__ float scratch[32];
    const long long groups = static_cast<long long>(sh.N) * sh.G, count = sh.count();
    for (long long ng = blockIdx.y; ng < groups; ng += gridDim.y) {
        const long long n = ng / sh.G;
        const int g = static_cast<int>(ng % sh.G);
        float mu, m2;
        chunk_stats(x, sh, n, g, 0, count, scratch, &mu, &m2);
        const float rs = gpu::rsqrt(m2 / static_cast<float>(count) + eps);  // merge_stats of one chunk
        if (threadIdx.x == 0) {
            mean[ng] = mu;
            rstd[ng] = rs;
        }
        normalise_chunk(x, gamma, beta, y, sh, n, g, 0, count, mu, rs, silu);
    }
}

// The gradient reaching the affine output at element i of channel c, and xhat there.
template <class T>
MOBIUS_DEVICE float group_norm_grad_at(const T* x, const T* gamma, const T* beta, const T* dy, long long i, int c, float mu, float rs,
                                       bool silu, float* xhat) {
    *xhat = (gpu::load(x + i) - mu) * rs;
    const float g = gpu::load(dy + i);
    return silu ? through_silu(g, *xhat * gpu::load(gamma + c) + gpu::load(beta + c)) : g;
}

// The sums of g and g*xhat over elements [begin, end) of channel c of sample n, block-reduced (every thread
// gets them): group_norm_bwd_reduce's chunk and group_norm_bwd_one_pass's whole channel alike.
template <class T>
MOBIUS_DEVICE void channel_sums(const T* x, const T* gamma, const T* beta, const T* dy, const GroupShape& sh, long long n, int c, float mu, float rs,
                                long long begin, long long end, bool silu, float* scratch, float* a_out, float* b_out) {
    float a = 0.0f, b = 0.0f;
    for_channel_chunk(sh, n, c, begin, end, [&](long long i) {
        float xhat;
        const float g = group_norm_grad_at(x, gamma, beta, dy, i, c, mu, rs, silu, &xhat);
        a += g;
        b += g * xhat;
    });
    *a_out = gpu::block_sum(a, scratch);
    *b_out = gpu::block_sum(b, scratch);
}

template <class T>
MOBIUS_DEVICE void group_norm_bwd_reduce(const T* x, const T* gamma, const T* beta, const float* mean, const float* rstd, const T* dy,
                                         float* sums, const GroupShape& sh, int splits, bool silu) {
    __shared__ float scratch[32];
    const long long channels = static_cast<long long>(sh.N) * sh.C, count = static_cast<long long>(sh.T) * sh.S;
    const int k = static_cast<int>(blockIdx.x), cg = sh.cg();
    for (long long nc = blockIdx.y; nc < channels; nc += gridDim.y) {
        const long long n = nc / sh.C;
        const int c = static_cast<int>(nc % sh.C);
        const long long ng = n * sh.G + c / cg;
        const float mu = mean[ng], rs = rstd[ng];
        long long begin, end;
        chunk(count, splits, k, &begin, &end);
        float a, b;
        channel_sums(x, gamma, beta, dy, sh, n, c, mu, rs, begin, end, silu, scratch, &a, &b);
        if (threadIdx.x == 0) {
            sums[(nc * splits + k) * 2] = a;
            sums[(nc * splits + k) * 2 + 1] = b;
        }
    }
}

// Group ng's part of group_norm_bwd_dx: its channels' sums from the reduce partials, the parameter-gradient
// partials (chunk 0 writes them), and dx over chunk k of the group.
template <class T>
MOBIUS_DEVICE void group_norm_bwd_dx_group(const T* x, const T* gamma, const T* beta, const float* mean, const float* rstd, const T* dy,
                                           const float* sums, T* dx, const float* addend, float* dgamma_partial, float* dbeta_partial,
                                           const GroupShape& sh, int reduce_splits, int splits, bool silu, long long ng, int k) {
    __shared__ float scratch[32];
    const long long count = sh.count();
    const int cg = sh.cg();
    const float inv_count = 1.0f / static_cast<float>(count);
    const long long n = ng / sh.G;
    const int g = static_cast<int>(ng % sh.G);
    // Channel sums in chunk order (thread j owns channels j, j + blockDim.x, ...), then gamma-weighted
    // group sums over a fixed thread layout: the same bits in every block of the group.
    float sg = 0.0f, sgx = 0.0f;
    for (int cl = static_cast<int>(threadIdx.x); cl < cg; cl += static_cast<int>(blockDim.x)) {
        const int c = g * cg + cl;
        const long long nc = n * sh.C + c;
        float a = 0.0f, b = 0.0f;
        for (int r = 0; r < reduce_splits; ++r) {
            a += sums[(nc * reduce_splits + r) * 2];
            b += sums[(nc * reduce_splits + r) * 2 + 1];
        }
        if (k == 0) {
            if (dbeta_partial != nullptr) dbeta_partial[nc] = a;
            if (dgamma_partial != nullptr) dgamma_partial[nc] = b;
        }
        const float gm = gpu::load(gamma + c);
        sg += gm * a;
        sgx += gm * b;
    }
    sg = gpu::block_sum(sg, scratch);
    sgx = gpu::block_sum(sgx, scratch);
    if (dx == nullptr) return;
    const float k1 = sg * inv_count, k2 = sgx * inv_count, mu = mean[ng], rs = rstd[ng];
    long long begin, end;
    chunk(count, splits, k, &begin, &end);
    for_group_chunk(sh, n, g, begin, end, [&](long long i, int e) {
        const int c = g * cg + e / sh.S;
        float xhat;
        const float gr = group_norm_grad_at(x, gamma, beta, dy, i, c, mu, rs, silu, &xhat);
        const float v = rs * (gr * gpu::load(gamma + c) - k1 - xhat * k2);
        gpu::store(dx + i, plus_addend(v, addend, i));
    });
}

template <class T>
MOBIUS_DEVICE void group_norm_bwd_dx(const T* x, const T* gamma, const T* beta, const float* mean, const float* rstd, const T* dy,
                                     const float* sums, T* dx, const float* addend, float* dgamma_partial, float* dbeta_partial,
                                     const GroupShape& sh, int reduce_splits, int splits, bool silu) {
    const long long groups = static_cast<long long>(sh.N) * sh.G;
    for (long long ng = blockIdx.y; ng < groups; ng += gridDim.y)
        group_norm_bwd_dx_group(x, gamma, beta, mean, rstd, dy, sums, dx, addend, dgamma_partial, dbeta_partial, sh, reduce_splits, splits, silu, ng,
                                static_cast<int>(blockIdx.x));
}

// Both backward passes in one launch where each channel and each group is one chunk: for each group, its
// channels' sums exactly as group_norm_bwd_reduce computes them with one chunk (written to sums), then
// group_norm_bwd_dx's work for the group, reading them back. The same bits in half the launches.
template <class T>
MOBIUS_DEVICE void group_norm_bwd_one_pass(const T* x, const T* gamma, const T* beta, const float* mean, const float* rstd, const T* dy, float* sums,
                                           T* dx, const float* addend, float* dgamma_partial, float* dbeta_partial, const GroupShape& sh, bool silu) {
    __shared__ float scratch[32];
    const long long groups = static_cast<long long>(sh.N) * sh.G, count = static_cast<long long>(sh.T) * sh.S;
    const int cg = sh.cg();
    for (long long ng = blockIdx.y; ng < groups; ng += gridDim.y) {
        const long long n = ng / sh.G;
        const int g = static_cast<int>(ng % sh.G);
        const float mu = mean[ng], rs = rstd[ng];
        for (int cl = 0; cl < cg; ++cl) {
            const int c = g * cg + cl;
            float a, b;
            channel_sums(x, gamma, beta, dy, sh, n, c, mu, rs, 0, count, silu, scratch, &a, &b);
            if (threadIdx.x == 0) {
                sums[(n * sh.C + c) * 2] = a;
                sums[(n * sh.C + c) * 2 + 1] = b;
            }
        }
        __syncthreads();  // the group's channel sums, written by thread 0, are read by every thread below
        group_norm_bwd_dx_group(x, gamma, beta, mean, rstd, dy, sums, dx, addend, dgamma_partial, dbeta_partial, sh, 1, 1, silu, ng, 0);
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
                                       const float* addend, long long rows, int cols) {
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
            const float v = rs * (gpu::load(dyr + j) * gpu::load(gamma + j) - k1 - xhat * k2);
            gpu::store(dxr + j, plus_addend(v, addend, r * cols + j));
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
// SiLU when silu != 0; mean and rstd [N, G]. Two launches with the same grid (splits, min(N*G, 65535)) and
// blockDim.x a multiple of 32 (<= 1024; 256 intended): group_norm_stats_f32 fills stats [N*G, splits, 2],
// group_norm_apply_f32 reads it.
extern "C" __global__ void __launch_bounds__(1024)
    group_norm_stats_f32(const float* __restrict__ x, float* __restrict__ stats, int N, int T, int C, int S, int G, int splits) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && splits >= 1 && blockDim.x % 32 == 0);
    group_norm_stats(x, stats, GroupShape{N, T, C, S, G}, splits);
}
MOBIUS_REGISTER_KERNEL(group_norm_stats_f32);

extern "C" __global__ void __launch_bounds__(1024)
    group_norm_apply_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                         float* __restrict__ y, const float* __restrict__ stats, float* __restrict__ mean, float* __restrict__ rstd,
                         int N, int T, int C, int S, int G, int splits, float eps, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && splits >= 1 && blockDim.x % 32 == 0);
    group_norm_apply(x, gamma, beta, y, stats, mean, rstd, GroupShape{N, T, C, S, G}, splits, eps, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_apply_f32);

// The same in one launch where each group is one chunk: grid (1, min(N*G, 65535)), blockDim.x a multiple of 32.
extern "C" __global__ void __launch_bounds__(1024)
    group_norm_one_pass_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta, float* __restrict__ y,
                            float* __restrict__ mean, float* __restrict__ rstd, int N, int T, int C, int S, int G, float eps, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && gridDim.x == 1 && blockDim.x % 32 == 0);
    group_norm_one_pass(x, gamma, beta, y, mean, rstd, GroupShape{N, T, C, S, G}, eps, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_one_pass_f32);

// Backward of the group norm (same silu flag, mean and rstd from the forward), in two launches.
// group_norm_bwd_reduce_f32, grid (reduce_splits, min(N*C, 65535)): sums [N*C, reduce_splits, 2] of g and g*xhat
// over chunks of each channel's T*S elements, where g = dy, times silu' when fused.
// group_norm_bwd_dx_f32, grid (splits, min(N*G, 65535)): writes dgamma_partial[n*C + c] = sum of g*xhat and
// dbeta_partial[n*C + c] = sum of g (each may be null; dgamma = column_sum over n) and dx (may be null), plus
// addend[i] where addend is given (nullable; another tensor than dx): a residual's gradient, added in the same pass.
extern "C" __global__ void __launch_bounds__(1024)
    group_norm_bwd_reduce_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                              const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
                              float* __restrict__ sums, int N, int T, int C, int S, int G, int reduce_splits, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && reduce_splits >= 1 && blockDim.x % 32 == 0);
    group_norm_bwd_reduce(x, gamma, beta, mean, rstd, dy, sums, GroupShape{N, T, C, S, G}, reduce_splits, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_bwd_reduce_f32);

extern "C" __global__ void __launch_bounds__(1024)
    group_norm_bwd_dx_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                          const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy,
                          const float* __restrict__ sums, float* __restrict__ dx, const float* __restrict__ addend,
                          float* __restrict__ dgamma_partial, float* __restrict__ dbeta_partial, int N, int T, int C, int S, int G,
                          int reduce_splits, int splits, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && reduce_splits >= 1 && splits >= 1 && blockDim.x % 32 == 0);
    group_norm_bwd_dx(x, gamma, beta, mean, rstd, dy, sums, dx, addend, dgamma_partial, dbeta_partial, GroupShape{N, T, C, S, G},
                      reduce_splits, splits, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_bwd_dx_f32);

// Both backward launches in one where every channel and every group is one chunk (reduce_splits == splits == 1):
// grid (1, min(N*G, 65535)); sums [N*C, 1, 2] is still written (scratch), the other arguments as above.
extern "C" __global__ void __launch_bounds__(1024)
    group_norm_bwd_one_pass_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                                const float* __restrict__ mean, const float* __restrict__ rstd, const float* __restrict__ dy, float* sums,
                                float* __restrict__ dx, const float* __restrict__ addend, float* __restrict__ dgamma_partial,
                                float* __restrict__ dbeta_partial, int N, int T, int C, int S, int G, int silu) {
    MOBIUS_REQUIRE(G > 0 && C % G == 0 && gridDim.x == 1 && blockDim.x % 32 == 0);
    group_norm_bwd_one_pass(x, gamma, beta, mean, rstd, dy, sums, dx, addend, dgamma_partial, dbeta_partial, GroupShape{N, T, C, S, G}, silu != 0);
}
MOBIUS_REGISTER_KERNEL(group_norm_bwd_one_pass_f32);

// Layer norm of x [rows, cols] over cols; mean and rstd [rows]. One warp per row: blockDim.x a multiple of 32
// (<= 256; 256 = 8 rows per block), any grid (ceil(rows/8) or a cap).
extern "C" __global__ void __launch_bounds__(256)
    layer_norm_fwd_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ beta,
                       float* __restrict__ y, float* __restrict__ mean, float* __restrict__ rstd, long long rows, int cols, float eps) {
    layer_norm_forward(x, gamma, beta, y, mean, rstd, rows, cols, eps);
}
MOBIUS_REGISTER_KERNEL(layer_norm_fwd_f32);

// dx of layer_norm_fwd_f32, plus addend[i] where addend is given (nullable; another tensor than dx). Launch as the forward.
extern "C" __global__ void __launch_bounds__(256)
    layer_norm_bwd_f32(const float* __restrict__ x, const float* __restrict__ gamma, const float* __restrict__ mean,
                       const float* __restrict__ rstd, const float* __restrict__ dy, float* __restrict__ dx, const float* __restrict__ addend,
                       long long rows, int cols) {
    layer_norm_backward(x, gamma, mean, rstd, dy, dx, addend, rows, cols);
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
