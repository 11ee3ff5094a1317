// The simulated CUDA driver API. One device (reported as an sm_90 part), one primary context, streams and
// events that complete at once (all work runs synchronously on the calling thread), modules loaded from our
// PTX text and resolved entry by entry to the CPU build of the same kernels.
//
// Errors follow the real driver: bad arguments give CUDA_ERROR_INVALID_VALUE / INVALID_HANDLE / INVALID_CONTEXT,
// and a faulting kernel (illegal address, trap, barrier or race error) leaves a sticky error in its context
// that every later call returns until the primary context is released to zero references and retained again.
// Cleanup calls (free, unload, destroy) still succeed in a failed context so that owners can release handles.
//
// As work runs when it is enqueued, two streams can never race here, and a missing dependency between them could
// never show. The stream-order check (src/stream_order.cpp, on unless MOBIUS_SIM_STREAMCHECK=0) finds it instead:
// every stream keeps a vector clock of what it is ordered after (cuEventRecord / cuStreamWaitEvent, host
// synchronisation, the legacy stream's implicit barriers against blocking streams), every allocation its last write
// and the reads since, and an operation (a launch, copy or fill here; a GEMM, convolution or collective in the other
// libraries) that reads or writes an allocation out of order with another stream's access fails before it runs, with
// CUDA_ERROR_LAUNCH_FAILED made sticky like a kernel fault. A launch's accesses are its pointer parameters (pointer to
// const: read; otherwise written). The synchronous copies and cuMemsetD32 are operations of the legacy stream;
// cuMemcpyDtoH also makes the host wait for it. cuCtxSynchronize, cuMemAlloc and cuMemFree are full barriers.
#include <pthread.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <set>
#include <sstream>

#include "internal.h"
#include "mobius_sim/cuda_api.h"
#include "mobius_sim/runtime.h"
#include "ptx.h"

struct CUctx_st {
    int refcount = 0;
    CUresult sticky = CUDA_SUCCESS;
};

struct CUfunc_st {
    const mobius_sim::KernelSignature* kernel = nullptr;
    mobius_sim::ptx::Entry entry;
    unsigned max_dynamic_shared = 0;
    CUmod_st* module = nullptr;
};

struct CUmod_st {
    CUctx_st* context = nullptr;
    std::vector<std::unique_ptr<CUfunc_st>> functions;
};

struct CUstream_st {
    unsigned flags = 0;
};

struct CUevent_st {
    unsigned flags = 0;
    bool recorded = false;
    std::chrono::steady_clock::time_point time;
};

namespace mobius_sim::detail {
namespace {

constexpr unsigned kSharedPerBlock = 48 * 1024;
constexpr unsigned kSharedPerBlockOptin = 227 * 1024;
constexpr int kDriverVersion = 13000;
constexpr char kDeviceName[] = "Mobius simulated GPU (CPU, sm_90)";

struct Driver {
    bool initialised = false;
    CUctx_st* primary = nullptr;  // the live primary context, if retained
    // Every context ever created; released ones stay so that a stale handle keeps failing instead of crashing.
    std::vector<std::unique_ptr<CUctx_st>> contexts;
    std::set<CUmod_st*> modules;
    std::set<CUfunc_st*> functions;
    std::set<CUstream_st*> streams;
    std::set<CUevent_st*> events;
    std::string last_error;
    pthread_key_t current_key{};
    Driver() { pthread_key_create(&current_key, nullptr); }
};

Driver& drv() {
    static Driver d;
    return d;
}

CUctx_st* current() { return static_cast<CUctx_st*>(pthread_getspecific(drv().current_key)); }

CUresult fail(CUresult code, const std::string& message) {
    set_last_error(message);
    return code;
}

// The gate of every call that works in the current context.
CUresult need_context(const char* call) {
    Driver& d = drv();
    if (!d.initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, std::string(call) + ": cuInit has not been called");
    CUctx_st* c = current();
    if (c == nullptr || c != d.primary) return fail(CUDA_ERROR_INVALID_CONTEXT, std::string(call) + ": no current context");
    if (c->sticky != CUDA_SUCCESS) return c->sticky;
    return CUDA_SUCCESS;
}

CUresult to_result(Status s) {
    switch (s) {
        case Status::Success: return CUDA_SUCCESS;
        case Status::InvalidValue: return CUDA_ERROR_INVALID_VALUE;
        case Status::OutOfMemory: return CUDA_ERROR_OUT_OF_MEMORY;
        case Status::OutOfResources: return CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES;
        case Status::IllegalAddress: return CUDA_ERROR_ILLEGAL_ADDRESS;
        case Status::LaunchFailed: return CUDA_ERROR_LAUNCH_FAILED;
        case Status::Timeout: return CUDA_ERROR_LAUNCH_TIMEOUT;
    }
    return CUDA_ERROR_UNKNOWN;
}

bool device_range(CUdeviceptr p, std::size_t bytes) { return find_allocation(p, bytes, nullptr); }

CUresult check_stream(CUstream s, const char* call) {
    if (!valid_stream(s)) return fail(CUDA_ERROR_INVALID_HANDLE, std::string(call) + ": invalid stream handle");
    return CUDA_SUCCESS;
}

void destroy_context_objects(CUctx_st* c) {
    Driver& d = drv();
    for (auto it = d.modules.begin(); it != d.modules.end();) {
        if ((*it)->context != c) {
            ++it;
            continue;
        }
        for (auto& f : (*it)->functions) d.functions.erase(f.get());
        delete *it;
        it = d.modules.erase(it);
    }
    for (CUstream_st* s : d.streams) delete s;
    d.streams.clear();
    for (CUevent_st* e : d.events) delete e;
    d.events.clear();
    device_free_all();
    stream_order_reset();
}

void write_log(char* buffer, std::size_t* size, const std::string& text) {
    if (buffer == nullptr || *size == 0) return;
    const std::size_t n = std::min(text.size(), *size - 1);
    std::memcpy(buffer, text.data(), n);
    buffer[n] = '\0';
    *size = n + 1;
}

CUresult load_module(CUmodule* module, const void* image, std::string& log) {
    if (CUresult r = need_context("cuModuleLoadData"); r != CUDA_SUCCESS) return r;
    if (module == nullptr || image == nullptr) return fail(CUDA_ERROR_INVALID_VALUE, "cuModuleLoadData: null argument");
    const auto* bytes = static_cast<const unsigned char*>(image);
    if (std::memcmp(bytes, "\x7f" "ELF", 4) == 0 || (bytes[0] == 0x50 && bytes[1] == 0xed && bytes[2] == 0x55 && bytes[3] == 0xba)) {
        log = "the simulator runs PTX only; cubin and fatbin images are not supported";
        return fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: " + log);
    }
    // Like the real driver: text without a .version directive is no image it knows (not a PTX error).
    if (std::strstr(static_cast<const char*>(image), ".version") == nullptr) {
        log = "the image is neither PTX (no .version directive), cubin nor fatbin";
        return fail(CUDA_ERROR_INVALID_IMAGE, "cuModuleLoadData: " + log);
    }
    ptx::Module parsed;
    std::string error;
    if (!ptx::parse(static_cast<const char*>(image), parsed, error)) {
        log = "ptx: " + error;
        return fail(CUDA_ERROR_INVALID_PTX, "cuModuleLoadData: " + log);
    }
    if (parsed.target_sm > 90) {
        log = "ptx: .target sm_" + std::to_string(parsed.target_sm) + " is newer than the simulated device (sm_90)";
        return fail(CUDA_ERROR_INVALID_PTX, "cuModuleLoadData: " + log);
    }
    auto m = std::make_unique<CUmod_st>();
    m->context = current();
    for (const ptx::Entry& e : parsed.entries) {
        const KernelSignature* k = find_kernel(e.name);
        if (k == nullptr) {
            log = "entry '" + e.name + "' has no simulator build (is its .cu file part of the simulator?)";
            return fail(CUDA_ERROR_NOT_FOUND, "cuModuleLoadData: " + log);
        }
        bool same = static_cast<std::size_t>(k->num_params) == e.param_sizes.size();
        for (std::size_t i = 0; same && i < e.param_sizes.size(); ++i) same = k->param_sizes[i] == e.param_sizes[i];
        if (!same) {
            std::ostringstream o;
            o << "entry '" << e.name << "': the PTX parameter list (";
            for (unsigned s : e.param_sizes) o << s << " ";
            o << "bytes) differs from the simulator build (";
            for (int i = 0; i < k->num_params; ++i) o << int{k->param_sizes[i]} << " ";
            o << "bytes): the PTX is stale, rebuild it with kernels/build-ptx.sh";
            log = o.str();
            return fail(CUDA_ERROR_INVALID_PTX, "cuModuleLoadData: " + log);
        }
        auto f = std::make_unique<CUfunc_st>();
        f->kernel = k;
        f->entry = e;
        f->max_dynamic_shared = kSharedPerBlock - std::min(kSharedPerBlock, e.static_shared_bytes);
        f->module = m.get();
        m->functions.push_back(std::move(f));
    }
    Driver& d = drv();
    for (auto& f : m->functions) d.functions.insert(f.get());
    *module = m.release();
    d.modules.insert(*module);
    log = "loaded " + std::to_string(parsed.entries.size()) + " entries for the simulator";
    return CUDA_SUCCESS;
}

// Unpacks the `extra` form of cuLaunchKernel: one buffer with every argument at its natural alignment.
bool unpack_extra(void** extra, const ptx::Entry& e, std::vector<void*>& out) {
    unsigned char* buffer = nullptr;
    std::size_t size = 0;
    for (std::size_t i = 0; extra[i] != CU_LAUNCH_PARAM_END; i += 2) {
        if (extra[i] == CU_LAUNCH_PARAM_BUFFER_POINTER) buffer = static_cast<unsigned char*>(extra[i + 1]);
        else if (extra[i] == CU_LAUNCH_PARAM_BUFFER_SIZE) size = *static_cast<std::size_t*>(extra[i + 1]);
        else return false;
    }
    std::size_t offset = 0;
    for (unsigned bytes : e.param_sizes) {
        const std::size_t align = std::min<std::size_t>(bytes, 8);
        offset = (offset + align - 1) / align * align;
        if (buffer == nullptr || offset + bytes > size) return false;
        out.push_back(buffer + offset);
        offset += bytes;
    }
    return true;
}

// Copies between validated ranges (device to device ranges may overlap, as cuMemcpyDtoD allows).
CUresult copy_bytes(void* dst, const void* src, std::size_t n) {
    std::memmove(dst, src, n);
    return CUDA_SUCCESS;
}

}  // namespace

void set_last_error(const std::string& message) {
    drv().last_error = message;
    std::fprintf(stderr, "mobius_sim: %s\n", message.c_str());
}

bool context_ready() {
    std::lock_guard lock(api_mutex());
    const Driver& d = drv();
    CUctx_st* c = current();
    return d.initialised && c != nullptr && c == d.primary && c->sticky == CUDA_SUCCESS;
}

void make_sticky(int code, const std::string& message) {
    std::lock_guard lock(api_mutex());
    if (CUctx_st* c = current(); c != nullptr) c->sticky = static_cast<CUresult>(code);
    set_last_error(message);
}

bool valid_stream(const void* stream) {
    std::lock_guard lock(api_mutex());
    auto* s = const_cast<CUstream_st*>(static_cast<const CUstream_st*>(stream));
    return s == nullptr || s == CU_STREAM_LEGACY || s == CU_STREAM_PER_THREAD || drv().streams.count(s) != 0;
}

}  // namespace mobius_sim::detail

using namespace mobius_sim;
using namespace mobius_sim::detail;

#define MOBIUS_LOCK std::lock_guard mobius_lock(api_mutex())
#define MOBIUS_NEED_CONTEXT(call) \
    if (CUresult r_ = need_context(call); r_ != CUDA_SUCCESS) return r_

namespace {

// A stream race found by the stream-order check fails the operation like a faulting kernel.
CUresult order_failure(const std::string& race) {
    if (race.empty()) return CUDA_SUCCESS;
    make_sticky(CUDA_ERROR_LAUNCH_FAILED, race);
    return CUDA_ERROR_LAUNCH_FAILED;
}

// Copies and fills: one operation on `stream` (the legacy stream for the synchronous calls) that reads `src` and
// writes `dst` (0: host memory, which the check does not follow).
CUresult order_copy(CUstream stream, const char* call, CUdeviceptr dst, CUdeviceptr src) {
    StreamOperation order(stream, call);
    order.read(src);
    order.write(dst);
    return order_failure(order.enqueue());
}

CUresult copy_to_device(CUdeviceptr dst, const void* src, std::size_t n, CUstream stream, const char* call) {
    MOBIUS_NEED_CONTEXT(call);
    if (n == 0) return CUDA_SUCCESS;
    if (src == nullptr || !device_range(dst, n))
        return fail(CUDA_ERROR_INVALID_VALUE, std::string(call) + ": the destination range is not inside one allocation");
    if (CUresult r = order_copy(stream, call, dst, 0); r != CUDA_SUCCESS) return r;
    return copy_bytes(reinterpret_cast<void*>(dst), src, n);
}

CUresult copy_to_host(void* dst, CUdeviceptr src, std::size_t n, CUstream stream, const char* call) {
    MOBIUS_NEED_CONTEXT(call);
    if (n == 0) return CUDA_SUCCESS;
    if (dst == nullptr || !device_range(src, n))
        return fail(CUDA_ERROR_INVALID_VALUE, std::string(call) + ": the source range is not inside one allocation");
    if (CUresult r = order_copy(stream, call, 0, src); r != CUDA_SUCCESS) return r;
    return copy_bytes(dst, reinterpret_cast<const void*>(src), n);
}

CUresult copy_on_device(CUdeviceptr dst, CUdeviceptr src, std::size_t n, CUstream stream, const char* call) {
    MOBIUS_NEED_CONTEXT(call);
    if (n == 0) return CUDA_SUCCESS;
    if (!device_range(dst, n) || !device_range(src, n))
        return fail(CUDA_ERROR_INVALID_VALUE, std::string(call) + ": a range is not inside one allocation");
    if (CUresult r = order_copy(stream, call, dst, src); r != CUDA_SUCCESS) return r;
    return copy_bytes(reinterpret_cast<void*>(dst), reinterpret_cast<const void*>(src), n);
}

CUresult fill_words(CUdeviceptr dst, unsigned int value, std::size_t n, CUstream stream, const char* call) {
    MOBIUS_NEED_CONTEXT(call);
    if (n == 0) return CUDA_SUCCESS;
    if (dst % 4 != 0 || n > SIZE_MAX / 4 || !device_range(dst, n * 4))
        return fail(CUDA_ERROR_INVALID_VALUE, std::string(call) + ": misaligned or out-of-range destination");
    if (CUresult r = order_copy(stream, call, dst, 0); r != CUDA_SUCCESS) return r;
    auto* p = reinterpret_cast<unsigned int*>(dst);
    for (std::size_t i = 0; i < n; ++i) p[i] = value;
    return CUDA_SUCCESS;
}

}  // namespace

extern "C" {

CUresult cuInit(unsigned int Flags) {
    MOBIUS_LOCK;
    if (Flags != 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuInit: Flags must be 0");
    drv().initialised = true;
    return CUDA_SUCCESS;
}

CUresult cuDriverGetVersion(int* driverVersion) {
    if (driverVersion == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *driverVersion = kDriverVersion;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetCount(int* count) {
    MOBIUS_LOCK;
    if (!drv().initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGetCount: cuInit has not been called");
    if (count == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *count = 1;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGet(CUdevice* device, int ordinal) {
    MOBIUS_LOCK;
    if (!drv().initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, "cuDeviceGet: cuInit has not been called");
    if (device == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (ordinal != 0) return fail(CUDA_ERROR_INVALID_DEVICE, "cuDeviceGet: the simulator has one device, ordinal 0");
    *device = 0;
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetName(char* name, int len, CUdevice dev) {
    MOBIUS_LOCK;
    if (!drv().initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (name == nullptr || len <= 0) return CUDA_ERROR_INVALID_VALUE;
    std::snprintf(name, static_cast<std::size_t>(len), "%s", kDeviceName);
    return CUDA_SUCCESS;
}

CUresult cuDeviceGetAttribute(int* pi, CUdevice_attribute attrib, CUdevice dev) {
    MOBIUS_LOCK;
    if (!drv().initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (pi == nullptr) return CUDA_ERROR_INVALID_VALUE;
    switch (attrib) {  // an H100 SXM, which the kernels are tuned for
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_X: *pi = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Y: *pi = 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCK_DIM_Z: *pi = 64; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_X: *pi = 0x7fffffff; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Y: *pi = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_GRID_DIM_Z: *pi = 65535; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK: *pi = static_cast<int>(kSharedPerBlock); break;
        case CU_DEVICE_ATTRIBUTE_TOTAL_CONSTANT_MEMORY: *pi = 65536; break;
        case CU_DEVICE_ATTRIBUTE_WARP_SIZE: *pi = 32; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK: *pi = 65536; break;
        case CU_DEVICE_ATTRIBUTE_CLOCK_RATE: *pi = 1980000; break;
        case CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT: *pi = 132; break;
        case CU_DEVICE_ATTRIBUTE_INTEGRATED: *pi = 0; break;
        case CU_DEVICE_ATTRIBUTE_CONCURRENT_KERNELS: *pi = 1; break;
        case CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE: *pi = 2619000; break;
        case CU_DEVICE_ATTRIBUTE_GLOBAL_MEMORY_BUS_WIDTH: *pi = 5120; break;
        case CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE: *pi = 50 * 1024 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR: *pi = 2048; break;
        case CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING: *pi = 1; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: *pi = 9; break;
        case CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: *pi = 0; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_MULTIPROCESSOR: *pi = 228 * 1024; break;
        case CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_MULTIPROCESSOR: *pi = 65536; break;
        case CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN: *pi = static_cast<int>(kSharedPerBlockOptin); break;
        case CU_DEVICE_ATTRIBUTE_MAX_BLOCKS_PER_MULTIPROCESSOR: *pi = 32; break;
        default:
            return fail(CUDA_ERROR_INVALID_VALUE, "cuDeviceGetAttribute: attribute " + std::to_string(attrib) + " is not simulated");
    }
    return CUDA_SUCCESS;
}

CUresult cuDeviceTotalMem_v2(size_t* bytes, CUdevice dev) {
    MOBIUS_LOCK;
    if (!drv().initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (bytes == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *bytes = device_memory_total();
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRetain(CUcontext* pctx, CUdevice dev) {
    MOBIUS_LOCK;
    Driver& d = drv();
    if (!d.initialised) return fail(CUDA_ERROR_NOT_INITIALIZED, "cuDevicePrimaryCtxRetain: cuInit has not been called");
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (d.primary == nullptr) d.primary = d.contexts.emplace_back(std::make_unique<CUctx_st>()).get();
    ++d.primary->refcount;
    *pctx = d.primary;
    return CUDA_SUCCESS;
}

CUresult cuDevicePrimaryCtxRelease_v2(CUdevice dev) {
    MOBIUS_LOCK;
    Driver& d = drv();
    if (!d.initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (dev != 0) return CUDA_ERROR_INVALID_DEVICE;
    if (d.primary == nullptr) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuDevicePrimaryCtxRelease: the primary context is not retained");
    if (--d.primary->refcount == 0) {
        destroy_context_objects(d.primary);
        d.primary = nullptr;
    }
    return CUDA_SUCCESS;
}

CUresult cuCtxSetCurrent(CUcontext ctx) {
    MOBIUS_LOCK;
    Driver& d = drv();
    if (!d.initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (ctx != nullptr && ctx != d.primary) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuCtxSetCurrent: the context was destroyed");
    pthread_setspecific(d.current_key, ctx);
    return CUDA_SUCCESS;
}

CUresult cuCtxGetCurrent(CUcontext* pctx) {
    MOBIUS_LOCK;
    if (!drv().initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (pctx == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *pctx = current();
    return CUDA_SUCCESS;
}

CUresult cuCtxSynchronize(void) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuCtxSynchronize");
    host_waits_all();
    return CUDA_SUCCESS;
}

CUresult cuModuleLoadData(CUmodule* module, const void* image) {
    MOBIUS_LOCK;
    std::string log;
    return load_module(module, image, log);
}

CUresult cuModuleLoadDataEx(CUmodule* module, const void* image, unsigned int numOptions, CUjit_option* options,
                            void** optionValues) {
    MOBIUS_LOCK;
    if (numOptions > 0 && (options == nullptr || optionValues == nullptr)) return CUDA_ERROR_INVALID_VALUE;
    std::string log;
    const CUresult r = load_module(module, image, log);
    char* error_buffer = nullptr;
    char* info_buffer = nullptr;
    std::size_t error_size = 0, info_size = 0;
    int error_size_slot = -1, info_size_slot = -1;
    for (unsigned i = 0; i < numOptions; ++i) {
        const auto value = reinterpret_cast<std::uintptr_t>(optionValues[i]);
        switch (options[i]) {
            case CU_JIT_ERROR_LOG_BUFFER: error_buffer = static_cast<char*>(optionValues[i]); break;
            case CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES: error_size = value; error_size_slot = static_cast<int>(i); break;
            case CU_JIT_INFO_LOG_BUFFER: info_buffer = static_cast<char*>(optionValues[i]); break;
            case CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES: info_size = value; info_size_slot = static_cast<int>(i); break;
            default: break;  // optimisation settings mean nothing to the simulator
        }
    }
    if (r != CUDA_SUCCESS) {
        write_log(error_buffer, &error_size, log);
        info_size = info_buffer && info_size ? (info_buffer[0] = '\0', 1) : 0;
    } else {
        write_log(info_buffer, &info_size, log);
        error_size = error_buffer && error_size ? (error_buffer[0] = '\0', 1) : 0;
    }
    // The size options are in/out: the driver writes back how many bytes it used.
    if (error_size_slot >= 0) optionValues[error_size_slot] = reinterpret_cast<void*>(error_size);
    if (info_size_slot >= 0) optionValues[info_size_slot] = reinterpret_cast<void*>(info_size);
    return r;
}

CUresult cuModuleGetFunction(CUfunction* hfunc, CUmodule hmod, const char* name) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuModuleGetFunction");
    if (hfunc == nullptr || name == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (drv().modules.count(hmod) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuModuleGetFunction: invalid module handle");
    for (auto& f : hmod->functions) {
        if (f->entry.name == name) {
            *hfunc = f.get();
            return CUDA_SUCCESS;
        }
    }
    return fail(CUDA_ERROR_NOT_FOUND, std::string("cuModuleGetFunction: the module has no entry '") + name + "'");
}

CUresult cuModuleUnload(CUmodule hmod) {
    MOBIUS_LOCK;
    Driver& d = drv();
    if (d.modules.count(hmod) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuModuleUnload: invalid module handle");
    for (auto& f : hmod->functions) d.functions.erase(f.get());
    d.modules.erase(hmod);
    delete hmod;
    return CUDA_SUCCESS;
}

CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuFuncSetAttribute");
    if (drv().functions.count(hfunc) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuFuncSetAttribute: invalid function handle");
    switch (attrib) {
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES:
            if (value < 0 || static_cast<unsigned>(value) + hfunc->entry.static_shared_bytes > kSharedPerBlockOptin)
                return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncSetAttribute: " + std::to_string(value) +
                                                          " bytes of dynamic shared memory exceed the device's 227 KiB opt-in limit");
            hfunc->max_dynamic_shared = static_cast<unsigned>(value);
            return CUDA_SUCCESS;
        case CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT:
            return value >= -1 && value <= 100 ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
        default:
            return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncSetAttribute: attribute " + std::to_string(attrib) + " is read-only or not simulated");
    }
}

CUresult cuFuncGetAttribute(int* pi, CUfunction_attribute attrib, CUfunction hfunc) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuFuncGetAttribute");
    if (pi == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (drv().functions.count(hfunc) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuFuncGetAttribute: invalid function handle");
    switch (attrib) {
        case CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK: *pi = hfunc->entry.max_threads ? static_cast<int>(hfunc->entry.max_threads) : 1024; break;
        case CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES: *pi = static_cast<int>(hfunc->entry.static_shared_bytes); break;
        case CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES: *pi = static_cast<int>(hfunc->max_dynamic_shared); break;
        case CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES:
        case CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES:
        case CU_FUNC_ATTRIBUTE_NUM_REGS: *pi = 0; break;
        case CU_FUNC_ATTRIBUTE_PTX_VERSION:
        case CU_FUNC_ATTRIBUTE_BINARY_VERSION: *pi = 90; break;
        default: return fail(CUDA_ERROR_INVALID_VALUE, "cuFuncGetAttribute: attribute " + std::to_string(attrib) + " is not simulated");
    }
    return CUDA_SUCCESS;
}

CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY, unsigned int gridDimZ,
                        unsigned int blockDimX, unsigned int blockDimY, unsigned int blockDimZ,
                        unsigned int sharedMemBytes, CUstream hStream, void** kernelParams, void** extra) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuLaunchKernel");
    Driver& d = drv();
    if (d.functions.count(f) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuLaunchKernel: invalid function handle");
    if (f->module->context != current()) return fail(CUDA_ERROR_INVALID_CONTEXT, "cuLaunchKernel: the function belongs to another context");
    if (CUresult r = check_stream(hStream, "cuLaunchKernel"); r != CUDA_SUCCESS) return r;
    std::vector<void*> params;
    const std::size_t count = f->entry.param_sizes.size();
    if (kernelParams != nullptr && extra != nullptr)
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel: give kernelParams or extra, not both");
    if (kernelParams != nullptr) {
        params.assign(kernelParams, kernelParams + count);
    } else if (extra != nullptr) {
        if (!unpack_extra(extra, f->entry, params))
            return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel: malformed extra parameter buffer");
    } else if (count != 0) {
        return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel: kernel '" + f->entry.name + "' takes parameters but none were given");
    }
    for (std::size_t i = 0; i < count; ++i)
        if (params[i] == nullptr)
            return fail(CUDA_ERROR_INVALID_VALUE, "cuLaunchKernel: kernelParams[" + std::to_string(i) + "] is null");
    LaunchLimits limits;
    limits.max_threads_per_block = f->entry.max_threads ? f->entry.max_threads : 1024;
    limits.static_shared_bytes = f->entry.static_shared_bytes;
    limits.max_shared_bytes = f->entry.static_shared_bytes + f->max_dynamic_shared;
    const LaunchConfig config{{gridDimX, gridDimY, gridDimZ}, {blockDimX, blockDimY, blockDimZ}, sharedMemBytes};
    // A launch the device refuses is never enqueued, so it is no operation of its stream.
    if (const LaunchResult bad = validate_launch(f->kernel->name, config, limits); bad.status != Status::Success) {
        set_last_error(bad.message);
        return to_result(bad.status);
    }
    // Each pointer parameter is an access of the allocation it points into, of the kind its type declares.
    StreamOperation order(hStream, f->kernel->name, true);
    for (std::size_t i = 0; i < count; ++i) {
        const ParamAccess access = f->kernel->param_access[i];
        if (access == ParamAccess::None || f->kernel->param_sizes[i] != sizeof(std::uint64_t)) continue;
        std::uint64_t address = 0;
        std::memcpy(&address, params[i], sizeof address);
        if (access == ParamAccess::Read) order.read(address);
        else order.write(address);
    }
    if (CUresult r = order_failure(order.enqueue()); r != CUDA_SUCCESS) return r;
    params.push_back(nullptr);
    const LaunchResult result = launch(*f->kernel, config, params.data(), limits);
    if (result.status == Status::Success) return CUDA_SUCCESS;
    const CUresult code = to_result(result.status);
    if (result.status == Status::IllegalAddress || result.status == Status::LaunchFailed || result.status == Status::Timeout)
        make_sticky(code, result.message);
    else set_last_error(result.message);
    return code;
}

CUresult cuMemAlloc_v2(CUdeviceptr* dptr, size_t bytesize) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuMemAlloc");
    if (dptr == nullptr || bytesize == 0) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemAlloc: null pointer or zero size");
    host_waits_all();  // a full barrier of the stream-order check
    std::uint64_t address = 0;
    const Status s = device_alloc(bytesize, &address);
    if (s == Status::Success) *dptr = address;
    if (s == Status::OutOfMemory)
        return fail(CUDA_ERROR_OUT_OF_MEMORY, "cuMemAlloc: " + std::to_string(bytesize) + " bytes do not fit (" +
                                                  std::to_string(device_memory_used()) + " of " + std::to_string(device_memory_total()) +
                                                  " bytes in use; MOBIUS_SIM_DEVICE_MEMORY sets the total)");
    return to_result(s);
}

CUresult cuMemFree_v2(CUdeviceptr dptr) {
    MOBIUS_LOCK;
    if (!drv().initialised) return CUDA_ERROR_NOT_INITIALIZED;
    if (dptr == 0) return CUDA_SUCCESS;
    AllocationInfo info;
    const bool found = find_allocation(dptr, 0, &info);
    if (device_free(dptr) != Status::Success) return fail(CUDA_ERROR_INVALID_VALUE, "cuMemFree: not the start of a live allocation");
    if (found) allocation_freed(info.id);
    host_waits_all();  // cuMemFree synchronises the device
    return CUDA_SUCCESS;
}

CUresult cuMemGetInfo_v2(size_t* free, size_t* total) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuMemGetInfo");
    if (free == nullptr || total == nullptr) return CUDA_ERROR_INVALID_VALUE;
    *total = device_memory_total();
    *free = *total - device_memory_used();
    return CUDA_SUCCESS;
}

CUresult cuMemcpyHtoD_v2(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount) {
    MOBIUS_LOCK;
    return copy_to_device(dstDevice, srcHost, ByteCount, CU_STREAM_LEGACY, "cuMemcpyHtoD");
}

CUresult cuMemcpyDtoH_v2(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount) {
    MOBIUS_LOCK;
    const CUresult r = copy_to_host(dstHost, srcDevice, ByteCount, CU_STREAM_LEGACY, "cuMemcpyDtoH");
    if (r == CUDA_SUCCESS) host_waits_stream(CU_STREAM_LEGACY);  // the data is on the host: the legacy stream got this far
    return r;
}

CUresult cuMemcpyDtoD_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount) {
    MOBIUS_LOCK;
    return copy_on_device(dstDevice, srcDevice, ByteCount, CU_STREAM_LEGACY, "cuMemcpyDtoD");
}

CUresult cuMemcpyHtoDAsync_v2(CUdeviceptr dstDevice, const void* srcHost, size_t ByteCount, CUstream hStream) {
    MOBIUS_LOCK;
    if (CUresult r = check_stream(hStream, "cuMemcpyHtoDAsync"); r != CUDA_SUCCESS) return r;
    return copy_to_device(dstDevice, srcHost, ByteCount, hStream, "cuMemcpyHtoDAsync");
}

CUresult cuMemcpyDtoHAsync_v2(void* dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
    MOBIUS_LOCK;
    if (CUresult r = check_stream(hStream, "cuMemcpyDtoHAsync"); r != CUDA_SUCCESS) return r;
    return copy_to_host(dstHost, srcDevice, ByteCount, hStream, "cuMemcpyDtoHAsync");
}

CUresult cuMemcpyDtoDAsync_v2(CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream) {
    MOBIUS_LOCK;
    if (CUresult r = check_stream(hStream, "cuMemcpyDtoDAsync"); r != CUDA_SUCCESS) return r;
    return copy_on_device(dstDevice, srcDevice, ByteCount, hStream, "cuMemcpyDtoDAsync");
}

CUresult cuMemsetD32_v2(CUdeviceptr dstDevice, unsigned int ui, size_t N) {
    MOBIUS_LOCK;
    return fill_words(dstDevice, ui, N, CU_STREAM_LEGACY, "cuMemsetD32");
}

CUresult cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream) {
    MOBIUS_LOCK;
    if (CUresult r = check_stream(hStream, "cuMemsetD32Async"); r != CUDA_SUCCESS) return r;
    return fill_words(dstDevice, ui, N, hStream, "cuMemsetD32Async");
}

CUresult cuStreamCreate(CUstream* phStream, unsigned int Flags) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuStreamCreate");
    if (phStream == nullptr || (Flags != CU_STREAM_DEFAULT && Flags != CU_STREAM_NON_BLOCKING)) return CUDA_ERROR_INVALID_VALUE;
    auto* s = new CUstream_st{Flags};
    drv().streams.insert(s);
    stream_created(s, Flags == CU_STREAM_DEFAULT);
    *phStream = s;
    return CUDA_SUCCESS;
}

CUresult cuStreamDestroy_v2(CUstream hStream) {
    MOBIUS_LOCK;
    Driver& d = drv();
    if (d.streams.count(hStream) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuStreamDestroy: invalid stream handle");
    d.streams.erase(hStream);
    stream_destroyed(hStream);
    delete hStream;
    return CUDA_SUCCESS;
}

CUresult cuStreamSynchronize(CUstream hStream) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuStreamSynchronize");
    if (CUresult r = check_stream(hStream, "cuStreamSynchronize"); r != CUDA_SUCCESS) return r;
    host_waits_stream(hStream);
    return CUDA_SUCCESS;
}

CUresult cuStreamQuery(CUstream hStream) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuStreamQuery");
    if (CUresult r = check_stream(hStream, "cuStreamQuery"); r != CUDA_SUCCESS) return r;
    host_waits_stream(hStream);  // done, says the answer: the host may rely on it
    return CUDA_SUCCESS;
}

CUresult cuStreamWaitEvent(CUstream hStream, CUevent hEvent, unsigned int Flags) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuStreamWaitEvent");
    if (CUresult r = check_stream(hStream, "cuStreamWaitEvent"); r != CUDA_SUCCESS) return r;
    if (drv().events.count(hEvent) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuStreamWaitEvent: invalid event handle");
    if (Flags != 0) return CUDA_ERROR_INVALID_VALUE;
    stream_waits_event(hStream, hEvent);
    return CUDA_SUCCESS;
}

CUresult cuEventCreate(CUevent* phEvent, unsigned int Flags) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuEventCreate");
    if (phEvent == nullptr || (Flags & ~3u) != 0) return CUDA_ERROR_INVALID_VALUE;
    auto* e = new CUevent_st{Flags, false, {}};
    drv().events.insert(e);
    *phEvent = e;
    return CUDA_SUCCESS;
}

CUresult cuEventRecord(CUevent hEvent, CUstream hStream) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuEventRecord");
    if (drv().events.count(hEvent) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventRecord: invalid event handle");
    if (CUresult r = check_stream(hStream, "cuEventRecord"); r != CUDA_SUCCESS) return r;
    hEvent->recorded = true;
    hEvent->time = std::chrono::steady_clock::now();  // work before it has already run: synchronous streams
    event_recorded(hEvent, hStream);
    return CUDA_SUCCESS;
}

CUresult cuEventQuery(CUevent hEvent) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuEventQuery");
    if (drv().events.count(hEvent) == 0) return CUDA_ERROR_INVALID_HANDLE;
    host_waits_event(hEvent);  // done, says the answer: the host may rely on it
    return CUDA_SUCCESS;
}

CUresult cuEventSynchronize(CUevent hEvent) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuEventSynchronize");
    if (drv().events.count(hEvent) == 0) return CUDA_ERROR_INVALID_HANDLE;
    host_waits_event(hEvent);
    return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime(float* pMilliseconds, CUevent hStart, CUevent hEnd) {
    MOBIUS_LOCK;
    MOBIUS_NEED_CONTEXT("cuEventElapsedTime");
    Driver& d = drv();
    if (pMilliseconds == nullptr) return CUDA_ERROR_INVALID_VALUE;
    if (d.events.count(hStart) == 0 || d.events.count(hEnd) == 0)
        return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: invalid event handle");
    if ((hStart->flags | hEnd->flags) & CU_EVENT_DISABLE_TIMING)
        return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: an event was created with CU_EVENT_DISABLE_TIMING");
    if (!hStart->recorded || !hEnd->recorded)
        return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventElapsedTime: an event has not been recorded");
    *pMilliseconds = std::chrono::duration<float, std::milli>(hEnd->time - hStart->time).count();
    return CUDA_SUCCESS;
}

CUresult cuEventElapsedTime_v2(float* pMilliseconds, CUevent hStart, CUevent hEnd) {
    return cuEventElapsedTime(pMilliseconds, hStart, hEnd);
}

CUresult cuEventDestroy_v2(CUevent hEvent) {
    MOBIUS_LOCK;
    Driver& d = drv();
    if (d.events.count(hEvent) == 0) return fail(CUDA_ERROR_INVALID_HANDLE, "cuEventDestroy: invalid event handle");
    d.events.erase(hEvent);
    event_destroyed(hEvent);
    delete hEvent;
    return CUDA_SUCCESS;
}

namespace {
struct ErrorText {
    CUresult code;
    const char* name;
    const char* text;
};
constexpr ErrorText kErrors[] = {
    {CUDA_SUCCESS, "CUDA_SUCCESS", "no error"},
    {CUDA_ERROR_INVALID_VALUE, "CUDA_ERROR_INVALID_VALUE", "invalid argument"},
    {CUDA_ERROR_OUT_OF_MEMORY, "CUDA_ERROR_OUT_OF_MEMORY", "out of memory"},
    {CUDA_ERROR_NOT_INITIALIZED, "CUDA_ERROR_NOT_INITIALIZED", "initialization error"},
    {CUDA_ERROR_DEINITIALIZED, "CUDA_ERROR_DEINITIALIZED", "driver shutting down"},
    {CUDA_ERROR_NO_DEVICE, "CUDA_ERROR_NO_DEVICE", "no CUDA-capable device is detected"},
    {CUDA_ERROR_INVALID_DEVICE, "CUDA_ERROR_INVALID_DEVICE", "invalid device ordinal"},
    {CUDA_ERROR_INVALID_IMAGE, "CUDA_ERROR_INVALID_IMAGE", "device kernel image is invalid"},
    {CUDA_ERROR_INVALID_CONTEXT, "CUDA_ERROR_INVALID_CONTEXT", "invalid device context"},
    {CUDA_ERROR_NO_BINARY_FOR_GPU, "CUDA_ERROR_NO_BINARY_FOR_GPU", "no kernel image is available for execution on the device"},
    {CUDA_ERROR_INVALID_PTX, "CUDA_ERROR_INVALID_PTX", "a PTX JIT compilation failed"},
    {CUDA_ERROR_INVALID_HANDLE, "CUDA_ERROR_INVALID_HANDLE", "invalid resource handle"},
    {CUDA_ERROR_NOT_FOUND, "CUDA_ERROR_NOT_FOUND", "named symbol not found"},
    {CUDA_ERROR_NOT_READY, "CUDA_ERROR_NOT_READY", "device not ready"},
    {CUDA_ERROR_ILLEGAL_ADDRESS, "CUDA_ERROR_ILLEGAL_ADDRESS", "an illegal memory access was encountered"},
    {CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES, "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES", "too many resources requested for launch"},
    {CUDA_ERROR_LAUNCH_TIMEOUT, "CUDA_ERROR_LAUNCH_TIMEOUT", "the launch timed out and was terminated"},
    {CUDA_ERROR_LAUNCH_FAILED, "CUDA_ERROR_LAUNCH_FAILED", "unspecified launch failure"},
    {CUDA_ERROR_NOT_SUPPORTED, "CUDA_ERROR_NOT_SUPPORTED", "operation not supported"},
    {CUDA_ERROR_UNKNOWN, "CUDA_ERROR_UNKNOWN", "unknown error"},
};
const ErrorText* find_error(CUresult e) {
    for (const ErrorText& t : kErrors)
        if (t.code == e) return &t;
    return nullptr;
}
}  // namespace

CUresult cuGetErrorName(CUresult error, const char** pStr) {
    if (pStr == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* t = find_error(error);
    *pStr = t ? t->name : nullptr;
    return t ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

CUresult cuGetErrorString(CUresult error, const char** pStr) {
    if (pStr == nullptr) return CUDA_ERROR_INVALID_VALUE;
    const ErrorText* t = find_error(error);
    *pStr = t ? t->text : nullptr;
    return t ? CUDA_SUCCESS : CUDA_ERROR_INVALID_VALUE;
}

const char* mobiusSimGetLastErrorMessage(void) {
    MOBIUS_LOCK;
    return drv().last_error.c_str();
}

}  // extern "C"
