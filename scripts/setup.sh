#!/usr/bin/env bash
#! Installs the system packages daos-rs builds against (idempotent; does nothing when they are there).
set -euo pipefail

# libfabric (ofi plugin + fi_pingpong for the floor benchmark), hwloc/udev (abt's topology feature),
# cmake/clang/libnl/ibverbs (the opt-in `ibverbs` feature vendors rdma-core), valgrind/hyperfine for
# benchmark tooling.
PKGS=(
  pkg-config build-essential
  libfabric-dev libfabric-bin
  libhwloc-dev libudev-dev
  cmake libclang-dev libnl-3-dev libnl-route-3-dev libibverbs-dev
)

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust (rustup) first" >&2
  exit 1
fi
