// mobius_cuda.h: the one header every kernels/*.cu includes.
//
// The same kernel sources build three ways:
//   1. clang++ -x cuda --cuda-device-only -nocudainc -nocudalib (PTX, no CUDA SDK): no CUDA headers are
//      seen, so the CUDA-standard names the kernels use are declared here on top of clang's NVPTX builtins.
//   2. nvcc: the real CUDA headers provide everything; only the small helpers below are added.
//   3. g++ (the CPU simulator, kernels/sim): sim/include/mobius_sim/device.h runs each CUDA thread as a
//      fiber and provides the same names.
// Kernels use only CUDA-standard names (threadIdx, __syncthreads, __shfl_xor_sync, atomicAdd, ...) plus the
// helpers of this header: gpu:: math, warp/block reductions, MOBIUS_DYNAMIC_SHARED, MOBIUS_REQUIRE and
// MOBIUS_REGISTER_KERNEL. The helpers keep math identical in spirit across builds: exp/log go through the
// hardware's base-2 approximations on the GPU and through the same formula on the CPU.
#pragma once

#if defined(__NVCC__)
// ---- nvcc: real headers ---------------------------------------------------------------------------
#define MOBIUS_DEVICE __device__ __forceinline__

#elif defined(__clang__) && defined(__CUDA__)
// ---- clang without the CUDA SDK ---------------------------------------------------------------------
#include <__clang_cuda_builtin_vars.h>  // threadIdx & co. as __nvvm_read_ptx_sreg_* properties (clang's own header)

#define __host__ __attribute__((host))
#define __device__ __attribute__((device))
#define __global__ __attribute__((global))
#define __shared__ __attribute__((shared))
#define __constant__ __attribute__((constant))
#define __launch_bounds__(...) __attribute__((launch_bounds(__VA_ARGS__)))
#define __forceinline__ __inline__ __attribute__((always_inline))
#define MOBIUS_DEVICE __device__ __forceinline__

// clang provides __syncthreads() as a builtin; the warp intrinsics are spelled out on __nvvm_* builtins.
// The last operand packs the segment width: ((32 - width) << 8) | clamp, clamp 0x1f except for "up".
#define MOBIUS_SHFL_C(width, clamp) ((((32 - (width)) << 8)) | (clamp))
MOBIUS_DEVICE float __shfl_sync(unsigned mask, float v, int src, int width = 32) {
    return __nvvm_shfl_sync_idx_f32(mask, v, src, MOBIUS_SHFL_C(width, 0x1f));
}
MOBIUS_DEVICE int __shfl_sync(unsigned mask, int v, int src, int width = 32) {
    return __nvvm_shfl_sync_idx_i32(mask, v, src, MOBIUS_SHFL_C(width, 0x1f));
}
MOBIUS_DEVICE float __shfl_xor_sync(unsigned mask, float v, int lane_mask, int width = 32) {
    return __nvvm_shfl_sync_bfly_f32(mask, v, lane_mask, MOBIUS_SHFL_C(width, 0x1f));
}
MOBIUS_DEVICE int __shfl_xor_sync(unsigned mask, int v, int lane_mask, int width = 32) {
    return __nvvm_shfl_sync_bfly_i32(mask, v, lane_mask, MOBIUS_SHFL_C(width, 0x1f));
}
MOBIUS_DEVICE float __shfl_down_sync(unsigned mask, float v, unsigned delta, int width = 32) {
    return __nvvm_shfl_sync_down_f32(mask, v, delta, MOBIUS_SHFL_C(width, 0x1f));
}
MOBIUS_DEVICE int __shfl_down_sync(unsigned mask, int v, unsigned delta, int width = 32) {
    return __nvvm_shfl_sync_down_i32(mask, v, delta, MOBIUS_SHFL_C(width, 0x1f));
}
MOBIUS_DEVICE float __shfl_up_sync(unsigned mask, float v, unsigned delta, int width = 32) {
    return __nvvm_shfl_sync_up_f32(mask, v, delta, MOBIUS_SHFL_C(width, 0));
}
MOBIUS_DEVICE int __shfl_up_sync(unsigned mask, int v, unsigned delta, int width = 32) {
    return __nvvm_shfl_sync_up_i32(mask, v, delta, MOBIUS_SHFL_C(width, 0));
}
#undef MOBIUS_SHFL_C
MOBIUS_DEVICE unsigned __ballot_sync(unsigned mask, int predicate) { return __nvvm_vote_ballot_sync(mask, predicate != 0); }
MOBIUS_DEVICE void __syncwarp(unsigned mask = 0xffffffffu) { __nvvm_bar_warp_sync(mask); }
MOBIUS_DEVICE float atomicAdd(float* address, float value) { return __nvvm_atom_add_gen_f(address, value); }
MOBIUS_DEVICE int atomicAdd(int* address, int value) { return __nvvm_atom_add_gen_i(address, value); }
MOBIUS_DEVICE unsigned atomicAdd(unsigned* address, unsigned value) {
    return static_cast<unsigned>(__nvvm_atom_add_gen_i(reinterpret_cast<int*>(address), static_cast<int>(value)));
}

#else
// ---- g++: the CPU simulator ---------------------------------------------------------------------------
#define MOBIUS_SIM_BUILD 1
#include "../sim/include/mobius_sim/device.h"
#define MOBIUS_DEVICE inline
#endif

// ---- helpers shared by all three builds ---------------------------------------------------------------

// gpu:: math. exp and log use the base-2 hardware approximations (ex2.approx / lg2.approx, ~2 ulp) on the GPU;
// the simulator evaluates the same base-2 formula exactly, so the two differ by a few ulp at most.
namespace gpu {
constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr unsigned kFullMask = 0xffffffffu;

#if defined(MOBIUS_SIM_BUILD)
MOBIUS_DEVICE float exp(float x) { return std::exp2(x * kLog2e); }
MOBIUS_DEVICE float log(float x) { return std::log2(x) * kLn2; }
MOBIUS_DEVICE float sqrt(float x) { return std::sqrt(x); }
MOBIUS_DEVICE float rsqrt(float x) { return 1.0f / std::sqrt(x); }
MOBIUS_DEVICE float max(float a, float b) { return std::fmax(a, b); }
MOBIUS_DEVICE float nan() { return std::numeric_limits<float>::quiet_NaN(); }
MOBIUS_DEVICE float inf() { return std::numeric_limits<float>::infinity(); }
MOBIUS_DEVICE unsigned dynamic_smem_size() { return ::mobius_sim::dynamic_shared_bytes(); }
#elif defined(__NVCC__)
MOBIUS_DEVICE float exp(float x) { return exp2f(x * kLog2e); }
MOBIUS_DEVICE float log(float x) { return __log2f(x) * kLn2; }
MOBIUS_DEVICE float sqrt(float x) { return sqrtf(x); }
MOBIUS_DEVICE float rsqrt(float x) { return rsqrtf(x); }
MOBIUS_DEVICE float max(float a, float b) { return fmaxf(a, b); }
MOBIUS_DEVICE float nan() { return __int_as_float(0x7fffffff); }
MOBIUS_DEVICE float inf() { return __int_as_float(0x7f800000); }
MOBIUS_DEVICE unsigned dynamic_smem_size() {
    unsigned r;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}
#else
MOBIUS_DEVICE float exp(float x) { return __nvvm_ex2_approx_f(x * kLog2e); }
MOBIUS_DEVICE float log(float x) { return __nvvm_lg2_approx_f(x) * kLn2; }
MOBIUS_DEVICE float sqrt(float x) { return __builtin_sqrtf(x); }
MOBIUS_DEVICE float rsqrt(float x) { return __nvvm_rsqrt_approx_f(x); }
MOBIUS_DEVICE float max(float a, float b) { return __builtin_fmaxf(a, b); }
MOBIUS_DEVICE float nan() { return __builtin_nanf(""); }
MOBIUS_DEVICE float inf() { return __builtin_huge_valf(); }
MOBIUS_DEVICE unsigned dynamic_smem_size() {
    unsigned r;
    asm volatile("mov.u32 %0, %%dynamic_smem_size;" : "=r"(r));
    return r;
}
#endif

MOBIUS_DEVICE float sigmoid(float x) { return 1.0f / (1.0f + exp(-x)); }

// Bit casts between fp32 and its 32-bit pattern, the same in all three builds.
#if defined(__NVCC__)
MOBIUS_DEVICE unsigned float_bits(float v) { return __float_as_uint(v); }
MOBIUS_DEVICE float bits_float(unsigned u) { return __uint_as_float(u); }
#else
MOBIUS_DEVICE unsigned float_bits(float v) { return __builtin_bit_cast(unsigned, v); }
MOBIUS_DEVICE float bits_float(unsigned u) { return __builtin_bit_cast(float, u); }
#endif

// bfloat16 storage: the top 16 bits of an fp32. Widening is exact; narrowing rounds to nearest, ties to
// even, and keeps NaN a (quiet) NaN. Done in integer arithmetic, so every build rounds alike, bit for bit.
struct bf16 {
    unsigned short bits;
};
MOBIUS_DEVICE float bf16_to_float(bf16 h) { return bits_float(static_cast<unsigned>(h.bits) << 16); }
MOBIUS_DEVICE bf16 float_to_bf16(float v) {
    const unsigned u = float_bits(v);
    if ((u & 0x7fffffffu) > 0x7f800000u) return bf16{static_cast<unsigned short>((u >> 16) | 0x0040u)};
    return bf16{static_cast<unsigned short>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}

// Element storage type <-> fp32 compute type: the overload pairs a templated kernel is instantiated over.
MOBIUS_DEVICE float load(const float* p) { return *p; }
MOBIUS_DEVICE void store(float* p, float v) { *p = v; }
MOBIUS_DEVICE float load(const bf16* p) { return bf16_to_float(*p); }
MOBIUS_DEVICE void store(bf16* p, float v) { *p = float_to_bf16(v); }

// Grid-stride iteration with 64-bit indices: correct for any grid, and for tensors past 2^31 elements.
MOBIUS_DEVICE long long global_thread() { return static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; }
MOBIUS_DEVICE long long global_threads() { return static_cast<long long>(gridDim.x) * blockDim.x; }
template <class F>
MOBIUS_DEVICE void grid_stride(long long n, F&& f) {
    for (long long i = global_thread(); i < n; i += global_threads()) f(i);
}
// Warp-per-row kernels: the warp's index among all warps of the (1-D) grid.
MOBIUS_DEVICE long long global_warp() { return global_thread() >> 5; }
MOBIUS_DEVICE long long global_warps() { return global_threads() >> 5; }

// Warp reductions over all 32 lanes (every lane receives the result).
MOBIUS_DEVICE float warp_sum(float v) {
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFullMask, v, o);
    return v;
}
MOBIUS_DEVICE float warp_max(float v) {
    for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFullMask, v, o));
    return v;
}

// Block-wide sum; blockDim.x must be a multiple of 32 and every thread must call it (it holds barriers).
// `scratch` is 32 floats of shared memory owned by the caller; it may be reused right after the call.
MOBIUS_DEVICE float block_sum(float v, float* scratch) {
    const unsigned lane = threadIdx.x & 31u, warp = threadIdx.x >> 5;
    const unsigned warps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // the caller may still be reading scratch from a previous reduction
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < warps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}

// Tables of tensors for the multi-tensor kernels (adamw_multi_f32, sumsq_multi_partial_f32), one row per
// tensor, rows in order of first_chunk: a tensor of n elements is cut into ceil(n / chunk_size) chunks, the
// first numbered first_chunk. The host (CudaBackend.MultiTensor) writes the same layout: 8-byte fields only.
struct AdamWSlot {
    float* p;
    const float* grad;
    float* m;
    float* v;
    long long n;
    long long first_chunk;
};
struct SumSlot {
    const float* x;
    long long n;
    long long first_chunk;
};

// The row holding chunk: the last row whose first_chunk <= chunk (binary search; count >= 1).
template <class Slot>
MOBIUS_DEVICE int slot_of(const Slot* slots, int count, long long chunk) {
    int lo = 0, hi = count - 1;
    while (lo < hi) {
        const int mid = (lo + hi + 1) >> 1;
        if (slots[mid].first_chunk <= chunk)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}
}  // namespace gpu

// Asks the device compilers to unroll the next loop (a constant trip count); the simulator ignores it.
#if defined(MOBIUS_SIM_BUILD)
#define MOBIUS_UNROLL
#else
#define MOBIUS_UNROLL _Pragma("unroll")
#endif

// Dynamic shared memory (the size given at launch) as `T* name`. One byte array name is shared by every
// kernel so that nvcc does not see conflicting `extern __shared__` declarations.
#if defined(MOBIUS_SIM_BUILD)
#define MOBIUS_DYNAMIC_SHARED(T, name) T* name = reinterpret_cast<T*>(::mobius_sim::dynamic_shared_base())
#else
#define MOBIUS_DYNAMIC_SHARED(T, name)                                        \
    extern __shared__ __attribute__((aligned(16))) unsigned char mobius_dynamic_smem[]; \
    T* name = reinterpret_cast<T*>(mobius_dynamic_smem)
#endif

// A launch-contract check (block size, shapes the kernel was written for). On the GPU a failed check traps,
// which fails the launch with CUDA_ERROR_LAUNCH_FAILED; the simulator reports the condition, file and line.
#if defined(MOBIUS_SIM_BUILD)
#define MOBIUS_REQUIRE(cond) \
    do { if (!(cond)) ::mobius_sim::trap("requirement failed: " #cond, __FILE__, __LINE__); } while (0)
#elif defined(__NVCC__)
#define MOBIUS_REQUIRE(cond) do { if (!(cond)) __trap(); } while (0)
#else
#define MOBIUS_REQUIRE(cond) do { if (!(cond)) __builtin_trap(); } while (0)
#endif

// Makes an extern "C" kernel launchable by name in the simulator (cuModuleGetFunction + cuLaunchKernel);
// expands to nothing in the CUDA builds.
#if defined(MOBIUS_SIM_BUILD)
#define MOBIUS_REGISTER_KERNEL(name) MOBIUS_SIM_REGISTER_KERNEL(name)
#else
#define MOBIUS_REGISTER_KERNEL(name)
#endif
