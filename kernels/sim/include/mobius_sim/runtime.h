// The simulator's host-side C++ API: device memory, the kernel registry and launches. The simulated CUDA
// driver (src/driver.cpp) is a thin C layer over this; tests and the workbench may call it directly.
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "device.h"

namespace mobius_sim {

// Outcome classes; the simulated driver maps each onto the CUresult the real driver returns in that case.
enum class Status {
    Success,
    InvalidValue,    // bad launch configuration, bad pointer or size
    OutOfMemory,     // the simulated device memory (MOBIUS_SIM_DEVICE_MEMORY) is exhausted
    OutOfResources,  // block larger than the kernel's __launch_bounds__
    IllegalAddress,  // a kernel touched memory outside every allocation (guard page, redzone)
    LaunchFailed,    // trap, barrier misuse, warp-collective misuse, a race found by the race check
    Timeout,         // the launch ran longer than Options::launch_timeout_seconds (an endless loop)
};

struct LaunchConfig {
    Dim3 grid;
    Dim3 block;
    unsigned dynamic_shared_bytes = 0;
};

// What the launch may use; the driver fills these from the module (PTX) and the function's attributes.
struct LaunchLimits {
    unsigned max_threads_per_block = 1024;        // the kernel's .maxntid when it has one
    unsigned max_shared_bytes = 48 * 1024;        // static + dynamic; up to 227 KiB after cuFuncSetAttribute
    unsigned static_shared_bytes = 0;             // from the PTX; 0 for direct launches
};

struct LaunchResult {
    Status status = Status::Success;
    std::string message;  // empty on success; otherwise names the kernel, block, thread and cause
};

// Runs a whole grid to completion on the calling thread (launches are serialised process-wide).
LaunchResult launch(const KernelSignature& kernel, const LaunchConfig& config, void* const* params,
                    const LaunchLimits& limits = {});

// Launch of a kernel that is not looked up by name (workbench, tests): arguments are converted to the
// kernel's parameter types first, exactly as kernelParams would carry them.
template <auto F, class... Args>
LaunchResult launch_direct(const char* name, const LaunchConfig& config, Args... args) {
    return [&]<class... P>(void (*)(P...)) {
        static_assert(sizeof...(P) == sizeof...(Args), "argument count does not match the kernel");
        std::tuple<P...> values{static_cast<P>(args)...};
        return std::apply([&](auto&... v) {
            void* params[] = {static_cast<void*>(&v)..., nullptr};
            return launch(Invoker<F>::signature(name), config, params);
        }, values);
    }(F);
}

const KernelSignature* find_kernel(std::string_view name);
std::vector<std::string> registered_kernel_names();

// Settings, read once from the environment and adjustable by tests.
struct Options {
    // MOBIUS_SIM_RACECHECK=1: run every launch a second time with blocks and threads in reverse order from
    // the same starting memory and require identical results (float atomics get a tolerance).
    bool racecheck = false;
    // MOBIUS_SIM_LAUNCH_TIMEOUT (seconds, default 120, 0 = none): a launch running longer is stopped and fails,
    // so a kernel that never terminates cannot hang a test run.
    double launch_timeout_seconds = 120.0;
    // MOBIUS_SIM_DRY=1: kernel launches, GEMMs and convolutions are checked as always (arguments,
    // launch limits, every pointer's extent in device memory) but not computed; copies, fills and collectives still run. What
    // remains is the host's own cost of issuing the work, so a step's time is the engine's overhead per call.
    // New device memory then starts as zeros rather than NaN bits, so that what a step reads back stays finite.
    bool dry = false;
    // MOBIUS_SIM_STREAMCHECK (on unless set to 0): work on two streams that touches one allocation must be ordered by
    // an event, a stream wait or host synchronisation; work that is not fails like a faulting kernel
    // (src/stream_order.cpp). Set it before the first stream is created: the clocks are kept only while it is on.
    bool streamcheck = true;
};
Options& options();

// ---- device memory ----------------------------------------------------------------------------------
// Every allocation lives in its own mapping: 256-byte aligned, its end flush against a PROT_NONE guard
// page (after rounding the size up to 256 bytes), a guard page before it, the slack in between filled with
// a redzone pattern that is checked after every launch. New memory is filled with a NaN pattern.
struct AllocationInfo {
    std::uint64_t address = 0;
    std::size_t size = 0;
    std::uint64_t id = 0;  // 1, 2, ... in allocation order: names allocations in error messages
};

Status device_alloc(std::size_t bytes, std::uint64_t* address);
Status device_free(std::uint64_t address);
// The live allocation that contains [address, address + bytes), if any.
bool find_allocation(std::uint64_t address, std::size_t bytes, AllocationInfo* info);
std::size_t device_memory_total();  // MOBIUS_SIM_DEVICE_MEMORY (bytes, K/M/G suffix allowed), default 16 GiB
std::size_t device_memory_used();
void device_free_all();

constexpr std::uint32_t kNanPoisonBits = 0x7FF0DEADu;  // new allocations and shared memory hold this NaN

}  // namespace mobius_sim
