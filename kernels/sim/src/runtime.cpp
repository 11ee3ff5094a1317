// The scheduler: runs a grid block after block; inside a block every CUDA thread is a fiber (fiber.h).
//
// A block runs in passes. A pass resumes every runnable fiber once (in thread order, or reversed for the
// race check); each fiber runs until it finishes, reaches __syncthreads, or calls a warp collective. After a
// pass nothing is runnable, so the state is stable and can be judged:
//   - a warp collective completes when every lane of its mask waits in the same collective with the same
//     mask; a lane of the mask that exited or waits at __syncthreads can never arrive: an error, not a hang;
//   - __syncthreads releases when every thread of the block waits at the same barrier; a thread that exited
//     or waits at another barrier is an error.
// Faults inside a kernel (SIGSEGV on a guard page, SIGBUS, SIGFPE) and the watchdog timer of a launch that
// never ends jump back to the scheduler and fail the launch; the process keeps running. Nothing here is thread-local: see device.h for why.
#include <dlfcn.h>
#include <link.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <sstream>

#include "fiber.h"
#include "internal.h"
#include "mobius_sim/runtime.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/asan_interface.h>
#include <sanitizer/common_interface_defs.h>
#define MOBIUS_SIM_ASAN 1
#endif

#ifndef MOBIUS_SIM_FIBER_STACK_BYTES
#define MOBIUS_SIM_FIBER_STACK_BYTES (64 * 1024)
#endif

extern "C" void* __tls_get_addr(void*);

namespace mobius_sim {

const Dim3* g_thread_idx = nullptr;
Dim3 g_block_idx, g_block_dim, g_grid_dim;

namespace {

constexpr unsigned kMaxThreads = 1024;
constexpr std::size_t kStackBytes = MOBIUS_SIM_FIBER_STACK_BYTES;
constexpr unsigned kMaxSharedOptin = 227 * 1024;
constexpr unsigned kSharedRedzone = 256;

enum class FiberState : std::uint8_t { Ready, AtBarrier, AtWarp, Done };

struct Fiber {
    fiber::Context context;
    Dim3 tid;
    FiberState state = FiberState::Ready;
    const char* barrier_file = nullptr;
    int barrier_line = 0;
    WarpOp op = WarpOp::Sync;
    unsigned mask = 0;
    std::uint32_t value = 0;
    int param = 0;
    int width = 32;
    std::uint32_t result = 0;
    unsigned char* stack = nullptr;  // lowest usable byte; a guard page lies below it
    void* asan_fake_stack = nullptr;
};

struct Scheduler {
    fiber::Context context;
    std::vector<Fiber> fibers;
    Fiber* current = nullptr;
    Launcher launcher = nullptr;
    void* const* params = nullptr;
    const char* kernel_name = "";
    bool trapped = false;
    std::string trap_message;
    volatile sig_atomic_t in_fiber = 0;
    pthread_t thread{};
    sigjmp_buf fault_jump;
    volatile sig_atomic_t fault_signal = 0;
    void* volatile fault_address = nullptr;
    bool track_atomics = false;
    std::unordered_map<std::uintptr_t, float> atomic_magnitude;
    // Race-check snapshots live here, not on the launch's stack, because a fault longjmps across that frame.
    detail::MemorySnapshot before, forward;
    std::string error;  // why the running launch failed
    // The pass in progress (run_block): its direction and the position of the running fiber in it.
    bool reverse = false;
    unsigned pass_position = 0;
    bool from_scheduler = false;  // the running fiber was resumed by the scheduler, not by another fiber
    const void* asan_bottom = nullptr;
    std::size_t asan_size = 0;
    void* asan_fake_stack = nullptr;
};

// A plain global, not a function-local static: sched() sits on every switch and collective, where the
// guard check of a local static showed up in profiles.
Scheduler g_scheduler;
inline Scheduler& sched() { return g_scheduler; }

// Dynamic shared memory of the running block, with a redzone behind the requested size.
alignas(128) unsigned char g_dynamic_arena[kMaxSharedOptin + kSharedRedzone];
unsigned g_dynamic_bytes = 0;

// ---- fiber stacks -----------------------------------------------------------------------------------
unsigned char* fiber_stack(unsigned index) {
    static std::vector<unsigned char*> stacks(kMaxThreads, nullptr);
    if (stacks[index] == nullptr) {
        const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
        void* m = mmap(nullptr, kStackBytes + page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (m == MAP_FAILED) {
            std::perror("mobius_sim: fiber stack");
            std::abort();
        }
        mprotect(m, page, PROT_NONE);
        stacks[index] = static_cast<unsigned char*>(m) + page;
    }
    return stacks[index];
}

bool in_stack_guard(std::uintptr_t address) {
    const std::size_t page = static_cast<std::size_t>(sysconf(_SC_PAGESIZE));
    for (const Fiber& f : sched().fibers) {
        auto low = reinterpret_cast<std::uintptr_t>(f.stack);
        if (f.stack != nullptr && address < low && address + page >= low) return true;
    }
    return false;
}

// ---- switching (with AddressSanitizer's fiber annotations when it is on) -----------------------------
void asan_start(void** fake_save, const void* bottom, std::size_t size) {
#if MOBIUS_SIM_ASAN
    __sanitizer_start_switch_fiber(fake_save, bottom, size);
#else
    (void)fake_save, (void)bottom, (void)size;
#endif
}
void asan_finish(void* fake_save, const void** bottom_old, std::size_t* size_old) {
#if MOBIUS_SIM_ASAN
    __sanitizer_finish_switch_fiber(fake_save, bottom_old, size_old);
#else
    (void)fake_save, (void)bottom_old, (void)size_old;
#endif
}

// A pass hands control from fiber to fiber: a fiber that blocks or exits resumes the next runnable fiber of
// the pass itself, and only the last one switches back to the scheduler. That is half the switches of
// going through the scheduler each time, with the same order of execution.

// Called on a fiber just resumed: AddressSanitizer learns the stack it came from, which is the scheduler's
// only when the scheduler resumed it.
void fiber_resumed(void* fake_stack) {
    Scheduler& s = sched();
    if (s.from_scheduler) {
        s.from_scheduler = false;
        asan_finish(fake_stack, &s.asan_bottom, &s.asan_size);
    } else {
        asan_finish(fake_stack, nullptr, nullptr);
    }
}

// The first runnable fiber at or after position `from` of the pass, made the running one; null at the pass's end.
Fiber* next_runnable(unsigned from) {
    Scheduler& s = sched();
    std::vector<Fiber>& fibers = s.fibers;
    const unsigned n = static_cast<unsigned>(fibers.size());
    for (unsigned k = from; k < n; ++k) {
        Fiber& g = fibers[s.reverse ? n - 1 - k : k];
        if (g.state != FiberState::Ready) continue;
        s.pass_position = k;
        s.current = &g;
        g_thread_idx = &g.tid;
        return &g;
    }
    return nullptr;
}

// Called by the scheduler: runs a pass from its first runnable fiber to its end; false when none is runnable.
bool run_pass() {
    Scheduler& s = sched();
    Fiber* first = next_runnable(0);
    if (first == nullptr) return false;
    Fiber& f = *first;
    s.from_scheduler = true;
    asan_start(&s.asan_fake_stack, f.stack, kStackBytes);
    s.in_fiber = 1;
    fiber::switch_to(s.context, f.context);
    s.in_fiber = 0;
    asan_finish(s.asan_fake_stack, nullptr, nullptr);
    return true;
}

// Called on the running fiber once it waits or has exited: switches to the next runnable fiber of the pass, or
// back to the scheduler at the pass's end or after a trap. `fake_stack` as in asan_start (null: the fiber is done).
void pass_on(Fiber& f, void** fake_stack) {
    Scheduler& s = sched();
    if (Fiber* next = s.trapped ? nullptr : next_runnable(s.pass_position + 1)) {
        asan_start(fake_stack, next->stack, kStackBytes);
        fiber::switch_to(f.context, next->context);
    } else {
        asan_start(fake_stack, s.asan_bottom, s.asan_size);
        fiber::switch_to(f.context, s.context);
    }
}

// Called on a fiber that waits (state already set): the rest of the pass runs until this fiber is resumed.
void wait_in_pass(Fiber& f) {
    pass_on(f, &f.asan_fake_stack);
    fiber_resumed(f.asan_fake_stack);
}

[[noreturn]] void exit_fiber(Fiber& f) {
    f.state = FiberState::Done;
#if MOBIUS_SIM_ASAN
    // The frames still on this stack (a trap's) never return: clear their redzones' poison, or the stack's next
    // fiber trips over it. The compiler does this before a call to a [[noreturn]] function, but not once it inlines it.
    __asan_handle_no_return();
#endif
    pass_on(f, nullptr);
    std::abort();  // a finished fiber is never resumed
}

void fiber_main() {
    Scheduler& s = sched();
    fiber_resumed(nullptr);
    s.launcher(s.params);
    exit_fiber(*s.current);
}

Fiber& running_fiber(const char* what) {
    Scheduler& s = sched();
    if (s.current == nullptr || !s.in_fiber) {
        std::fprintf(stderr, "mobius_sim: %s called outside a simulated kernel\n", what);
        std::abort();
    }
    return *s.current;
}

// ---- where a kernel module keeps its __shared__ variables ---------------------------------------------
struct TlsRange {
    unsigned char* data = nullptr;
    std::size_t size = 0;
};

TlsRange module_shared_memory(const void* anchor) {
    struct Query {
        std::uintptr_t anchor;
        TlsRange range;
        std::size_t modid = 0;
    } q{reinterpret_cast<std::uintptr_t>(anchor), {}, 0};
    dl_iterate_phdr(
        [](dl_phdr_info* info, std::size_t, void* p) -> int {
            auto* q = static_cast<Query*>(p);
            bool mine = false;
            std::size_t tls = 0;
            for (int i = 0; i < info->dlpi_phnum; ++i) {
                const auto& ph = info->dlpi_phdr[i];
                const std::uintptr_t lo = info->dlpi_addr + ph.p_vaddr;
                if (ph.p_type == PT_LOAD && q->anchor >= lo && q->anchor < lo + ph.p_memsz) mine = true;
                if (ph.p_type == PT_TLS) tls = ph.p_memsz;
            }
            if (!mine) return 0;
            q->range = {static_cast<unsigned char*>(info->dlpi_tls_data), tls};
            q->modid = info->dlpi_tls_modid;
            return 1;
        },
        &q);
    if (q.range.size != 0 && q.range.data == nullptr) {  // dlopen'ed module whose TLS this thread never touched
        struct {
            unsigned long module, offset;
        } index{q.modid, 0};
        q.range.data = static_cast<unsigned char*>(__tls_get_addr(&index));
    }
    return q.range;
}

// ---- block execution ----------------------------------------------------------------------------------
std::string describe_thread(const Dim3& t) {
    std::ostringstream o;
    o << "block (" << g_block_idx.x << "," << g_block_idx.y << "," << g_block_idx.z << ") thread (" << t.x << ","
      << t.y << "," << t.z << ")";
    return o.str();
}

const char* op_name(WarpOp op) {
    switch (op) {
        case WarpOp::Idx: return "__shfl_sync";
        case WarpOp::Xor: return "__shfl_xor_sync";
        case WarpOp::Down: return "__shfl_down_sync";
        case WarpOp::Up: return "__shfl_up_sync";
        case WarpOp::Ballot: return "__ballot_sync";
        case WarpOp::Sync: return "__syncwarp";
    }
    return "?";
}

std::string describe_wait(const Fiber& f) {
    std::ostringstream o;
    switch (f.state) {
        case FiberState::Done: o << "has exited"; break;
        case FiberState::AtBarrier: o << "waits at __syncthreads (" << f.barrier_file << ":" << f.barrier_line << ")"; break;
        case FiberState::AtWarp: o << "waits in " << op_name(f.op) << " with mask 0x" << std::hex << f.mask; break;
        case FiberState::Ready: o << "is runnable"; break;
    }
    return o.str();
}

// The source lane of a shuffle under PTX semantics, or -1 when the lane keeps its own value.
int shuffle_source(WarpOp op, int lane, int param, int width) {
    const int seg_start = lane & ~(width - 1);
    const int max_lane = seg_start + width - 1;
    int j = 0;
    switch (op) {
        case WarpOp::Idx: j = seg_start | (param & (width - 1)); return j <= max_lane ? j : -1;
        case WarpOp::Xor: j = lane ^ param; return j <= max_lane ? j : -1;
        case WarpOp::Down: j = lane + param; return j <= max_lane ? j : -1;
        case WarpOp::Up: j = lane - param; return j >= seg_start ? j : -1;
        default: return -1;
    }
}

// Completes every warp collective whose lanes have all arrived. Returns 1 if any completed, 0 if none,
// -1 on misuse (message in `error`).
int resolve_warps(std::string& error) {
    std::vector<Fiber>& fibers = sched().fibers;
    const unsigned n = static_cast<unsigned>(fibers.size());
    bool any = false;
    for (unsigned base = 0; base < n; base += 32) {
        const unsigned lanes = std::min(32u, n - base);
        unsigned done_lanes = 0;
        for (unsigned l = 0; l < lanes; ++l) {
            Fiber& f = fibers[base + l];
            if (f.state != FiberState::AtWarp || (done_lanes >> l & 1u)) continue;
            const unsigned m = f.mask;
            // The message is built only on misuse: a stream per collective was a tenth of the simulator's time.
            auto misuse = [&](auto&& write) {
                std::ostringstream err;
                write(err);
                error = err.str();
                return -1;
            };
            if (!(m >> l & 1u)) {
                return misuse([&](std::ostream& err) {
                    err << op_name(f.op) << " in " << describe_thread(f.tid) << ": mask 0x" << std::hex << m
                        << " does not include the calling lane " << std::dec << l;
                });
            } else if (lanes < 32 && (m >> lanes) != 0) {
                return misuse([&](std::ostream& err) {
                    err << op_name(f.op) << " in " << describe_thread(f.tid) << ": mask 0x" << std::hex << m
                        << " names lanes that do not exist (the warp has " << std::dec << lanes << " threads)";
                });
            } else if (f.width < 1 || f.width > 32 || (f.width & (f.width - 1)) != 0) {
                return misuse([&](std::ostream& err) {
                    err << op_name(f.op) << " in " << describe_thread(f.tid) << ": width " << f.width
                        << " is not a power of two in 1..32";
                });
            }
            for (unsigned b = 0; b < lanes; ++b) {
                if (!(m >> b & 1u)) continue;
                const Fiber& g = fibers[base + b];
                if (g.state != FiberState::AtWarp || g.mask != m || g.op != f.op) {
                    return misuse([&](std::ostream& err) {
                        err << op_name(f.op) << " with mask 0x" << std::hex << m << " in " << describe_thread(f.tid)
                            << " can never complete: lane " << std::dec << b << " (" << describe_thread(g.tid) << ") "
                            << describe_wait(g);
                    });
                }
            }
            std::uint32_t ballot = 0;
            for (unsigned b = 0; b < lanes; ++b)
                if ((m >> b & 1u) && fibers[base + b].value != 0) ballot |= 1u << b;
            for (unsigned b = 0; b < lanes; ++b) {
                if (!(m >> b & 1u)) continue;
                Fiber& g = fibers[base + b];
                if (g.op == WarpOp::Ballot) {
                    g.result = ballot;
                } else if (g.op == WarpOp::Sync) {
                    g.result = 0;
                } else {
                    const int src = shuffle_source(g.op, static_cast<int>(b), g.param, g.width);
                    if (src < 0) g.result = g.value;
                    // A source lane outside the mask is inactive: CUDA leaves the value undefined.
                    else if (static_cast<unsigned>(src) >= lanes || !(m >> src & 1u)) g.result = kNanPoisonBits;
                    else g.result = fibers[base + static_cast<unsigned>(src)].value;
                }
                g.state = FiberState::Ready;
                done_lanes |= 1u << b;
            }
            any = true;
        }
    }
    return any ? 1 : 0;
}

// Releases a block-wide barrier if every thread waits at the same one. Returns false with a message on misuse.
bool release_barrier(std::string& error) {
    std::vector<Fiber>& fibers = sched().fibers;
    const Fiber* first = nullptr;
    for (const Fiber& f : fibers) {
        if (f.state != FiberState::AtBarrier) continue;
        first = &f;
        break;
    }
    for (const Fiber& f : fibers) {
        if (f.state == FiberState::AtBarrier && f.barrier_line == first->barrier_line &&
            (f.barrier_file == first->barrier_file || std::strcmp(f.barrier_file, first->barrier_file) == 0))
            continue;
        unsigned arrived = 0;
        for (const Fiber& g : fibers) arrived += g.state == FiberState::AtBarrier ? 1 : 0;
        std::ostringstream err;
        err << "__syncthreads at " << first->barrier_file << ":" << first->barrier_line << " is not reached by all "
            << fibers.size() << " threads of the block (" << arrived << " wait at a barrier): "
            << describe_thread(f.tid) << " " << describe_wait(f);
        error = err.str();
        return false;
    }
    for (Fiber& f : fibers) f.state = FiberState::Ready;
    return true;
}

bool run_block(bool reverse, const TlsRange& shared) {
    std::string& error = sched().error;
    Scheduler& s = sched();
    std::vector<Fiber>& fibers = s.fibers;
    const unsigned n = static_cast<unsigned>(fibers.size());
    for (unsigned i = 0; i < n; ++i) {
        Fiber& f = fibers[i];
        f.state = FiberState::Ready;
        fiber::prepare(f.context, f.stack, kStackBytes, fiber_main);
    }
    if (shared.size) detail::poison(shared.data, shared.size);
    detail::poison(g_dynamic_arena, g_dynamic_bytes);
    std::memset(g_dynamic_arena + g_dynamic_bytes, 0xFF, kSharedRedzone);

    s.reverse = reverse;
    for (;;) {
        if (run_pass() && s.trapped) {
            error = describe_thread(s.current->tid) + ": " + s.trap_message;
            return false;
        }
        const int warps = resolve_warps(error);
        if (warps < 0) return false;
        if (warps > 0) continue;
        unsigned done = 0;
        for (const Fiber& f : fibers) done += f.state == FiberState::Done ? 1 : 0;
        if (done == n) break;
        // resolve_warps either completed or rejected every waiting collective: all live threads are at barriers
        if (!release_barrier(error)) return false;
    }
    for (unsigned i = 0; i < kSharedRedzone; ++i) {
        if (g_dynamic_arena[g_dynamic_bytes + i] == 0xFF) continue;
        std::ostringstream o;
        o << "write " << i << " bytes past the end of dynamic shared memory (" << g_dynamic_bytes
          << " bytes requested at launch) in block (" << g_block_idx.x << "," << g_block_idx.y << "," << g_block_idx.z << ")";
        error = o.str();
        return false;
    }
    return true;
}

bool run_grid(bool reverse, const TlsRange& shared) {
    const std::uint64_t gx = g_grid_dim.x, gy = g_grid_dim.y, gz = g_grid_dim.z;
    const std::uint64_t blocks = gx * gy * gz;
    for (std::uint64_t k = 0; k < blocks; ++k) {
        const std::uint64_t b = reverse ? blocks - 1 - k : k;
        g_block_idx = {static_cast<unsigned>(b % gx), static_cast<unsigned>(b / gx % gy), static_cast<unsigned>(b / (gx * gy))};
        if (!run_block(reverse, shared)) return false;
    }
    return true;
}

// ---- faults and the watchdog -------------------------------------------------------------------------------
constexpr int kFaultSignals[] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL};
struct sigaction g_previous[sizeof kFaultSignals / sizeof kFaultSignals[0]];
// The watchdog timer's signal: a real-time signal nothing else in the process is expected to use. Its handler
// stays installed and ignores a late expiry that arrives after the launch ended.
const int kWatchdogSignal = SIGRTMAX - 1;

void fault_handler(int sig, siginfo_t* info, void* uctx) {
    Scheduler& s = sched();
    const bool ours = s.in_fiber && pthread_equal(pthread_self(), s.thread);
    if (sig == kWatchdogSignal && !ours) return;
    if (ours) {
        s.fault_signal = sig;
        s.fault_address = info->si_addr;
        s.in_fiber = 0;
#if MOBIUS_SIM_ASAN
        __asan_handle_no_return();
#endif
        siglongjmp(s.fault_jump, 1);
    }
    // Not ours: hand the signal to whoever handled it before the launch.
    for (std::size_t i = 0; i < std::size(kFaultSignals); ++i) {
        if (kFaultSignals[i] != sig) continue;
        const struct sigaction& prev = g_previous[i];
        if (prev.sa_flags & SA_SIGINFO) {
            prev.sa_sigaction(sig, info, uctx);
        } else if (prev.sa_handler == SIG_DFL) {
            signal(sig, SIG_DFL);
            raise(sig);
        } else if (prev.sa_handler != SIG_IGN) {
            prev.sa_handler(sig);
        }
    }
}

// For the duration of a launch: our handlers for faults (on an alternate stack, so a fiber stack overflow can
// be handled) and a one-shot timer that interrupts the launching thread when the launch takes too long.
struct FaultGuard {
    stack_t old_stack{};
    std::vector<unsigned char> alt_stack = std::vector<unsigned char>(std::max<std::size_t>(SIGSTKSZ, 64 * 1024));
    timer_t timer{};
    bool timing = false;

    explicit FaultGuard(double timeout_seconds) {
        stack_t ss{};
        ss.ss_sp = alt_stack.data();
        ss.ss_size = alt_stack.size();
        sigaltstack(&ss, &old_stack);
        struct sigaction sa{};
        sa.sa_sigaction = fault_handler;
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&sa.sa_mask);
        for (std::size_t i = 0; i < std::size(kFaultSignals); ++i) sigaction(kFaultSignals[i], &sa, &g_previous[i]);
        if (timeout_seconds <= 0.0) return;
        sigaction(kWatchdogSignal, &sa, nullptr);
        sigevent ev{};
        ev.sigev_notify = SIGEV_THREAD_ID;
        ev.sigev_signo = kWatchdogSignal;
        ev._sigev_un._tid = gettid();
        if (timer_create(CLOCK_MONOTONIC, &ev, &timer) != 0) return;
        itimerspec when{};
        when.it_value.tv_sec = static_cast<time_t>(timeout_seconds);
        when.it_value.tv_nsec = static_cast<long>((timeout_seconds - static_cast<double>(when.it_value.tv_sec)) * 1e9);
        timing = timer_settime(timer, 0, &when, nullptr) == 0;
    }
    ~FaultGuard() {
        if (timing) timer_delete(timer);
        for (std::size_t i = 0; i < std::size(kFaultSignals); ++i) sigaction(kFaultSignals[i], &g_previous[i], nullptr);
        sigaltstack(&old_stack, nullptr);
    }
};

std::string describe_fault() {
    Scheduler& s = sched();
    const auto address = reinterpret_cast<std::uintptr_t>(s.fault_address);
    std::ostringstream o;
    o << (s.current ? describe_thread(s.current->tid) : std::string("?")) << ": ";
    if (s.fault_signal == kWatchdogSignal) {
        o << "still running after " << options().launch_timeout_seconds
          << " s (an endless loop?), stopped; MOBIUS_SIM_LAUNCH_TIMEOUT sets the limit";
        return o.str();
    }
    switch (s.fault_signal) {
        case SIGFPE: o << "arithmetic exception (integer division by zero?)"; break;
        case SIGILL: o << "illegal instruction"; break;
        default:
            if (in_stack_guard(address))
                o << "stack overflow of the simulated thread (" << kStackBytes << " bytes per thread)";
            else
                o << "invalid memory access at 0x" << std::hex << address << std::dec << ", "
                  << detail::describe_address(address);
    }
    return o.str();
}

// The redzone check after a launch. A kernel whose parameters are all scalars or pointers to scalars can only
// reach the allocations its pointers point into, so only those are checked: with a few thousand live allocations,
// checking every one after every launch was a fifth of the simulator's time.
std::string check_launch_redzones(const KernelSignature& kernel, void* const* params) {
    constexpr int kMaxDirect = 64;
    if (!kernel.direct_pointers || kernel.num_params > kMaxDirect) return detail::check_redzones();
    std::uintptr_t addresses[kMaxDirect];
    std::size_t count = 0;
    for (int i = 0; i < kernel.num_params; ++i) {
        if (kernel.param_access[i] == ParamAccess::None) continue;
        std::memcpy(&addresses[count++], params[i], sizeof(std::uintptr_t));
    }
    return detail::check_redzones(addresses, count);
}

LaunchResult fail(Status status, const char* kernel, const std::string& what) {
    return {status, std::string("kernel '") + kernel + "': " + what};
}

LaunchResult validate(const char* name, const LaunchConfig& c, const LaunchLimits& limits) {
    const Dim3& b = c.block;
    const Dim3& g = c.grid;
    std::ostringstream o;
    const std::uint64_t threads = std::uint64_t{b.x} * b.y * b.z;
    if (b.x == 0 || b.y == 0 || b.z == 0 || b.x > 1024 || b.y > 1024 || b.z > 64 || threads > kMaxThreads) {
        o << "block (" << b.x << "," << b.y << "," << b.z << ") exceeds the device limits (1024 x 1024 x 64, 1024 threads)";
        return fail(Status::InvalidValue, name, o.str());
    }
    if (threads > limits.max_threads_per_block) {
        o << "block of " << threads << " threads exceeds the kernel's __launch_bounds__ (" << limits.max_threads_per_block << ")";
        return fail(Status::OutOfResources, name, o.str());
    }
    if (g.x == 0 || g.y == 0 || g.z == 0 || g.x > 0x7fffffffu || g.y > 65535 || g.z > 65535) {
        o << "grid (" << g.x << "," << g.y << "," << g.z << ") exceeds the device limits (2^31-1 x 65535 x 65535)";
        return fail(Status::InvalidValue, name, o.str());
    }
    const std::uint64_t shared = std::uint64_t{limits.static_shared_bytes} + c.dynamic_shared_bytes;
    if (shared > limits.max_shared_bytes || shared > kMaxSharedOptin) {
        o << "shared memory " << limits.static_shared_bytes << " static + " << c.dynamic_shared_bytes
          << " dynamic bytes exceeds the limit of " << std::min(limits.max_shared_bytes, kMaxSharedOptin)
          << " bytes (raise it with CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES)";
        return fail(Status::InvalidValue, name, o.str());
    }
    return {};
}

}  // namespace

LaunchResult detail::validate_launch(const char* name, const LaunchConfig& config, const LaunchLimits& limits) {
    return validate(name, config, limits);
}

// ---- calls made by kernels --------------------------------------------------------------------------------
unsigned char* dynamic_shared_base() { return g_dynamic_arena; }
unsigned dynamic_shared_bytes() { return g_dynamic_bytes; }

void trap(const char* what, const char* file, int line) {
    Fiber& f = running_fiber("trap");
    {  // the fiber never returns: nothing with a destructor may be alive when it leaves
        std::ostringstream o;
        o << what << " (" << file << ":" << line << ")";
        sched().trap_message = o.str();
    }
    sched().trapped = true;
    exit_fiber(f);
}

void syncthreads(const char* file, int line) {
    Fiber& f = running_fiber("__syncthreads");
    f.state = FiberState::AtBarrier;
    f.barrier_file = file;
    f.barrier_line = line;
    wait_in_pass(f);
}

std::uint32_t warp_collective(WarpOp op, unsigned mask, std::uint32_t value, int param, int width) {
    Fiber& f = running_fiber(op_name(op));
    f.state = FiberState::AtWarp;
    f.op = op;
    f.mask = mask;
    f.value = value;
    f.param = param;
    f.width = width;
    wait_in_pass(f);
    return f.result;
}

float atomic_add(float* address, float value) {
    Scheduler& s = sched();
    if (s.track_atomics) s.atomic_magnitude[reinterpret_cast<std::uintptr_t>(address)] += std::fabs(value);
    const float old = *address;
    *address = old + value;
    return old;
}
int atomic_add(int* address, int value) {
    const int old = *address;
    *address = static_cast<int>(static_cast<unsigned>(old) + static_cast<unsigned>(value));
    return old;
}
unsigned atomic_add(unsigned* address, unsigned value) {
    const unsigned old = *address;
    *address = old + value;
    return old;
}

// ---- registry -----------------------------------------------------------------------------------------------
namespace {
std::map<std::string, KernelSignature, std::less<>>& registry() {
    static std::map<std::string, KernelSignature, std::less<>> r;
    return r;
}
}  // namespace

void register_kernel(const KernelSignature& signature) {
    auto [it, inserted] = registry().emplace(signature.name, signature);
    if (!inserted && it->second.launcher != signature.launcher)
        std::fprintf(stderr, "mobius_sim: kernel '%s' is registered twice; keeping the first\n", signature.name);
}

const KernelSignature* find_kernel(std::string_view name) {
    auto it = registry().find(name);
    return it == registry().end() ? nullptr : &it->second;
}

std::vector<std::string> registered_kernel_names() {
    std::vector<std::string> names;
    for (const auto& [name, sig] : registry()) names.push_back(name);
    return names;
}

Options& options() {
    static Options o = [] {
        Options r;
        const char* race = std::getenv("MOBIUS_SIM_RACECHECK");
        r.racecheck = race != nullptr && *race != '\0' && *race != '0';
        if (const char* t = std::getenv("MOBIUS_SIM_LAUNCH_TIMEOUT"); t != nullptr && *t != '\0')
            r.launch_timeout_seconds = std::strtod(t, nullptr);
        const char* dry = std::getenv("MOBIUS_SIM_DRY");
        r.dry = dry != nullptr && *dry != '\0' && *dry != '0';
        const char* streams = std::getenv("MOBIUS_SIM_STREAMCHECK");
        r.streamcheck = streams == nullptr || *streams != '0';
        return r;
    }();
    return o;
}

// ---- launch --------------------------------------------------------------------------------------------------
LaunchResult launch(const KernelSignature& kernel, const LaunchConfig& config, void* const* params,
                    const LaunchLimits& limits) {
    std::lock_guard lock(detail::api_mutex());
    if (LaunchResult bad = validate(kernel.name, config, limits); bad.status != Status::Success) return bad;
    if (options().dry) return {};

    Scheduler& s = sched();
    const unsigned n = config.block.x * config.block.y * config.block.z;
    s.fibers.assign(n, Fiber{});
    for (unsigned i = 0; i < n; ++i) {
        s.fibers[i].tid = {i % config.block.x, i / config.block.x % config.block.y, i / (config.block.x * config.block.y)};
        s.fibers[i].stack = fiber_stack(i);
    }
    g_grid_dim = config.grid;
    g_block_dim = config.block;
    g_dynamic_bytes = config.dynamic_shared_bytes;
    s.launcher = kernel.launcher;
    s.params = params;
    s.kernel_name = kernel.name;
    s.trapped = false;
    s.thread = pthread_self();
    s.track_atomics = options().racecheck;
    s.atomic_magnitude.clear();
    const TlsRange shared = module_shared_memory(kernel.module_anchor);

    // A fault longjmps back here from deep inside run_grid; everything that must survive it lives in the
    // Scheduler, so no frame with live non-trivial objects is skipped.
    FaultGuard guard(options().launch_timeout_seconds);
    s.error.clear();
    auto finish = [&](LaunchResult r) {
        s.before = {};
        s.forward = {};
        s.in_fiber = 0;
        s.current = nullptr;
        g_thread_idx = nullptr;
        s.track_atomics = false;
        return r;
    };
    if (sigsetjmp(s.fault_jump, 1) != 0) {
        const Status status = s.fault_signal == kWatchdogSignal                          ? Status::Timeout
                              : s.fault_signal == SIGSEGV || s.fault_signal == SIGBUS ? Status::IllegalAddress
                                                                                       : Status::LaunchFailed;
        return finish(fail(status, kernel.name, describe_fault()));
    }
    if (s.track_atomics) s.before = detail::snapshot_memory();
    if (!run_grid(false, shared)) return finish(fail(Status::LaunchFailed, kernel.name, s.error));
    s.error = check_launch_redzones(kernel, params);
    if (!s.error.empty()) return finish(fail(Status::IllegalAddress, kernel.name, "out-of-bounds " + s.error));
    if (!s.track_atomics) return finish({});

    s.forward = detail::snapshot_memory();
    detail::restore_memory(s.before);
    if (!run_grid(true, shared))
        return finish(fail(Status::LaunchFailed, kernel.name, s.error + " (race check: blocks and threads in reverse order)"));
    s.error = check_launch_redzones(kernel, params);
    if (!s.error.empty())
        return finish(fail(Status::IllegalAddress, kernel.name, "out-of-bounds " + s.error + " (race check run)"));
    s.error = detail::compare_memory(s.forward, s.atomic_magnitude);
    detail::restore_memory(s.forward);
    if (!s.error.empty())
        return finish(fail(Status::LaunchFailed, kernel.name,
                           "race: results depend on the order of threads or blocks (a missing __syncthreads, or "
                           "blocks that read each other's output): " + s.error));
    return finish({});
}

}  // namespace mobius_sim
