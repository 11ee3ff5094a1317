// Temporal attention forward/backward and the general-attention helpers against double references written
// from docs/ops.md ("Attention").
#include <cmath>

#include "harness.h"
#include "reference.h"

namespace {

using mt::Dim;

// Dynamic shared memory as documented at the top of kernels/attention.cu.
struct SharedBytes {
    unsigned forward, backward;
};
SharedBytes shared_bytes(int F, int D) {
    int fp = 4;
    while (fp < F) fp *= 2;
    const int r = 32 / fp, dp = D | 1;
    return {4u * unsigned(2 * F * dp + 4 * r * dp), 4u * unsigned(2 * F * dp + 8 * r * dp + 2 * F * F)};
}

struct Problem {
    int N, H, F, D;
    long long size() const { return 1LL * N * F * H * D; }
};

class TemporalAttention : public ::testing::TestWithParam<int> {};

TEST_P(TemporalAttention, ForwardAndBackwardForEveryHeadDim) {
    mt::Gpu gpu;
    const int F = GetParam();
    for (int D : {1, 8, 32, 64, 100, 128}) {
        const Problem pr{2, 2, F, D};
        const float scale = 1.0f / std::sqrt(float(D));
        const long long n = pr.size();
        const auto q = mt::random_vector(n, F * 1000 + D), k = mt::random_vector(n, F * 1000 + D + 1), v = mt::random_vector(n, F * 1000 + D + 2),
                   dout = mt::random_vector(n, F * 1000 + D + 3);
        const reference::Attention ref = reference::attention(pr.N, pr.H, F, D, scale, q, k, v, dout);
        mt::DeviceArray<float> dq_(q), dk_(k), dv_(v), ddo(dout), o(n), lse(1LL * pr.N * pr.H * F), dq(n), dk(n), dv(n);
        const SharedBytes bytes = shared_bytes(F, D);
        ASSERT_LE(bytes.backward, 48u * 1024) << "F " << F << " D " << D << " must fit the default shared memory";
        const std::string what = "F" + std::to_string(F) + " D" + std::to_string(D);
        // grid 3 < N*H = 4 blocks: one block takes two problems in turn (grid-stride)
        gpu.run("attention", "temporal_attention_fwd_f32", {3}, {128}, bytes.forward, dq_.get(), dk_.get(), dv_.get(), o.get(), lse.get(), pr.N,
                pr.H, F, D, scale);
        // o is a convex combination of v (|v| < 1) with probabilities from exp of scores |s| < sqrt(D)/3
        mt::expect_close(o.read(), ref.o, 1e-5, 1e-5, what + " o");
        mt::expect_close(lse.read(), ref.lse, 1e-5, 1e-6, what + " lse");
        gpu.run("attention", "temporal_attention_bwd_f32", {4}, {128}, bytes.backward, dq_.get(), dk_.get(), dv_.get(), o.get(), lse.get(),
                ddo.get(), dq.get(), dk.get(), dv.get(), pr.N, pr.H, F, D, scale);
        // sums over F (<= 32) and D (<= 128) products; dS carries the cancellation dP - Drow
        mt::expect_close(dv.read(), ref.dv, 1e-5, 1e-4, what + " dv");
        mt::expect_close(dq.read(), ref.dq, 2e-5, 1e-4, what + " dq");
        mt::expect_close(dk.read(), ref.dk, 2e-5, 1e-4, what + " dk");
    }
}

INSTANTIATE_TEST_SUITE_P(Frames, TemporalAttention, ::testing::Values(1, 3, 5, 7, 8, 16, 32),
                         [](const ::testing::TestParamInfo<int>& info) { return "F" + std::to_string(info.param); });

TEST(TemporalAttentionContract, TooLittleSharedMemoryAndOversizedShapesFailTheLaunch) {
    const int F = 8, D = 64;
    {  // each failure is sticky: a fresh context (a new Gpu) for each
        mt::Gpu gpu;
        mt::DeviceArray<float> buf(F * D), lse(F);
        CUfunction f = gpu.kernel("attention", "temporal_attention_fwd_f32");
        const unsigned bytes = shared_bytes(F, D).forward;
        EXPECT_EQ(gpu.launch(f, "temporal_attention_fwd_f32", {1}, {128}, bytes - 4, buf.get(), buf.get(), buf.get(), buf.get(), lse.get(), 1,
                             1, F, D, 0.125f),
                  CUDA_ERROR_LAUNCH_FAILED);
    }
    mt::Gpu gpu;
    mt::DeviceArray<float> big(33 * 64), lse(33);
    CUfunction f = gpu.kernel("attention", "temporal_attention_fwd_f32");
    EXPECT_EQ(gpu.launch(f, "temporal_attention_fwd_f32", {1}, {128}, 48 * 1024, big.get(), big.get(), big.get(), big.get(), lse.get(), 1, 1, 33,
                         64, 0.125f),
              CUDA_ERROR_LAUNCH_FAILED);
}

TEST(GeneralAttentionHelpers, RowDotAndSoftmaxGradient) {
    mt::Gpu gpu;
    for (auto [N, L, H, D] : {std::array{1, 1, 1, 1}, std::array{2, 5, 3, 40}, std::array{1, 77, 2, 64}}) {
        const long long n = 1LL * N * L * H * D;
        const auto dout = mt::random_vector(n, n), o = mt::random_vector(n, n + 1);
        mt::DeviceArray<float> ddo(dout), dout_o(o), drow(1LL * N * H * L);
        gpu.run("attention", "attention_row_dot_f32", {3}, {64}, 0, ddo.get(), dout_o.get(), drow.get(), N, L, H, D);
        std::vector<double> ref(1LL * N * H * L, 0.0);
        for (int b = 0; b < N; ++b)
            for (int h = 0; h < H; ++h)
                for (int i = 0; i < L; ++i)
                    for (int d = 0; d < D; ++d) {
                        const long long at = (1LL * b * L + i) * H * D + 1LL * h * D + d;
                        ref[(1LL * b * H + h) * L + i] += double(dout[at]) * o[at];
                    }
        mt::expect_close(drow.read(), ref, 1e-5, 1e-5, "row dot");  // <= 64 products of |x| < 1

        const int cols = 13;
        const long long rows = 1LL * N * H * L;
        const auto p = mt::random_vector(rows * cols, 7, 0, 1), dp = mt::random_vector(rows * cols, 8);
        mt::DeviceArray<float> dpp(p), ddp(dp);
        gpu.run("attention", "attention_dsoftmax_f32", {2}, {256}, 0, dpp.get(), ddp.get(), drow.get(), ddp.get(), rows, cols);
        const std::vector<float> got_drow = drow.read();
        std::vector<double> rds(rows * cols);
        for (long long r = 0; r < rows; ++r)
            for (int j = 0; j < cols; ++j) rds[r * cols + j] = double(p[r * cols + j]) * (dp[r * cols + j] - double(got_drow[r]));
        mt::expect_close(ddp.read(), rds, 1e-6, 1e-6, "dsoftmax in place");  // two roundings
    }
}

}  // namespace
