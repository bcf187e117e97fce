//! OS thread ids and CPU affinity (`gettid`, `sched_setaffinity`, `sched_getaffinity`): the only
//! `unsafe` the stream code needs, wrapped in safe functions.

use crate::error::{Error, Result};

/// The calling OS thread's kernel id.
pub(crate) fn gettid() -> u64 {
    // SAFETY: gettid takes no arguments, has no preconditions and cannot fail.
    (unsafe { libc::syscall(libc::SYS_gettid) }) as u64
}

/// Binds OS thread `tid` (0 = the caller) to `cpus` with `sched_setaffinity`.
pub(crate) fn set_affinity(tid: u64, cpus: &[usize]) -> Result<()> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero bytes are the valid empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &c in cpus {
        if c >= libc::CPU_SETSIZE as usize {
            return Err(Error::Sys(format!("cpu {c} out of range")));
        }
        // SAFETY: `c` is below CPU_SETSIZE (checked above), so the bit is inside `set`.
        unsafe { libc::CPU_SET(c, &mut set) };
    }
    // SAFETY: `set` is a valid, initialised cpu_set_t and the size passed is its size; the kernel
    // only reads it.
    let rc = unsafe {
        libc::sched_setaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &set,
        )
    };
    if rc != 0 {
        return Err(Error::Sys(format!(
            "sched_setaffinity: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// The CPUs OS thread `tid` (0 = the caller) may run on.
pub(crate) fn get_affinity(tid: u64) -> Result<Vec<usize>> {
    // SAFETY: cpu_set_t is a plain bit array; all-zero bytes are a valid out-parameter.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and the size passed is its size; the kernel writes at most that.
    let rc = unsafe {
        libc::sched_getaffinity(
            tid as libc::pid_t,
            std::mem::size_of::<libc::cpu_set_t>(),
            &mut set,
        )
    };
    if rc != 0 {
        return Err(Error::Sys(format!(
            "sched_getaffinity: {}",
            std::io::Error::last_os_error()
        )));
    }
    Ok((0..libc::CPU_SETSIZE as usize)
        // SAFETY: CPU_ISSET only reads `set`, and every index is below CPU_SETSIZE.
        .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
        .collect())
}
