// The library as the C# backend uses it: loaded at run time with dlopen (not linked), every call resolved with
// dlsym, kernels launched from a thread that has never run one. Kernels' __shared__ variables then live in
// dynamically allocated thread-local storage, which the simulator must find and poison too.
#include <dlfcn.h>
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "mobius_sim/cuda_api.h"

namespace {

struct Library {
    void* handle = dlopen(MOBIUS_SIMCUDA_PATH, RTLD_NOW | RTLD_LOCAL);
    ~Library() {
        if (handle) dlclose(handle);
    }
    template <class F>
    F* get(const char* name) {
        return reinterpret_cast<F*>(dlsym(handle, name));
    }
};

std::string read(const std::string& path) {
    std::ifstream in(path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

TEST(Dlopen, KernelsWithStaticSharedMemoryRunFromAFreshThread) {
    Library lib;
    ASSERT_NE(lib.handle, nullptr) << dlerror();
    auto init = lib.get<decltype(cuInit)>("cuInit");
    auto retain = lib.get<decltype(cuDevicePrimaryCtxRetain)>("cuDevicePrimaryCtxRetain");
    auto release = lib.get<decltype(cuDevicePrimaryCtxRelease_v2)>("cuDevicePrimaryCtxRelease_v2");
    auto set_current = lib.get<decltype(cuCtxSetCurrent)>("cuCtxSetCurrent");
    auto load = lib.get<decltype(cuModuleLoadData)>("cuModuleLoadData");
    auto unload = lib.get<decltype(cuModuleUnload)>("cuModuleUnload");
    auto function = lib.get<decltype(cuModuleGetFunction)>("cuModuleGetFunction");
    auto alloc = lib.get<decltype(cuMemAlloc_v2)>("cuMemAlloc_v2");
    auto free_ = lib.get<decltype(cuMemFree_v2)>("cuMemFree_v2");
    auto to_device = lib.get<decltype(cuMemcpyHtoD_v2)>("cuMemcpyHtoD_v2");
    auto to_host = lib.get<decltype(cuMemcpyDtoH_v2)>("cuMemcpyDtoH_v2");
    auto launch = lib.get<decltype(cuLaunchKernel)>("cuLaunchKernel");
    ASSERT_TRUE(init && retain && release && set_current && load && unload && function && alloc && free_ && to_device && to_host && launch);

    const int batch = 2, rows = 45, cols = 70, n = batch * rows * cols;
    std::vector<float> x(n), y(n, 0.0f);
    for (int i = 0; i < n; ++i) x[i] = static_cast<float>(i % 977) - 300.0f;
    std::thread worker([&] {
        ASSERT_EQ(init(0), CUDA_SUCCESS);
        CUcontext ctx = nullptr;
        ASSERT_EQ(retain(&ctx, 0), CUDA_SUCCESS);
        ASSERT_EQ(set_current(ctx), CUDA_SUCCESS);
        const std::string ptx = read(std::string(MOBIUS_PTX_DIR) + "/sm_90/layout.ptx");
        CUmodule m = nullptr;
        ASSERT_EQ(load(&m, ptx.c_str()), CUDA_SUCCESS);
        CUfunction f = nullptr;
        ASSERT_EQ(function(&f, m, "transpose_f32"), CUDA_SUCCESS);
        CUdeviceptr dx = 0, dy = 0;
        ASSERT_EQ(alloc(&dx, n * sizeof(float)), CUDA_SUCCESS);
        ASSERT_EQ(alloc(&dy, n * sizeof(float)), CUDA_SUCCESS);
        ASSERT_EQ(to_device(dx, x.data(), n * sizeof(float)), CUDA_SUCCESS);
        int b = batch, r = rows, c = cols;
        void* params[] = {&dx, &dy, &b, &r, &c};
        ASSERT_EQ(launch(f, (cols + 31) / 32, (rows + 31) / 32, batch, 32, 8, 1, 0, nullptr, params, nullptr), CUDA_SUCCESS);
        ASSERT_EQ(to_host(y.data(), dy, n * sizeof(float)), CUDA_SUCCESS);
        free_(dx);
        free_(dy);
        unload(m);
        release(0);
        set_current(nullptr);
    });
    worker.join();
    for (int bb = 0; bb < batch; ++bb)
        for (int i = 0; i < rows; ++i)
            for (int j = 0; j < cols; ++j) ASSERT_EQ(y[(bb * cols + j) * rows + i], x[(bb * rows + i) * cols + j]);
}

TEST(Dlopen, SharedMemoryOfADlopenedKernelModuleIsPoisoned) {
    Library lib;
    ASSERT_NE(lib.handle, nullptr) << dlerror();
    // the probes register themselves with the already loaded simulator library
    void* probes = dlopen(MOBIUS_TEST_KERNELS_PATH, RTLD_NOW | RTLD_LOCAL);
    ASSERT_NE(probes, nullptr) << dlerror();
    auto init = lib.get<decltype(cuInit)>("cuInit");
    auto retain = lib.get<decltype(cuDevicePrimaryCtxRetain)>("cuDevicePrimaryCtxRetain");
    auto release = lib.get<decltype(cuDevicePrimaryCtxRelease_v2)>("cuDevicePrimaryCtxRelease_v2");
    auto set_current = lib.get<decltype(cuCtxSetCurrent)>("cuCtxSetCurrent");
    auto load = lib.get<decltype(cuModuleLoadData)>("cuModuleLoadData");
    auto function = lib.get<decltype(cuModuleGetFunction)>("cuModuleGetFunction");
    auto alloc = lib.get<decltype(cuMemAlloc_v2)>("cuMemAlloc_v2");
    auto to_host = lib.get<decltype(cuMemcpyDtoH_v2)>("cuMemcpyDtoH_v2");
    auto launch = lib.get<decltype(cuLaunchKernel)>("cuLaunchKernel");
    std::vector<std::uint32_t> got(64, 0);
    std::thread worker([&] {
        ASSERT_EQ(init(0), CUDA_SUCCESS);
        CUcontext ctx = nullptr;
        ASSERT_EQ(retain(&ctx, 0), CUDA_SUCCESS);
        ASSERT_EQ(set_current(ctx), CUDA_SUCCESS);
        // the simulator reads directives only: a stub naming the probe is enough
        const char* ptx = ".version 7.8\n.target sm_90\n.address_size 64\n"
                          ".visible .entry probe_uninitialised_shared(.param .u64 out)\n{\n\tret;\n}\n";
        CUmodule m = nullptr;
        ASSERT_EQ(load(&m, ptx), CUDA_SUCCESS);
        CUfunction f = nullptr;
        ASSERT_EQ(function(&f, m, "probe_uninitialised_shared"), CUDA_SUCCESS);
        CUdeviceptr out = 0;
        ASSERT_EQ(alloc(&out, 64 * sizeof(float)), CUDA_SUCCESS);
        void* params[] = {&out};
        ASSERT_EQ(launch(f, 1, 1, 1, 64, 1, 1, 0, nullptr, params, nullptr), CUDA_SUCCESS);
        ASSERT_EQ(to_host(got.data(), out, 64 * sizeof(float)), CUDA_SUCCESS);
        release(0);
        set_current(nullptr);
    });
    worker.join();
    for (std::uint32_t bits : got) EXPECT_EQ(bits, 0x7FF0DEADu);  // the simulator's shared-memory poison
    dlclose(probes);
}

}  // namespace
