// Workbench plumbing shared by every bench: device memory, launches, validation with explicit tolerances and
// event timing. Built by nvcc on a GPU machine (CUDA runtime API, cudaEvent timing, L2 flushed before every
// timed run) or by g++ against the simulator here (validation only: simulated time means nothing).
#pragma once

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#if defined(__NVCC__)
#include <cuda_runtime.h>
#else
#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"
#endif

namespace wb {

struct Dim {
    unsigned x = 1, y = 1, z = 1;
};

#if defined(__NVCC__)
constexpr bool kOnGpu = true;

inline void check(cudaError_t e, const char* what) {
    if (e == cudaSuccess) return;
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    std::exit(1);
}

template <class T>
T* alloc(std::size_t n) {
    void* p = nullptr;
    check(cudaMalloc(&p, n * sizeof(T)), "cudaMalloc");
    return static_cast<T*>(p);
}
inline void release(void* p) { cudaFree(p); }
template <class T>
void upload(T* dst, const std::vector<T>& src) {
    check(cudaMemcpy(dst, src.data(), src.size() * sizeof(T), cudaMemcpyHostToDevice), "upload");
}
template <class T>
std::vector<T> download(const T* src, std::size_t n) {
    std::vector<T> out(n);
    check(cudaMemcpy(out.data(), src, n * sizeof(T), cudaMemcpyDeviceToHost), "download");
    return out;
}

template <auto Kernel, class... A>
void launch(const char* name, Dim grid, Dim block, unsigned shared, A... args) {
    if (shared > 48 * 1024) check(cudaFuncSetAttribute(Kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(shared)), name);
    Kernel<<<dim3(grid.x, grid.y, grid.z), dim3(block.x, block.y, block.z), shared>>>(args...);
    check(cudaGetLastError(), name);
    check(cudaDeviceSynchronize(), name);
}

// Mean milliseconds of `run` over `repeats` runs after a warm-up, with L2 flushed before each timed run.
template <class F>
float time_ms(F run, int repeats = 20) {
    static char* flush = alloc<char>(256u << 20);
    cudaEvent_t start, stop;
    cudaEventCreate(&start);
    cudaEventCreate(&stop);
    run();
    float total = 0.0f;
    for (int i = 0; i < repeats; ++i) {
        cudaMemset(flush, i, 256u << 20);
        cudaEventRecord(start);
        run();
        cudaEventRecord(stop);
        cudaEventSynchronize(stop);
        float ms = 0.0f;
        cudaEventElapsedTime(&ms, start, stop);
        total += ms;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    return total / repeats;
}
#else
constexpr bool kOnGpu = false;

template <class T>
T* alloc(std::size_t n) {
    std::uint64_t p = 0;
    if (mobius_sim::device_alloc(n * sizeof(T), &p) != mobius_sim::Status::Success) {
        std::fprintf(stderr, "simulated allocation of %zu bytes failed\n", n * sizeof(T));
        std::exit(1);
    }
    return reinterpret_cast<T*>(p);
}
inline void release(void* p) { mobius_sim::device_free(reinterpret_cast<std::uint64_t>(p)); }
template <class T>
void upload(T* dst, const std::vector<T>& src) {
    std::copy(src.begin(), src.end(), dst);
}
template <class T>
std::vector<T> download(const T* src, std::size_t n) {
    return std::vector<T>(src, src + n);
}

template <auto Kernel, class... A>
void launch(const char* name, Dim grid, Dim block, unsigned shared, A... args) {
    mobius_sim::LaunchConfig config{{grid.x, grid.y, grid.z}, {block.x, block.y, block.z}, shared};
    const mobius_sim::LaunchResult r = mobius_sim::launch_direct<Kernel>(name, config, args...);
    if (r.status != mobius_sim::Status::Success) {
        std::fprintf(stderr, "%s\n", r.message.c_str());
        std::exit(1);
    }
}

template <class F>
float time_ms(F, int = 0) {
    return NAN;  // no GPU: the workbench only validates
}
#endif

// Before a bench's first library call (cuBLAS): the simulated cuBLAS wants the driver's primary context
// current; the CUDA runtime makes its own.
inline void library_context() {
#if !defined(__NVCC__)
    static const bool ready = [] {
        CUdevice device = 0;
        CUcontext context = nullptr;
        return cuInit(0) == CUDA_SUCCESS && cuDeviceGet(&device, 0) == CUDA_SUCCESS && cuDevicePrimaryCtxRetain(&context, device) == CUDA_SUCCESS &&
               cuCtxSetCurrent(context) == CUDA_SUCCESS;
    }();
    if (!ready) {
        std::fprintf(stderr, "the simulated driver's context could not be made current\n");
        std::exit(1);
    }
#endif
}

// WB_LAUNCH(kernel, grid, block, shared_bytes, args...)
#define WB_LAUNCH(kernel, ...) ::wb::launch<&kernel>(#kernel, __VA_ARGS__)

// Fills a device buffer with NaN before a version runs, so an element the version does not write fails validation
// instead of passing with the previous version's value.
inline void poison(float* p, std::size_t n) { upload(p, std::vector<float>(n, std::nanf(""))); }

inline std::vector<float> random_vector(std::size_t n, unsigned seed, float lo = -1.0f, float hi = 1.0f) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    return v;
}

// |got - ref| <= atol + rtol * |ref| everywhere; prints the worst element and returns whether all passed.
inline bool validate(const char* what, const std::vector<float>& got, const std::vector<double>& ref, double atol, double rtol) {
    std::size_t bad = 0, worst = 0;
    double worst_ratio = 0.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(double(got[i]) - ref[i]), tol = atol + rtol * std::fabs(ref[i]);
        const double ratio = std::isfinite(got[i]) ? err / tol : INFINITY;
        if (!(ratio <= 1.0)) ++bad;
        if (!(ratio <= worst_ratio)) worst_ratio = ratio, worst = i;
    }
    std::printf("  %-28s %s  worst |err|/tol %.3g at %zu (got %.7g, ref %.7g)\n", what, bad ? "FAIL" : "ok  ", worst_ratio, worst,
                got.empty() ? 0.0 : got[worst], ref.empty() ? 0.0 : ref[worst]);
    return bad == 0;
}

inline void report_time(const char* version, float ms, double bytes, double flops) {
    if (std::isnan(ms)) {
        std::printf("  %-28s validated (no GPU: not timed)\n", version);
        return;
    }
    std::printf("  %-28s %8.4f ms  %7.1f GB/s  %7.2f TFLOP/s\n", version, ms, bytes / ms * 1e-6, flops / ms * 1e-9);
}

}  // namespace wb
