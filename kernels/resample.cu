// 2x2 resampling: average pool and nearest x2 upsample, forward and backward, as two kernels.
//
// The four ops are two shapes of data movement: avg-pool forward and upsample backward sum each 2x2 window
// (scaled by 1/4 and 1), avg-pool backward and upsample forward copy one value to a 2x2 window (scaled by 1/4
// and 1). Each kernel runs one thread per output element, grid-stride, so writes are coalesced and every
// output is written exactly once (no atomics).
//   avg_pool_2x2 forward:  window2x2_sum(x, y, planes, H/2, W/2, 0.25)
//   avg_pool_2x2 backward: broadcast2x2(dy, dx, planes, H/2, W/2, 0.25)
//   upsample_2x forward:   broadcast2x2(x, y, planes, H, W, 1)
//   upsample_2x backward:  window2x2_sum(dy, dx, planes, H, W, 1)
#include "mobius_cuda.h"

namespace {

template <class T>
MOBIUS_DEVICE void window_sum(const T* x, T* y, long long planes, int h, int w, float scale) {
    gpu::grid_stride(planes * h * w, [&](long long i) {
        const long long p = i / (static_cast<long long>(h) * w);
        const int rem = static_cast<int>(i - p * h * w);
        const int r = rem / w, c = rem - r * w;
        const T* top = x + (p * 2 * h + 2 * r) * (2LL * w) + 2 * c;
        const T* bottom = top + 2 * w;
        gpu::store(y + i, scale * (gpu::load(top) + gpu::load(top + 1) + gpu::load(bottom) + gpu::load(bottom + 1)));
    });
}

template <class T>
MOBIUS_DEVICE void broadcast(const T* x, T* y, long long planes, int h, int w, float scale) {
    gpu::grid_stride(planes * 4 * h * w, [&](long long i) {  // i indexes y [planes, 2h, 2w]
        const long long p = i / (4LL * h * w);
        const int rem = static_cast<int>(i - p * 4 * h * w);
        const int r = rem / (2 * w), c = rem - r * 2 * w;
        gpu::store(y + i, scale * gpu::load(x + (p * h + r / 2) * w + c / 2));
    });
}

}  // namespace

// y[p, i, j] = scale * (x[p, 2i, 2j] + x[p, 2i, 2j+1] + x[p, 2i+1, 2j] + x[p, 2i+1, 2j+1]) for x [planes, 2h, 2w],
// y [planes, h, w]. blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    window2x2_sum_f32(const float* __restrict__ x, float* __restrict__ y, long long planes, int h, int w, float scale) {
    window_sum(x, y, planes, h, w, scale);
}
MOBIUS_REGISTER_KERNEL(window2x2_sum_f32);

// y[p, i, j] = scale * x[p, i/2, j/2] for x [planes, h, w], y [planes, 2h, 2w]. blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    broadcast2x2_f32(const float* __restrict__ x, float* __restrict__ y, long long planes, int h, int w, float scale) {
    broadcast(x, y, planes, h, w, scale);
}
MOBIUS_REGISTER_KERNEL(broadcast2x2_f32);
