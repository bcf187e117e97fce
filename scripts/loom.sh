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

# The negative control: with `--cfg loom_weak` one ordering in na's op state is weakened on purpose,
# and the model must catch it (the test is `should_panic` under that cfg). Own target dir, na only.
for c in "${crates[@]}"; do
  if [ "$c" = "na" ]; then
    echo "== loom negative control: na with --cfg loom_weak (loom must find the stale outcome)"
    RUSTFLAGS="--cfg loom --cfg loom_weak ${RUSTFLAGS:-}" \
      cargo test --release --target-dir target/loom-weak -p na --lib -- --exact plugins::inproc::opstate::loom_tests::loom_op_outcome_is_published
  fi
done
