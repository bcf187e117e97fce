#!/usr/bin/env bash
#! Runs every loom model (tests named loom_*) of the workspace, or of the crates named, under --cfg loom.
set -euo pipefail
cd "$(dirname "$0")/.."

crates=("$@")
if [ ${#crates[@]} -eq 0 ]; then
  # Every workspace crate that has its own sync facade has loom models.
  for d in */src/sync.rs; do crates+=("$(dirname "$(dirname "$d")")"); done
fi

args=()
for c in "${crates[@]}"; do args+=(-p "$c"); done

# Own target dir: --cfg loom rebuilds everything, and must not thrash the normal build's cache.
# Each model bounds its own preemptions; LOOM_MAX_PREEMPTIONS caps any that does not.
export LOOM_MAX_PREEMPTIONS="${LOOM_MAX_PREEMPTIONS:-2}"
RUSTFLAGS="--cfg loom ${RUSTFLAGS:-}" \
  cargo test --release --target-dir target/loom "${args[@]}" --lib --tests -- loom_ --test-threads=2
