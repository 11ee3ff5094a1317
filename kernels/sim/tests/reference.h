// Double-precision references for the larger ops, written from docs/ops.md (not from the kernels). Shared by
// the simulator tests and the kernel workbench (benchmarks/workbench), so each op has exactly one CPU twin.
#pragma once

#include <algorithm>
#include <cmath>
#include <vector>

namespace reference {

inline double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }

struct Attention {
    std::vector<double> o, lse, dq, dk, dv;
};

// ops.md "Attention" with Lq = Lk = F. q, k, v, dout [N, F, H*D]; lse [N, H, F].
// Per (n, h): S = scale q k^T, P = softmax_rows(S), o = P v, lse = log sum exp S; backward:
// dv = P^T dO, dP = dO v^T, Drow_i = dO_i . o_i, dS = P (dP - Drow), dq = scale dS k, dk = scale dS^T q.
inline Attention attention(int N, int H, int F, int D, double scale, const std::vector<float>& q, const std::vector<float>& k,
                           const std::vector<float>& v, const std::vector<float>& dout) {
    const long long size = 1LL * N * F * H * D;
    const int HD = H * D;
    Attention r{std::vector<double>(size), std::vector<double>(1LL * N * H * F), std::vector<double>(size), std::vector<double>(size),
                std::vector<double>(size)};
    std::vector<double> P(F * F), dS(F * F), s(F);
    for (int n = 0; n < N; ++n)
        for (int h = 0; h < H; ++h) {
            auto at = [&](int row, int d) { return (1LL * n * F + row) * HD + 1LL * h * D + d; };
            for (int i = 0; i < F; ++i) {
                double m = -INFINITY, sum = 0.0;
                for (int j = 0; j < F; ++j) {
                    double dot = 0.0;
                    for (int d = 0; d < D; ++d) dot += double(q[at(i, d)]) * k[at(j, d)];
                    s[j] = scale * dot;
                    m = std::max(m, s[j]);
                }
                for (int j = 0; j < F; ++j) sum += std::exp(s[j] - m);
                r.lse[(1LL * n * H + h) * F + i] = m + std::log(sum);
                for (int j = 0; j < F; ++j) P[i * F + j] = std::exp(s[j] - m) / sum;
                for (int d = 0; d < D; ++d) {
                    double acc = 0.0;
                    for (int j = 0; j < F; ++j) acc += P[i * F + j] * v[at(j, d)];
                    r.o[at(i, d)] = acc;
                }
            }
            for (int i = 0; i < F; ++i) {
                double drow = 0.0;
                for (int d = 0; d < D; ++d) drow += double(dout[at(i, d)]) * r.o[at(i, d)];
                for (int j = 0; j < F; ++j) {
                    double dp = 0.0;
                    for (int d = 0; d < D; ++d) dp += double(dout[at(i, d)]) * v[at(j, d)];
                    dS[i * F + j] = P[i * F + j] * (dp - drow);
                }
            }
            for (int i = 0; i < F; ++i)
                for (int d = 0; d < D; ++d) {
                    double aq = 0.0, ak = 0.0, av = 0.0;
                    for (int j = 0; j < F; ++j) {
                        aq += dS[i * F + j] * k[at(j, d)];
                        ak += dS[j * F + i] * q[at(j, d)];
                        av += P[j * F + i] * dout[at(j, d)];
                    }
                    r.dq[at(i, d)] = scale * aq;
                    r.dk[at(i, d)] = scale * ak;
                    r.dv[at(i, d)] = av;
                }
        }
    return r;
}

struct TemporalConv {
    std::vector<double> y, dx, dw, dbias;
};

// ops.md "Convolutions", TemporalConv*: x [B, F, Cin, S], w [Cout, Cin, 3], bias [Cout], dy [B, F, Cout, S];
// y[b,f,o,s] = bias[o] + sum_{i,k} w[o,i,k] x[b,f+k-1,i,s] (zero outside 0..F-1),
// dx[b,f,i,s] = sum_{o,k} w[o,i,k] dy[b,f-k+1,o,s], dw[o,i,k] = sum_{b,f,s} dy[b,f,o,s] x[b,f+k-1,i,s], dbias[o] = sum dy.
inline TemporalConv temporal_conv(int B, int F, int Cin, int Cout, int S, const std::vector<float>& x, const std::vector<float>& w,
                                  const std::vector<float>& bias, const std::vector<float>& dy) {
    auto X = [&](int b, int f, int c, int s) { return double(x[((1LL * b * F + f) * Cin + c) * S + s]); };
    auto DY = [&](int b, int f, int o, int s) { return double(dy[((1LL * b * F + f) * Cout + o) * S + s]); };
    auto W = [&](int o, int i, int k) { return double(w[(1LL * o * Cin + i) * 3 + k]); };
    auto in_clip = [&](int f) { return f >= 0 && f < F; };
    TemporalConv r{std::vector<double>(1LL * B * F * Cout * S), std::vector<double>(1LL * B * F * Cin * S), std::vector<double>(3LL * Cout * Cin, 0.0),
                   std::vector<double>(Cout, 0.0)};
    for (int b = 0; b < B; ++b)
        for (int f = 0; f < F; ++f)
            for (int s = 0; s < S; ++s) {
                for (int o = 0; o < Cout; ++o) {
                    double acc = bias[o];
                    for (int i = 0; i < Cin; ++i)
                        for (int k = 0; k < 3; ++k)
                            if (in_clip(f + k - 1)) {
                                acc += W(o, i, k) * X(b, f + k - 1, i, s);
                                r.dw[(1LL * o * Cin + i) * 3 + k] += DY(b, f, o, s) * X(b, f + k - 1, i, s);
                            }
                    r.y[((1LL * b * F + f) * Cout + o) * S + s] = acc;
                    r.dbias[o] += DY(b, f, o, s);
                }
                for (int i = 0; i < Cin; ++i) {
                    double acc = 0.0;
                    for (int o = 0; o < Cout; ++o)
                        for (int k = 0; k < 3; ++k)
                            if (in_clip(f - k + 1)) acc += W(o, i, k) * DY(b, f - k + 1, o, s);
                    r.dx[((1LL * b * F + f) * Cin + i) * S + s] = acc;
                }
            }
    return r;
}

struct GroupNorm {
    std::vector<double> y, mean, rstd, dx, dgamma, dbeta;
};

// ops.md "Norms", GroupNorm*: x [N, T, C, S], statistics per (n, g) over t, the C/G channels of g and s; with
// silu the output is silu(pre), pre = xhat gamma + beta, and backward uses g = dy silu'(pre).
inline GroupNorm group_norm(int N, int T, int C, int S, int G, double eps, bool silu, const std::vector<float>& x,
                            const std::vector<float>& gamma, const std::vector<float>& beta, const std::vector<float>& dy) {
    const long long total = 1LL * N * T * C * S;
    GroupNorm r{std::vector<double>(total), {}, {}, std::vector<double>(total), std::vector<double>(C, 0.0), std::vector<double>(C, 0.0)};
    const int cg = C / G;
    const double m = double(T) * cg * S;
    auto at = [&](int n, int t, int c, int s) { return ((1LL * n * T + t) * C + c) * S + s; };
    std::vector<double> gv(total), xh(total);
    for (int n = 0; n < N; ++n)
        for (int g = 0; g < G; ++g) {
            auto for_group = [&](auto body) {
                for (int t = 0; t < T; ++t)
                    for (int c = g * cg; c < (g + 1) * cg; ++c)
                        for (int s = 0; s < S; ++s) body(at(n, t, c, s), c);
            };
            double mu = 0.0, var = 0.0;
            for_group([&](long long i, int) { mu += x[i]; });
            mu /= m;
            for_group([&](long long i, int) { var += (x[i] - mu) * (x[i] - mu); });
            var /= m;
            const double rs = 1.0 / std::sqrt(var + eps);
            r.mean.push_back(mu);
            r.rstd.push_back(rs);
            double mean_gg = 0.0, mean_ggx = 0.0;
            for_group([&](long long i, int c) {
                xh[i] = (x[i] - mu) * rs;
                const double pre = xh[i] * gamma[c] + beta[c], sg = sigmoid(pre);
                r.y[i] = silu ? pre * sg : pre;
                gv[i] = silu ? dy[i] * sg * (1.0 + pre * (1.0 - sg)) : dy[i];
                r.dbeta[c] += gv[i];
                r.dgamma[c] += gv[i] * xh[i];
                mean_gg += gv[i] * gamma[c] / m;
                mean_ggx += gv[i] * gamma[c] * xh[i] / m;
            });
            for_group([&](long long i, int c) { r.dx[i] = rs * (gv[i] * gamma[c] - mean_gg - xh[i] * mean_ggx); });
        }
    return r;
}

}  // namespace reference
