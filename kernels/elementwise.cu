// Elementwise ops: add, mul, scale, fill, SiLU, GELU (tanh form), GEGLU.
//
// Design: these are pure bandwidth. One grid-stride loop per op with consecutive threads on consecutive
// elements (every warp access is one fully coalesced 128-byte transaction per operand) and 64-bit indices so
// tensors past 2^31 elements work. Any grid size is correct; a grid of about 16 blocks per SM keeps enough
// loads in flight without paying for millions of tiny blocks. Blocks have at most 256 threads
// (__launch_bounds__), any multiple of 32 up to that is fine; 256 is the intended size.
// Math is fp32 whatever the storage type T (gpu::load / gpu::store convert).
//
// GELU uses the identity 0.5 x (1 + tanh(u)) = x * sigmoid(2u), u = sqrt(2/pi) (x + 0.044715 x^3): one exp,
// no cancellation near x = 0, and the derivative falls out of the same sigmoid.
#include "mobius_cuda.h"

namespace {

constexpr float kGeluK0 = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluK1 = 0.044715f;

struct Silu {
    static MOBIUS_DEVICE float forward(float x) { return x * gpu::sigmoid(x); }
    static MOBIUS_DEVICE float derivative(float x) {
        const float s = gpu::sigmoid(x);
        return s * (1.0f + x * (1.0f - s));
    }
};

struct Gelu {
    static MOBIUS_DEVICE float forward(float x) { return x * gpu::sigmoid(2.0f * kGeluK0 * (x + kGeluK1 * x * x * x)); }
    static MOBIUS_DEVICE float derivative(float x) {
        const float s = gpu::sigmoid(2.0f * kGeluK0 * (x + kGeluK1 * x * x * x));
        return s + 2.0f * x * s * (1.0f - s) * kGeluK0 * (1.0f + 3.0f * kGeluK1 * x * x);
    }
};

template <class T>
MOBIUS_DEVICE void add(const T* a, const T* b, T* y, long long n, float alpha, float beta) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(y + i, alpha * gpu::load(a + i) + beta * gpu::load(b + i)); });
}

template <class T>
MOBIUS_DEVICE void mul(const T* a, const T* b, T* y, long long n) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(y + i, gpu::load(a + i) * gpu::load(b + i)); });
}

template <class T>
MOBIUS_DEVICE void scale(const T* x, T* y, long long n, float alpha) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(y + i, alpha * gpu::load(x + i)); });
}

template <class T>
MOBIUS_DEVICE void fill(T* y, long long n, float value) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(y + i, value); });
}

template <class Act, class T>
MOBIUS_DEVICE void activation_forward(const T* x, T* y, long long n) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(y + i, Act::forward(gpu::load(x + i))); });
}

template <class Act, class T>
MOBIUS_DEVICE void activation_backward(const T* x, const T* dy, T* dx, long long n) {
    gpu::grid_stride(n, [&](long long i) { gpu::store(dx + i, gpu::load(dy + i) * Act::derivative(gpu::load(x + i))); });
}

template <class T>
MOBIUS_DEVICE void geglu_forward(const T* x, T* y, long long rows, int hidden) {
    gpu::grid_stride(rows * hidden, [&](long long i) {
        const long long r = i / hidden, j = i - r * hidden;
        const T* row = x + r * 2 * hidden;
        gpu::store(y + i, gpu::load(row + j) * Gelu::forward(gpu::load(row + hidden + j)));
    });
}

template <class T>
MOBIUS_DEVICE void geglu_backward(const T* x, const T* dy, T* dx, long long rows, int hidden) {
    gpu::grid_stride(rows * hidden, [&](long long i) {
        const long long r = i / hidden, j = i - r * hidden;
        const T* row = x + r * 2 * hidden;
        T* drow = dx + r * 2 * hidden;
        const float a = gpu::load(row + j), g = gpu::load(row + hidden + j), d = gpu::load(dy + i);
        gpu::store(drow + j, d * Gelu::forward(g));
        gpu::store(drow + hidden + j, d * a * Gelu::derivative(g));
    });
}

}  // namespace

// ---- entry points (fp32 storage). All: blockDim.x <= 256, any grid; n counts elements. ----------------

// y = alpha * a + beta * b; y may alias a or b.
extern "C" __global__ void __launch_bounds__(256)
    ew_add_f32(const float* a, const float* b, float* y, long long n, float alpha, float beta) {
    add(a, b, y, n, alpha, beta);
}
MOBIUS_REGISTER_KERNEL(ew_add_f32);

// y = a * b; y may alias a or b.
extern "C" __global__ void __launch_bounds__(256) ew_mul_f32(const float* a, const float* b, float* y, long long n) {
    mul(a, b, y, n);
}
MOBIUS_REGISTER_KERNEL(ew_mul_f32);

// y = alpha * x; y may alias x.
extern "C" __global__ void __launch_bounds__(256) ew_scale_f32(const float* x, float* y, long long n, float alpha) {
    scale(x, y, n, alpha);
}
MOBIUS_REGISTER_KERNEL(ew_scale_f32);

// y[i] = value.
extern "C" __global__ void __launch_bounds__(256) ew_fill_f32(float* y, long long n, float value) { fill(y, n, value); }
MOBIUS_REGISTER_KERNEL(ew_fill_f32);

// y = silu(x) = x * sigmoid(x).
extern "C" __global__ void __launch_bounds__(256) silu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
    activation_forward<Silu>(x, y, n);
}
MOBIUS_REGISTER_KERNEL(silu_fwd_f32);

// dx = dy * silu'(x).
extern "C" __global__ void __launch_bounds__(256)
    silu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    activation_backward<Silu>(x, dy, dx, n);
}
MOBIUS_REGISTER_KERNEL(silu_bwd_f32);

// y = gelu(x), tanh form.
extern "C" __global__ void __launch_bounds__(256) gelu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long n) {
    activation_forward<Gelu>(x, y, n);
}
MOBIUS_REGISTER_KERNEL(gelu_fwd_f32);

// dx = dy * gelu'(x).
extern "C" __global__ void __launch_bounds__(256)
    gelu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long n) {
    activation_backward<Gelu>(x, dy, dx, n);
}
MOBIUS_REGISTER_KERNEL(gelu_bwd_f32);

// x [rows, 2*hidden] -> y [rows, hidden], y[r, j] = x[r, j] * gelu(x[r, hidden + j]).
extern "C" __global__ void __launch_bounds__(256)
    geglu_fwd_f32(const float* __restrict__ x, float* __restrict__ y, long long rows, int hidden) {
    geglu_forward(x, y, rows, hidden);
}
MOBIUS_REGISTER_KERNEL(geglu_fwd_f32);

// dx [rows, 2*hidden] from x [rows, 2*hidden] and dy [rows, hidden].
extern "C" __global__ void __launch_bounds__(256)
    geglu_bwd_f32(const float* __restrict__ x, const float* __restrict__ dy, float* __restrict__ dx, long long rows, int hidden) {
    geglu_backward(x, dy, dx, rows, hidden);
}
MOBIUS_REGISTER_KERNEL(geglu_bwd_f32);
