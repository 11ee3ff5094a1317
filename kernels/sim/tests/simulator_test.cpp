// The simulator's own behaviour: planted faults must be reported (never crash or hang the process), and
// barriers, shuffles, shared memory and atomics must behave as on the GPU.
#include <bit>
#include <cmath>

#include "harness.h"

namespace {

using mobius_sim::LaunchResult;
using mobius_sim::Status;
using mt::Dim;

// Launches a registered kernel by name through the simulator's C++ API (the planted faults have no PTX).
template <class... A>
LaunchResult run(const char* name, Dim grid, Dim block, unsigned shared, A... args) {
    const mobius_sim::KernelSignature* k = mobius_sim::find_kernel(name);
    if (k == nullptr) return {Status::InvalidValue, std::string("no kernel ") + name};
    std::tuple<A...> values{args...};
    return std::apply([&](auto&... v) {
        void* params[] = {static_cast<void*>(&v)..., nullptr};
        const mobius_sim::LaunchConfig config{{grid.x, grid.y, grid.z}, {block.x, block.y, block.z}, shared};
        return mobius_sim::launch(*k, config, params);
    }, values);
}

#define EXPECT_MENTIONS(message, text) EXPECT_NE((message).find(text), std::string::npos) << (message)

TEST(PlantedFaults, WriteIntoTheRedzonePastTheEndIsAnIllegalAddress) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(10);  // 40 bytes: the rest of its 256-byte span is redzone
    const LaunchResult r = run("fault_oob_write", {1}, {32}, 0, p.get(), 10);
    EXPECT_EQ(r.status, Status::IllegalAddress);
    EXPECT_MENTIONS(r.message, "past the end of allocation");
    EXPECT_MENTIONS(r.message, "fault_oob_write");
}

TEST(PlantedFaults, WriteBeforeTheStartIsAnIllegalAddress) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(10);
    const LaunchResult r = run("fault_write_before_start", {1}, {32}, 0, p.get());
    EXPECT_EQ(r.status, Status::IllegalAddress);
    EXPECT_MENTIONS(r.message, "bytes before the start of allocation");
}

// After a launch only the allocations its pointer parameters point into have their redzones checked, unless a
// parameter could carry pointers of its own: then every allocation is.
TEST(PlantedFaults, TheRedzoneCheckFollowsPointersReadFromDeviceMemory) {
    EXPECT_TRUE(mobius_sim::find_kernel("fault_oob_write")->direct_pointers);
    EXPECT_TRUE(mobius_sim::find_kernel("ew_add_f32")->direct_pointers);
    EXPECT_FALSE(mobius_sim::find_kernel("fault_oob_write_indirect")->direct_pointers);
    mt::Gpu gpu;
    mt::DeviceArray<float> target(10);
    mt::DeviceArray<float*> slots(std::vector<float*>{target.get()});
    const LaunchResult r = run("fault_oob_write_indirect", {1}, {32}, 0, static_cast<float* const*>(slots.get()), 10);
    EXPECT_EQ(r.status, Status::IllegalAddress);
    EXPECT_MENTIONS(r.message, "past the end of allocation");
}

TEST(PlantedFaults, WritePastA256ByteMultipleHitsTheGuardPage) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(64);  // exactly 256 bytes: p[64] is on the guard page
    const LaunchResult r = run("fault_oob_write", {1}, {128}, 0, p.get(), 64);
    EXPECT_EQ(r.status, Status::IllegalAddress);
    EXPECT_MENTIONS(r.message, "0 bytes past the end of allocation");
    EXPECT_MENTIONS(r.message, "thread (64,0,0)");
}

TEST(PlantedFaults, NullPointerWriteIsAnIllegalAddress) {
    mt::Gpu gpu;
    const LaunchResult r = run("fault_null_write", {1}, {32}, 0, static_cast<float*>(nullptr));
    EXPECT_EQ(r.status, Status::IllegalAddress);
    EXPECT_MENTIONS(r.message, "null pointer");
}

TEST(PlantedFaults, MissingBarrierIsCaughtByTheRaceCheck) {
    mt::Gpu gpu;
    mt::DeviceArray<float> in(mt::random_vector(64, 1)), out(64);
    const LaunchResult r = run("fault_missing_barrier", {1}, {64}, 0, in.get(), out.get());
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "race");
}

TEST(PlantedFaults, TheSameKernelWithItsBarrierPasses) {
    mt::Gpu gpu;
    const std::vector<float> host = mt::random_vector(64, 2);
    mt::DeviceArray<float> in(host), out(64);
    const LaunchResult r = run("probe_with_barrier", {1}, {64}, 0, in.get(), out.get());
    ASSERT_EQ(r.status, Status::Success) << r.message;
    const std::vector<float> got = out.read();
    for (int t = 0; t < 64; ++t) EXPECT_EQ(got[t], host[(t + 63) % 64]);
}

TEST(PlantedFaults, BlocksReadingEachOthersOutputAreARace) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(std::vector<float>(9, 0.0f));
    const LaunchResult r = run("fault_block_dependency", {8}, {32}, 0, p.get());
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "race");
}

TEST(PlantedFaults, BarrierAfterAnEarlyReturnIsReportedNotHung) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(64);
    const LaunchResult r = run("fault_barrier_after_return", {1}, {64}, 0, p.get(), 40);
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "is not reached by all 64 threads");
    EXPECT_MENTIONS(r.message, "has exited");
}

TEST(PlantedFaults, ThreadsAtDifferentBarriersAreReported) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(32);
    const LaunchResult r = run("fault_divergent_barriers", {1}, {32}, 0, p.get());
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "waits at __syncthreads");
}

TEST(PlantedFaults, ShuffleThatHalfTheWarpNeverReachesIsReported) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(32);
    const LaunchResult r = run("fault_partial_shuffle", {1}, {32}, 0, p.get());
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "can never complete");
}

TEST(PlantedFaults, FailedRequirementNamesTheCondition) {
    mt::Gpu gpu;
    const LaunchResult r = run("fault_requirement", {2}, {64}, 0, 128);
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "requirement failed: blockDim.x");
}

TEST(PlantedFaults, WritePastDynamicSharedMemoryIsReported) {
    mt::Gpu gpu;
    const LaunchResult r = run("fault_dynamic_shared_overflow", {1}, {32}, 64 * 4, 64);
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "past the end of dynamic shared memory");
}

TEST(PlantedFaults, IntegerDivisionByZeroFailsTheLaunch) {
    mt::Gpu gpu;
    mt::DeviceArray<int> p(32);
    const LaunchResult r = run("fault_divide_by_zero", {1}, {32}, 0, p.get(), 0);
    EXPECT_EQ(r.status, Status::LaunchFailed);
    EXPECT_MENTIONS(r.message, "arithmetic exception");
}

TEST(PlantedFaults, StackOverflowOfASimulatedThreadIsReported) {
    mt::Gpu gpu;
    mt::DeviceArray<float> out(32);
    const LaunchResult r = run("fault_stack_overflow", {1}, {32}, 0, out.get());
    EXPECT_EQ(r.status, Status::IllegalAddress);
    EXPECT_MENTIONS(r.message, "stack overflow");
}

TEST(PlantedFaults, AnEndlessLoopIsStoppedByTheWatchdog) {
    mt::Gpu gpu;
    mt::DeviceArray<int> flag(std::vector<int>{0});
    const double saved = mobius_sim::options().launch_timeout_seconds;
    mobius_sim::options().launch_timeout_seconds = 0.2;
    const LaunchResult r = run("fault_endless_loop", {1}, {32}, 0, static_cast<const volatile int*>(flag.get()));
    mobius_sim::options().launch_timeout_seconds = saved;
    EXPECT_EQ(r.status, Status::Timeout);
    EXPECT_MENTIONS(r.message, "MOBIUS_SIM_LAUNCH_TIMEOUT");
}

TEST(PlantedFaults, TheProcessKeepsWorkingAfterFaults) {
    mt::Gpu gpu;
    mt::DeviceArray<float> p(64);
    EXPECT_EQ(run("fault_oob_write", {1}, {128}, 0, p.get(), 64).status, Status::IllegalAddress);
    EXPECT_EQ(run("fault_partial_shuffle", {1}, {32}, 0, p.get()).status, Status::LaunchFailed);
    const std::vector<float> host = mt::random_vector(64, 3);
    mt::DeviceArray<float> in(host);
    ASSERT_EQ(run("probe_with_barrier", {1}, {64}, 0, in.get(), p.get()).status, Status::Success);
    EXPECT_EQ(p.read()[5], host[4]);
}

TEST(LaunchLimits, OversizedBlocksGridsAndSharedMemoryAreRejected) {
    mt::Gpu gpu;
    mt::DeviceArray<int> p(64);
    EXPECT_EQ(run("probe_indices", {1}, {1025}, 0, p.get()).status, Status::InvalidValue);
    EXPECT_EQ(run("probe_indices", {1}, {32, 32, 2}, 0, p.get()).status, Status::InvalidValue);
    EXPECT_EQ(run("probe_indices", {1}, {1, 1, 65}, 0, p.get()).status, Status::InvalidValue);
    EXPECT_EQ(run("probe_indices", {1, 65536}, {32}, 0, p.get()).status, Status::InvalidValue);
    EXPECT_EQ(run("probe_indices", {0}, {32}, 0, p.get()).status, Status::InvalidValue);
    EXPECT_EQ(run("probe_indices", {1}, {32}, 48 * 1024 + 4, p.get()).status, Status::InvalidValue);
}

// ---- semantics -----------------------------------------------------------------------------------------------

int reference_shuffle(int kind, const std::vector<int>& v, int lane, int width, int delta) {
    const int base = lane & ~(width - 1);
    switch (kind) {
        case 0: return v[base + ((lane * 7 + 3) & (width - 1))];
        case 1: { const int j = lane ^ delta; return j < base + width ? v[j] : v[lane]; }
        case 2: return (lane - base) + delta < width ? v[lane + delta] : v[lane];
        default: return (lane - base) - delta >= 0 ? v[lane - delta] : v[lane];
    }
}

TEST(Semantics, ShufflesFollowThePtxRulesForEveryWidth) {
    mt::Gpu gpu;
    std::vector<int> host(64);
    for (int i = 0; i < 64; ++i) host[i] = i * 13 + 5;
    mt::DeviceArray<int> in(host), out(13 * 64);
    for (int delta : {1, 3, 6}) {
        ASSERT_EQ(run("probe_shuffles", {1}, {64}, 0, in.get(), out.get(), delta).status, Status::Success);
        const std::vector<int> got = out.read();
        const int widths[3] = {32, 8, 4};
        for (int kind = 0; kind < 4; ++kind)
            for (int w = 0; w < 3; ++w)
                for (int t = 0; t < 64; ++t) {
                    const int warp = t / 32 * 32;
                    const std::vector<int> lanes(host.begin() + warp, host.begin() + warp + 32);
                    ASSERT_EQ(got[(kind * 3 + w) * 64 + t], reference_shuffle(kind, lanes, t - warp, widths[w], delta))
                        << "kind " << kind << " width " << widths[w] << " thread " << t << " delta " << delta;
                }
        for (int t = 0; t < 64; ++t) {
            unsigned ballot = 0;
            for (int l = 0; l < 32; ++l) ballot |= (host[t / 32 * 32 + l] % 3 == 0 ? 1u : 0u) << l;
            ASSERT_EQ(static_cast<unsigned>(got[12 * 64 + t]), ballot);
        }
    }
}

TEST(Semantics, HalfWarpsWithTheirOwnMasksShuffleIndependently) {
    mt::Gpu gpu;
    mt::DeviceArray<int> out(32);
    ASSERT_EQ(run("probe_split_masks", {1}, {32}, 0, out.get()).status, Status::Success);
    const std::vector<int> got = out.read();
    for (int t = 0; t < 32; ++t) EXPECT_EQ(got[t], t ^ 1);
}

TEST(Semantics, SharedMemoryIsPoisonedAtBlockStartEvenInTemplates) {
    mt::Gpu gpu;
    mt::DeviceArray<float> out(64);
    const LaunchResult r = run("probe_uninitialised_shared", {1}, {64}, 0, out.get());
    ASSERT_EQ(r.status, Status::Success) << r.message;
    for (float v : out.read()) EXPECT_EQ(std::bit_cast<std::uint32_t>(v), mobius_sim::kNanPoisonBits);
}

TEST(Semantics, StaticAndDynamicSharedMemoryArePerBlock) {
    mt::Gpu gpu;
    mt::DeviceArray<float> out(5 * 128);
    ASSERT_EQ(run("probe_shared_per_block", {5}, {128}, 128 * 4, out.get()).status, Status::Success);
    const std::vector<float> got = out.read();
    for (int b = 0; b < 5; ++b)
        for (int t = 0; t < 128; ++t) EXPECT_EQ(got[b * 128 + t], b * 1000.0f + (127 - t));
}

TEST(Semantics, FloatAtomicsPassTheRaceCheckDespiteOrderDependentRounding) {
    mt::Gpu gpu;
    std::vector<float> values(8 * 64);
    double sum = 0.0;
    for (std::size_t i = 0; i < values.size(); ++i) sum += values[i] = (i % 7 == 0 ? 3.0e6f : 0.37f) * (i % 2 ? -1.0f : 1.0f);
    mt::DeviceArray<float> in(values), total(std::vector<float>{0.0f});
    const LaunchResult r = run("probe_atomics", {8}, {64}, 0, in.get(), total.get());
    ASSERT_EQ(r.status, Status::Success) << r.message;
    EXPECT_NEAR(total.read()[0], sum, 1.0);  // 512 additions of terms up to 3e6: float rounding ~0.25 each
}

TEST(Semantics, ThreeDimensionalIndicesCoverEveryThreadOnce) {
    mt::Gpu gpu;
    const int threads = 4 * 3 * 2, blocks = 3 * 2 * 2;
    mt::DeviceArray<int> out(threads * blocks);
    ASSERT_EQ(run("probe_indices", {3, 2, 2}, {4, 3, 2}, 0, out.get()).status, Status::Success);
    const std::vector<int> got = out.read();
    for (int i = 0; i < threads * blocks; ++i) EXPECT_EQ(got[i], i);
}

TEST(Semantics, BlockSumOverEveryBlockSize) {
    mt::Gpu gpu;
    for (unsigned block : {32u, 96u, 256u, 1024u}) {
        const std::vector<float> host = mt::random_vector(3 * block, block);
        mt::DeviceArray<float> in(host), out(3);
        ASSERT_EQ(run("probe_block_sum", {3}, {block}, 0, in.get(), out.get()).status, Status::Success);
        std::vector<double> ref(3, 0.0);
        for (unsigned i = 0; i < 3 * block; ++i) ref[i / block] += host[i];
        mt::expect_close(out.read(), ref, 1e-5 * block, 0.0, "block_sum");  // |x| < 1: rounding grows with the count
    }
}

}  // namespace
