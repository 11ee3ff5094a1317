// Pieces shared between the simulator's source files; not part of any public interface.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "mobius_sim/runtime.h"

namespace mobius_sim::detail {

// Serialises every simulator entry point: launches run one at a time, and memory changes never race them.
std::recursive_mutex& api_mutex();

// Fills [p, p + n) with the NaN poison word (the last n % 4 bytes with 0xFF, also a NaN pattern).
void poison(unsigned char* p, std::size_t n);

// The first redzone that a launch overwrote, described for an error message (empty when all are intact).
// Damaged redzones are repaired so that one bug is reported once.
std::string check_redzones();
// The same for the allocations that hold the given addresses only (addresses in no allocation are skipped).
std::string check_redzones(const std::uintptr_t* addresses, std::size_t count);

// Where an address lies relative to the allocations, for fault messages.
std::string describe_address(std::uintptr_t address);

struct MemorySnapshot {
    struct Block {
        std::uint64_t id;
        unsigned char* data;
        std::vector<unsigned char> bytes;
    };
    std::vector<Block> blocks;
};
MemorySnapshot snapshot_memory();
void restore_memory(const MemorySnapshot& snapshot);

// Compares live memory with `expected` word by word. Words updated by float atomics may differ by the
// rounding of a different summation order: |a - b| <= 1e-5 * sum|contributions|, which the race check
// records per address. Returns a description of the first difference, or an empty string.
std::string compare_memory(const MemorySnapshot& expected,
                           const std::unordered_map<std::uintptr_t, float>& atomic_magnitude);

std::size_t parse_size(const char* text, std::size_t fallback);

// Column-major C = alpha op(A) op(B) + beta C over fp32 matrices (ta, tb: cublasOperation_t), inputs read as TF32 or bf16
// where asked, with cuBLAS's argument and memory checks: the simulated cuBLAS's product, for cuBLASLt. Returns a
// cublasStatus_t; the caller holds api_mutex().
int fp32_gemm(void* stream, int ta, int tb, int m, int n, int k, float alpha, const float* a, int lda, const float* b, int ldb,
              float beta, float* c, int ldc, bool tf32, bool bf16);

// `v` as a TF32 tensor core reads it: the 10 leading mantissa bits, rounded to nearest even (Inf and NaN kept).
// cuBLAS in CUBLAS_TF32_TENSOR_OP_MATH and cuDNN in CUDNN_DEFAULT_MATH round fp32 inputs so on sm_80 and later.
float tf32_round(float v);

// The launch checks that come before a kernel runs (block, grid, shared memory against the device and the kernel's
// limits): a launch that fails them is never enqueued.
LaunchResult validate_launch(const char* name, const LaunchConfig& config, const LaunchLimits& limits);

}  // namespace mobius_sim::detail

// ---- driver state shared with the cuBLAS and cuDNN layers ----------------------------------------------
namespace mobius_sim::detail {

// Records the detailed message of a failed call (returned by mobiusSimGetLastErrorMessage) and prints it.
void set_last_error(const std::string& message);

// The calling thread's current context is usable: it exists, is alive and has no sticky error.
bool context_ready();
// A kernel-class failure (illegal address, launch failure) poisons the context like on a GPU: every later
// call in it returns `code` until the primary context is released and retained anew.
void make_sticky(int code, const std::string& message);
bool valid_stream(const void* stream);

}  // namespace mobius_sim::detail

// ---- stream order (src/stream_order.cpp) --------------------------------------------------------------------
// Every operation runs when it is enqueued, so work on two streams that a GPU could run in either order, or at once,
// never gives a wrong result here. The stream-order check finds such work instead: each stream has a vector clock of
// the operations it is ordered after (events, stream waits, host synchronisation, the legacy stream's implicit
// barriers), and each allocation remembers its last write and the reads since; an access that is not ordered after
// them fails the operation before it runs. MOBIUS_SIM_STREAMCHECK=0 turns it off (Options::streamcheck). Every
// function here expects the caller to hold api_mutex(); stream and event handles have been validated by the caller.
namespace mobius_sim::detail {

// How many operations of each stream (indexed by stream number) a point of a stream or of the host is ordered after.
using Clock = std::vector<std::uint64_t>;

void stream_created(const void* stream, bool blocking);  // blocking: created with flags 0, ordered with the legacy stream
void stream_destroyed(const void* stream);
void event_recorded(const void* event, const void* stream);
void event_destroyed(const void* event);
void stream_waits_event(const void* stream, const void* event);
void host_waits_stream(const void* stream);  // cuStreamSynchronize, and calls that return after the stream's work
void host_waits_event(const void* event);
void host_waits_all();                       // cuCtxSynchronize, cuMemAlloc, cuMemFree
void allocation_freed(std::uint64_t id);     // its history goes; a new allocation starts with none
void stream_order_reset();                   // the context is gone, with all its streams, events and memory

// A copy of the stream's clock, and ordering a stream's later work after a clock (what a collective does to the
// streams of its ranks).
Clock stream_clock(const void* stream);
void stream_join(const void* stream, const Clock& clock);

// One operation enqueued on a stream: collect the device addresses it reads and writes (addresses outside every
// allocation are left to the caller's own checks), then check() it before it runs and commit() it. `name` is
// static text: a kernel's name (kernel = true) or an API call such as "cublasSgemm".
class StreamOperation {
public:
    StreamOperation(const void* stream, const char* name, bool kernel = false);
    void read(std::uint64_t address) { add(address, false); }
    void write(std::uint64_t address) { add(address, true); }
    void read(const void* p) { add(reinterpret_cast<std::uintptr_t>(p), false); }
    void write(const void* p) { add(reinterpret_cast<std::uintptr_t>(p), true); }
    // Orders the operation on its stream (a new operation number) and returns why an access races with earlier
    // work of another stream, or an empty string.
    std::string check();
    // Records the accesses as the latest of their allocations.
    void commit();
    // check(), then commit() when nothing races.
    std::string enqueue();

private:
    struct Item {
        AllocationInfo allocation;
        bool write;
    };
    void add(std::uint64_t address, bool write);
    const void* stream_;
    const char* name_;
    bool kernel_;
    bool enabled_;
    int id_ = -1;
    std::uint64_t number_ = 0;
    std::vector<Item> items_;
};

}  // namespace mobius_sim::detail
