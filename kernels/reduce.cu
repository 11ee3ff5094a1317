// Full reductions (sum, sum of squares for the global gradient norm) and the MSE loss.
//
// Design: deterministic two-stage reductions instead of float atomics, so the loss and the gradient norm
// are bitwise reproducible for a fixed launch shape. Stage 1 (`*_partial`): every block sums a grid-stride
// slice of the input (coalesced, each thread accumulating in a register) and writes one partial per block.
// Stage 2 (`reduce_finish`): a single block sums the partials and writes or accumulates the result, scaled.
//   Sum(x, out):                 sum_partial(x) -> partial[P]; reduce_finish(partial, P, out, 1, 0)
//   SumSquaresAccumulate(x, out): sumsq_partial(x) -> partial[P]; reduce_finish(partial, P, out, 1, 1)
//   MseForward(a, b, out):       sqdiff_partial(a, b) -> partial[P]; reduce_finish(partial, P, out, 1/n, 0)
// P = gridDim.x of stage 1 (a few blocks per SM, e.g. 2 * SMs; at most a few thousand).
#include "mobius_cuda.h"

namespace {

struct Identity {
    static MOBIUS_DEVICE float term(const float* a, const float*, long long i) { return a[i]; }
};
struct Square {
    static MOBIUS_DEVICE float term(const float* a, const float*, long long i) { return a[i] * a[i]; }
};
struct SquaredDifference {
    static MOBIUS_DEVICE float term(const float* a, const float* b, long long i) {
        const float d = a[i] - b[i];
        return d * d;
    }
};

template <class Term>
MOBIUS_DEVICE void partial_sums(const float* a, const float* b, long long n, float* partial) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    gpu::grid_stride(n, [&](long long i) { acc += Term::term(a, b, i); });
    acc = gpu::block_sum(acc, scratch);
    if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

MOBIUS_DEVICE void finish(const float* partial, int count, float* out, float scale, bool accumulate) {
    __shared__ float scratch[32];
    float acc = 0.0f;
    for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partial[i];
    acc = gpu::block_sum(acc, scratch);
    if (threadIdx.x == 0) out[0] = (accumulate ? out[0] : 0.0f) + scale * acc;
}

}  // namespace

// partial[blockIdx.x] = sum of x over this block's grid-stride slice. blockDim.x a multiple of 32, <= 256.
extern "C" __global__ void __launch_bounds__(256) sum_partial_f32(const float* __restrict__ x, long long n, float* __restrict__ partial) {
    partial_sums<Identity>(x, nullptr, n, partial);
}
MOBIUS_REGISTER_KERNEL(sum_partial_f32);

// partial[blockIdx.x] = sum of x^2 over this block's slice.
extern "C" __global__ void __launch_bounds__(256) sumsq_partial_f32(const float* __restrict__ x, long long n, float* __restrict__ partial) {
    partial_sums<Square>(x, nullptr, n, partial);
}
MOBIUS_REGISTER_KERNEL(sumsq_partial_f32);

// The sum of squares of many tensors in one launch (the global gradient norm over every trainable tensor):
// partial[chunk] = sum of x^2 over one chunk of chunk_size elements of one tensor of the table (see
// adamw_multi_f32 in adamw.cu for the layout), for every chunk; reduce_finish_f32 then sums the chunks' partials.
// blockDim.x a multiple of 32, <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    sumsq_multi_partial_f32(const gpu::SumSlot* __restrict__ slots, int count, long long chunks, long long chunk_size, float* __restrict__ partial) {
    __shared__ float scratch[32];
    for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
        const gpu::SumSlot& s = slots[gpu::slot_of(slots, count, chunk)];
        const long long begin = (chunk - s.first_chunk) * chunk_size;
        const long long end = begin + chunk_size < s.n ? begin + chunk_size : s.n;
        float acc = 0.0f;
        for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) acc += s.x[i] * s.x[i];
        acc = gpu::block_sum(acc, scratch);
        if (threadIdx.x == 0) partial[chunk] = acc;  // block_sum syncs before it reuses scratch
    }
}
MOBIUS_REGISTER_KERNEL(sumsq_multi_partial_f32);

// partial[blockIdx.x] = sum of (a - b)^2 over this block's slice.
extern "C" __global__ void __launch_bounds__(256)
    sqdiff_partial_f32(const float* __restrict__ a, const float* __restrict__ b, long long n, float* __restrict__ partial) {
    partial_sums<SquaredDifference>(a, b, n, partial);
}
MOBIUS_REGISTER_KERNEL(sqdiff_partial_f32);

// out[0] = (accumulate ? out[0] : 0) + scale * sum(partial[0 .. count)). One block only: grid (1),
// blockDim.x a multiple of 32, <= 1024.
extern "C" __global__ void __launch_bounds__(1024)
    reduce_finish_f32(const float* __restrict__ partial, int count, float* __restrict__ out, float scale, int accumulate) {
    MOBIUS_REQUIRE(gridDim.x == 1 && gridDim.y == 1 && gridDim.z == 1);
    finish(partial, count, out, scale, accumulate != 0);
}
MOBIUS_REGISTER_KERNEL(reduce_finish_f32);

// da = dout * 2 (a - b) / n, the gradient of mean((a - b)^2). blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    mse_bwd_f32(const float* __restrict__ a, const float* __restrict__ b, float* __restrict__ da, long long n, float dout) {
    const float scale = 2.0f * dout / static_cast<float>(n);
    gpu::grid_stride(n, [&](long long i) { da[i] = scale * (a[i] - b[i]); });
}
MOBIUS_REGISTER_KERNEL(mse_bwd_f32);
