// Element-type casts between fp32 and bf16 storage (gpu::load / gpu::store do the conversion).
//
// Used to keep frozen weights in bf16, half their fp32 bytes, and widen one layer's weights to fp32 just
// before its GEMM or convolution. Pure bandwidth: a grid-stride loop with consecutive threads on consecutive
// elements. Narrowing rounds to nearest, ties to even, NaN stays NaN; widening is exact. Any grid,
// blockDim.x at most 256.
#include "mobius_cuda.h"

namespace {

template <class S, class D>
MOBIUS_DEVICE void cast(const S* __restrict__ x, D* __restrict__ y, long long n) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(y + i, gpu::load(x + i)); });
}

}  // namespace

// y[i] = bf16(x[i]), rounded to nearest even.
extern "C" __global__ void __launch_bounds__(256) cast_f32_bf16(const float* __restrict__ x, gpu::bf16* __restrict__ y, long long n) {
    cast(x, y, n);
}
MOBIUS_REGISTER_KERNEL(cast_f32_bf16);

// y[i] = float(x[i]), exact.
extern "C" __global__ void __launch_bounds__(256) cast_bf16_f32(const gpu::bf16* __restrict__ x, float* __restrict__ y, long long n) {
    cast(x, y, n);
}
MOBIUS_REGISTER_KERNEL(cast_bf16_f32);
