// Workbench: temporal attention (kernels/attention.cu), o = softmax(scale q k^T) v over the F frames of each pixel.
//
//   v1  simple: one thread per (n, h, query row); scores in a register array, every q/k/v element read from
//       global memory by every thread that needs it (k and v rows F times over).
//   v2  the engine kernel temporal_attention_fwd_f32: K and V staged once per (n, h) in shared memory, one
//       lane per key, segmented warp softmax, output rows with lanes along the head dimension.
//   backward: the engine kernel temporal_attention_bwd_f32, validated against the same reference.
//
// usage: temporal_attention [N H F D]   (N = batch * pixels)
#include "../../kernels/attention.cu"
#include "../../kernels/sim/tests/reference.h"
#include "common.h"

extern "C" __global__ void __launch_bounds__(256)
    attention_fwd_v1(const float* q, const float* k, const float* v, float* o, float* lse, int N, int H, int F, int D, float scale) {
    const long long rows = static_cast<long long>(N) * H * F;
    for (long long idx = gpu::global_thread(); idx < rows; idx += gpu::global_threads()) {
        const long long n = idx / (static_cast<long long>(H) * F);
        const int h = static_cast<int>(idx / F % H), i = static_cast<int>(idx % F);
        const long long HD = static_cast<long long>(H) * D, base = n * F * HD + static_cast<long long>(h) * D;
        float s[32];
        float m = -gpu::inf();
        for (int j = 0; j < F; ++j) {
            float dot = 0.0f;
            for (int d = 0; d < D; ++d) dot += q[base + i * HD + d] * k[base + j * HD + d];
            s[j] = dot * scale;
            m = gpu::max(m, s[j]);
        }
        float sum = 0.0f;
        for (int j = 0; j < F; ++j) sum += (s[j] = gpu::exp(s[j] - m));
        lse[(n * H + h) * F + i] = m + gpu::log(sum);
        for (int d = 0; d < D; ++d) {
            float acc = 0.0f;
            for (int j = 0; j < F; ++j) acc += s[j] * v[base + j * HD + d];
            o[base + i * HD + d] = acc / sum;
        }
    }
}

int main(int argc, char** argv) {
    // GPU default: 2 clips of 32x32 latent pixels, 8 heads of 64, 16 frames; the simulator gets a small problem.
    int N = wb::kOnGpu ? 2048 : 6, H = wb::kOnGpu ? 8 : 2, F = 16, D = 64;
    if (argc == 5) N = std::atoi(argv[1]), H = std::atoi(argv[2]), F = std::atoi(argv[3]), D = std::atoi(argv[4]);
    const float scale = 1.0f / std::sqrt(float(D));
    const long long n = 1LL * N * F * H * D, nl = 1LL * N * H * F;
    std::printf("temporal attention N=%d H=%d F=%d D=%d\n", N, H, F, D);
    const auto q = wb::random_vector(n, 1), k = wb::random_vector(n, 2), v = wb::random_vector(n, 3), dout = wb::random_vector(n, 4);
    const reference::Attention ref = reference::attention(N, H, F, D, scale, q, k, v, dout);

    float *dq_in = wb::alloc<float>(n), *dk_in = wb::alloc<float>(n), *dv_in = wb::alloc<float>(n), *ddo = wb::alloc<float>(n);
    float *o = wb::alloc<float>(n), *lse = wb::alloc<float>(nl), *dq = wb::alloc<float>(n), *dk = wb::alloc<float>(n), *dv = wb::alloc<float>(n);
    wb::upload(dq_in, q);
    wb::upload(dk_in, k);
    wb::upload(dv_in, v);
    wb::upload(ddo, dout);

    // Tolerances: o is a convex combination of |v| < 1 (fp32 sums of F terms); lse is the log of a sum of
    // F exponentials of scores below sqrt(D)/3; gradients sum F*D products and carry the dP - Drow cancellation.
    bool ok = true;
    const double bytes = 4.0 * 4 * n, flops = 4.0 * N * H * F * F * D;
    auto v1 = [&] { WB_LAUNCH(attention_fwd_v1, {unsigned((nl + 255) / 256)}, {256}, 0, dq_in, dk_in, dv_in, o, lse, N, H, F, D, scale); };
    wb::poison(o, n);
    wb::poison(lse, nl);
    v1();
    ok &= wb::validate("v1 o", wb::download(o, n), ref.o, 1e-5, 1e-5);
    ok &= wb::validate("v1 lse", wb::download(lse, nl), ref.lse, 1e-5, 1e-6);
    wb::report_time("v1 forward", wb::time_ms(v1), bytes, flops);

    int fp = 4;
    while (fp < F) fp *= 2;
    const int rows = 32 / fp, dp = D | 1;
    const unsigned fwd_bytes = 4u * (2 * F * dp + 4 * rows * dp), bwd_bytes = 4u * (2 * F * dp + 8 * rows * dp + 2 * F * F);
    const unsigned grid = unsigned(std::min<long long>(1LL * N * H, 65535));
    auto v2 = [&] { WB_LAUNCH(temporal_attention_fwd_f32, {grid}, {128}, fwd_bytes, dq_in, dk_in, dv_in, o, lse, N, H, F, D, scale); };
    wb::poison(o, n);
    wb::poison(lse, nl);
    v2();
    ok &= wb::validate("v2 o", wb::download(o, n), ref.o, 1e-5, 1e-5);
    ok &= wb::validate("v2 lse", wb::download(lse, nl), ref.lse, 1e-5, 1e-6);
    wb::report_time("v2 forward (engine)", wb::time_ms(v2), bytes, flops);

    auto bwd = [&] {
        WB_LAUNCH(temporal_attention_bwd_f32, {grid}, {128}, bwd_bytes, dq_in, dk_in, dv_in, o, lse, ddo, dq, dk, dv, N, H, F, D, scale);
    };
    for (float* p : {dq, dk, dv}) wb::poison(p, n);
    bwd();
    ok &= wb::validate("backward dq", wb::download(dq, n), ref.dq, 2e-5, 1e-4);
    ok &= wb::validate("backward dk", wb::download(dk, n), ref.dk, 2e-5, 1e-4);
    ok &= wb::validate("backward dv", wb::download(dv, n), ref.dv, 1e-5, 1e-4);
    wb::report_time("backward (engine)", wb::time_ms(bwd), 4.0 * 8 * n, 2.5 * flops);

    for (float* p : {dq_in, dk_in, dv_in, ddo, o, lse, dq, dk, dv}) wb::release(p);
    std::printf("%s\n", ok ? "all versions agree with the reference" : "MISMATCH");
    return ok ? 0 : 1;
}
