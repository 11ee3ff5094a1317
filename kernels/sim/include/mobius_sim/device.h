// The CUDA kernel language on the CPU: what kernels/*.cu see when g++ builds them for the simulator.
//
// Each CUDA thread of a block runs as a fiber on one OS thread; the scheduler (src/runtime.cpp) switches
// fibers at __syncthreads and at warp collectives, so barriers, shuffles and shared memory behave as on the
// GPU and misuse is reported instead of hanging. `__shared__` variables are `static thread_local`: a block
// runs on one OS thread, so all its fibers see one copy, and the simulator finds and poisons the whole
// thread-local block of the kernel's module at every block start (the simulator itself keeps no
// thread-local state in modules that hold kernels).
#pragma once

#include <bit>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>

namespace mobius_sim {

struct Dim3 {
    unsigned x = 1, y = 1, z = 1;
};

// Set by the scheduler before a fiber (simulated thread) is resumed or a block starts.
extern const Dim3* g_thread_idx;
extern Dim3 g_block_idx, g_block_dim, g_grid_dim;

inline const Dim3& thread_index() { return *g_thread_idx; }
inline const Dim3& block_index() { return g_block_idx; }
inline const Dim3& block_dim() { return g_block_dim; }
inline const Dim3& grid_dim() { return g_grid_dim; }

unsigned char* dynamic_shared_base();
unsigned dynamic_shared_bytes();

// Ends the current simulated thread and fails the launch with `what` (CUDA_ERROR_LAUNCH_FAILED).
[[noreturn]] void trap(const char* what, const char* file, int line);
void syncthreads(const char* file, int line);

enum class WarpOp : std::uint8_t { Idx, Xor, Down, Up, Ballot, Sync };
// Blocks the calling fiber until every lane named in `mask` has made the same call; returns this lane's result.
std::uint32_t warp_collective(WarpOp op, unsigned mask, std::uint32_t value, int param, int width);

float atomic_add(float* address, float value);
int atomic_add(int* address, int value);
unsigned atomic_add(unsigned* address, unsigned value);

// ---- kernel registration: entry name -> launcher that unpacks kernelParams like the driver does ----
using Launcher = void (*)(void* const* params);

// What a launch does to the allocation a parameter points into, as the parameter's C++ type says: kernels declare
// their inputs `const float* __restrict__ x` and their outputs `float* __restrict__ y`. The stream-order check
// (src/stream_order.cpp) judges a launch by these.
enum class ParamAccess : std::uint8_t {
    None,   // not a pointer
    Read,   // pointer to const
    Write,  // pointer to non-const: written, and perhaps read as well
};

struct KernelSignature {
    const char* name;
    Launcher launcher;
    const void* module_anchor;  // an address inside the module that holds the kernel (finds its shared memory)
    int num_params;
    const std::uint8_t* param_sizes;
    const ParamAccess* param_access;  // one per parameter
    // Every parameter is a scalar or a pointer to scalars, so every allocation the kernel can reach without reading
    // a pointer from memory is one its parameters point into: the redzone check after a launch looks only at those.
    // False (check every allocation) for anything that could carry a pointer: pointers to pointers, structs.
    bool direct_pointers = false;
};

// g++ keeps __restrict__ on a pointer type where std::remove_cv does not reach it, and std::is_pointer then fails;
// a function's own type drops it, but a parameter type spelled out elsewhere may still carry it.
template <class T>
struct unrestrict {
    using type = T;
};
template <class T>
struct unrestrict<T* __restrict__> {
    using type = T*;
};

template <class T>
constexpr ParamAccess param_access() {
    using P = typename unrestrict<std::remove_cv_t<T>>::type;
    if constexpr (!std::is_pointer_v<P>) return ParamAccess::None;
    else if constexpr (std::is_const_v<std::remove_pointer_t<P>>) return ParamAccess::Read;
    else return ParamAccess::Write;
}

// A type too small to hold a pointer, or a number: whatever a parameter of it reaches, it names directly.
template <class T>
constexpr bool holds_no_pointer() {
    if constexpr (std::is_void_v<T>) return false;
    else return std::is_arithmetic_v<T> || std::is_enum_v<T> || (std::is_trivially_copyable_v<T> && sizeof(T) < sizeof(void*));
}

template <class T>
constexpr bool direct_param() {
    using P = typename unrestrict<std::remove_cv_t<T>>::type;
    if constexpr (std::is_pointer_v<P>) return holds_no_pointer<std::remove_cv_t<std::remove_pointer_t<P>>>();
    else return holds_no_pointer<P>();
}

void register_kernel(const KernelSignature& signature);

template <class T>
T load_param(const void* source) {
    static_assert(std::is_trivially_copyable_v<T>, "kernel parameters must be trivially copyable");
    T value;
    std::memcpy(&value, source, sizeof(T));
    return value;
}

template <auto F>
struct Invoker;

template <class... A, void (*F)(A...)>
struct Invoker<F> {
    static void run(void* const* params) { call(params, std::index_sequence_for<A...>{}); }
    template <std::size_t... I>
    static void call(void* const* params, std::index_sequence<I...>) {
        F(load_param<A>(params[I])...);
    }
    static constexpr std::uint8_t sizes[sizeof...(A) + 1] = {static_cast<std::uint8_t>(sizeof(A))..., 0};
    static constexpr ParamAccess access[sizeof...(A) + 1] = {param_access<A>()..., ParamAccess::None};
    static KernelSignature signature(const char* name) {
        return {name, &run, reinterpret_cast<const void*>(F), static_cast<int>(sizeof...(A)), sizes, access,
                (direct_param<A>() && ...)};
    }
};

struct Registrar {
    explicit Registrar(const KernelSignature& s) { register_kernel(s); }
};

template <class T>
std::uint32_t to_bits(T v) {
    static_assert(sizeof(T) == 4, "warp collectives move 32-bit values");
    return std::bit_cast<std::uint32_t>(v);
}

}  // namespace mobius_sim

#define MOBIUS_SIM_REGISTER_KERNEL(name) \
    static const ::mobius_sim::Registrar mobius_sim_registrar_##name{::mobius_sim::Invoker<&name>::signature(#name)}

#define __host__
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static thread_local

#define threadIdx (::mobius_sim::thread_index())
#define blockIdx (::mobius_sim::block_index())
#define blockDim (::mobius_sim::block_dim())
#define gridDim (::mobius_sim::grid_dim())
constexpr int warpSize = 32;

#define __syncthreads() ::mobius_sim::syncthreads(__FILE__, __LINE__)

template <class T>
inline T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    return std::bit_cast<T>(::mobius_sim::warp_collective(::mobius_sim::WarpOp::Idx, mask, ::mobius_sim::to_bits(v), src_lane, width));
}
template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return std::bit_cast<T>(::mobius_sim::warp_collective(::mobius_sim::WarpOp::Xor, mask, ::mobius_sim::to_bits(v), lane_mask, width));
}
template <class T>
inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return std::bit_cast<T>(::mobius_sim::warp_collective(::mobius_sim::WarpOp::Down, mask, ::mobius_sim::to_bits(v), static_cast<int>(delta), width));
}
template <class T>
inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return std::bit_cast<T>(::mobius_sim::warp_collective(::mobius_sim::WarpOp::Up, mask, ::mobius_sim::to_bits(v), static_cast<int>(delta), width));
}
inline unsigned __ballot_sync(unsigned mask, int predicate) {
    return ::mobius_sim::warp_collective(::mobius_sim::WarpOp::Ballot, mask, predicate != 0, 0, 32);
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
    ::mobius_sim::warp_collective(::mobius_sim::WarpOp::Sync, mask, 0, 0, 32);
}

inline float atomicAdd(float* address, float value) { return ::mobius_sim::atomic_add(address, value); }
inline int atomicAdd(int* address, int value) { return ::mobius_sim::atomic_add(address, value); }
inline unsigned atomicAdd(unsigned* address, unsigned value) { return ::mobius_sim::atomic_add(address, value); }
