#include "harness.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace mt {

void check(CUresult r, const char* what) {
    if (r == CUDA_SUCCESS) return;
    const char* name = nullptr;
    cuGetErrorName(r, &name);
    throw std::runtime_error(std::string(what) + " failed with " + (name ? name : "?") + ": " + mobiusSimGetLastErrorMessage());
}

unsigned blocks_for(long long n, unsigned per_block, unsigned cap) {
    const long long b = (n + per_block - 1) / per_block;
    return static_cast<unsigned>(std::max<long long>(1, std::min<long long>(b, cap)));
}

Gpu::Gpu() {
    mobius_sim::options().racecheck = true;
    CU_CHECK(cuInit(0));
    CUcontext ctx = nullptr;
    CU_CHECK(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU_CHECK(cuCtxSetCurrent(ctx));
}

Gpu::~Gpu() {
    for (auto& [name, m] : modules_) cuModuleUnload(m);
    cuDevicePrimaryCtxRelease_v2(0);
    cuCtxSetCurrent(nullptr);
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in) throw std::runtime_error("cannot read " + path);
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

std::string ptx_path(const std::string& arch, const std::string& module) {
    return std::string(MOBIUS_PTX_DIR) + "/" + arch + "/" + module + ".ptx";
}

CUfunction Gpu::kernel(const std::string& module, const std::string& entry) {
    CUmodule m = nullptr;
    for (auto& [name, loaded] : modules_)
        if (name == module) m = loaded;
    if (m == nullptr) {
        const std::string text = read_file(ptx_path("sm_90", module));
        CU_CHECK(cuModuleLoadData(&m, text.c_str()));
        modules_.emplace_back(module, m);
    }
    CUfunction f = nullptr;
    CU_CHECK(cuModuleGetFunction(&f, m, entry.c_str()));
    return f;
}

void Gpu::check_signature(const std::string& entry, const std::vector<unsigned>& sizes) {
    const mobius_sim::KernelSignature* k = mobius_sim::find_kernel(entry);
    if (k == nullptr) throw std::runtime_error("no kernel named " + entry);
    bool same = static_cast<std::size_t>(k->num_params) == sizes.size();
    for (std::size_t i = 0; same && i < sizes.size(); ++i) same = k->param_sizes[i] == sizes[i];
    if (!same) throw std::runtime_error("test bug: arguments for " + entry + " do not match its parameter types");
}

std::vector<float> random_vector(std::size_t n, std::uint32_t seed, float lo, float hi) {
    std::mt19937 rng(seed);
    std::uniform_real_distribution<float> d(lo, hi);
    std::vector<float> v(n);
    for (auto& x : v) x = d(rng);
    if (n > 0 && lo < 0.5f * (lo + hi) && v[0] == 0.0f) v[0] = 0.5f * (lo + hi) + 0.25f * (hi - lo);
    return v;
}

void expect_close(const std::vector<float>& got, const std::vector<double>& ref, double atol, double rtol,
                  const std::string& what) {
    ASSERT_EQ(got.size(), ref.size()) << what;
    std::size_t bad = 0, worst = 0;
    double worst_excess = -1.0;
    for (std::size_t i = 0; i < got.size(); ++i) {
        const double err = std::fabs(static_cast<double>(got[i]) - ref[i]);
        const double tol = atol + rtol * std::fabs(ref[i]);
        const bool ok = std::isfinite(got[i]) && err <= tol;
        if (!ok) ++bad;
        const double excess = std::isfinite(got[i]) ? err / tol : INFINITY;
        if (excess > worst_excess) worst_excess = excess, worst = i;
    }
    EXPECT_EQ(bad, 0u) << what << ": " << bad << " of " << got.size() << " elements out of tolerance (atol " << atol
                       << ", rtol " << rtol << "); worst at index " << worst << ": got " << got[worst] << ", reference "
                       << ref[worst];
}

}  // namespace mt
