//! The abt layer's one error type, with Argobots' `ABT_ERR_*` numbers where they exist.

use std::fmt;

/// Everything that can go wrong in this layer. [`Error::code`] gives Argobots' `ABT_ERR_*` number so
/// logs compare line for line with a real engine's.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The call needs a ULT (yield, suspend, self) but the caller is an external thread or a
    /// scheduler (`ABT_ERR_INV_XSTREAM`).
    NotInUlt,
    /// A tasklet tried to yield or suspend: tasklets have no stack (`ABT_ERR_INV_THREAD`).
    InTasklet,
    /// A ULT tried to join itself (`ABT_ERR_INV_THREAD`).
    JoinSelf,
    /// `resume` on a ULT that is not suspended (running, ready or finished) (`ABT_ERR_THREAD`).
    NotSuspended,
    /// `yield_to` a unit that cannot run here: a tasklet, a ULT that is not ready, or one that
    /// started on another stream (`ABT_ERR_INV_THREAD`).
    InvalidYieldTarget,
    /// The ULT or tasklet panicked; the message is the panic payload when it was a string
    /// (`ABT_ERR_OTHER`).
    Panicked(String),
    /// A scheduler configuration value was missing or had the wrong type (`ABT_ERR_INV_SCHED_CONFIG`).
    SchedConfig(&'static str),
    /// A scheduler was given no pools or an unusable pool set (`ABT_ERR_INV_SCHED`).
    InvalidSched,
    /// An execution stream rank is already taken (`ABT_ERR_INV_XSTREAM_RANK`).
    RankTaken(usize),
    /// The stream is not in a state that allows this (already joined, primary started twice…)
    /// (`ABT_ERR_XSTREAM_STATE`).
    XstreamState,
    /// Stack memory could not be mapped (`ABT_ERR_MEM`).
    Memory,
    /// A key was used after it was freed, or belongs to no ULT (`ABT_ERR_INV_KEY`).
    InvalidKey,
    /// A future got more values than compartments (`ABT_ERR_FUTURE`).
    FutureFull,
    /// An eventual was set twice without a reset (`ABT_ERR_EVENTUAL`).
    EventualAlreadySet,
    /// A system call failed (thread spawn, affinity, hwloc); the errno or hwloc message is kept.
    Sys(String),
}

impl Error {
    /// Argobots' error number for this error (`ABT_ERR_*` in `abt.h`).
    pub fn code(&self) -> i32 {
        match self {
            Error::NotInUlt => 4, // ABT_ERR_INV_XSTREAM
            Error::InTasklet | Error::JoinSelf | Error::InvalidYieldTarget => 16, // ABT_ERR_INV_THREAD
            Error::NotSuspended => 36,                                            // ABT_ERR_THREAD
            Error::Panicked(_) => 3,                                              // ABT_ERR_OTHER
            Error::SchedConfig(_) => 11,     // ABT_ERR_INV_SCHED_CONFIG
            Error::InvalidSched => 7,        // ABT_ERR_INV_SCHED
            Error::RankTaken(_) => 5,        // ABT_ERR_INV_XSTREAM_RANK
            Error::XstreamState => 30,       // ABT_ERR_XSTREAM_STATE
            Error::Memory => 2,              // ABT_ERR_MEM
            Error::InvalidKey => 19,         // ABT_ERR_INV_KEY
            Error::FutureFull => 45,         // ABT_ERR_FUTURE
            Error::EventualAlreadySet => 44, // ABT_ERR_EVENTUAL
            Error::Sys(_) => 29,             // ABT_ERR_XSTREAM
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::NotInUlt => write!(f, "not called from a ULT"),
            Error::InTasklet => write!(f, "a tasklet cannot yield or suspend"),
            Error::JoinSelf => write!(f, "a ULT cannot join itself"),
            Error::NotSuspended => write!(f, "the ULT is not suspended"),
            Error::InvalidYieldTarget => write!(f, "yield_to target cannot run on this stream now"),
            Error::Panicked(m) => write!(f, "work unit panicked: {m}"),
            Error::SchedConfig(k) => write!(f, "scheduler config: bad or missing '{k}'"),
            Error::InvalidSched => write!(f, "invalid scheduler"),
            Error::RankTaken(r) => write!(f, "execution stream rank {r} is taken"),
            Error::XstreamState => write!(f, "execution stream is in the wrong state"),
            Error::Memory => write!(f, "cannot map stack memory"),
            Error::InvalidKey => write!(f, "invalid key"),
            Error::FutureFull => write!(f, "future has no free compartment"),
            Error::EventualAlreadySet => write!(f, "eventual already set"),
            Error::Sys(m) => write!(f, "system error: {m}"),
        }
    }
}

impl std::error::Error for Error {}

/// Result alias of this layer.
pub type Result<T> = std::result::Result<T, Error>;
