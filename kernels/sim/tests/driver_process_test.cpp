// Process-wide driver behaviour that needs a fresh process: calls before cuInit, and the device memory limit
// (MOBIUS_SIM_DEVICE_MEMORY=64M is set for this executable by CMake before the simulator reads it).
#include "harness.h"

namespace {

TEST(DriverProcess, CallsBeforeCuInitFailThenOutOfMemoryIsReportedAndRecoverable) {
    int count = 0;
    EXPECT_EQ(cuDeviceGetCount(&count), CUDA_ERROR_NOT_INITIALIZED);
    CUcontext ctx = nullptr;
    EXPECT_EQ(cuDevicePrimaryCtxRetain(&ctx, 0), CUDA_ERROR_NOT_INITIALIZED);

    mt::Gpu gpu;
    size_t free_bytes = 0, total = 0;
    CU_CHECK(cuMemGetInfo_v2(&free_bytes, &total));
    ASSERT_EQ(total, 64u << 20);
    CUdeviceptr a = 0, b = 0;
    CU_CHECK(cuMemAlloc_v2(&a, 40u << 20));
    EXPECT_EQ(cuMemAlloc_v2(&b, 40u << 20), CUDA_ERROR_OUT_OF_MEMORY);
    EXPECT_NE(std::string(mobiusSimGetLastErrorMessage()).find("MOBIUS_SIM_DEVICE_MEMORY"), std::string::npos);
    CU_CHECK(cuMemGetInfo_v2(&free_bytes, &total));
    EXPECT_EQ(free_bytes, (64u << 20) - (40u << 20));
    CU_CHECK(cuMemFree_v2(a));
    CU_CHECK(cuMemAlloc_v2(&b, 40u << 20));
    CU_CHECK(cuMemFree_v2(b));
}

}  // namespace
