// Fused AdamW step (PyTorch semantics: decoupled weight decay, bias-corrected moments, gradient scale).
//
// One pass over the four buffers, grid-stride, one element per thread per iteration: 16 bytes read and
// 12 written per parameter, which is the whole cost. The bias corrections 1 - beta^t are computed on the
// device from the integer step by repeated squaring (about 2 log2(t) float roundings, relative error
// ~1e-6 at t = 10^5), identical in every thread.
//   g = scale * grad
//   m = beta1 m + (1 - beta1) g
//   v = beta2 v + (1 - beta2) g^2
//   p = p (1 - lr wd) - lr (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)
//
// adamw_multi_f32 steps every trainable tensor in one launch (a model has hundreds, most of them small, and
// one launch each made the optimiser a third of a small model's launches): a table on the device lists the
// tensors, each cut into chunks of chunk_size elements, and each block takes chunks, finding a chunk's
// tensor by binary search over the table's first_chunk column. Per element the arithmetic is adamw_f32's, so
// the two give the same bits.
#include "mobius_cuda.h"

namespace {

MOBIUS_DEVICE float power(float base, int exponent) {
    float result = 1.0f;
    for (; exponent > 0; exponent >>= 1, base *= base)
        if (exponent & 1) result *= base;
    return result;
}

struct AdamWCoefficients {
    float correction1, correction2, decay;
};

MOBIUS_DEVICE AdamWCoefficients coefficients(float lr, float beta1, float beta2, float weight_decay, int step) {
    return {1.0f - power(beta1, step), 1.0f - power(beta2, step), 1.0f - lr * weight_decay};
}

MOBIUS_DEVICE void adamw_element(float* p, const float* grad, float* m, float* v, long long i, const AdamWCoefficients& c, float lr,
                                 float beta1, float beta2, float eps, float grad_scale) {
    const float g = grad_scale * grad[i];
    const float mi = beta1 * m[i] + (1.0f - beta1) * g;
    const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * c.decay - lr * (mi / c.correction1) / (gpu::sqrt(vi / c.correction2) + eps);
}

// bf16 moments (--optimizer-state bf16): read widened, updated in fp32 as above (the parameter step uses the fp32
// values), stored rounded stochastically: the 16 low bits of a hash of (step, tensor, element) are added to the
// fp32 bits before they are cut to the top 16, so a value rounds up with probability its distance from the lower
// neighbour over the gap. Unbiased, which round-to-nearest is not here: v moves by (1 - beta2) = 0.001 of itself a
// step, less than half a bf16 gap (2^-9), so to-nearest would keep it from ever moving. A NaN or infinity rounds
// to nearest (stays what it is).
MOBIUS_DEVICE unsigned mix(unsigned x) {
    x ^= x >> 16;
    x *= 0x7feb352du;
    x ^= x >> 15;
    x *= 0x846ca68bu;
    x ^= x >> 16;
    return x;
}

MOBIUS_DEVICE unsigned stochastic_bits(int step, int tensor, long long i) {
    return mix(static_cast<unsigned>(i) ^ mix(static_cast<unsigned>(i >> 32) ^ mix(static_cast<unsigned>(tensor) ^ mix(static_cast<unsigned>(step)))));
}

MOBIUS_DEVICE gpu::bf16 to_bf16_stochastic(float value, unsigned random) {
    const unsigned u = gpu::float_bits(value);
    if ((u & 0x7f800000u) == 0x7f800000u) return gpu::float_to_bf16(value);
    return gpu::bf16{static_cast<unsigned short>((u + (random & 0xffffu)) >> 16)};
}

MOBIUS_DEVICE void adamw_element_bf16(float* p, const float* grad, gpu::bf16* m, gpu::bf16* v, long long i, int tensor, int step,
                                      const AdamWCoefficients& c, float lr, float beta1, float beta2, float eps, float grad_scale) {
    const float g = grad_scale * grad[i];
    const float mi = beta1 * gpu::bf16_to_float(m[i]) + (1.0f - beta1) * g;
    const float vi = beta2 * gpu::bf16_to_float(v[i]) + (1.0f - beta2) * g * g;
    const unsigned r = stochastic_bits(step, tensor, i);
    m[i] = to_bf16_stochastic(mi, r);
    v[i] = to_bf16_stochastic(vi, mix(r));
    p[i] = p[i] * c.decay - lr * (mi / c.correction1) / (gpu::sqrt(vi / c.correction2) + eps);
}

}  // namespace

// One AdamW step over n parameters; step is 1-based. p, m, v updated in place. blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    adamw_f32(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v, long long n,
              float lr, float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale) {
    const AdamWCoefficients c = coefficients(lr, beta1, beta2, weight_decay, step);
    gpu::grid_stride(n, [&](long long i) { adamw_element(p, grad, m, v, i, c, lr, beta1, beta2, eps, grad_scale); });
}
MOBIUS_REGISTER_KERNEL(adamw_f32);

// One AdamW step over every tensor of the table (count rows, chunks chunks of chunk_size elements in all; row
// t's chunks are first_chunk .. first_chunk + ceil(n / chunk_size) - 1, rows in order). blockDim.x <= 256, any
// grid (blocks take chunks grid-stride).
extern "C" __global__ void __launch_bounds__(256)
    adamw_multi_f32(const gpu::AdamWSlot* __restrict__ slots, int count, long long chunks, long long chunk_size, float lr, float beta1,
                    float beta2, float eps, float weight_decay, int step, float grad_scale) {
    const AdamWCoefficients c = coefficients(lr, beta1, beta2, weight_decay, step);
    for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
        const gpu::AdamWSlot& s = slots[gpu::slot_of(slots, count, chunk)];
        const long long begin = (chunk - s.first_chunk) * chunk_size;
        const long long end = begin + chunk_size < s.n ? begin + chunk_size : s.n;
        for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) adamw_element(s.p, s.grad, s.m, s.v, i, c, lr, beta1, beta2, eps, grad_scale);
    }
}
MOBIUS_REGISTER_KERNEL(adamw_multi_f32);

// adamw_multi_f32 with bf16 moments (the table's m and v point at bf16 arrays), stored by stochastic rounding
// (adamw_element_bf16; the tensor index in the hash is the table row). blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    adamw_multi_bf16m(const gpu::AdamWSlot* __restrict__ slots, int count, long long chunks, long long chunk_size, float lr, float beta1,
                      float beta2, float eps, float weight_decay, int step, float grad_scale) {
    const AdamWCoefficients c = coefficients(lr, beta1, beta2, weight_decay, step);
    for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
        const int row = gpu::slot_of(slots, count, chunk);
        const gpu::AdamWSlot& s = slots[row];
        const long long begin = (chunk - s.first_chunk) * chunk_size;
        const long long end = begin + chunk_size < s.n ? begin + chunk_size : s.n;
        gpu::bf16* m = reinterpret_cast<gpu::bf16*>(s.m);
        gpu::bf16* v = reinterpret_cast<gpu::bf16*>(s.v);
        for (long long i = begin + threadIdx.x; i < end; i += blockDim.x)
            adamw_element_bf16(s.p, s.grad, m, v, i, row, step, c, lr, beta1, beta2, eps, grad_scale);
    }
}
MOBIUS_REGISTER_KERNEL(adamw_multi_bf16m);
