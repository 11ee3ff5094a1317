// Token embedding lookup and its gradient.
//
// Forward gathers whole rows: consecutive threads copy consecutive columns of one table row (coalesced).
// Backward scatters rows with atomicAdd: a token that appears k times receives k additions into the same
// row, and the token count of a caption batch is small, so contention is low; the summation order (and so
// the last bits) may vary run to run. Ids outside [0, vocab) produce NaN rows forward and are skipped
// backward, so a bad id shows up in the loss instead of reading out of bounds.
#include "mobius_cuda.h"

namespace {

template <class T>
MOBIUS_DEVICE void embedding_forward(const int* ids, const T* table, T* y, int rows, int dim, int vocab) {
    gpu::grid_stride(static_cast<long long>(rows) * dim, [&](long long i) {
        const int r = static_cast<int>(i / dim), d = static_cast<int>(i - static_cast<long long>(r) * dim);
        const int id = ids[r];
        gpu::store(y + i, id >= 0 && id < vocab ? gpu::load(table + static_cast<long long>(id) * dim + d) : gpu::nan());
    });
}

MOBIUS_DEVICE void embedding_backward(const int* ids, const float* dy, float* dtable, int rows, int dim, int vocab) {
    gpu::grid_stride(static_cast<long long>(rows) * dim, [&](long long i) {
        const int r = static_cast<int>(i / dim), d = static_cast<int>(i - static_cast<long long>(r) * dim);
        const int id = ids[r];
        if (id >= 0 && id < vocab) atomicAdd(dtable + static_cast<long long>(id) * dim + d, dy[i]);
    });
}

}  // namespace

// y[r, :] = table[ids[r], :] for ids [rows] (int32, device), table [vocab, dim], y [rows, dim].
// blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    embedding_fwd_f32(const int* __restrict__ ids, const float* __restrict__ table, float* __restrict__ y, int rows, int dim, int vocab) {
    embedding_forward(ids, table, y, rows, dim, vocab);
}
MOBIUS_REGISTER_KERNEL(embedding_fwd_f32);

// dtable[ids[r], :] += dy[r, :]; dtable must be zeroed (or hold the gradient to accumulate into) beforehand.
// blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    embedding_bwd_f32(const int* __restrict__ ids, const float* __restrict__ dy, float* dtable, int rows, int dim, int vocab) {
    embedding_backward(ids, dy, dtable, rows, dim, vocab);
}
MOBIUS_REGISTER_KERNEL(embedding_bwd_f32);
