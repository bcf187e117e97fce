//! ULT stacks: mmap'd with a guard page, or carved from a shared arena without one.

use crate::error::Error;
use crate::sync::StdMutex;

/// Default ULT stack size, as Argobots' (`ABT_THREAD_STACKSIZE` default 16384).
pub const DEFAULT_STACK_SIZE: usize = 16 * 1024;

/// The smallest usable stack: one page, the least the entry frame and a body's frames need.
const MIN_STACK_SIZE: usize = 4096;

/// How many arena stacks one arena mapping holds.
const ARENA_CHUNK: usize = 64;

pub(crate) fn page_size() -> usize {
    static PAGE: crate::sync::OnceLock<usize> = crate::sync::OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no memory-safety preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p > 0 {
            p as usize
        } else {
            4096
        }
    })
}

fn round_up(n: usize, to: usize) -> usize {
    if to.is_power_of_two() {
        // Page sizes are: a mask instead of a division on every ULT creation.
        (n + to - 1) & !(to - 1)
    } else {
        n.div_ceil(to) * to
    }
}

/// A ULT stack. With a guard, it is its own mapping: `[guard page][usable]`, two kernel mappings
/// (VMAs). Without, it is a slice of an arena mapping shared by 64 stacks and is never unmapped,
/// only reused: the way to hold 100 k live ULTs under `vm.max_map_count` (65,530 here).
pub(crate) struct UltStack {
    lo: usize,
    /// Usable size (bytes between limit and base).
    size: usize,
    guard: usize,
}

/// Free arena stacks, by usable size.
static ARENA: StdMutex<Vec<(usize, Vec<usize>)>> = StdMutex::new(Vec::new());

impl UltStack {
    /// Maps a stack of at least `size` usable bytes.
    pub(crate) fn new(size: usize, guard: bool) -> Result<UltStack, Error> {
        let page = page_size();
        let size = round_up(size.max(MIN_STACK_SIZE), page);
        if guard {
            let total = size + page;
            // SAFETY: anonymous private mapping at an address the kernel chooses; no existing
            // memory is affected.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    total,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
                    -1,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(Error::Memory);
            }
            // SAFETY: `p` is the start of the mapping just made, at least one page long.
            let rc = unsafe { libc::mprotect(p, page, libc::PROT_NONE) };
            if rc != 0 {
                // SAFETY: unmapping exactly the mapping made above, which nothing else uses.
                unsafe { libc::munmap(p, total) };
                return Err(Error::Memory);
            }
            Ok(UltStack {
                lo: p as usize,
                size,
                guard: page,
            })
        } else {
            let mut arena = ARENA.lock().unwrap_or_else(|p| p.into_inner());
            let idx = match arena.iter().position(|(s, _)| *s == size) {
                Some(i) => i,
                None => {
                    arena.push((size, Vec::new()));
                    arena.len() - 1
                }
            };
            if arena[idx].1.is_empty() {
                // SAFETY: as above, a fresh anonymous mapping.
                let p = unsafe {
                    libc::mmap(
                        std::ptr::null_mut(),
                        size * ARENA_CHUNK,
                        libc::PROT_READ | libc::PROT_WRITE,
                        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                        -1,
                        0,
                    )
                };
                if p == libc::MAP_FAILED {
                    return Err(Error::Memory);
                }
                let base = p as usize;
                arena[idx]
                    .1
                    .extend((0..ARENA_CHUNK).rev().map(|i| base + i * size));
            }
            let lo = arena[idx].1.pop().ok_or(Error::Memory)?;
            Ok(UltStack { lo, size, guard: 0 })
        }
    }

    /// Usable bytes.
    pub(crate) fn size(&self) -> usize {
        self.size
    }

    /// Whether a guard page sits below the stack.
    pub(crate) fn guarded(&self) -> bool {
        self.guard != 0
    }

    /// The highest address of the stack (page aligned): where a fresh context's frame goes.
    pub(crate) fn top(&self) -> usize {
        self.lo + self.guard + self.size
    }

    /// The guard page's address range, if any.
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.lo, self.lo + self.guard)
    }
}

impl Drop for UltStack {
    fn drop(&mut self) {
        if self.guard != 0 {
            // SAFETY: `lo .. lo + guard + size` is exactly the mapping made in `new`, and the
            // coroutine that used it has finished (`Coro` hands the stack back only then).
            unsafe { libc::munmap(self.lo as *mut libc::c_void, self.guard + self.size) };
        } else {
            let mut arena = ARENA.lock().unwrap_or_else(|p| p.into_inner());
            if let Some((_, free)) = arena.iter_mut().find(|(s, _)| *s == self.size) {
                free.push(self.lo);
            }
        }
    }
}

/// The usable size a stack of `size` requested bytes gets: at least one page, rounded
/// up to whole pages.
#[inline]
pub(crate) fn class_size(size: usize) -> usize {
    round_up(size.max(MIN_STACK_SIZE), page_size())
}

/// A per-stream cache of stacks, so steady-state create / join / free maps nothing
/// (Argobots keeps up to `ABT_MEM_MAX_NUM_STACKS` = 1024).
#[derive(Default)]
pub(crate) struct StackCache {
    free: Vec<(usize, bool, Vec<UltStack>)>,
}

/// Stacks kept per (size, guard) class.
const CACHE_MAX: usize = 1024;

impl StackCache {
    #[inline]
    pub(crate) fn get(&mut self, size: usize, guard: bool) -> Result<UltStack, Error> {
        let size = class_size(size);
        if let Some((_, _, v)) = self
            .free
            .iter_mut()
            .find(|(s, g, _)| *s == size && *g == guard)
        {
            if let Some(s) = v.pop() {
                return Ok(s);
            }
        }
        Self::map(size, guard)
    }

    /// A cache miss: a new mapping (or arena slice).
    #[inline(never)]
    fn map(size: usize, guard: bool) -> Result<UltStack, Error> {
        UltStack::new(size, guard)
    }

    pub(crate) fn put(&mut self, s: UltStack) {
        let (size, guard) = (s.size, s.guarded());
        match self
            .free
            .iter_mut()
            .find(|(sz, g, _)| *sz == size && *g == guard)
        {
            Some((_, _, v)) => {
                if v.len() < CACHE_MAX {
                    v.push(s)
                }
            }
            None => self.free.push((size, guard, vec![s])),
        }
    }
}

/// The stack size new ULTs get by default: `ABT_THREAD_STACKSIZE` from the environment (bytes, as
/// Argobots reads it), else [`DEFAULT_STACK_SIZE`]. Read once.
pub fn default_stack_size() -> usize {
    static V: crate::sync::OnceLock<usize> = crate::sync::OnceLock::new();
    *V.get_or_init(|| {
        std::env::var("ABT_THREAD_STACKSIZE")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .filter(|&n| n >= MIN_STACK_SIZE)
            .unwrap_or(DEFAULT_STACK_SIZE)
    })
}
