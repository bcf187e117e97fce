//! The machine-level stack switch (x86-64 System V): save what must survive on the current
//! stack, store its stack pointer, load another, jump to where that one stopped. Symmetric, so one
//! ULT can switch straight to another (no scheduler stack in between).
//!
//! [`switch`] is inline assembly, inlined into each place that switches, and it jumps rather than
//! returns: a switch pushes `rbp`, `rbx` and the address of its own resume label, stores the stack
//! pointer, loads the target's, pops the target's resume address and jumps there; the target
//! continues after *its* inline switch, pops its `rbx` and `rbp`, and runs on. No `call` / `ret`
//! pair spans two stacks, so the return-address predictor is never wrong-footed (a called switch
//! function that returns on the other stack mispredicted every return whose call site differed:
//! scheduler ↔ ULT, about 20 cycles each here), and the indirect jump is predicted by the branch
//! target buffer per switch site. The other callee-saved registers (`r12`–`r15`) are declared
//! clobbered, so the compiler keeps only the live ones, once per function; caller-saved registers,
//! flags and vector registers are clobbered by the ABI declaration. A suspended context is
//! therefore just its saved stack pointer, with its resume address, `rbx` and `rbp` on top. A
//! fresh context ([`init`]) resumes in [`trampoline`], which calls the entry function with the
//! word of the first switch into it. Like corosensei and Boost.Context's `fcontext`, the MXCSR and
//! x87 control words are not switched: Rust code never changes them.

#[cfg(not(target_arch = "x86_64"))]
compile_error!("abt's context switch is written for x86-64 (System V) only");

/// The entry function of a fresh context: the word of the first switch into it, and the pointer
/// given to [`init`]. Never returns (it ends by switching away for good).
pub(crate) type Entry = unsafe extern "C" fn(usize, *const u8) -> !;

/// Switches stacks: stores the current stack pointer into `*save`, continues the context whose
/// saved stack pointer is `to`, and returns the `arg` of whichever switch comes back here.
///
/// # Safety
/// `to` must be the saved stack pointer of a context that is not running (stored by a `switch`
/// out of it, or made by [`init`]), on memory that stays valid while it runs, and nobody else may
/// switch to it concurrently. `save` must be valid for a write and stay where it is until this
/// context is switched back into.
#[inline(always)]
pub(crate) unsafe fn switch(arg: usize, save: *mut usize, to: usize) -> usize {
    let back: usize;
    // SAFETY: the caller's contract. The block leaves `rsp`, `rbx` and `rbp` as it found them
    // when it is resumed (it pushed them before leaving and pops them at its label); `rdi` carries
    // the word across; every other register the ABI lets a call clobber is declared clobbered,
    // and so are `r12`–`r15`, which the resumed context does not restore. Stack use below `rsp`
    // is allowed (no `nostack`), so the compiler keeps nothing in the red zone across it.
    unsafe {
        core::arch::asm!(
            "push rbp",
            "push rbx",
            "lea rax, [rip + 2f]",
            "push rax",
            "mov [rsi], rsp",
            "mov rsp, rdx",
            "pop rax",
            "jmp rax",
            "2:",
            "pop rbx",
            "pop rbp",
            inout("rdi") arg => back,
            in("rsi") save,
            in("rdx") to,
            out("rax") _,
            out("r12") _,
            out("r13") _,
            out("r14") _,
            out("r15") _,
            clobber_abi("sysv64"),
        );
    }
    back
}

/// The first code of a fresh context: [`switch`] jumped here with the stack pointer at the
/// context pointer and the entry function that [`init`] put there, and the word of the first
/// switch in `rdi`. Unwinders and debuggers stop here: nothing above is a frame.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    core::arch::naked_asm!(
        ".cfi_startproc",
        ".cfi_undefined rip",
        "pop rsi",
        "pop rax",
        "call rax",
        "ud2",
        ".cfi_endproc",
    )
}

/// Runs `f(arg)` with its stack pointer at `sp` (16-byte aligned; the memory below it must be
/// free and large enough), and returns its result. A frame-pointer frame lets unwinders and
/// debuggers follow back to the caller's stack.
///
/// # Safety
/// As stated: `sp` is the top of free, writable memory large enough for `f`, which must not
/// unwind.
#[unsafe(naked)]
pub(crate) unsafe extern "C" fn call_on_stack(
    arg: usize,
    f: unsafe extern "C" fn(usize),
    sp: usize,
) {
    core::arch::naked_asm!(
        ".cfi_startproc",
        "push rbp",
        ".cfi_def_cfa_offset 16",
        ".cfi_offset rbp, -16",
        "mov rbp, rsp",
        // From here the caller's frame is found through rbp, whatever stack rsp is on.
        ".cfi_def_cfa_register rbp",
        "mov rsp, rdx",
        "call rsi",
        "mov rsp, rbp",
        "pop rbp",
        ".cfi_def_cfa rsp, 8",
        "ret",
        ".cfi_endproc",
    )
}

/// Builds a fresh context on the stack whose highest address is `top` (16-byte aligned, with at
/// least 128 writable bytes below it) and returns its saved stack pointer: the first [`switch`]
/// to it calls `entry(word, ctx)` on that stack.
///
/// # Safety
/// `top` as stated, and the stack must stay valid and unused by anything else while the context
/// lives.
pub(crate) unsafe fn init(top: usize, entry: Entry, ctx: *const u8) -> usize {
    debug_assert_eq!(top % 16, 0);
    let frame: [usize; 5] = [
        trampoline as *const () as usize, // where the first switch jumps
        ctx as usize,                     // popped into the entry's second argument
        entry as *const () as usize,      // popped and called
        0,                                // padding: the trampoline's call must see rsp % 16 == 0
        0,                                // the trampoline's own return address: end of backtraces
    ];
    let sp = top - frame.len() * 8;
    // SAFETY: the caller gives `top` with writable memory below it; 40 bytes are written.
    unsafe { std::ptr::copy_nonoverlapping(frame.as_ptr(), sp as *mut usize, frame.len()) };
    sp
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    struct Ping {
        main_sp: usize,
        co_sp: usize,
        seen: Vec<usize>,
    }

    unsafe extern "C" fn entry(first: usize, ctx: *const u8) -> ! {
        let p = ctx as *mut Ping;
        let mut w = first;
        loop {
            // SAFETY: the test keeps `Ping` alive and touches it only while this context runs.
            unsafe {
                (*p).seen.push(w);
                w = switch(w * 10, &mut (*p).co_sp, (*p).main_sp);
            }
        }
    }

    /// Words go both ways through switches, callee-saved state survives, and a fresh context
    /// starts in its entry with the first word.
    #[test]
    fn ping_pong_on_own_stack() {
        let mut stack = vec![0u128; 1024];
        let top = stack.as_mut_ptr() as usize + stack.len() * 16;
        let mut p = Box::new(Ping {
            main_sp: 0,
            co_sp: 0,
            seen: Vec::new(),
        });
        let pp: *mut Ping = &mut *p;
        // SAFETY: `stack` outlives the context's use; `pp` stays valid (boxed) throughout.
        unsafe {
            (*pp).co_sp = init(top, entry, pp as *const u8);
            let local = 77usize;
            for i in 1..5 {
                let back = switch(i, &mut (*pp).main_sp, (*pp).co_sp);
                assert_eq!(back, i * 10);
            }
            assert_eq!(std::hint::black_box(local), 77);
        }
        assert_eq!(p.seen, vec![1, 2, 3, 4]);
    }

    unsafe extern "C" fn add_one(a: usize) {
        // SAFETY: the test passes a valid `*mut usize`.
        unsafe { *(a as *mut usize) += 1 };
    }

    #[test]
    fn call_on_other_stack() {
        let mut stack = vec![0u128; 1024];
        let top = stack.as_mut_ptr() as usize + stack.len() * 16;
        let mut v = 41usize;
        // SAFETY: a free 16 KiB stack, and `add_one` does not unwind.
        unsafe { call_on_stack(&mut v as *mut usize as usize, add_one, top) };
        assert_eq!(v, 42);
    }
}
