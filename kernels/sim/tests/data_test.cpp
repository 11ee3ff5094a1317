// Bias, reductions, softmax, layout, resampling, embedding, loss and optimiser kernels against
// double-precision references written from docs/ops.md.
#include <cmath>
#include <numeric>

#include "harness.h"

namespace {

using mt::Dim;

// ---- bias ------------------------------------------------------------------------------------------------------

TEST(Bias, AddChannelBiasPerChannelAndPerOuter) {
    mt::Gpu gpu;
    struct Shape { long long outer; int channels; long long inner; };
    for (Shape s : {Shape{1, 1, 1}, Shape{3, 17, 7}, Shape{2, 64, 256}, Shape{37, 3, 1}}) {
        for (int per_outer : {0, 1}) {
            const long long n = s.outer * s.channels * s.inner;
            const long long nb = per_outer ? s.outer * s.channels : s.channels;
            const auto x = mt::random_vector(n, n), b = mt::random_vector(nb, nb + 5);
            mt::DeviceArray<float> dx(x), db(b);
            gpu.run("bias", "add_channel_bias_f32", {3}, {256}, 0, dx.get(), db.get(), dx.get(), s.outer, s.channels, s.inner, per_outer);
            std::vector<double> ref(n);
            for (long long o = 0; o < s.outer; ++o)
                for (int c = 0; c < s.channels; ++c)
                    for (long long i = 0; i < s.inner; ++i) {
                        const long long k = (o * s.channels + c) * s.inner + i;
                        ref[k] = double(x[k]) + b[per_outer ? o * s.channels + c : c];
                    }
            mt::expect_close(dx.read(), ref, 0.0, 1.2e-7, "add_channel_bias (in place)");  // one rounding
        }
    }
}

TEST(Bias, ChannelBiasGradPerChannelAndPerOuterForEveryBlockSize) {
    mt::Gpu gpu;
    struct Shape { long long outer; int channels; long long inner; };
    for (Shape s : {Shape{1, 1, 1}, Shape{3, 17, 7}, Shape{2, 64, 256}, Shape{37, 3, 1}, Shape{5, 2, 33}}) {
        const long long n = s.outer * s.channels * s.inner;
        const auto dy = mt::random_vector(n, n + 3);
        mt::DeviceArray<float> ddy(dy);
        for (int per_outer : {0, 1}) {
            const long long outputs = per_outer ? s.outer * s.channels : s.channels;
            std::vector<double> ref(outputs, 0.0);
            for (long long o = 0; o < s.outer; ++o)
                for (int c = 0; c < s.channels; ++c)
                    for (long long i = 0; i < s.inner; ++i)
                        ref[per_outer ? o * s.channels + c : c] += dy[(o * s.channels + c) * s.inner + i];
            for (unsigned block : {32u, 96u, 256u}) {
                mt::DeviceArray<float> db(outputs);
                gpu.run("bias", "channel_bias_grad_f32", {2}, {block}, 0, ddy.get(), db.get(), s.outer, s.channels, s.inner, per_outer);
                // up to 600 terms of |x| < 1: float summation error below 1e-5 absolute
                mt::expect_close(db.read(), ref, 1e-5, 1e-6, "channel_bias_grad block " + std::to_string(block));
            }
        }
    }
}

TEST(Bias, ColumnSumWholeAndInSplits) {
    mt::Gpu gpu;
    for (long long rows : {1LL, 5LL, 300LL}) {
        for (int cols : {1, 31, 257}) {
            const auto src = mt::random_vector(rows * cols, rows * 7 + cols);
            mt::DeviceArray<float> dsrc(src);
            std::vector<double> ref(cols, 0.0);
            for (long long r = 0; r < rows; ++r)
                for (int j = 0; j < cols; ++j) ref[j] += src[r * cols + j];
            for (long long per_split : {rows, 7LL, 64LL}) {
                const long long splits = (rows + per_split - 1) / per_split;
                mt::DeviceArray<float> partial(splits * cols), dst(cols);
                gpu.run("bias", "column_sum_f32", {mt::blocks_for(cols, 64), 2}, {64}, 0, dsrc.get(), partial.get(), rows, cols, per_split);
                gpu.run("bias", "column_sum_f32", {1, 1}, {256}, 0, partial.get(), dst.get(), splits, cols, splits);
                mt::expect_close(dst.read(), ref, 1e-5, 1e-6, "column_sum rows " + std::to_string(rows));  // <= 300 terms
            }
        }
    }
}

// ---- softmax -----------------------------------------------------------------------------------------------------

TEST(Softmax, ForwardWithLogSumExpAndBackward) {
    mt::Gpu gpu;
    for (long long rows : {1LL, 3LL, 33LL}) {
        for (int cols : {1, 5, 32, 77, 1000}) {
            // a wide range so that the max subtraction matters (exp(40) would overflow nothing, exp(90) would)
            auto x = mt::random_vector(rows * cols, rows * 13 + cols, -30, 90);
            const auto dy = mt::random_vector(rows * cols, cols);
            mt::DeviceArray<float> dx_(x), y(rows * cols), lse(rows), ddy(dy), dx(rows * cols);
            gpu.run("softmax", "softmax_fwd_f32", {mt::blocks_for(rows, 8)}, {256}, 0, dx_.get(), y.get(), lse.get(), rows, cols);
            std::vector<double> ry(rows * cols), rlse(rows), rdx(rows * cols);
            for (long long r = 0; r < rows; ++r) {
                double m = -INFINITY, s = 0.0, dot = 0.0;
                for (int j = 0; j < cols; ++j) m = std::max(m, double(x[r * cols + j]));
                for (int j = 0; j < cols; ++j) s += std::exp(double(x[r * cols + j]) - m);
                rlse[r] = m + std::log(s);
                for (int j = 0; j < cols; ++j) ry[r * cols + j] = std::exp(double(x[r * cols + j]) - m) / s;
                for (int j = 0; j < cols; ++j) dot += ry[r * cols + j] * dy[r * cols + j];
                for (int j = 0; j < cols; ++j) rdx[r * cols + j] = ry[r * cols + j] * (dy[r * cols + j] - dot);
            }
            const std::string what = "softmax " + std::to_string(rows) + "x" + std::to_string(cols);
            // probabilities: exp of arguments up to 120 in magnitude loses ~120 * 2^-24 relative; sums of <= 1000
            mt::expect_close(y.read(), ry, 1e-7, 2e-5, what);
            mt::expect_close(lse.read(), rlse, 1e-5, 1e-6, what + " lse");
            // backward from the kernel's own y, in place into dy
            gpu.run("softmax", "softmax_bwd_f32", {2}, {64}, 0, y.get(), ddy.get(), ddy.get(), rows, cols);
            mt::expect_close(ddy.read(), rdx, 1e-6, 1e-4, what + " backward");
        }
    }
}

TEST(Softmax, MaskedColumnsGetZeroProbability) {
    mt::Gpu gpu;
    std::vector<float> x = {1.0f, -INFINITY, 2.0f, -INFINITY, -INFINITY, 0.5f};
    mt::DeviceArray<float> dx_(x), y(6), lse(1);
    gpu.run("softmax", "softmax_fwd_f32", {1}, {32}, 0, dx_.get(), y.get(), lse.get(), 1LL, 6);
    const double s = std::exp(1.0) + std::exp(2.0) + std::exp(0.5);
    mt::expect_close(y.read(), {std::exp(1.0) / s, 0, std::exp(2.0) / s, 0, 0, std::exp(0.5) / s}, 1e-7, 1e-6, "masked softmax");
    mt::expect_close(lse.read(), {std::log(s)}, 1e-6, 1e-6, "masked lse");
}

// ---- layout ------------------------------------------------------------------------------------------------------

TEST(Layout, CopyRowsWithOffsetsAndStrides) {
    mt::Gpu gpu;
    const int rows = 37, cols = 300;
    const long long so = 5, ss = 311, dof = 3, ds = 640;
    const auto src = mt::random_vector(so + rows * ss, 77);
    auto dst0 = mt::random_vector(dof + rows * ds, 78);
    mt::DeviceArray<float> dsrc(src), dst(dst0);
    gpu.run("layout", "copy_rows_f32", {1, 4}, {256}, 0, dsrc.get(), so, ss, dst.get(), dof, ds, rows, cols);
    std::vector<double> ref(dst0.begin(), dst0.end());
    for (int r = 0; r < rows; ++r)
        for (int c = 0; c < cols; ++c) ref[dof + r * ds + c] = src[so + r * ss + c];
    mt::expect_close(dst.read(), ref, 0.0, 0.0, "copy_rows");  // exact, and everything else untouched
}

TEST(Layout, BatchedTransposeOfAwkwardShapes) {
    mt::Gpu gpu;
    struct Shape { int batch, rows, cols; };
    for (Shape s : {Shape{1, 1, 1}, Shape{3, 33, 65}, Shape{2, 100, 7}, Shape{1, 5, 256}, Shape{4, 64, 32}}) {
        const long long n = 1LL * s.batch * s.rows * s.cols;
        const auto x = mt::random_vector(n, n);
        mt::DeviceArray<float> dx(x), y(n);
        for (Dim grid : {Dim{(s.cols + 31u) / 32, (s.rows + 31u) / 32, (unsigned)s.batch}, Dim{1, 1, 1}, Dim{2, 1, 2}}) {
            gpu.run("layout", "transpose_f32", grid, {32, 8}, 0, dx.get(), y.get(), s.batch, s.rows, s.cols);
            std::vector<double> ref(n);
            for (int b = 0; b < s.batch; ++b)
                for (int i = 0; i < s.rows; ++i)
                    for (int j = 0; j < s.cols; ++j) ref[(1LL * b * s.cols + j) * s.rows + i] = x[(1LL * b * s.rows + i) * s.cols + j];
            mt::expect_close(y.read(), ref, 0.0, 0.0, "transpose");
        }
    }
}

TEST(Layout, TransposeRejectsAnotherBlockShape) {
    mt::Gpu gpu;
    mt::DeviceArray<float> x(64), y(64);
    CUfunction f = gpu.kernel("layout", "transpose_f32");
    EXPECT_EQ(gpu.launch(f, "transpose_f32", {1}, {256}, 0, x.get(), y.get(), 1, 8, 8), CUDA_ERROR_LAUNCH_FAILED);
}

// ---- resampling --------------------------------------------------------------------------------------------------

TEST(Resample, AvgPoolAndUpsampleForwardAndBackward) {
    mt::Gpu gpu;
    for (long long planes : {1LL, 3LL}) {
        for (auto [h, w] : {std::pair{1, 1}, std::pair{3, 5}, std::pair{16, 16}, std::pair{7, 33}}) {
            // window sum: x [planes, 2h, 2w] -> y [planes, h, w]
            const auto big = mt::random_vector(planes * 4 * h * w, h * 100 + w);
            const auto small = mt::random_vector(planes * h * w, h * 100 + w + 1);
            mt::DeviceArray<float> dbig(big), dsmall(small), out_small(planes * h * w), out_big(planes * 4 * h * w);
            for (float scale : {0.25f, 1.0f}) {
                gpu.run("resample", "window2x2_sum_f32", {mt::blocks_for(planes * h * w, 256)}, {256}, 0, dbig.get(), out_small.get(), planes, h, w, scale);
                gpu.run("resample", "broadcast2x2_f32", {2}, {128}, 0, dsmall.get(), out_big.get(), planes, h, w, scale);
                std::vector<double> rs(planes * h * w), rb(planes * 4 * h * w);
                for (long long p = 0; p < planes; ++p)
                    for (int i = 0; i < 2 * h; ++i)
                        for (int j = 0; j < 2 * w; ++j) {
                            rs[(p * h + i / 2) * w + j / 2] += scale * double(big[(p * 2 * h + i) * 2 * w + j]);
                            rb[(p * 2 * h + i) * 2 * w + j] = scale * double(small[(p * h + i / 2) * w + j / 2]);
                        }
                mt::expect_close(out_small.read(), rs, 1e-7, 1e-6, "window2x2_sum");  // three additions
                mt::expect_close(out_big.read(), rb, 0.0, 0.0, "broadcast2x2");        // scaling by 1 or 1/4 is exact
            }
        }
    }
}

// ---- embedding ---------------------------------------------------------------------------------------------------

TEST(Embedding, LookupAndScatterAddWithRepeatedAndInvalidIds) {
    mt::Gpu gpu;
    const int vocab = 11, dim = 37;
    const std::vector<int> ids = {3, 0, 10, 3, 3, 7, -1, 11, 0};
    const int rows = static_cast<int>(ids.size());
    const auto table = mt::random_vector(vocab * dim, 5), dy = mt::random_vector(rows * dim, 6);
    mt::DeviceArray<int> dids(ids);
    mt::DeviceArray<float> dtable(table), y(rows * dim), ddy(dy), grad(std::vector<float>(vocab * dim, 0.0f));
    gpu.run("embedding", "embedding_fwd_f32", {3}, {64}, 0, dids.get(), dtable.get(), y.get(), rows, dim, vocab);
    gpu.run("embedding", "embedding_bwd_f32", {3}, {64}, 0, dids.get(), ddy.get(), grad.get(), rows, dim, vocab);
    const std::vector<float> got = y.read();
    std::vector<double> rg(vocab * dim, 0.0);
    for (int r = 0; r < rows; ++r) {
        const bool valid = ids[r] >= 0 && ids[r] < vocab;
        for (int d = 0; d < dim; ++d) {
            if (valid) {
                EXPECT_EQ(got[r * dim + d], table[ids[r] * dim + d]);
                rg[ids[r] * dim + d] += dy[r * dim + d];
            } else {
                EXPECT_TRUE(std::isnan(got[r * dim + d])) << "row " << r << " has invalid id " << ids[r];
            }
        }
    }
    mt::expect_close(grad.read(), rg, 1e-6, 1e-6, "embedding backward");  // at most three additions per element
}

// ---- reductions, loss ----------------------------------------------------------------------------------------------

template <class F>
double reference_sum(long long n, F term) {
    double s = 0.0;
    for (long long i = 0; i < n; ++i) s += term(i);
    return s;
}

TEST(Reduce, SumSumOfSquaresAccumulateAndMse) {
    mt::Gpu gpu;
    for (long long n : {1LL, 100LL, 4097LL, 100000LL}) {
        const auto a = mt::random_vector(n, n + 1), b = mt::random_vector(n, n + 2);
        mt::DeviceArray<float> da(a), db(b), out(std::vector<float>{0.0f});
        for (unsigned blocks : {1u, 7u, 64u}) {
            mt::DeviceArray<float> partial(blocks);
            // float accumulation of n terms below 1 in magnitude: error well under 1e-6 * n
            const double tol = 2e-6 * std::sqrt(double(n)) + 1e-6;
            gpu.run("reduce", "sum_partial_f32", {blocks}, {256}, 0, da.get(), n, partial.get());
            gpu.run("reduce", "reduce_finish_f32", {1}, {128}, 0, partial.get(), int(blocks), out.get(), 1.0f, 0);
            mt::expect_close(out.read(), {reference_sum(n, [&](long long i) { return double(a[i]); })}, tol, 1e-6, "sum");

            const double sumsq = reference_sum(n, [&](long long i) { return double(a[i]) * a[i]; });
            gpu.run("reduce", "sumsq_partial_f32", {blocks}, {256}, 0, da.get(), n, partial.get());
            gpu.run("reduce", "reduce_finish_f32", {1}, {1024}, 0, partial.get(), int(blocks), out.get(), 1.0f, 1);
            mt::expect_close(out.read(), {reference_sum(n, [&](long long i) { return double(a[i]); }) + sumsq}, tol, 1e-6, "sumsq accumulate");

            gpu.run("reduce", "sqdiff_partial_f32", {blocks}, {256}, 0, da.get(), db.get(), n, partial.get());
            gpu.run("reduce", "reduce_finish_f32", {1}, {32}, 0, partial.get(), int(blocks), out.get(), 1.0f / float(n), 0);
            const double mse = reference_sum(n, [&](long long i) { return (double(a[i]) - b[i]) * (double(a[i]) - b[i]); }) / double(n);
            mt::expect_close(out.read(), {mse}, 1e-7, 1e-5, "mse");  // a mean of positive terms: relative error only
        }
        mt::DeviceArray<float> grad(n);
        gpu.run("reduce", "mse_bwd_f32", {3}, {256}, 0, da.get(), db.get(), grad.get(), n, 0.5f);
        std::vector<double> ref(n);
        for (long long i = 0; i < n; ++i) ref[i] = 0.5 * 2.0 * (double(a[i]) - b[i]) / double(n);
        mt::expect_close(grad.read(), ref, 0.0, 3e-7, "mse backward");  // three roundings
    }
}

TEST(Reduce, FinishRejectsAGridOfSeveralBlocks) {
    mt::Gpu gpu;
    mt::DeviceArray<float> partial(std::vector<float>{1.0f, 2.0f}), out(1);
    CUfunction f = gpu.kernel("reduce", "reduce_finish_f32");
    EXPECT_EQ(gpu.launch(f, "reduce_finish_f32", {2}, {32}, 0, partial.get(), 2, out.get(), 1.0f, 0), CUDA_ERROR_LAUNCH_FAILED);
}

// ---- AdamW -------------------------------------------------------------------------------------------------------

TEST(AdamW, MatchesPyTorchSemanticsOverSeveralSteps) {
    mt::Gpu gpu;
    const long long n = 1001;
    auto p = mt::random_vector(n, 1), m = std::vector<float>(n, 0.0f), v = std::vector<float>(n, 0.0f);
    mt::DeviceArray<float> dp(p), dm(m), dv(v), dg(n);
    std::vector<double> rp(p.begin(), p.end()), rm(n, 0.0), rv(n, 0.0);
    const float lr = 1e-3f, b1 = 0.9f, b2 = 0.999f, eps = 1e-8f, wd = 0.01f, scale = 0.5f;
    for (int step = 1; step <= 5; ++step) {
        const auto g = mt::random_vector(n, 100 + step, -2, 2);
        dg.write(g);
        gpu.run("adamw", "adamw_f32", {2}, {256}, 0, dp.get(), dg.get(), dm.get(), dv.get(), n, lr, b1, b2, eps, wd, step, scale);
        const double c1 = 1.0 - std::pow(double(b1), step), c2 = 1.0 - std::pow(double(b2), step);
        for (long long i = 0; i < n; ++i) {
            const double gi = double(scale) * g[i];
            rm[i] = double(b1) * rm[i] + (1.0 - double(b1)) * gi;
            rv[i] = double(b2) * rv[i] + (1.0 - double(b2)) * gi * gi;
            rp[i] = rp[i] * (1.0 - double(lr) * wd) - double(lr) * (rm[i] / c1) / (std::sqrt(rv[i] / c2) + eps);
        }
    }
    // the update is lr-sized (1e-3) and carries a few float roundings per step; p itself is O(1)
    mt::expect_close(dp.read(), rp, 1e-6, 1e-6, "adamw p");
    mt::expect_close(dm.read(), rm, 1e-7, 1e-5, "adamw m");
    mt::expect_close(dv.read(), rv, 1e-9, 1e-5, "adamw v");
}

TEST(AdamW, BiasCorrectionHoldsAtLargeStepNumbers) {
    mt::Gpu gpu;
    const long long n = 3;
    mt::DeviceArray<float> dp(std::vector<float>{1, 1, 1}), dm(std::vector<float>{0.1f, -0.2f, 0.3f}),
        dv(std::vector<float>{0.01f, 0.04f, 0.09f}), dg(std::vector<float>{0.1f, -0.2f, 0.3f});
    const int step = 100000;
    gpu.run("adamw", "adamw_f32", {1}, {32}, 0, dp.get(), dg.get(), dm.get(), dv.get(), n, 1e-2f, 0.9f, 0.999f, 1e-8f, 0.0f, step, 1.0f);
    // m and v are at their fixed points (g, g^2), the corrections ~1: each parameter moves by lr sign(g)
    mt::expect_close(dp.read(), {1 - 1e-2, 1 + 1e-2, 1 - 1e-2}, 1e-6, 1e-6, "adamw at step 1e5");
}

}  // namespace
