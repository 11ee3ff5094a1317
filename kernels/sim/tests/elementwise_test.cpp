// Elementwise kernels against double-precision references written from docs/ops.md.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <iterator>

#include "harness.h"

namespace {

using mt::Dim;

const long long kSizes[] = {1, 7, 255, 256, 257, 1000, 4099};

double silu(double x) { return x / (1.0 + std::exp(-x)); }
double silu_grad(double x) {
    const double s = 1.0 / (1.0 + std::exp(-x));
    return s + x * s * (1.0 - s);
}
// ops.md: gelu(x) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))
double gelu(double x) {
    const double k = std::sqrt(2.0 / M_PI);
    return 0.5 * x * (1.0 + std::tanh(k * (x + 0.044715 * x * x * x)));
}
double gelu_grad(double x) {
    const double k = std::sqrt(2.0 / M_PI);
    const double u = k * (x + 0.044715 * x * x * x);
    const double t = std::tanh(u);
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
}

std::vector<double> map(const std::vector<float>& x, double (*f)(double)) {
    std::vector<double> r(x.size());
    for (std::size_t i = 0; i < x.size(); ++i) r[i] = f(x[i]);
    return r;
}

// Grids both smaller and larger than n / block, so the grid-stride loop and the tail are both exercised.
std::vector<Dim> grids_for(long long n) { return {{1}, {mt::blocks_for(n, 256)}, {3}}; }

TEST(Elementwise, AddScalesBothOperandsAndMayWriteInPlace) {
    mt::Gpu gpu;
    for (long long n : kSizes) {
        const auto a = mt::random_vector(n, 11 + n), b = mt::random_vector(n, 12 + n, -3, 3);
        mt::DeviceArray<float> da(a), db(b), y(n);
        for (Dim grid : grids_for(n)) {
            gpu.run("elementwise", "ew_add_f32", grid, {256}, 0, da.get(), db.get(), y.get(), n, 0.75f, -1.5f);
            std::vector<double> ref(n);
            for (long long i = 0; i < n; ++i) ref[i] = 0.75 * a[i] - 1.5 * b[i];
            // two products and a sum of terms below 5: a few ulp of 5, whatever the cancellation
            mt::expect_close(y.read(), ref, 2e-6, 1e-6, "add n=" + std::to_string(n));
        }
        // y aliases a: a += 2 b
        gpu.run("elementwise", "ew_add_f32", {2}, {128}, 0, da.get(), db.get(), da.get(), n, 1.0f, 2.0f);
        std::vector<double> ref(n);
        for (long long i = 0; i < n; ++i) ref[i] = a[i] + 2.0 * b[i];
        mt::expect_close(da.read(), ref, 2e-6, 1e-6, "add in place");
    }
}

TEST(Elementwise, MulScaleAndFill) {
    mt::Gpu gpu;
    for (long long n : kSizes) {
        const auto a = mt::random_vector(n, 21 + n), b = mt::random_vector(n, 22 + n);
        mt::DeviceArray<float> da(a), db(b), y(n);
        gpu.run("elementwise", "ew_mul_f32", {mt::blocks_for(n, 256)}, {256}, 0, da.get(), db.get(), y.get(), n);
        std::vector<double> ref(n);
        for (long long i = 0; i < n; ++i) ref[i] = double(a[i]) * b[i];
        mt::expect_close(y.read(), ref, 0.0, 1e-7, "mul");  // one rounding: half an ulp
        gpu.run("elementwise", "ew_scale_f32", {2}, {64}, 0, da.get(), da.get(), n, -3.25f);
        for (long long i = 0; i < n; ++i) ref[i] = -3.25 * a[i];
        mt::expect_close(da.read(), ref, 0.0, 1e-7, "scale in place");
        gpu.run("elementwise", "ew_fill_f32", {1}, {32}, 0, y.get(), n, 0.625f);
        mt::expect_close(y.read(), std::vector<double>(n, 0.625), 0.0, 0.0, "fill");
    }
}

TEST(Elementwise, SiluAndGeluForwardAndBackward) {
    mt::Gpu gpu;
    for (long long n : kSizes) {
        // covers the saturated tails (|x| up to 12) as well as the curved middle
        const auto x = mt::random_vector(n, 31 + n, -12, 12), dy = mt::random_vector(n, 32 + n);
        mt::DeviceArray<float> dx_(x), ddy(dy), y(n), dx(n);
        const Dim grid{mt::blocks_for(n, 256)};
        // exp via exp2 and a handful of float operations: a few ulp relative, absolute near the zero of silu/gelu
        gpu.run("elementwise", "silu_fwd_f32", grid, {256}, 0, dx_.get(), y.get(), n);
        mt::expect_close(y.read(), map(x, silu), 1e-6, 1e-5, "silu");
        gpu.run("elementwise", "gelu_fwd_f32", grid, {256}, 0, dx_.get(), y.get(), n);
        mt::expect_close(y.read(), map(x, gelu), 1e-6, 1e-5, "gelu");
        std::vector<double> ref(n);
        gpu.run("elementwise", "silu_bwd_f32", grid, {256}, 0, dx_.get(), ddy.get(), dx.get(), n);
        for (long long i = 0; i < n; ++i) ref[i] = dy[i] * silu_grad(x[i]);
        mt::expect_close(dx.read(), ref, 1e-6, 1e-5, "silu backward");
        gpu.run("elementwise", "gelu_bwd_f32", grid, {256}, 0, dx_.get(), ddy.get(), dx.get(), n);
        for (long long i = 0; i < n; ++i) ref[i] = dy[i] * gelu_grad(x[i]);
        mt::expect_close(dx.read(), ref, 1e-6, 1e-5, "gelu backward");
    }
}

TEST(Elementwise, GegluForwardAndBackwardGiveBothHalves) {
    mt::Gpu gpu;
    for (int rows : {1, 3, 17}) {
        for (int hidden : {1, 5, 64, 161}) {
            const std::size_t n = static_cast<std::size_t>(rows) * hidden;
            const auto x = mt::random_vector(2 * n, rows * 100 + hidden, -4, 4), dy = mt::random_vector(n, hidden);
            mt::DeviceArray<float> dx_(x), ddy(dy), y(n), dx(2 * n);
            gpu.run("elementwise", "geglu_fwd_f32", {mt::blocks_for(n, 128)}, {128}, 0, dx_.get(), y.get(), (long long)rows, hidden);
            gpu.run("elementwise", "geglu_bwd_f32", {2}, {256}, 0, dx_.get(), ddy.get(), dx.get(), (long long)rows, hidden);
            std::vector<double> ry(n), rdx(2 * n);
            for (int r = 0; r < rows; ++r)
                for (int j = 0; j < hidden; ++j) {
                    const double a = x[r * 2 * hidden + j], g = x[r * 2 * hidden + hidden + j], d = dy[r * hidden + j];
                    ry[r * hidden + j] = a * gelu(g);
                    rdx[r * 2 * hidden + j] = d * gelu(g);
                    rdx[r * 2 * hidden + hidden + j] = d * a * gelu_grad(g);
                }
            const std::string what = "geglu rows=" + std::to_string(rows) + " hidden=" + std::to_string(hidden);
            mt::expect_close(y.read(), ry, 1e-6, 1e-5, what);
            mt::expect_close(dx.read(), rdx, 1e-6, 1e-5, what + " backward");
        }
    }
}

}  // namespace

namespace {

// The bf16 a double reference picks: the nearer of the two bf16 values around x (x's top half, and the next one
// away from zero, 2^128 past the largest finite), the even one on a tie.
std::uint16_t reference_bf16(float x) {
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    const std::uint32_t sign = u & 0x80000000u, mag = u & 0x7fffffffu, low = mag & 0xffff0000u;
    if (mag >= 0x7f800000u || low == mag) return static_cast<std::uint16_t>(u >> 16);  // inf, or exact
    const std::uint32_t high = low + 0x10000u;
    float flow;
    std::memcpy(&flow, &low, 4);
    double dlow = flow, dhigh;
    if (high == 0x7f800000u) {
        dhigh = std::ldexp(1.0, 128);
    } else {
        float fhigh;
        std::memcpy(&fhigh, &high, 4);
        dhigh = fhigh;
    }
    const double ax = std::fabs(static_cast<double>(x));
    const bool up = dhigh - ax < ax - dlow || (dhigh - ax == ax - dlow && ((low >> 16) & 1u));
    return static_cast<std::uint16_t>((sign | (up ? high : low)) >> 16);
}

}  // namespace

TEST(Cast, Fp32ToBf16RoundsToNearestEvenAndWideningIsExact) {
    mt::Gpu gpu;
    auto x = mt::random_vector(4099, 77, -300.0f, 300.0f);
    const std::uint32_t specials[] = {0x3f808000u, 0x3f818000u, 0xbf808000u, 0x7f800000u, 0x80000000u, 0x00000001u,
                                      0x7f7f8000u, 0x7f7fffffu, 0x00ff8000u, 0x7fc00000u};
    for (std::size_t i = 0; i < std::size(specials); ++i) std::memcpy(&x[i * 37], &specials[i], 4);
    const long long n = static_cast<long long>(x.size());
    mt::DeviceArray<float> dx(x), wide(x.size());
    mt::DeviceArray<std::uint16_t> narrow(x.size());
    for (Dim grid : grids_for(n)) {
        gpu.run("cast", "cast_f32_bf16", grid, {256}, 0, dx.get(), narrow.get(), n);
        gpu.run("cast", "cast_bf16_f32", grid, {256}, 0, narrow.get(), wide.get(), n);
        const auto got = narrow.read();
        const auto back = wide.read();
        for (long long i = 0; i < n; ++i) {
            std::uint32_t wb;
            std::memcpy(&wb, &back[i], 4);
            if (std::isnan(x[i])) {
                EXPECT_TRUE(std::isnan(back[i])) << "NaN at " << i;
                continue;
            }
            ASSERT_EQ(got[i], reference_bf16(x[i])) << "x = " << x[i] << " at " << i;
            ASSERT_EQ(wb, static_cast<std::uint32_t>(got[i]) << 16) << "widening at " << i;
        }
    }
}
