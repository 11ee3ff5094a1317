// Temporal convolution forward, backward-data, backward-weight (with split-K) and bias gradient against double
// references written from docs/ops.md ("Convolutions", TemporalConv*).
#include <cmath>

#include "harness.h"
#include "reference.h"

namespace {

using mt::Dim;

struct ConvShape {
    int B, F, Cin, Cout, S;
};

std::string name(const ConvShape& s) {
    return "B" + std::to_string(s.B) + " F" + std::to_string(s.F) + " Cin" + std::to_string(s.Cin) + " Cout" + std::to_string(s.Cout) +
           " S" + std::to_string(s.S);
}

TEST(TemporalConv, ForwardBackwardDataBackwardWeightAndBias) {
    mt::Gpu gpu;
    const ConvShape shapes[] = {{1, 1, 1, 1, 1},  {2, 3, 3, 17, 7},  {1, 5, 17, 3, 1},  {1, 7, 64, 64, 3},
                                {2, 8, 3, 1, 33}, {1, 16, 17, 64, 64}, {1, 2, 65, 70, 5}, {1, 3, 4, 5, 256}};
    for (const ConvShape& s : shapes) {
        const long long nx = 1LL * s.B * s.F * s.Cin * s.S, ny = 1LL * s.B * s.F * s.Cout * s.S, nw = 3LL * s.Cout * s.Cin;
        const auto x = mt::random_vector(nx, nx + 1), w = mt::random_vector(nw, nw + 2), bias = mt::random_vector(s.Cout, 3),
                   dy = mt::random_vector(ny, ny + 4);
        const reference::TemporalConv ref = reference::temporal_conv(s.B, s.F, s.Cin, s.Cout, s.S, x, w, bias, dy);
        mt::DeviceArray<float> dx_(x), dw_(w), db_(bias), ddy(dy), y(ny), dx(nx), dw(nw), dbias(s.Cout);
        const long long columns = 1LL * s.B * s.F * s.S;
        // both tile widths: 64 (the plain entries) and 128 (the _128 entries)
        for (unsigned W : {64u, 128u}) {
            const std::string suffix = W == 64 ? "_f32" : "_128_f32";
            const std::string what = name(s) + " W" + std::to_string(W);
            // sums of up to 3*70 products of |values| < 1: float error below 2e-5 absolute
            gpu.run("temporal_conv", "temporal_conv_fwd" + suffix, {mt::blocks_for(columns, W), (s.Cout + W - 1) / W}, {256}, 0, dx_.get(),
                    dw_.get(), db_.get(), y.get(), s.B, s.F, s.Cin, s.Cout, s.S);
            mt::expect_close(y.read(), ref.y, 2e-5, 1e-5, what + " forward");
            gpu.run("temporal_conv", "temporal_conv_bwd_data" + suffix, {mt::blocks_for(columns, W), (s.Cin + W - 1) / W}, {256}, 0, ddy.get(),
                    dw_.get(), dx.get(), s.B, s.F, s.Cin, s.Cout, s.S);
            mt::expect_close(dx.read(), ref.dx, 2e-5, 1e-5, what + " backward data");
            const Dim wgrid{(3u * s.Cin + W - 1) / W, (s.Cout + W - 1) / W, 1};
            // one split: dw directly
            gpu.run("temporal_conv", "temporal_conv_bwd_weight" + suffix, wgrid, {256}, 0, dx_.get(), ddy.get(), dw.get(), s.B, s.F, s.Cin,
                    s.Cout, s.S, columns);
            // sums over B*F*S <= 1024 columns
            mt::expect_close(dw.read(), ref.dw, 5e-5, 1e-5, what + " backward weight");
            // split-K with splits that are not multiples of the 16-column step, reduced by column_sum
            const long long per_split = std::max(1LL, columns / 3 + 5);
            const unsigned splits = static_cast<unsigned>((columns + per_split - 1) / per_split);
            mt::DeviceArray<float> partial(splits * nw), dw2(nw);
            gpu.run("temporal_conv", "temporal_conv_bwd_weight" + suffix, Dim{wgrid.x, wgrid.y, splits}, {256}, 0, dx_.get(), ddy.get(),
                    partial.get(), s.B, s.F, s.Cin, s.Cout, s.S, per_split);
            gpu.run("bias", "column_sum_f32", {mt::blocks_for(nw, 256)}, {256}, 0, partial.get(), dw2.get(), (long long)splits, int(nw),
                    (long long)splits);
            mt::expect_close(dw2.read(), ref.dw, 5e-5, 1e-5, what + " backward weight, " + std::to_string(splits) + " splits");
        }
        const std::string what = name(s);
        gpu.run("bias", "channel_bias_grad_f32", {(unsigned)s.Cout}, {256}, 0, ddy.get(), dbias.get(), (long long)s.B * s.F, s.Cout,
                (long long)s.S, 0);
        mt::expect_close(dbias.read(), ref.dbias, 5e-5, 1e-5, what + " bias grad");
    }
}

TEST(TemporalConv, NullBiasAndWrongBlockSize) {
    mt::Gpu gpu;
    const ConvShape s{1, 4, 5, 6, 9};
    const auto x = mt::random_vector(4 * 5 * 9, 1), w = mt::random_vector(6 * 5 * 3, 2);
    mt::DeviceArray<float> dx_(x), dw_(w), y(4 * 6 * 9);
    const float* no_bias = nullptr;
    gpu.run("temporal_conv", "temporal_conv_fwd_f32", {1, 1}, {256}, 0, dx_.get(), dw_.get(), no_bias, y.get(), s.B, s.F, s.Cin, s.Cout, s.S);
    const std::vector<float> got = y.read();
    // frame 0, output channel 2, pixel 4: only taps k = 1, 2 see frames 0 and 1
    double ref = 0.0;
    for (int i = 0; i < s.Cin; ++i)
        for (int k = 1; k < 3; ++k) ref += double(w[(2 * s.Cin + i) * 3 + k]) * x[((k - 1) * s.Cin + i) * s.S + 4];
    EXPECT_NEAR(got[(0 * s.Cout + 2) * s.S + 4], ref, 1e-5);
    CUfunction f = gpu.kernel("temporal_conv", "temporal_conv_fwd_f32");
    EXPECT_EQ(gpu.launch(f, "temporal_conv_fwd_f32", {1, 1}, {128}, 0, dx_.get(), dw_.get(), no_bias, y.get(), s.B, s.F, s.Cin, s.Cout, s.S),
              CUDA_ERROR_LAUNCH_FAILED);
}

}  // namespace
