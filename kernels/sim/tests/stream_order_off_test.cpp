// MOBIUS_SIM_STREAMCHECK=0 (set for this executable by CMake before the simulator reads it): the stream-order check
// is off, and work on two streams with nothing ordering it runs as it always did.
#include "harness.h"

namespace {

TEST(StreamOrderOff, RacingStreamsAreNotReportedWhenTheCheckIsOff) {
    EXPECT_FALSE(mobius_sim::options().streamcheck);
    mt::Gpu gpu;
    CUfunction fill = gpu.kernel("elementwise", "ew_fill_f32");
    CUfunction scale = gpu.kernel("elementwise", "ew_scale_f32");
    mt::DeviceArray<float> x(256), y(256);
    CUstream a = nullptr, b = nullptr;
    CU_CHECK(cuStreamCreate(&a, CU_STREAM_DEFAULT));
    CU_CHECK(cuStreamCreate(&b, CU_STREAM_DEFAULT));
    float* xp = x.get();
    float* yp = y.get();
    long long n = 256;
    float value = 2.0f, alpha = 3.0f;
    void* fill_params[] = {&xp, &n, &value};
    void* scale_params[] = {&xp, &yp, &n, &alpha};
    CU_CHECK(cuLaunchKernel(fill, 1, 1, 1, 256, 1, 1, 0, a, fill_params, nullptr));
    CU_CHECK(cuLaunchKernel(scale, 1, 1, 1, 256, 1, 1, 0, b, scale_params, nullptr));  // no event: a race the check would report
    EXPECT_EQ(y.read()[255], 6.0f);
    CU_CHECK(cuStreamDestroy_v2(a));
    CU_CHECK(cuStreamDestroy_v2(b));
}

}  // namespace
