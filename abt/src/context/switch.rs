//! The machine-level stack switch (x86-64 System V): save the callee-saved registers on the
//! current stack, store its stack pointer, load another, restore that stack's registers, return
//! there. Symmetric, so one ULT can switch straight to another (no scheduler stack in between).
//!
//! A suspended context is nothing but its saved stack pointer: below it lie the six callee-saved
//! registers and the address to return to. A fresh context is built by [`init`] to look the same,
//! returning into [`trampoline`], which calls the entry function with the word passed by the
//! first switch into it. The caller-saved registers, flags and vector registers need no saving:
//! every switch is a call of [`switch`], so the compiler already treats them as clobbered.
//! Like corosensei and Boost.Context's `fcontext`, the MXCSR and x87 control words are not
//! switched: Rust code never changes them.

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
#[unsafe(naked)]
pub(crate) unsafe extern "C" fn switch(arg: usize, save: *mut usize, to: usize) -> usize {
    core::arch::naked_asm!(
        "push rbp",
        "push rbx",
        "push r12",
        "push r13",
        "push r14",
        "push r15",
        "mov [rsi], rsp",
        "mov rsp, rdx",
        "pop r15",
        "pop r14",
        "pop r13",
        "pop r12",
        "pop rbx",
        "pop rbp",
        "mov rax, rdi",
        "ret",
    )
}

/// The first code of a fresh context: `rbx` holds the context pointer and `r12` the entry
/// function ([`init`] put them where [`switch`] pops them), `rax` the word of the first switch.
/// The stack above holds a zero return address, so a backtrace taken inside a ULT ends here.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    core::arch::naked_asm!(
        ".cfi_startproc",
        // Unwinders and debuggers stop here: nothing above is a frame.
        ".cfi_undefined rip",
        "mov rdi, rax",
        "mov rsi, rbx",
        "call r12",
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
    let frame: [usize; 9] = [
        0,                                // r15
        0,                                // r14
        0,                                // r13
        entry as *const () as usize,      // r12
        ctx as usize,                     // rbx
        0,                                // rbp
        trampoline as *const () as usize, // return address of the first switch
        0,                                // padding: the trampoline's call must see rsp % 16 == 0
        0,                                // the trampoline's own return address: end of backtraces
    ];
    let sp = top - frame.len() * 8;
    // SAFETY: the caller gives `top` with writable memory below it; 72 bytes are written.
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
