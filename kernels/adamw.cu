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
#include "mobius_cuda.h"

namespace {

MOBIUS_DEVICE float power(float base, int exponent) {
    float result = 1.0f;
    for (; exponent > 0; exponent >>= 1, base *= base)
        if (exponent & 1) result *= base;
    return result;
}

}  // namespace

// One AdamW step over n parameters; step is 1-based. p, m, v updated in place. blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    adamw_f32(float* __restrict__ p, const float* __restrict__ grad, float* __restrict__ m, float* __restrict__ v, long long n,
              float lr, float beta1, float beta2, float eps, float weight_decay, int step, float grad_scale) {
    const float correction1 = 1.0f - power(beta1, step);
    const float correction2 = 1.0f - power(beta2, step);
    const float decay = 1.0f - lr * weight_decay;
    gpu::grid_stride(n, [&](long long i) {
        const float g = grad_scale * grad[i];
        const float mi = beta1 * m[i] + (1.0f - beta1) * g;
        const float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] = p[i] * decay - lr * (mi / correction1) / (gpu::sqrt(vi / correction2) + eps);
    });
}
MOBIUS_REGISTER_KERNEL(adamw_f32);
