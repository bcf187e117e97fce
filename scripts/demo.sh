#!/usr/bin/env bash
#! The main job, for now: an NA ping between two processes over ofi+tcp on 127.0.0.1, each hop
#! printed, then a rate summary (round-trip p50/p99 and message rate at 8 B, 64 B, 4 KiB).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh

echo "== building (release)"
cargo build --release -q -p na --example na_ping
target_dir="$(cargo metadata --format-version 1 --no-deps | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')"
bin="$target_dir/release/examples/na_ping"

log="$(mktemp)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then kill "$server_pid"; fi
  rm -f "$log"
}
trap cleanup EXIT

port="${NA_DEMO_PORT:-0}"
echo "== server process: na_ping server ofi+tcp://127.0.0.1:$port"
"$bin" server "ofi+tcp://127.0.0.1:$port" >"$log" 2>&1 &
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

echo "== client process: na_ping client $addr"
client_log="$log.client"
"$bin" client "$addr" --iters "${NA_DEMO_ITERS:-2000}" >"$client_log"
wait "$server_pid" 2>/dev/null || true
server_pid=""

sed -n '1p' "$client_log"
echo "-- one ping, hop by hop ([process wall-clock seconds.µs]):"
grep -E '^  \[client .*\] [12]\.|^ {20,}' "$client_log"
grep -E '^  \[server' "$log"
grep -E '^  \[client .*\] 5\.' "$client_log"
echo "-- rate summary (both processes spin on progress(0); round trip = request + reply):"
sed -n '/^payload/,$p' "$client_log"
rm -f "$client_log"
