// Stackful fibers for the simulated CUDA threads.
//
// On x86-64 a switch saves the callee-saved registers and the FP control words on the old stack and swaps
// stack pointers: about 20 instructions. glibc's swapcontext also saves and restores the signal mask with a
// system call on every switch, which made it the simulator's main cost (a block of 256 threads switches
// thousands of times); it remains the portable fallback on other architectures.
#pragma once

#include <cstddef>

#if !defined(__x86_64__)
#include <ucontext.h>
#endif

namespace mobius_sim::fiber {

struct Context {
#if defined(__x86_64__)
    void* sp = nullptr;
#else
    ucontext_t uc;
#endif
};

// Makes `ctx` start `entry` on the given stack at its first switch_to. `entry` must never return.
void prepare(Context& ctx, unsigned char* stack, std::size_t size, void (*entry)());

// Saves the running context into `from` and resumes `to`.
void switch_to(Context& from, Context& to);

}  // namespace mobius_sim::fiber
