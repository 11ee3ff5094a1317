// Data movement: strided row copies (concat / split / slicing) and batched transposes.
//
// Design:
// - copy_rows: threads along a row's contiguous elements, rows along gridDim.y; both grid-stride, so any
//   grid covers any shape (gridDim.y is limited to 65535, rows are not).
// - transpose: the frame-major <-> pixel-major layout change of the temporal layers. Each block moves a
//   32x32 tile through shared memory: it reads 32 consecutive columns of 32 rows (coalesced) and writes 32
//   consecutive rows of the output (coalesced), instead of one side striding through memory. The tile row
//   has 33 floats so the column-wise reads of the second half hit 32 different banks. Block (32, 8): each
//   thread moves 4 elements, which keeps enough loads in flight per thread.
// - copy_multi: many tensors into one flat buffer or back, in one launch (a bucket of gradients for one
//   all-reduce instead of one per tensor): the multi-tensor table of adamw_multi_f32 with each tensor's offset
//   in the flat buffer, each block taking chunks.
#include "mobius_cuda.h"

namespace {

constexpr int kTile = 32;
constexpr int kTileRows = 8;

template <class T>
MOBIUS_DEVICE void copy_rows(const T* src, long long src_offset, long long src_stride, T* dst, long long dst_offset,
                             long long dst_stride, int rows, int cols) {
    for (long long r = blockIdx.y; r < rows; r += gridDim.y) {
        const T* s = src + src_offset + r * src_stride;
        T* d = dst + dst_offset + r * dst_stride;
        for (long long c = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; c < cols;
             c += static_cast<long long>(gridDim.x) * blockDim.x)
            d[c] = s[c];
    }
}

template <class T>
MOBIUS_DEVICE void transpose(const T* x, T* y, int batch, int rows, int cols) {
    __shared__ T tile[kTile][kTile + 1];
    const int row_tiles = (rows + kTile - 1) / kTile, col_tiles = (cols + kTile - 1) / kTile;
    const int tx = threadIdx.x, ty = threadIdx.y;
    for (long long b = blockIdx.z; b < batch; b += gridDim.z) {
        const T* xb = x + b * rows * static_cast<long long>(cols);
        T* yb = y + b * rows * static_cast<long long>(cols);
        for (int rt = blockIdx.y; rt < row_tiles; rt += gridDim.y) {
            for (int ct = blockIdx.x; ct < col_tiles; ct += gridDim.x) {
                const int r0 = rt * kTile, c0 = ct * kTile;
                for (int k = ty; k < kTile; k += kTileRows) {
                    const int r = r0 + k, c = c0 + tx;
                    if (r < rows && c < cols) tile[k][tx] = xb[static_cast<long long>(r) * cols + c];
                }
                __syncthreads();
                for (int k = ty; k < kTile; k += kTileRows) {
                    const int c = c0 + k, r = r0 + tx;  // output row c, column r
                    if (r < rows && c < cols) yb[static_cast<long long>(c) * rows + r] = tile[tx][k];
                }
                __syncthreads();  // the next tile overwrites `tile`
            }
        }
    }
}

// A row of copy_multi_f32's table: a tensor of n elements at offset in the flat buffer (8-byte fields; the
// host writes the same layout, CudaBackend.MultiTensorTable).
struct CopySlot {
    float* x;
    long long offset;
    long long n;
    long long first_chunk;
};

}  // namespace

// gather != 0: flat[offset + i] = x[i] for every tensor of the table; gather == 0: x[i] = flat[offset + i]. The
// tensors and their ranges of flat must not overlap. count rows, chunks chunks of chunk_size elements in all (row
// t's chunks first_chunk .. first_chunk + ceil(n / chunk_size) - 1, rows in order). blockDim.x <= 256, any grid.
extern "C" __global__ void __launch_bounds__(256)
    copy_multi_f32(const CopySlot* __restrict__ slots, int count, long long chunks, long long chunk_size, float* __restrict__ flat, int gather) {
    for (long long chunk = blockIdx.x; chunk < chunks; chunk += gridDim.x) {
        const CopySlot& s = slots[gpu::slot_of(slots, count, chunk)];
        const long long begin = (chunk - s.first_chunk) * chunk_size;
        const long long end = begin + chunk_size < s.n ? begin + chunk_size : s.n;
        for (long long i = begin + threadIdx.x; i < end; i += blockDim.x) {
            if (gather != 0)
                flat[s.offset + i] = s.x[i];
            else
                s.x[i] = flat[s.offset + i];
        }
    }
}
MOBIUS_REGISTER_KERNEL(copy_multi_f32);

// dst[dst_offset + r*dst_stride + c] = src[src_offset + r*src_stride + c] for r < rows, c < cols (offsets and
// strides in elements). Source and destination ranges must not overlap. blockDim.x <= 256; grid
// (ceil(cols/256) or fewer, min(rows, 65535)).
extern "C" __global__ void __launch_bounds__(256)
    copy_rows_f32(const float* __restrict__ src, long long src_offset, long long src_stride, float* __restrict__ dst,
                  long long dst_offset, long long dst_stride, int rows, int cols) {
    copy_rows(src, src_offset, src_stride, dst, dst_offset, dst_stride, rows, cols);
}
MOBIUS_REGISTER_KERNEL(copy_rows_f32);

// y[b, j, i] = x[b, i, j] for x [batch, rows, cols], y [batch, cols, rows]. Block (32, 8) exactly; grid
// (ceil(cols/32), min(ceil(rows/32), 65535), min(batch, 65535)) or any smaller grid (grid-stride).
extern "C" __global__ void __launch_bounds__(256)
    transpose_f32(const float* __restrict__ x, float* __restrict__ y, int batch, int rows, int cols) {
    MOBIUS_REQUIRE(blockDim.x == kTile && blockDim.y == kTileRows && blockDim.z == 1);
    transpose(x, y, batch, rows, cols);
}
MOBIUS_REGISTER_KERNEL(transpose_f32);
