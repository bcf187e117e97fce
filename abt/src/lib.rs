//! daos-rs user-level threading: Argobots' execution streams, pools, ULTs and schedulers in Rust.
