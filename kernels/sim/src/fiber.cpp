#include "fiber.h"

#include <cstdint>
#include <cstring>

#if defined(__x86_64__)

// void mobius_fiber_switch(void** save_sp, void* load_sp)   (System V: rdi, rsi)
asm(R"(
    .pushsection .text
    .globl mobius_fiber_switch
    .hidden mobius_fiber_switch
    .type mobius_fiber_switch, @function
mobius_fiber_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    subq $8, %rsp
    stmxcsr (%rsp)
    fnstcw 4(%rsp)
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    ldmxcsr (%rsp)
    fldcw 4(%rsp)
    addq $8, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size mobius_fiber_switch, .-mobius_fiber_switch
    .popsection
)");

extern "C" void mobius_fiber_switch(void** save_sp, void* load_sp);

namespace mobius_sim::fiber {

void prepare(Context& ctx, unsigned char* stack, std::size_t size, void (*entry)()) {
    // The frame mobius_fiber_switch pops on the first switch: control words, six registers, then `ret`
    // lands in `entry` with the stack aligned as if it had been called (rsp % 16 == 8).
    auto top = reinterpret_cast<std::uintptr_t>(stack + size) & ~std::uintptr_t{15};
    auto* slot = reinterpret_cast<std::uint64_t*>(top);
    *--slot = 0;                                          // return address of `entry`: it never returns
    *--slot = reinterpret_cast<std::uint64_t>(entry);     // popped by `ret`
    for (int i = 0; i < 6; ++i) *--slot = 0;              // rbp rbx r12 r13 r14 r15
    std::uint32_t mxcsr;
    std::uint16_t fpucw;
    asm volatile("stmxcsr %0" : "=m"(mxcsr));
    asm volatile("fnstcw %0" : "=m"(fpucw));
    *--slot = 0;
    std::memcpy(slot, &mxcsr, 4);
    std::memcpy(reinterpret_cast<unsigned char*>(slot) + 4, &fpucw, 2);
    ctx.sp = slot;
}

void switch_to(Context& from, Context& to) { mobius_fiber_switch(&from.sp, to.sp); }

}  // namespace mobius_sim::fiber

#else

namespace mobius_sim::fiber {

void prepare(Context& ctx, unsigned char* stack, std::size_t size, void (*entry)()) {
    getcontext(&ctx.uc);
    ctx.uc.uc_stack.ss_sp = stack;
    ctx.uc.uc_stack.ss_size = size;
    ctx.uc.uc_link = nullptr;
    makecontext(&ctx.uc, entry, 0);
}

void switch_to(Context& from, Context& to) { swapcontext(&from.uc, &to.uc); }

}  // namespace mobius_sim::fiber

#endif
