//! The guard-page overflow handler: a SIGSEGV/SIGBUS handler on an alternate signal stack that
//! recognizes a fault in the running ULT's guard page and aborts with the ULT's name and stack size.
//!
//! Rust's own handler only knows each OS thread's main stack, so without this a ULT overflow would
//! be reported as a plain segfault (or, with no guard page, silently corrupt a neighbour's stack,
//! which is what argobots #274 and DAOS's raised stack sizes are about).

use crate::sync::{OnceLock, StdOnce};

/// What the handler needs to know about the running ULT's stack. Lives inside the coroutine's
/// closure, so its address is stable while the ULT runs.
pub(crate) struct StackInfo {
    pub(crate) guard_lo: usize,
    pub(crate) guard_hi: usize,
    pub(crate) size: usize,
    pub(crate) id: u64,
    pub(crate) name: Option<crate::sync::StdArc<str>>,
}

static INSTALL: StdOnce = StdOnce::new();
static OLD_SEGV: OnceLock<libc::sigaction> = OnceLock::new();
static OLD_BUS: OnceLock<libc::sigaction> = OnceLock::new();

/// Installs the handler once per process.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        for (sig, slot) in [(libc::SIGSEGV, &OLD_SEGV), (libc::SIGBUS, &OLD_BUS)] {
            // SAFETY: an all-zero sigaction is a valid value (empty mask, no flags, SIG_DFL).
            let mut new: libc::sigaction = unsafe { std::mem::zeroed() };
            new.sa_sigaction = handler
                as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void)
                as usize;
            new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: as above, zero is valid; it is overwritten by sigaction.
            let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: `new` is fully initialized and `handler` is async-signal-safe (it only reads
            // plain data, calls write(2), sigaction(2) and abort(3)).
            let rc = unsafe { libc::sigaction(sig, &new, &mut old) };
            if rc == 0 {
                let _ = slot.set(old);
            }
        }
    });
}

/// Makes sure this OS thread has an alternate signal stack, so the handler can run after the ULT's
/// stack is exhausted. Rust gives its own threads one; a thread from elsewhere may not have one.
pub(crate) fn ensure_altstack() {
    // SAFETY: a zeroed stack_t is a valid out-parameter.
    let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: querying only (null new-stack pointer).
    let rc = unsafe { libc::sigaltstack(std::ptr::null(), &mut cur) };
    if rc == 0 && (cur.ss_flags & libc::SS_DISABLE) == 0 && !cur.ss_sp.is_null() {
        return;
    }
    let size = 64 * 1024;
    // SAFETY: a fresh anonymous mapping; it is deliberately leaked (one per OS thread that runs
    // ULTs and had none), since the kernel may use it until the thread exits.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return;
    }
    let st = libc::stack_t {
        ss_sp: p,
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `st` describes the mapping just made, which stays mapped for the thread's life.
    unsafe { libc::sigaltstack(&st, std::ptr::null_mut()) };
}

/// Writes `s` to stderr with write(2) (async-signal-safe).
fn raw_write(s: &[u8]) {
    // SAFETY: `s` is a valid readable slice for its whole length.
    unsafe { libc::write(2, s.as_ptr().cast(), s.len()) };
}

/// Formats `n` in decimal into `buf`, returns the used tail (no allocation).
fn fmt_u64(mut n: u64, buf: &mut [u8; 24]) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

extern "C" fn handler(sig: libc::c_int, info: *mut libc::siginfo_t, ctx: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    let cur = super::running_ptr();
    if !cur.is_null() {
        // SAFETY: the running-ULT pointer is non-null only while this thread runs a ULT whose
        // `Running` record (with its StackInfo) is alive on that ULT's (now interrupted) stack
        // frame; nothing else writes it meanwhile.
        let st = unsafe { &(*cur).stack };
        if st.guard_hi > st.guard_lo && addr >= st.guard_lo && addr < st.guard_hi {
            let mut b = [0u8; 24];
            raw_write(b"abt: stack overflow in ULT '");
            match &st.name {
                Some(n) => raw_write(n.as_bytes()),
                None => raw_write(b"<unnamed>"),
            }
            raw_write(b"' (id ");
            raw_write(fmt_u64(st.id, &mut b));
            raw_write(b"): its stack of ");
            raw_write(fmt_u64(st.size as u64, &mut b));
            raw_write(b" bytes is exhausted (hit the guard page); raise it with ThreadAttr::stack_size. Aborting.\n");
            // SAFETY: abort is async-signal-safe.
            unsafe { libc::abort() };
        }
    }
    // Not ours: put the previous handler back and return; the fault repeats and that handler
    // (Rust's, or the default action) deals with it.
    let old = if sig == libc::SIGSEGV {
        OLD_SEGV.get()
    } else {
        OLD_BUS.get()
    };
    match old {
        Some(o) => {
            // SAFETY: `o` is the sigaction the kernel gave us at install time.
            unsafe { libc::sigaction(sig, o, std::ptr::null_mut()) };
        }
        None => {
            // SAFETY: a zeroed sigaction is SIG_DFL with an empty mask.
            let dfl: libc::sigaction = unsafe { std::mem::zeroed() };
            // SAFETY: restoring the default action.
            unsafe { libc::sigaction(sig, &dfl, std::ptr::null_mut()) };
        }
    }
    let _ = ctx;
}
