// Group norm and layer norm, forward and backward, against double references written from docs/ops.md.
#include <cmath>

#include "harness.h"
#include "reference.h"

namespace {

using mt::Dim;

struct GroupShape {
    int N, T, C, S, G;
};

reference::GroupNorm group_norm_reference(const GroupShape& s, const std::vector<float>& x, const std::vector<float>& gamma,
                                          const std::vector<float>& beta, const std::vector<float>& dy, double eps, bool silu) {
    return reference::group_norm(s.N, s.T, s.C, s.S, s.G, eps, silu, x, gamma, beta, dy);
}

// Runs the forward pair: chunk statistics, then the normalisation, on a grid of (splits, at most 3 groups):
// y-striding over groups and chunk merging are both exercised.
void group_norm_forward(mt::Gpu& gpu, const GroupShape& s, int splits, unsigned block, float* x, float* gamma, float* beta, float* y,
                        float* mean, float* rstd, float eps, int silu) {
    mt::DeviceArray<float> stats(static_cast<std::size_t>(s.N) * s.G * splits * 2);
    const unsigned gy = std::min(3u, unsigned(s.N * s.G));
    gpu.run("norm", "group_norm_stats_f32", {unsigned(splits), gy}, {block}, 0, x, stats.get(), s.N, s.T, s.C, s.S, s.G, splits);
    gpu.run("norm", "group_norm_apply_f32", {unsigned(splits), gy}, {block}, 0, x, gamma, beta, y, stats.get(), mean, rstd, s.N, s.T, s.C,
            s.S, s.G, splits, eps, silu);
}

void group_norm_backward(mt::Gpu& gpu, const GroupShape& s, int reduce_splits, int splits, unsigned block, float* x, float* gamma,
                         float* beta, float* mean, float* rstd, float* dy, float* dx, float* pg, float* pb, int silu, float* addend = nullptr) {
    mt::DeviceArray<float> sums(static_cast<std::size_t>(s.N) * s.C * reduce_splits * 2);
    gpu.run("norm", "group_norm_bwd_reduce_f32", {unsigned(reduce_splits), std::min(5u, unsigned(s.N * s.C))}, {block}, 0, x, gamma, beta,
            mean, rstd, dy, sums.get(), s.N, s.T, s.C, s.S, s.G, reduce_splits, silu);
    gpu.run("norm", "group_norm_bwd_dx_f32", {unsigned(splits), std::min(3u, unsigned(s.N * s.G))}, {block}, 0, x, gamma, beta, mean, rstd,
            dy, sums.get(), dx, addend, pg, pb, s.N, s.T, s.C, s.S, s.G, reduce_splits, splits, silu);
}

TEST(GroupNorm, ForwardBackwardAndParameterGradients) {
    mt::Gpu gpu;
    const GroupShape shapes[] = {{1, 1, 1, 1, 1}, {2, 1, 6, 7, 3}, {1, 5, 4, 17, 2}, {2, 3, 64, 16, 32}, {1, 2, 17, 1, 17}, {3, 1, 3, 256, 1}};
    // (forward and dx chunks per group, reduction chunks per channel): one chunk, and more chunks than some groups have elements
    const std::pair<int, int> splits[] = {{1, 1}, {3, 2}, {7, 5}};
    for (const GroupShape& s : shapes) {
        for (int silu : {0, 1}) {
            for (const auto& [sp, rsp] : splits) {
                const long long n = 1LL * s.N * s.T * s.C * s.S;
                const float eps = 1e-5f;
                // an offset and a scale per tensor so that the mean subtraction matters
                const auto x = mt::random_vector(n, n + s.C + sp, 0.5f, 3.0f), dy = mt::random_vector(n, n + 1 + sp);
                const auto gamma = mt::random_vector(s.C, s.C + 2, 0.5f, 1.5f), beta = mt::random_vector(s.C, s.C + 3);
                const reference::GroupNorm ref = group_norm_reference(s, x, gamma, beta, dy, eps, silu != 0);
                mt::DeviceArray<float> dx_(x), dg(gamma), db(beta), y(n), mean(s.N * s.G), rstd(s.N * s.G), ddy(dy), dx(n),
                    pg(s.N * s.C), pb(s.N * s.C), dgamma(s.C), dbeta(s.C);
                const std::string what = "group norm N" + std::to_string(s.N) + " T" + std::to_string(s.T) + " C" + std::to_string(s.C) +
                                         " S" + std::to_string(s.S) + " G" + std::to_string(s.G) + (silu ? " silu" : "") + " splits " +
                                         std::to_string(sp) + "/" + std::to_string(rsp);
                const unsigned block = s.S >= 64 ? 256 : 64;
                group_norm_forward(gpu, s, sp, block, dx_.get(), dg.get(), db.get(), y.get(), mean.get(), rstd.get(), eps, silu);
                // y: xhat carries the float rounding of the chunk sums, their merge and rsqrt (~1e-6 relative) times |xhat| <~ 3
                mt::expect_close(y.read(), ref.y, 2e-5, 1e-5, what);
                mt::expect_close(mean.read(), ref.mean, 1e-6, 1e-6, what + " mean");
                mt::expect_close(rstd.read(), ref.rstd, 0.0, 1e-5, what + " rstd");

                group_norm_backward(gpu, s, rsp, sp, block, dx_.get(), dg.get(), db.get(), mean.get(), rstd.get(), ddy.get(), dx.get(),
                                    pg.get(), pb.get(), silu);
                gpu.run("bias", "column_sum_f32", {1}, {64}, 0, pg.get(), dgamma.get(), (long long)s.N, s.C, (long long)s.N);
                gpu.run("bias", "column_sum_f32", {1}, {64}, 0, pb.get(), dbeta.get(), (long long)s.N, s.C, (long long)s.N);
                // dx subtracts two group means from g*gamma; rstd of the narrow inputs is ~2, sums up to 1536 terms
                mt::expect_close(dx.read(), ref.dx, 5e-5, 1e-4, what + " dx");
                {
                    // With an addend (a residual's gradient): dx + addend in the same pass, the bits of adding afterwards.
                    const auto add = mt::random_vector(n, n + 5 + sp);
                    mt::DeviceArray<float> dadd(add), dx2(n);
                    group_norm_backward(gpu, s, rsp, sp, block, dx_.get(), dg.get(), db.get(), mean.get(), rstd.get(), ddy.get(), dx2.get(),
                                        static_cast<float*>(nullptr), static_cast<float*>(nullptr), silu, dadd.get());
                    const auto plain = dx.read(), fused = dx2.read();
                    for (std::size_t i = 0; i < plain.size(); ++i) ASSERT_EQ(fused[i], plain[i] + add[i]) << what << " dx + addend at " << i;
                }
                mt::expect_close(dgamma.read(), ref.dgamma, 1e-4, 1e-4, what + " dgamma");
                mt::expect_close(dbeta.read(), ref.dbeta, 1e-4, 1e-4, what + " dbeta");
            }
        }
    }
}

TEST(GroupNorm, ChunkCountDoesNotChangeTheResultBeyondRounding) {
    mt::Gpu gpu;
    const GroupShape s{1, 4, 8, 64, 2};
    const long long n = 1LL * s.N * s.T * s.C * s.S;
    const auto x = mt::random_vector(n, 11, 2.0f, 5.0f), gamma = mt::random_vector(s.C, 12), beta = mt::random_vector(s.C, 13);
    mt::DeviceArray<float> dx_(x), dg(gamma), db(beta), y1(n), y2(n), mean(s.N * s.G), rstd(s.N * s.G);
    group_norm_forward(gpu, s, 1, 64, dx_.get(), dg.get(), db.get(), y1.get(), mean.get(), rstd.get(), 1e-5f, 0);
    group_norm_forward(gpu, s, 16, 64, dx_.get(), dg.get(), db.get(), y2.get(), mean.get(), rstd.get(), 1e-5f, 0);
    const std::vector<float> a = y1.read(), b = y2.read();
    std::vector<double> ad(a.begin(), a.end());
    mt::expect_close(b, ad, 1e-5, 1e-5, "16 chunks against 1");
}

TEST(GroupNorm, BackwardOutputsAreOptional) {
    mt::Gpu gpu;
    const GroupShape s{2, 2, 8, 9, 4};
    const long long n = 1LL * s.N * s.T * s.C * s.S;
    const auto x = mt::random_vector(n, 1), dy = mt::random_vector(n, 2), gamma = mt::random_vector(s.C, 3), beta = mt::random_vector(s.C, 4);
    const reference::GroupNorm ref = group_norm_reference(s, x, gamma, beta, dy, 1e-5, false);
    mt::DeviceArray<float> dx_(x), dg(gamma), db(beta), y(n), mean(s.N * s.G), rstd(s.N * s.G), ddy(dy), dx(n), pb(s.N * s.C);
    group_norm_forward(gpu, s, 2, 32, dx_.get(), dg.get(), db.get(), y.get(), mean.get(), rstd.get(), 1e-5f, 0);
    float* none = nullptr;
    group_norm_backward(gpu, s, 2, 3, 32, dx_.get(), dg.get(), db.get(), mean.get(), rstd.get(), ddy.get(), dx.get(), none, none, 0);
    mt::expect_close(dx.read(), ref.dx, 5e-5, 1e-4, "dx alone");
    group_norm_backward(gpu, s, 1, 1, 32, dx_.get(), dg.get(), db.get(), mean.get(), rstd.get(), ddy.get(), none, none, pb.get(), 0);
    std::vector<float> got = pb.read(), summed(s.C, 0.0f);
    for (int i = 0; i < s.N * s.C; ++i) summed[i % s.C] += got[i];
    mt::expect_close(summed, ref.dbeta, 1e-4, 1e-4, "dbeta alone");
}

TEST(GroupNorm, RejectsChannelsNotDivisibleByGroups) {
    mt::Gpu gpu;
    mt::DeviceArray<float> buf(64), stats(8);
    CUfunction f = gpu.kernel("norm", "group_norm_stats_f32");
    EXPECT_EQ(gpu.launch(f, "group_norm_stats_f32", {1, 1}, {32}, 0, buf.get(), stats.get(), 1, 1, 6, 4, 4, 1),
              CUDA_ERROR_LAUNCH_FAILED);
}

TEST(LayerNorm, ForwardBackwardAndParameterGradients) {
    mt::Gpu gpu;
    for (long long rows : {1LL, 5LL, 33LL}) {
        for (int cols : {1, 7, 32, 100, 1280}) {
            const long long n = rows * cols;
            const float eps = 1e-5f;
            const auto x = mt::random_vector(n, n + 7, -2.0f, 4.0f), dy = mt::random_vector(n, n + 8);
            const auto gamma = mt::random_vector(cols, cols + 1, 0.5f, 1.5f), beta = mt::random_vector(cols, cols + 2);
            std::vector<double> ry(n), rmean(rows), rrstd(rows), rdx(n), rdg(cols, 0.0), rdb(cols, 0.0);
            for (long long r = 0; r < rows; ++r) {
                double mu = 0.0, var = 0.0;
                for (int j = 0; j < cols; ++j) mu += x[r * cols + j];
                mu /= cols;
                for (int j = 0; j < cols; ++j) var += (x[r * cols + j] - mu) * (x[r * cols + j] - mu);
                var /= cols;
                const double rs = 1.0 / std::sqrt(var + eps);
                rmean[r] = mu;
                rrstd[r] = rs;
                double a = 0.0, b = 0.0;
                for (int j = 0; j < cols; ++j) {
                    const double xh = (x[r * cols + j] - mu) * rs;
                    ry[r * cols + j] = xh * gamma[j] + beta[j];
                    a += dy[r * cols + j] * gamma[j] / cols;
                    b += dy[r * cols + j] * gamma[j] * xh / cols;
                    rdg[j] += dy[r * cols + j] * xh;
                    rdb[j] += dy[r * cols + j];
                }
                for (int j = 0; j < cols; ++j) {
                    const double xh = (x[r * cols + j] - mu) * rs;
                    rdx[r * cols + j] = rs * (dy[r * cols + j] * gamma[j] - a - xh * b);
                }
            }
            mt::DeviceArray<float> dx_(x), dg(gamma), db(beta), y(n), mean(rows), rstd(rows), ddy(dy), dx(n);
            const std::string what = "layer norm " + std::to_string(rows) + "x" + std::to_string(cols);
            gpu.run("norm", "layer_norm_fwd_f32", {mt::blocks_for(rows, 8)}, {256}, 0, dx_.get(), dg.get(), db.get(), y.get(), mean.get(),
                    rstd.get(), rows, cols, eps);
            mt::expect_close(y.read(), ry, 2e-5, 1e-5, what);  // as for group norm
            mt::expect_close(mean.read(), rmean, 1e-5, 1e-6, what + " mean");
            gpu.run("norm", "layer_norm_bwd_f32", {2}, {64}, 0, dx_.get(), dg.get(), mean.get(), rstd.get(), ddy.get(), dx.get(),
                    static_cast<float*>(nullptr), rows, cols);
            mt::expect_close(dx.read(), rdx, 5e-5, 1e-4, what + " dx");
            {
                // With an addend (a residual's gradient), dx + addend in the same pass: the bits of adding afterwards.
                const auto add = mt::random_vector(n, 77);
                mt::DeviceArray<float> dadd(add), dx2(n);
                gpu.run("norm", "layer_norm_bwd_f32", {2}, {64}, 0, dx_.get(), dg.get(), mean.get(), rstd.get(), ddy.get(), dx2.get(), dadd.get(),
                        rows, cols);
                const auto plain = dx.read(), fused = dx2.read();
                for (std::size_t i = 0; i < plain.size(); ++i) ASSERT_EQ(fused[i], plain[i] + add[i]) << what << " dx + addend at " << i;
            }
            for (long long per_split : {rows, 4LL}) {
                const long long splits = (rows + per_split - 1) / per_split;
                mt::DeviceArray<float> pg(splits * cols), pb(splits * cols), dgamma(cols), dbeta(cols);
                gpu.run("norm", "layer_norm_param_grad_f32", {mt::blocks_for(cols, 128), 2}, {128}, 0, dx_.get(), mean.get(), rstd.get(),
                        ddy.get(), pg.get(), pb.get(), rows, cols, per_split);
                gpu.run("bias", "column_sum_f32", {mt::blocks_for(cols, 256)}, {256}, 0, pg.get(), dgamma.get(), splits, cols, splits);
                gpu.run("bias", "column_sum_f32", {mt::blocks_for(cols, 256)}, {256}, 0, pb.get(), dbeta.get(), splits, cols, splits);
                mt::expect_close(dgamma.read(), rdg, 1e-5, 1e-5, what + " dgamma");  // <= 33 terms per column
                mt::expect_close(dbeta.read(), rdb, 1e-5, 1e-5, what + " dbeta");
            }
        }
    }
}

}  // namespace
