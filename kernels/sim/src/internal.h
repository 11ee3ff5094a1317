// Pieces shared between the simulator's source files; not part of any public interface.
#pragma once

#include <cstdint>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

namespace mobius_sim::detail {

// Serialises every simulator entry point: launches run one at a time, and memory changes never race them.
std::recursive_mutex& api_mutex();

// Fills [p, p + n) with the NaN poison word (the last n % 4 bytes with 0xFF, also a NaN pattern).
void poison(unsigned char* p, std::size_t n);

// The first redzone that a launch overwrote, described for an error message (empty when all are intact).
// Damaged redzones are repaired so that one bug is reported once.
std::string check_redzones();

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
