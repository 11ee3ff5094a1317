// Test harness: drives the simulator exactly as the C# backend will, through the simulated driver API
// (PTX modules loaded from kernels/ptx, launches by entry name with kernelParams), plus comparison helpers.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"

namespace mt {

// Throws with the simulator's detailed message when a driver call fails (gtest reports the exception).
void check(CUresult r, const char* what);
#define CU_CHECK(call) ::mt::check((call), #call)

struct Dim {
    unsigned x = 1, y = 1, z = 1;
};

unsigned blocks_for(long long n, unsigned per_block, unsigned cap = 4096);

// The simulated GPU for one test: cuInit, the primary context retained and made current; releasing it at the
// end destroys everything the test allocated. Kernel tests run with the race check on.
class Gpu {
public:
    Gpu();
    ~Gpu();
    Gpu(const Gpu&) = delete;
    Gpu& operator=(const Gpu&) = delete;

    // The entry `entry` of kernels/ptx/sm_90/<module>.ptx.
    CUfunction kernel(const std::string& module, const std::string& entry);

    // Launches with every argument passed by address as kernelParams. The argument types must be the
    // kernel's parameter types; the registered signature is checked so a test cannot pass an int for a long.
    template <class... A>
    CUresult launch(CUfunction f, const std::string& entry, Dim grid, Dim block, unsigned shared, A... args) {
        std::tuple<A...> values{args...};
        const std::vector<unsigned> sizes{static_cast<unsigned>(sizeof(A))...};
        check_signature(entry, sizes);
        return std::apply([&](auto&... v) {
            void* params[] = {static_cast<void*>(&v)..., nullptr};
            return cuLaunchKernel(f, grid.x, grid.y, grid.z, block.x, block.y, block.z, shared, nullptr, params, nullptr);
        }, values);
    }

    // Loads <module>.ptx for sm_90, launches `entry` and throws on failure.
    template <class... A>
    void run(const std::string& module, const std::string& entry, Dim grid, Dim block, unsigned shared, A... args) {
        CUfunction f = kernel(module, entry);
        check(launch(f, entry, grid, block, shared, args...), entry.c_str());
    }

private:
    static void check_signature(const std::string& entry, const std::vector<unsigned>& sizes);
    std::vector<std::pair<std::string, CUmodule>> modules_;
};

std::string read_file(const std::string& path);
std::string ptx_path(const std::string& arch, const std::string& module);

// A device buffer of T; uploads from and downloads to std::vector.
template <class T>
class DeviceArray {
public:
    explicit DeviceArray(std::size_t n) : n_(n) { CU_CHECK(cuMemAlloc_v2(&ptr_, std::max<std::size_t>(n, 1) * sizeof(T))); }
    explicit DeviceArray(const std::vector<T>& host) : DeviceArray(host.size()) { write(host); }
    ~DeviceArray() {
        if (ptr_) cuMemFree_v2(ptr_);
    }
    DeviceArray(const DeviceArray&) = delete;
    DeviceArray& operator=(const DeviceArray&) = delete;

    void write(const std::vector<T>& host) {
        if (!host.empty()) CU_CHECK(cuMemcpyHtoD_v2(ptr_, host.data(), host.size() * sizeof(T)));
    }
    std::vector<T> read() const {
        std::vector<T> host(n_);
        if (n_) CU_CHECK(cuMemcpyDtoH_v2(host.data(), ptr_, n_ * sizeof(T)));
        return host;
    }
    T* get() const { return reinterpret_cast<T*>(ptr_); }
    CUdeviceptr ptr() const { return ptr_; }
    std::size_t size() const { return n_; }

private:
    CUdeviceptr ptr_ = 0;
    std::size_t n_;
};

// Uniform in [lo, hi), never all zero; the seed makes every test reproducible.
std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float lo = -1.0f, float hi = 1.0f);

// |got - ref| <= atol + rtol * |ref| for every element, and every got finite. Reports the worst elements.
void expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol, double rtol,
                  const std::string& what);

}  // namespace mt
