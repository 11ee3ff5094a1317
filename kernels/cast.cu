// Element-type casts between fp32 and bf16 storage (gpu::load / gpu::store do the conversion), and fp32 to and
// from int8 blocks (below).
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

// ---- int8 blocks: activations kept for backward ---------------------------------------------------
//
// A block of 128 consecutive elements shares one fp32 scale. Its largest magnitude m maps to 127: scale = m / 127,
// q[i] = rint(x[i] * (127 / m)) (to nearest, ties to even; clamped to +-127), read back as q[i] * scale. A block
// of zeros has scale 0; a block holding a NaN or an infinity has scale NaN and q 0, so it reads back as NaN and a
// non-finite activation stays visible. Each division is rounded once (IEEE) and each product stands alone (no
// fused multiply-add), so every build, and the CPU backend, give the same bits.

namespace {

#if defined(MOBIUS_SIM_BUILD)
MOBIUS_DEVICE float div_rn(float a, float b) { return a / b; }
MOBIUS_DEVICE float rint_even(float v) { return std::nearbyint(v); }
#elif defined(__NVCC__)
MOBIUS_DEVICE float div_rn(float a, float b) { return __fdiv_rn(a, b); }
MOBIUS_DEVICE float rint_even(float v) { return rintf(v); }
#else
MOBIUS_DEVICE float div_rn(float a, float b) { return __nvvm_div_rn_f(a, b); }
MOBIUS_DEVICE float rint_even(float v) { return __builtin_rintf(v); }
#endif

constexpr int kInt8Block = 128;

}  // namespace

// One warp per block of 128 elements, four per lane; the warps stride over the blocks (any grid, blockDim.x a
// multiple of 32, at most 256). q holds n int8 values, scales one fp32 per block.
extern "C" __global__ void __launch_bounds__(256) quantize_f32_i8b(const float* __restrict__ x, signed char* __restrict__ q,
                                                                   float* __restrict__ scales, long long n) {
    const long long blocks = (n + kInt8Block - 1) / kInt8Block;
    const int lane = threadIdx.x & 31;
    const long long warps = (static_cast<long long>(gridDim.x) * blockDim.x) >> 5;
    for (long long b = (static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5; b < blocks; b += warps) {
        float v[kInt8Block / 32];
        float m = 0.0f;
        int bad = 0;
        for (int j = 0; j < kInt8Block / 32; ++j) {
            const long long i = b * kInt8Block + j * 32 + lane;
            v[j] = i < n ? x[i] : 0.0f;
            const unsigned magnitude = gpu::float_bits(v[j]) & 0x7fffffffu;
            if (magnitude >= 0x7f800000u) {
                bad = 1;
            } else {
                m = gpu::max(m, gpu::bits_float(magnitude));
            }
        }
        for (int offset = 16; offset > 0; offset >>= 1) {
            m = gpu::max(m, __shfl_xor_sync(gpu::kFullMask, m, offset));
            bad |= __shfl_xor_sync(gpu::kFullMask, bad, offset);
        }
        float scale = 0.0f, inv = 0.0f;
        if (bad) {
            scale = gpu::nan();
        } else if (m > 0.0f) {
            scale = div_rn(m, 127.0f);
            inv = div_rn(127.0f, m);
        }
        for (int j = 0; j < kInt8Block / 32; ++j) {
            const long long i = b * kInt8Block + j * 32 + lane;
            if (i < n) {
                const float r = bad ? 0.0f : rint_even(v[j] * inv);
                q[i] = static_cast<signed char>(static_cast<int>(r > 127.0f ? 127.0f : (r < -127.0f ? -127.0f : r)));
            }
        }
        if (lane == 0) scales[b] = scale;
    }
}
MOBIUS_REGISTER_KERNEL(quantize_f32_i8b);

// y[i] = q[i] * scales[i / 128]. Grid-stride, any grid, blockDim.x at most 256.
extern "C" __global__ void __launch_bounds__(256) dequantize_i8b_f32(const signed char* __restrict__ q, const float* __restrict__ scales,
                                                                     float* __restrict__ y, long long n) {
    gpu::grid_stride(n, [&](long long i) { y[i] = static_cast<float>(q[i]) * scales[i / kInt8Block]; });
}
MOBIUS_REGISTER_KERNEL(dequantize_i8b_f32);

// y[i] = bits, a bf16 pattern (Fill on bf16 storage, e.g. zeroed optimiser moments). Grid-stride, any grid,
// blockDim.x at most 256.
extern "C" __global__ void __launch_bounds__(256) fill_bf16(gpu::bf16* __restrict__ y, unsigned bits, long long n) {
    const gpu::bf16 value{static_cast<unsigned short>(bits)};
    gpu::grid_stride(n, [&](long long i) { y[i] = value; });
}
MOBIUS_REGISTER_KERNEL(fill_bf16);
