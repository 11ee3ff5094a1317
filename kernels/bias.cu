// Per-channel bias and the deterministic reductions that produce bias and norm-parameter gradients.
//
// Design: no float atomics anywhere, so gradients are bitwise reproducible run to run.
// - add_channel_bias: a grid-stride elementwise pass over x viewed [outer, C, inner].
// - channel_bias_grad: one block per output (grid-stride over outputs), threads striding over the reduced
//   elements, which are contiguous runs of `inner` floats (coalesced when inner >= 32), then a block sum.
//   blockDim is the caller's choice: 256 when each output sums many elements (conv bias: B*F*S), 32 when it
//   sums few (a warp per output, no idle threads).
// - column_sum: the transpose case, dst[j] = sum over rows of src[r, j]: one thread per column walks down
//   the rows, so each warp reads 32 consecutive floats per row (coalesced) and the order of additions is
//   fixed. Rows are split into chunks over gridDim.y, each writing its own partial row; a second call with
//   one chunk reduces the partials. Used for Linear bias gradients, norm dgamma/dbeta partials and the
//   split-K partial sums of the temporal conv weight gradient.
#include "mobius_cuda.h"

namespace {

// I is the index type: 32-bit division is several times cheaper than 64-bit, so tensors below 2^31
// elements (all of them in practice) take the 32-bit path.
template <class I, class T>
MOBIUS_DEVICE void add_channel_bias(const T* x, const T* bias, T* y, I n, I channels, I inner, bool per_outer) {
    const I stride = static_cast<I>(gridDim.x) * blockDim.x;
    for (I i = static_cast<I>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
        const I row = i / inner;  // (o, c)
        const I b = per_outer ? row : row % channels;
        gpu::store(y + i, gpu::load(x + i) + gpu::load(bias + b));
    }
}

template <class T>
MOBIUS_DEVICE void channel_bias_grad(const T* dy, T* db, long long outer, int channels, long long inner, bool per_outer) {
    __shared__ float scratch[32];
    const long long outputs = per_outer ? outer * channels : channels;
    for (long long out = blockIdx.x; out < outputs; out += gridDim.x) {
        float acc = 0.0f;
        if (per_outer) {  // out = o*C + c: one contiguous run of `inner` elements
            const T* run = dy + out * inner;
            for (long long i = threadIdx.x; i < inner; i += blockDim.x) acc += gpu::load(run + i);
        } else {  // out = c: element k = o*inner + i of the channel; (o, i) advance by divmod(blockDim, inner)
            const long long o_step = blockDim.x / inner, i_step = blockDim.x % inner;
            long long o = threadIdx.x / inner, i = threadIdx.x % inner;
            while (o < outer) {
                acc += gpu::load(dy + (o * channels + out) * inner + i);
                i += i_step;
                o += o_step;
                if (i >= inner) i -= inner, ++o;
            }
        }
        acc = gpu::block_sum(acc, scratch);
        if (threadIdx.x == 0) gpu::store(db + out, acc);
    }
}

template <class T>
MOBIUS_DEVICE void column_sum(const T* src, T* dst, long long rows, int cols, long long rows_per_split) {
    const long long splits = (rows + rows_per_split - 1) / rows_per_split;
    for (long long s = blockIdx.y; s < splits; s += gridDim.y) {
        const long long r_end = rows < (s + 1) * rows_per_split ? rows : (s + 1) * rows_per_split;
        for (long long j = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; j < cols;
             j += static_cast<long long>(gridDim.x) * blockDim.x) {
            float acc = 0.0f;
            for (long long r = s * rows_per_split; r < r_end; ++r) acc += gpu::load(src + r * cols + j);
            gpu::store(dst + s * cols + j, acc);
        }
    }
}

}  // namespace

// y[o, c, i] = x[o, c, i] + bias[c], or + bias[o*C + c] when per_outer != 0; x viewed [outer, C, inner],
// y may alias x. blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    add_channel_bias_f32(const float* x, const float* bias, float* y, long long outer, int channels, long long inner, int per_outer) {
    const long long n = outer * channels * inner;
    const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
    if (n < (1ll << 31) && stride < (1ll << 31))  // i + stride stays below 2^32: no wrap-around
        add_channel_bias<unsigned>(x, bias, y, static_cast<unsigned>(n), static_cast<unsigned>(channels), static_cast<unsigned>(inner), per_outer != 0);
    else
        add_channel_bias<unsigned long long>(x, bias, y, n, channels, inner, per_outer != 0);
}
MOBIUS_REGISTER_KERNEL(add_channel_bias_f32);

// db[c] = sum over o, i of dy[o, c, i]; with per_outer != 0, db[o*C + c] = sum over i of dy[o, c, i].
// blockDim.x a multiple of 32 (<= 1024); one block per output, grid-stride: any grid (e.g. min(outputs, 65535)).
extern "C" __global__ void __launch_bounds__(1024)
    channel_bias_grad_f32(const float* __restrict__ dy, float* __restrict__ db, long long outer, int channels, long long inner,
                          int per_outer) {
    channel_bias_grad(dy, db, outer, channels, inner, per_outer != 0);
}
MOBIUS_REGISTER_KERNEL(channel_bias_grad_f32);

// dst[s, j] = sum of src[r, j] over rows r in [s*rows_per_split, (s+1)*rows_per_split) for src [rows, cols];
// dst has ceil(rows / rows_per_split) rows (rows_per_split >= rows gives the plain column sum).
// Grid: x covers the columns (any), y the splits (any, grid-stride); blockDim.x <= 256.
extern "C" __global__ void __launch_bounds__(256)
    column_sum_f32(const float* __restrict__ src, float* __restrict__ dst, long long rows, int cols, long long rows_per_split) {
    column_sum(src, dst, rows, cols, rows_per_split);
}
MOBIUS_REGISTER_KERNEL(column_sum_f32);

// Two column sums of the same shape in one launch, blockIdx.z choosing the pair (grid z = 2): a norm's gamma
// and beta gradients from their partials. Otherwise as column_sum_f32.
extern "C" __global__ void __launch_bounds__(256)
    column_sum_pair_f32(const float* __restrict__ src0, float* __restrict__ dst0, const float* __restrict__ src1, float* __restrict__ dst1,
                        long long rows, int cols, long long rows_per_split) {
    if (blockIdx.z == 0)
        column_sum(src0, dst0, rows, cols, rows_per_split);
    else
        column_sum(src1, dst1, rows, cols, rows_per_split);
}
MOBIUS_REGISTER_KERNEL(column_sum_pair_f32);
