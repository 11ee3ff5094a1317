// Workbench: group norm with fused SiLU over a whole clip (kernels/norm.cu), x viewed [N, T, C, S].
//
//   engine forward  group_norm_stats_f32 + group_norm_apply_f32: each group cut into `splits` chunks, chunk
//                   statistics (two passes) merged in order, then the normalisation with fused SiLU.
//   engine backward group_norm_bwd_reduce_f32 (per-channel chunk sums) + group_norm_bwd_dx_f32, then
//                   column_sum_f32 for dgamma / dbeta.
// Versions by chunk count: v1 one chunk per group (one block per group, as the engine was before 2026-11-26:
// 32 blocks at batch 1), v2 the engine's choice (chunks until about 4 blocks per SM of a 132-SM H100/H200).
//
// usage: group_norm [N T C S G]
#include <algorithm>

#include "../../kernels/bias.cu"
#include "../../kernels/norm.cu"
#include "../../kernels/sim/tests/reference.h"
#include "common.h"

int main(int argc, char** argv) {
    // GPU default: the temporal layers' norm over 2 clips of 16 frames, 320 channels, 32 groups, 32x32 pixels.
    int N = 2, T = wb::kOnGpu ? 16 : 3, C = wb::kOnGpu ? 320 : 12, S = wb::kOnGpu ? 1024 : 33, G = wb::kOnGpu ? 32 : 4;
    if (argc == 6) N = std::atoi(argv[1]), T = std::atoi(argv[2]), C = std::atoi(argv[3]), S = std::atoi(argv[4]), G = std::atoi(argv[5]);
    std::printf("group norm + SiLU N=%d T=%d C=%d S=%d G=%d\n", N, T, C, S, G);
    const long long n = 1LL * N * T * C * S;
    const float eps = 1e-5f;
    const auto x = wb::random_vector(n, 1, 0.5f, 3.0f), dy = wb::random_vector(n, 2), gamma = wb::random_vector(C, 3, 0.5f, 1.5f),
               beta = wb::random_vector(C, 4);
    const reference::GroupNorm ref = reference::group_norm(N, T, C, S, G, eps, true, x, gamma, beta, dy);

    float *dx_in = wb::alloc<float>(n), *dg = wb::alloc<float>(C), *db = wb::alloc<float>(C), *ddy = wb::alloc<float>(n);
    float *y = wb::alloc<float>(n), *mean = wb::alloc<float>(N * G), *rstd = wb::alloc<float>(N * G), *dx = wb::alloc<float>(n);
    float *pg = wb::alloc<float>(N * C), *pb = wb::alloc<float>(N * C), *dgamma = wb::alloc<float>(C), *dbeta = wb::alloc<float>(C);
    wb::upload(dx_in, x);
    wb::upload(dg, gamma);
    wb::upload(db, beta);
    wb::upload(ddy, dy);

    // Tolerances: statistics are fp32 sums over T*(C/G)*S elements (relative error ~1e-6 on the mean and the
    // rstd), so y carries ~1e-6 * |xhat| <~ 1e-5; dx subtracts two group means; dgamma/dbeta sum N*T*S terms.
    // The backend's rule (CudaBackend.GroupNormSplits): enough chunks for 4 blocks per SM, none under 4096 elements.
    auto splits_for = [](long long units, long long elements) {
        const long long target = 4 * 132, wanted = (target + units - 1) / units, most = std::max(1LL, elements / 4096);
        return static_cast<int>(std::max(1LL, std::min(wanted, std::min(most, 1024LL))));
    };
    bool ok = true;
    for (int version : {1, 2}) {
        const int splits = version == 1 ? 1 : splits_for(1LL * N * G, 1LL * T * (C / G) * S);
        const int rsplits = version == 1 ? 1 : splits_for(1LL * N * C, 1LL * T * S);
        float* stats = wb::alloc<float>(static_cast<std::size_t>(N) * G * splits * 2);
        float* sums = wb::alloc<float>(static_cast<std::size_t>(N) * C * rsplits * 2);
        const unsigned block = 256;
        auto fwd = [&] {
            WB_LAUNCH(group_norm_stats_f32, {unsigned(splits), unsigned(N * G)}, {block}, 0, dx_in, stats, N, T, C, S, G, splits);
            WB_LAUNCH(group_norm_apply_f32, {unsigned(splits), unsigned(N * G)}, {block}, 0, dx_in, dg, db, y, stats, mean, rstd, N, T, C, S,
                      G, splits, eps, 1);
        };
        auto bwd = [&] {
            WB_LAUNCH(group_norm_bwd_reduce_f32, {unsigned(rsplits), unsigned(N * C)}, {block}, 0, dx_in, dg, db, mean, rstd, ddy, sums, N, T,
                      C, S, G, rsplits, 1);
            WB_LAUNCH(group_norm_bwd_dx_f32, {unsigned(splits), unsigned(N * G)}, {block}, 0, dx_in, dg, db, mean, rstd, ddy, sums, dx,
                      static_cast<const float*>(nullptr), pg, pb, N, T, C, S, G, rsplits, splits, 1);
            WB_LAUNCH(column_sum_f32, {unsigned((C + 255) / 256)}, {256}, 0, pg, dgamma, (long long)N, C, (long long)N);
            WB_LAUNCH(column_sum_f32, {unsigned((C + 255) / 256)}, {256}, 0, pb, dbeta, (long long)N, C, (long long)N);
        };
        for (float* p : {y, dx}) wb::poison(p, n);
        for (float* p : {dgamma, dbeta}) wb::poison(p, C);
        fwd();
        bwd();
        std::printf(" v%d: %d chunks per group, %d per channel in backward\n", version, splits, rsplits);
        ok &= wb::validate("forward y", wb::download(y, n), ref.y, 2e-5, 1e-5);
        ok &= wb::validate("backward dx", wb::download(dx, n), ref.dx, 5e-5, 1e-4);
        ok &= wb::validate("dgamma", wb::download(dgamma, C), ref.dgamma, 1e-7 * N * T * S + 1e-5, 1e-4);
        ok &= wb::validate("dbeta", wb::download(dbeta, C), ref.dbeta, 1e-7 * N * T * S + 1e-5, 1e-4);
        wb::report_time("forward", wb::time_ms(fwd), 4.0 * 2 * n, 8.0 * n);
        wb::report_time("backward", wb::time_ms(bwd), 4.0 * 4 * n, 20.0 * n);
        wb::release(stats);
        wb::release(sums);
    }

    for (float* p : {dx_in, dg, db, ddy, y, mean, rstd, dx, pg, pb, dgamma, dbeta}) wb::release(p);
    std::printf("%s\n", ok ? "all versions agree with the reference" : "MISMATCH");
    return ok ? 0 : 1;
}
