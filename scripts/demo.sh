#!/usr/bin/env bash
#! The main job: an engine and a client in two processes over ofi+tcp on 127.0.0.1. One traced
#! "update" RPC (key + 64 B inline + a 64 KiB bulk region the server PULLs) printed hop by hop
#! through na, hg and abt in both processes, then a throughput summary with tracing off.
#! Set DEMO_NA_PING=1 to run the NA ping (the layer below, scripts' previous demo) first, and
#! DEMO_OFI=net to run both processes over XNET (libfabric's native RDM over TCP) instead of rxm.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== building (release)"
cargo build --release -q -p daos-rs-tests --bin rpc_demo
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target_dir/release/rpc_demo"

log="$(mktemp)"
client_log="$log.client"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill "$server_pid"; fi
  rm -f "$log" "$client_log"
}
trap cleanup EXIT

port="${DEMO_PORT:-${NA_DEMO_PORT:-0}}"
ofi="${DEMO_OFI:-tcp}"
echo "== engine process: rpc_demo server ofi+$ofi://127.0.0.1:$port"
"$bin" server "ofi+$ofi://127.0.0.1:$port" >"$log" 2>&1 &
server_pid=$!
addr=""
for _ in $(seq 1 100); do
  addr="$(sed -n 's/^server: listening on \([^ ]*\).*/\1/p' "$log")"
  [ -n "$addr" ] && break
  if ! kill -0 "$server_pid" 2>/dev/null; then cat "$log"; echo "server failed" >&2; exit 1; fi
  sleep 0.1
done
[ -n "$addr" ] || { cat "$log"; echo "server did not start" >&2; exit 1; }
head -n 1 "$log"

echo "== client process: rpc_demo client $addr"
if ! "$bin" client "$addr" ${DEMO_QUICK:+--quick} >"$client_log"; then
  cat "$client_log" "$log"
  echo "client failed" >&2
  exit 1
fi
for _ in $(seq 1 100); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
wait "$server_pid" 2>/dev/null || true
server_pid=""

sed -n '1p' "$client_log"
echo "-- one update RPC, hop by hop: both processes' span enters (→) and closes (← with µs inside),"
echo "   merged by wall clock [process ss.µs]; idle progress rounds are left out. Server: hg.request"
echo "   is decoded in the progress ULT, hg.handler (in trigger) hands the request to a new ULT"
echo "   'update' (as the engine does), which pulls the bulk over na.get, waits on an eventual set"
echo "   by the transfer's callback, stores the bytes and responds. na.get and the reply's"
echo "   na.inject_expected run inside hg.bulk_transfer and hg.respond: no progress holds the NA"
echo "   context then (else they would be handed to it). Request and reply are small enough for NA"
echo "   to inject (copied at once, no send completion). The handler read its input in the request's"
echo "   buffer, which its handle keeps: the next progress posts a pooled buffer in its place."
grep -h '^@' "$client_log" "$log" | sort -s -k1,1 | cut -d' ' -f2-
grep -E '^client: update done' "$client_log"
echo "-- throughput, tracing off (client and engine spin on progress; round trip = request + reply; load average $(cut -d" " -f1-3 /proc/loadavg)):"
sed -n '/^  *input/,$p' "$client_log"
grep -E '^server: stopped' "$log" || true

if [ -n "${DEMO_NA_PING:-}" ]; then
  echo
  echo "== the layer below: NA ping (na/examples/na_ping.rs)"
  cargo build --release -q -p na --example na_ping
  ping_bin="$target_dir/release/examples/na_ping"
  "$ping_bin" server "ofi+tcp://127.0.0.1:0" >"$log" 2>&1 &
  server_pid=$!
  addr=""
  for _ in $(seq 1 100); do
    addr="$(sed -n 's/^server: listening on \([^ ]*\).*/\1/p' "$log")"
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { cat "$log"; echo "na_ping server did not start" >&2; exit 1; }
  "$ping_bin" client "$addr" --iters "${NA_DEMO_ITERS:-2000}" | sed -n '/^payload/,$p'
  wait "$server_pid" 2>/dev/null || true
  server_pid=""
fi
