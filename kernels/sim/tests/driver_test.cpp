// The simulated CUDA driver as the C# backend sees it: device queries, contexts, memory, modules from our PTX,
// launches through kernelParams and extra, launch limits, sticky errors, streams, events, error strings.
#include <bit>
#include <cmath>
#include <cstring>

#include "harness.h"

namespace {

using mt::Dim;

const char* kModules[] = {"adamw", "attention", "bias", "cast", "elementwise", "embedding", "layout", "norm", "reduce", "resample", "softmax", "temporal_conv"};

// A hand-written PTX stub naming a test-only kernel: the simulator reads directives, not instructions.
std::string stub_ptx(const std::string& entry, const std::string& params, const std::string& target = "sm_90") {
    return ".version 7.8\n.target " + target + "\n.address_size 64\n.visible .entry " + entry + "(" + params + ")\n{\n\tret;\n}\n";
}

TEST(Driver, DeviceDescribesAnSm90PartWithItsLimits) {
    mt::Gpu gpu;
    int count = 0, version = 0;
    CU_CHECK(cuDeviceGetCount(&count));
    CU_CHECK(cuDriverGetVersion(&version));
    EXPECT_EQ(count, 1);
    EXPECT_EQ(version, 13000);
    CUdevice dev = -1;
    CU_CHECK(cuDeviceGet(&dev, 0));
    EXPECT_EQ(cuDeviceGet(&dev, 1), CUDA_ERROR_INVALID_DEVICE);
    char name[128];
    CU_CHECK(cuDeviceGetName(name, sizeof name, 0));
    EXPECT_NE(std::string(name).find("sm_90"), std::string::npos);
    auto attr = [](CUdevice_attribute a) {
        int v = -1;
        CU_CHECK(cuDeviceGetAttribute(&v, a, 0));
        return v;
    };
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR), 9);
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR), 0);
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT), 132);
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK), 1024);
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK), 48 * 1024);
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN), 227 * 1024);
    EXPECT_EQ(attr(CU_DEVICE_ATTRIBUTE_WARP_SIZE), 32);
    int v = 0;
    EXPECT_EQ(cuDeviceGetAttribute(&v, static_cast<CUdevice_attribute>(9999), 0), CUDA_ERROR_INVALID_VALUE);
    size_t total = 0;
    CU_CHECK(cuDeviceTotalMem_v2(&total, 0));
    EXPECT_GT(total, 0u);
}

TEST(Driver, CallsNeedACurrentLiveContext) {
    CU_CHECK(cuInit(0));
    EXPECT_EQ(cuInit(1), CUDA_ERROR_INVALID_VALUE);
    CUcontext ctx = nullptr;
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU_CHECK(cuCtxSetCurrent(nullptr));
    CUdeviceptr p = 0;
    EXPECT_EQ(cuMemAlloc_v2(&p, 64), CUDA_ERROR_INVALID_CONTEXT);
    CU_CHECK(cuCtxSetCurrent(ctx));
    CU_CHECK(cuMemAlloc_v2(&p, 64));
    CU_CHECK(cuDevicePrimaryCtxRelease_v2(0));  // refcount 0: the context and its memory are gone
    EXPECT_EQ(cuMemAlloc_v2(&p, 64), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_EQ(cuCtxSetCurrent(ctx), CUDA_ERROR_INVALID_CONTEXT);
    EXPECT_EQ(cuDevicePrimaryCtxRelease_v2(0), CUDA_ERROR_INVALID_CONTEXT);
    CU_CHECK(cuCtxSetCurrent(nullptr));
}

TEST(Driver, MemoryRoundTripsAndIsPoisonedWhenNew) {
    mt::Gpu gpu;
    CUdeviceptr a = 0, b = 0;
    CU_CHECK(cuMemAlloc_v2(&a, 1000 * sizeof(float)));
    CU_CHECK(cuMemAlloc_v2(&b, 1000 * sizeof(float)));
    EXPECT_EQ(a % 256, 0u);
    std::vector<float> fresh(1000);
    CU_CHECK(cuMemcpyDtoH_v2(fresh.data(), a, 4000));
    for (float f : fresh) ASSERT_EQ(std::bit_cast<std::uint32_t>(f), mobius_sim::kNanPoisonBits);
    const auto host = mt::random_vector(1000, 9);
    CU_CHECK(cuMemcpyHtoD_v2(a, host.data(), 4000));
    CU_CHECK(cuMemcpyDtoD_v2(b, a + 400, 3600));
    CU_CHECK(cuMemsetD32_v2(b + 3600, 0x3f800000u, 100));  // 1.0f
    std::vector<float> back(1000);
    CU_CHECK(cuMemcpyDtoHAsync_v2(back.data(), b, 4000, nullptr));
    CU_CHECK(cuStreamSynchronize(nullptr));
    for (int i = 0; i < 900; ++i) ASSERT_EQ(back[i], host[i + 100]);
    for (int i = 900; i < 1000; ++i) ASSERT_EQ(back[i], 1.0f);
    EXPECT_EQ(cuMemcpyHtoD_v2(a + 3996, host.data(), 8), CUDA_ERROR_INVALID_VALUE);  // crosses the end
    EXPECT_EQ(cuMemsetD32_v2(a + 2, 0, 1), CUDA_ERROR_INVALID_VALUE);                 // misaligned
    EXPECT_EQ(cuMemFree_v2(a + 4), CUDA_ERROR_INVALID_VALUE);                          // not an allocation start
    EXPECT_EQ(cuMemAlloc_v2(&a, 0), CUDA_ERROR_INVALID_VALUE);
    size_t free_bytes = 0, total = 0;
    CU_CHECK(cuMemGetInfo_v2(&free_bytes, &total));
    EXPECT_EQ(total - free_bytes, 2u * 4096);  // each 4000-byte allocation counts as its 256-byte-rounded span
    CU_CHECK(cuMemFree_v2(a));
    CU_CHECK(cuMemFree_v2(b));
    EXPECT_EQ(cuMemFree_v2(a), CUDA_ERROR_INVALID_VALUE);  // double free
}

TEST(Driver, EveryCommittedPtxModuleLoadsForBothArchitecturesWithAllEntries) {
    mt::Gpu gpu;
    const auto names = mobius_sim::registered_kernel_names();
    std::size_t found = 0;
    for (const char* arch : {"sm_80", "sm_90"}) {
        for (const char* module : kModules) {
            const std::string text = mt::read_file(mt::ptx_path(arch, module));
            CUmodule m = nullptr;
            CU_CHECK(cuModuleLoadData(&m, text.c_str()));
            for (const std::string& name : names) {
                if (text.find(".entry " + name + "(") == std::string::npos) continue;
                CUfunction f = nullptr;
                CU_CHECK(cuModuleGetFunction(&f, m, name.c_str()));
                ++found;
            }
            CUfunction f = nullptr;
            EXPECT_EQ(cuModuleGetFunction(&f, m, "no_such_kernel"), CUDA_ERROR_NOT_FOUND);
            CU_CHECK(cuModuleUnload(m));
        }
    }
    // every product kernel is in some module, for both architectures (the test kernels are in none)
    std::size_t product = 0;
    for (const std::string& name : names) product += name.rfind("fault_", 0) != 0 && name.rfind("probe_", 0) != 0 ? 1 : 0;
    EXPECT_EQ(found, 2 * product);
}

TEST(Driver, BadModulesFailLikeTheRealDriverWithAJitLog) {
    mt::Gpu gpu;
    CUmodule m = nullptr;
    EXPECT_EQ(cuModuleLoadData(&m, "this is not PTX"), CUDA_ERROR_INVALID_IMAGE);  // what a real driver answers
    EXPECT_EQ(cuModuleLoadData(&m, ".version 7.8\n.target sm_90\n.address_size 64\n.visible .entry broken()\n{\n  ret;\n"), CUDA_ERROR_INVALID_PTX);
    EXPECT_EQ(cuModuleLoadData(&m, "\x7f" "ELF\x02\x01\x01"), CUDA_ERROR_INVALID_IMAGE);
    EXPECT_EQ(cuModuleLoadData(&m, stub_ptx("ew_add_f32", ".param .u64 a", "sm_100").c_str()), CUDA_ERROR_INVALID_PTX);

    char error_log[256] = {}, info_log[256] = {};
    CUjit_option options[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES};
    void* values[] = {error_log, reinterpret_cast<void*>(std::uintptr_t{sizeof error_log}), info_log,
                      reinterpret_cast<void*>(std::uintptr_t{sizeof info_log})};
    const std::string unknown = stub_ptx("kernel_nobody_wrote", ".param .u64 a");
    EXPECT_EQ(cuModuleLoadDataEx(&m, unknown.c_str(), 4, options, values), CUDA_ERROR_NOT_FOUND);
    EXPECT_NE(std::string(error_log).find("kernel_nobody_wrote"), std::string::npos) << error_log;
    EXPECT_EQ(reinterpret_cast<std::uintptr_t>(values[1]), std::strlen(error_log) + 1);  // bytes written back

    // a stale PTX whose parameter list no longer matches the simulator build of the kernel
    const std::string stale = stub_ptx("ew_fill_f32", ".param .u64 y, .param .u32 n, .param .f32 v");
    values[1] = reinterpret_cast<void*>(std::uintptr_t{sizeof error_log});
    EXPECT_EQ(cuModuleLoadDataEx(&m, stale.c_str(), 4, options, values), CUDA_ERROR_INVALID_PTX);
    EXPECT_NE(std::string(error_log).find("stale"), std::string::npos) << error_log;

    values[1] = reinterpret_cast<void*>(std::uintptr_t{sizeof error_log});
    values[3] = reinterpret_cast<void*>(std::uintptr_t{sizeof info_log});
    const std::string good = mt::read_file(mt::ptx_path("sm_90", "elementwise"));
    CU_CHECK(cuModuleLoadDataEx(&m, good.c_str(), 4, options, values));
    EXPECT_EQ(error_log[0], '\0');
    EXPECT_NE(std::string(info_log).find("entries"), std::string::npos);
    CU_CHECK(cuModuleUnload(m));
    EXPECT_EQ(cuModuleUnload(m), CUDA_ERROR_INVALID_HANDLE);
}

TEST(Driver, KernelParamsAndExtraBufferUnpackTheSameArguments) {
    mt::Gpu gpu;
    const long long n = 300;
    const auto a = mt::random_vector(n, 1), b = mt::random_vector(n, 2);
    mt::DeviceArray<float> da(a), db(b), y1(n), y2(n);
    CUfunction f = gpu.kernel("elementwise", "ew_add_f32");
    CU_CHECK(gpu.launch(f, "ew_add_f32", {2}, {256}, 0, da.get(), db.get(), y1.get(), n, 2.0f, -1.0f));
    // the `extra` form: one buffer, each argument at its natural alignment
    struct {
        const float* a;
        const float* b;
        float* y;
        long long n;
        float alpha, beta;
    } args{da.get(), db.get(), y2.get(), n, 2.0f, -1.0f};
    size_t size = sizeof args;
    void* extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &args, CU_LAUNCH_PARAM_BUFFER_SIZE, &size, CU_LAUNCH_PARAM_END};
    CU_CHECK(cuLaunchKernel(f, 2, 1, 1, 256, 1, 1, 0, nullptr, nullptr, extra));
    EXPECT_EQ(y1.read(), y2.read());
    std::vector<double> ref(n);
    for (long long i = 0; i < n; ++i) ref[i] = 2.0 * a[i] - b[i];
    mt::expect_close(y1.read(), ref, 1e-6, 1e-6, "ew_add through kernelParams");
    float* y1p = y1.get();
    const float* ap = da.get();
    float alpha = 1.0f;
    void* hole[] = {&ap, &ap, &y1p, nullptr, &alpha, &alpha};  // one argument missing
    EXPECT_EQ(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, nullptr, hole, nullptr), CUDA_ERROR_INVALID_VALUE);
    EXPECT_EQ(cuLaunchKernel(f, 1, 1, 1, 32, 1, 1, 0, nullptr, nullptr, nullptr), CUDA_ERROR_INVALID_VALUE);
}

TEST(Driver, LaunchLimitsComeFromThePtxAndTheFunctionAttributes) {
    mt::Gpu gpu;
    mt::DeviceArray<float> y(64);
    CUfunction fill = gpu.kernel("elementwise", "ew_fill_f32");
    int v = 0;
    CU_CHECK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, fill));
    EXPECT_EQ(v, 256);  // __launch_bounds__(256) -> .maxntid 256
    EXPECT_EQ(gpu.launch(fill, "ew_fill_f32", {1}, {512}, 0, y.get(), 64LL, 1.0f), CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    EXPECT_EQ(gpu.launch(fill, "ew_fill_f32", {1}, {32}, 48 * 1024 + 16, y.get(), 64LL, 1.0f), CUDA_ERROR_INVALID_VALUE);

    CUfunction transpose = gpu.kernel("layout", "transpose_f32");
    CU_CHECK(cuFuncGetAttribute(&v, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES, transpose));
    EXPECT_EQ(v, 32 * 33 * 4);  // the static tile, read from the PTX

    // more than 48 KiB of dynamic shared memory needs the opt-in attribute, up to 227 KiB
    CUfunction attn = gpu.kernel("attention", "temporal_attention_fwd_f32");
    mt::DeviceArray<float> buf(8 * 16), lse(8);
    const unsigned big = 100 * 1024;
    EXPECT_EQ(gpu.launch(attn, "temporal_attention_fwd_f32", {1}, {128}, big, buf.get(), buf.get(), buf.get(), buf.get(), lse.get(), 1, 1, 8, 16,
                         0.25f),
              CUDA_ERROR_INVALID_VALUE);
    EXPECT_EQ(cuFuncSetAttribute(attn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 228 * 1024), CUDA_ERROR_INVALID_VALUE);
    CU_CHECK(cuFuncSetAttribute(attn, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, int(big)));
    CU_CHECK(gpu.launch(attn, "temporal_attention_fwd_f32", {1}, {128}, big, buf.get(), buf.get(), buf.get(), buf.get(), lse.get(), 1, 1, 8, 16,
                        0.25f));
}

TEST(Driver, AKernelFaultIsStickyUntilThePrimaryContextIsRecreated) {
    CU_CHECK(cuInit(0));
    CUcontext ctx = nullptr;
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU_CHECK(cuCtxSetCurrent(ctx));
    CUmodule m = nullptr;
    CU_CHECK(cuModuleLoadData(&m, stub_ptx("fault_oob_write", ".param .u64 p, .param .u32 n").c_str()));
    CUfunction f = nullptr;
    CU_CHECK(cuModuleGetFunction(&f, m, "fault_oob_write"));
    CUdeviceptr p = 0;
    CU_CHECK(cuMemAlloc_v2(&p, 64 * sizeof(float)));
    float* pp = reinterpret_cast<float*>(p);
    int n = 64;
    void* params[] = {&pp, &n};
    EXPECT_EQ(cuLaunchKernel(f, 1, 1, 1, 128, 1, 1, 0, nullptr, params, nullptr), CUDA_ERROR_ILLEGAL_ADDRESS);
    const std::string message = mobiusSimGetLastErrorMessage();
    EXPECT_NE(message.find("fault_oob_write"), std::string::npos) << message;
    EXPECT_NE(message.find("past the end of allocation"), std::string::npos) << message;
    CUdeviceptr q = 0;
    EXPECT_EQ(cuMemAlloc_v2(&q, 64), CUDA_ERROR_ILLEGAL_ADDRESS);
    EXPECT_EQ(cuCtxSynchronize(), CUDA_ERROR_ILLEGAL_ADDRESS);
    CU_CHECK(cuMemFree_v2(p));  // cleanup still works
    CU_CHECK(cuDevicePrimaryCtxRelease_v2(0));
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU_CHECK(cuCtxSetCurrent(ctx));
    CU_CHECK(cuMemAlloc_v2(&q, 64));
    CU_CHECK(cuCtxSynchronize());
    CU_CHECK(cuDevicePrimaryCtxRelease_v2(0));
    CU_CHECK(cuCtxSetCurrent(nullptr));
}

TEST(Driver, StreamsAndEventsTimeSynchronousWork) {
    mt::Gpu gpu;
    CUstream s = nullptr;
    CU_CHECK(cuStreamCreate(&s, CU_STREAM_NON_BLOCKING));
    CUevent start = nullptr, stop = nullptr, untimed = nullptr;
    CU_CHECK(cuEventCreate(&start, CU_EVENT_DEFAULT));
    CU_CHECK(cuEventCreate(&stop, CU_EVENT_BLOCKING_SYNC));
    CU_CHECK(cuEventCreate(&untimed, CU_EVENT_DISABLE_TIMING));
    float ms = -1.0f;
    EXPECT_EQ(cuEventElapsedTime(&ms, start, stop), CUDA_ERROR_INVALID_HANDLE);  // not recorded yet
    mt::DeviceArray<float> y(1 << 16);
    CUfunction fill = gpu.kernel("elementwise", "ew_fill_f32");
    CU_CHECK(cuEventRecord(start, s));
    float* yp = y.get();
    long long n = 1 << 16;
    float value = 3.0f;
    void* params[] = {&yp, &n, &value};
    CU_CHECK(cuLaunchKernel(fill, 64, 1, 1, 256, 1, 1, 0, s, params, nullptr));
    CU_CHECK(cuEventRecord(stop, s));
    CU_CHECK(cuStreamWaitEvent(CU_STREAM_LEGACY, stop, 0));
    CU_CHECK(cuEventSynchronize(stop));
    CU_CHECK(cuEventQuery(stop));
    CU_CHECK(cuStreamQuery(s));
    CU_CHECK(cuEventElapsedTime(&ms, start, stop));
    EXPECT_GE(ms, 0.0f);
    CU_CHECK(cuEventElapsedTime_v2(&ms, start, stop));
    CU_CHECK(cuEventRecord(untimed, s));
    EXPECT_EQ(cuEventElapsedTime(&ms, start, untimed), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_EQ(y.read()[12345], 3.0f);
    CU_CHECK(cuEventDestroy_v2(start));
    CU_CHECK(cuEventDestroy_v2(stop));
    CU_CHECK(cuEventDestroy_v2(untimed));
    CU_CHECK(cuStreamDestroy_v2(s));
    EXPECT_EQ(cuStreamSynchronize(s), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_EQ(cuLaunchKernel(fill, 1, 1, 1, 32, 1, 1, 0, s, params, nullptr), CUDA_ERROR_INVALID_HANDLE);
    EXPECT_EQ(cuEventDestroy_v2(start), CUDA_ERROR_INVALID_HANDLE);
}

TEST(Driver, ErrorNamesAndStrings) {
    const char* s = nullptr;
    CU_CHECK(cuGetErrorName(CUDA_ERROR_ILLEGAL_ADDRESS, &s));
    EXPECT_STREQ(s, "CUDA_ERROR_ILLEGAL_ADDRESS");
    CU_CHECK(cuGetErrorName(CUDA_ERROR_INVALID_PTX, &s));
    EXPECT_STREQ(s, "CUDA_ERROR_INVALID_PTX");
    CU_CHECK(cuGetErrorString(CUDA_ERROR_OUT_OF_MEMORY, &s));
    EXPECT_STREQ(s, "out of memory");
    EXPECT_EQ(cuGetErrorString(static_cast<CUresult>(12345), &s), CUDA_ERROR_INVALID_VALUE);
    EXPECT_EQ(s, nullptr);
}

}  // namespace
