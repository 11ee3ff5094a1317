// Test-only kernels: planted faults the simulator must catch, and probes of its scheduling semantics.
// Built into their own shared library (never into the product library or the PTX).
#include "mobius_cuda.h"

// ---- planted faults ---------------------------------------------------------------------------------------

// Every thread writes p[i]; the last thread writes p[n], one element past the allocation.
extern "C" __global__ void fault_oob_write(float* p, int n) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i <= n) p[i] = 1.0f;
}
MOBIUS_REGISTER_KERNEL(fault_oob_write);

// The same through a pointer read from device memory (a slot array, as the multi-tensor kernels take):
// writes slots[0][n], one element past that allocation, which no parameter points into.
extern "C" __global__ void fault_oob_write_indirect(float* const* slots, int n) {
    if (threadIdx.x == 0) slots[0][n] = 1.0f;
}
MOBIUS_REGISTER_KERNEL(fault_oob_write_indirect);

// Writes p[-1]: the byte before the allocation, in its head slack.
extern "C" __global__ void fault_write_before_start(float* p) {
    if (threadIdx.x == 0) p[-1] = 1.0f;
}
MOBIUS_REGISTER_KERNEL(fault_write_before_start);

// Writes through a null pointer.
extern "C" __global__ void fault_null_write(float* p) {
    float* volatile q = p;
    q[threadIdx.x] = 2.0f;
}
MOBIUS_REGISTER_KERNEL(fault_null_write);

// Each thread publishes a value in shared memory and reads its neighbour's, with the barrier between the
// two forgotten: correct in one thread order, wrong in another.
extern "C" __global__ void fault_missing_barrier(const float* in, float* out) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x;
    s[t] = in[t];
    out[t] = s[(t + blockDim.x - 1) % blockDim.x];
}
MOBIUS_REGISTER_KERNEL(fault_missing_barrier);

// The same with the barrier: must pass the race check.
extern "C" __global__ void probe_with_barrier(const float* in, float* out) {
    __shared__ float s[256];
    const unsigned t = threadIdx.x;
    s[t] = in[t];
    __syncthreads();
    out[t] = s[(t + blockDim.x - 1) % blockDim.x];
}
MOBIUS_REGISTER_KERNEL(probe_with_barrier);

// Block b reads what block b - 1 wrote: an inter-block dependency no launch order guarantees.
extern "C" __global__ void fault_block_dependency(float* p) {
    if (threadIdx.x == 0) p[blockIdx.x + 1] = p[blockIdx.x] + 1.0f;
}
MOBIUS_REGISTER_KERNEL(fault_block_dependency);

// The classic early exit before a barrier: threads past n leave, the rest wait forever on a GPU.
extern "C" __global__ void fault_barrier_after_return(float* p, int n) {
    const int i = threadIdx.x;
    if (i >= n) return;
    p[i] = 1.0f;
    __syncthreads();
    p[i] += 1.0f;
}
MOBIUS_REGISTER_KERNEL(fault_barrier_after_return);

// Half of the block waits at one barrier, the other half at another.
extern "C" __global__ void fault_divergent_barriers(float* p) {
    if (threadIdx.x < 16) {
        __syncthreads();
        p[threadIdx.x] = 1.0f;
    } else {
        __syncthreads();
        p[threadIdx.x] = 2.0f;
    }
}
MOBIUS_REGISTER_KERNEL(fault_divergent_barriers);

// A full-warp shuffle that half of the warp never reaches.
extern "C" __global__ void fault_partial_shuffle(float* p) {
    if (threadIdx.x < 16) p[threadIdx.x] = __shfl_xor_sync(0xffffffffu, 1.0f, 1);
}
MOBIUS_REGISTER_KERNEL(fault_partial_shuffle);

// A launch-contract check that fails.
extern "C" __global__ void fault_requirement(int block_size) { MOBIUS_REQUIRE(blockDim.x == static_cast<unsigned>(block_size)); }
MOBIUS_REGISTER_KERNEL(fault_requirement);

// Writes one float past the dynamic shared memory the launch asked for.
extern "C" __global__ void fault_dynamic_shared_overflow(int floats) {
    MOBIUS_DYNAMIC_SHARED(float, s);
    if (threadIdx.x == 0) s[floats] = 1.0f;
}
MOBIUS_REGISTER_KERNEL(fault_dynamic_shared_overflow);

// Integer division by zero (the CPU traps where a GPU returns garbage).
extern "C" __global__ void fault_divide_by_zero(int* p, int d) { p[threadIdx.x] = 100 / d; }
MOBIUS_REGISTER_KERNEL(fault_divide_by_zero);

// A 1 MiB local array: far more than a simulated thread's stack.
namespace {
__attribute__((noinline)) MOBIUS_DEVICE float deep_frame(unsigned i) {
    volatile float big[1 << 18];
    big[i] = 1.0f;
    return big[i];
}
}  // namespace
extern "C" __global__ void fault_stack_overflow(float* out) { out[threadIdx.x] = deep_frame(threadIdx.x); }
MOBIUS_REGISTER_KERNEL(fault_stack_overflow);

// Never terminates: the flag it waits for is never set.
extern "C" __global__ void fault_endless_loop(const volatile int* flag) {
    while (*flag == 0) {
    }
}
MOBIUS_REGISTER_KERNEL(fault_endless_loop);

// ---- probes of correct behaviour ------------------------------------------------------------------------------

// All four shuffles at widths 32, 8 and 4 with per-lane parameters; results land in out[kind][width][thread].
extern "C" __global__ void probe_shuffles(const int* in, int* out, int delta) {
    const int t = threadIdx.x;
    const int v = in[t];
    const int widths[3] = {32, 8, 4};
    const int n = blockDim.x;
    for (int w = 0; w < 3; ++w) {
        out[(0 * 3 + w) * n + t] = __shfl_sync(0xffffffffu, v, t * 7 + 3, widths[w]);
        out[(1 * 3 + w) * n + t] = __shfl_xor_sync(0xffffffffu, v, delta, widths[w]);
        out[(2 * 3 + w) * n + t] = __shfl_down_sync(0xffffffffu, v, static_cast<unsigned>(delta), widths[w]);
        out[(3 * 3 + w) * n + t] = __shfl_up_sync(0xffffffffu, v, static_cast<unsigned>(delta), widths[w]);
    }
    out[12 * n + t] = static_cast<int>(__ballot_sync(0xffffffffu, v % 3 == 0));
}
MOBIUS_REGISTER_KERNEL(probe_shuffles);

// Two half-warps shuffle independently with their own masks.
extern "C" __global__ void probe_split_masks(int* out) {
    const int t = threadIdx.x;
    const unsigned mask = t < 16 ? 0x0000ffffu : 0xffff0000u;
    out[t] = __shfl_xor_sync(mask, t, 1);
}
MOBIUS_REGISTER_KERNEL(probe_split_masks);

// A __shared__ array inside a template: must be poisoned at block start like any other (read before write).
namespace {
template <class T>
MOBIUS_DEVICE T read_uninitialised_shared(unsigned i) {
    __shared__ T s[64];
    const T v = s[i];
    __syncthreads();
    s[i] = T(1);  // without a write the compiler may fold every read of s to zero
    return v;
}
}  // namespace
extern "C" __global__ void probe_uninitialised_shared(float* out) { out[threadIdx.x] = read_uninitialised_shared<float>(threadIdx.x); }
MOBIUS_REGISTER_KERNEL(probe_uninitialised_shared);

// Static and dynamic shared memory are per block: each block fills both and sums them back.
extern "C" __global__ void probe_shared_per_block(float* out) {
    __shared__ float s[128];
    MOBIUS_DYNAMIC_SHARED(float, d);
    const unsigned t = threadIdx.x;
    s[t] = static_cast<float>(blockIdx.x);
    d[t] = static_cast<float>(t);
    __syncthreads();
    out[blockIdx.x * blockDim.x + t] = s[blockDim.x - 1 - t] * 1000.0f + d[blockDim.x - 1 - t];
}
MOBIUS_REGISTER_KERNEL(probe_shared_per_block);

// Float atomics whose sum depends on the order; the race check must accept the rounding difference.
extern "C" __global__ void probe_atomics(const float* values, float* sum) {
    atomicAdd(sum, values[blockIdx.x * blockDim.x + threadIdx.x]);
}
MOBIUS_REGISTER_KERNEL(probe_atomics);

// The 3-D built-in variables: every thread writes its linear global index where it belongs.
extern "C" __global__ void probe_indices(int* out) {
    const unsigned bx = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
    const unsigned tx = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
    const unsigned threads = blockDim.x * blockDim.y * blockDim.z;
    out[bx * threads + tx] = static_cast<int>(bx * threads + tx);
}
MOBIUS_REGISTER_KERNEL(probe_indices);

// gpu::block_sum over a block of any multiple of 32 threads.
extern "C" __global__ void probe_block_sum(const float* in, float* out) {
    __shared__ float scratch[32];
    const float total = gpu::block_sum(in[blockIdx.x * blockDim.x + threadIdx.x], scratch);
    if (threadIdx.x == 0) out[blockIdx.x] = total;
}
MOBIUS_REGISTER_KERNEL(probe_block_sum);
