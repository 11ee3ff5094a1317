// Row softmax forward (optionally writing the log-sum-exp, for attention done with cuBLAS GEMMs) and backward.
//
// Design: one warp per row, rows grid-strided over all warps of the grid. Rows are short to moderate (77 text
// tokens, up to 4096 pixels for spatial attention scores), so a warp covers a row with lanes on consecutive
// columns (coalesced) and all reductions stay in registers via shuffles, with no shared memory and no
// barriers. The forward pass is the online softmax: one read computes the running max and the sum of
// exp(x - max) rescaled as the max grows, a second read writes exp(x - max) / sum; the row is still in L1/L2.
// blockDim.x must be a multiple of 32 (256 intended: 8 rows per block); grid any (rows/8 or a cap).
#include "mobius_cuda.h"

namespace {

template <class T>
MOBIUS_DEVICE void softmax_forward(const T* x, T* y, float* lse, long long rows, int cols) {
    const int lane = threadIdx.x & 31;
    for (long long r = gpu::global_warp(); r < rows; r += gpu::global_warps()) {
        const T* xr = x + r * cols;
        float m = -gpu::inf(), s = 0.0f;
        for (int j = lane; j < cols; j += 32) {
            const float v = gpu::load(xr + j);
            if (v > m) {
                s = s * gpu::exp(m - v) + 1.0f;
                m = v;
            } else if (v != -gpu::inf()) {  // a masked -inf column adds nothing (and must not make exp(-inf + inf))
                s += gpu::exp(v - m);
            }
        }
        const float row_max = gpu::warp_max(m);
        // lanes that saw no column have m = -inf and s = 0: exp(-inf) = 0 keeps them out of the sum
        const float sum = gpu::warp_sum(m == -gpu::inf() ? 0.0f : s * gpu::exp(m - row_max));
        const float inv = 1.0f / sum;
        T* yr = y + r * cols;
        for (int j = lane; j < cols; j += 32) gpu::store(yr + j, gpu::exp(gpu::load(xr + j) - row_max) * inv);
        if (lse != nullptr && lane == 0) lse[r] = row_max + gpu::log(sum);
    }
}

template <class T>
MOBIUS_DEVICE void softmax_backward(const T* y, const T* dy, T* dx, long long rows, int cols) {
    const int lane = threadIdx.x & 31;
    for (long long r = gpu::global_warp(); r < rows; r += gpu::global_warps()) {
        const T* yr = y + r * cols;
        const T* dyr = dy + r * cols;
        float dot = 0.0f;
        for (int j = lane; j < cols; j += 32) dot += gpu::load(yr + j) * gpu::load(dyr + j);
        dot = gpu::warp_sum(dot);
        T* dxr = dx + r * cols;
        for (int j = lane; j < cols; j += 32) gpu::store(dxr + j, gpu::load(yr + j) * (gpu::load(dyr + j) - dot));
    }
}

}  // namespace

// y[r, :] = softmax(x[r, :]) for x, y [rows, cols]; when lse is not null, lse[r] = log(sum_j exp(x[r, j])).
// y may alias x. blockDim.x a multiple of 32, at most 256.
extern "C" __global__ void __launch_bounds__(256) softmax_fwd_f32(const float* x, float* y, float* lse, long long rows, int cols) {
    softmax_forward(x, y, lse, rows, cols);
}
MOBIUS_REGISTER_KERNEL(softmax_fwd_f32);

// dx = y * (dy - sum_j dy*y) row-wise; dx may alias dy.
extern "C" __global__ void __launch_bounds__(256) softmax_bwd_f32(const float* y, const float* dy, float* dx, long long rows, int cols) {
    softmax_backward(y, dy, dx, rows, cols);
}
MOBIUS_REGISTER_KERNEL(softmax_bwd_f32);
