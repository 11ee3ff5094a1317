// Workbench: group norm with fused SiLU over a whole clip (kernels/norm.cu), x viewed [N, T, C, S].
//
//   engine forward  group_norm_fwd_f32: one block per (n, group), two-pass statistics, fused SiLU.
//   engine backward group_norm_bwd_f32 + column_sum_f32 for dgamma / dbeta.
// One version each so far; the block size is swept because it is the main tuning knob (a clip-wide group is
// T*(C/G)*S elements, hundreds of thousands, walked by one block).
//
// usage: group_norm [N T C S G]
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
    bool ok = true;
    for (unsigned block : {128u, 256u, 512u, 1024u}) {
        auto fwd = [&] {
            WB_LAUNCH(group_norm_fwd_f32, {unsigned(N * G)}, {block}, 0, dx_in, dg, db, y, mean, rstd, N, T, C, S, G, eps, 1);
        };
        auto bwd = [&] {
            WB_LAUNCH(group_norm_bwd_f32, {unsigned(N * G)}, {block}, 0, dx_in, dg, db, mean, rstd, ddy, dx, pg, pb, N, T, C, S, G, 1);
            WB_LAUNCH(column_sum_f32, {unsigned((C + 255) / 256)}, {256}, 0, pg, dgamma, (long long)N, C, (long long)N);
            WB_LAUNCH(column_sum_f32, {unsigned((C + 255) / 256)}, {256}, 0, pb, dbeta, (long long)N, C, (long long)N);
        };
        fwd();
        bwd();
        std::printf(" block %u\n", block);
        ok &= wb::validate("forward y", wb::download(y, n), ref.y, 2e-5, 1e-5);
        ok &= wb::validate("backward dx", wb::download(dx, n), ref.dx, 5e-5, 1e-4);
        ok &= wb::validate("dgamma", wb::download(dgamma, C), ref.dgamma, 1e-7 * N * T * S + 1e-5, 1e-4);
        ok &= wb::validate("dbeta", wb::download(dbeta, C), ref.dbeta, 1e-7 * N * T * S + 1e-5, 1e-4);
        wb::report_time("forward", wb::time_ms(fwd), 4.0 * 2 * n, 8.0 * n);
        wb::report_time("backward", wb::time_ms(bwd), 4.0 * 4 * n, 20.0 * n);
        if (!wb::kOnGpu) break;  // the simulator only validates: one block size is enough
    }

    for (float* p : {dx_in, dg, db, ddy, y, mean, rstd, dx, pg, pb, dgamma, dbeta}) wb::release(p);
    std::printf("%s\n", ok ? "all versions agree with the reference" : "MISMATCH");
    return ok ? 0 : 1;
}
