#!/usr/bin/env bash
# `flashback history KEY` over a big log: a primary gets ~MB_TARGET MB of replication stream
# (redis-benchmark SETs, random keys) with a few writes to one key before, among and after
# them; the agent captures it; then `history` of that key is timed, and of a key never written
# (the same full read). Prints the log size (replication bytes and bytes stored), the time, the
# throughput, and the ratio of a filtered read (segments skipped by `history::may_touch`) to the
# full scan (`--scan-all`), both in the same run.
#
# Usage: bench/history.sh [MB_TARGET=220]   (needs redis-server, redis-benchmark, cargo)
set -euo pipefail
MB_TARGET=${1:-220}
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=${FLASHBACK_BIN:-$REPO/target/release/flashback}
[ -x "$B" ] || (cd "$REPO" && cargo build --release -q)
WORK=$(mktemp -d)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done; rm -rf "$WORK"; }
trap cleanup EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" \
  --repl-diskless-sync-delay 0 --repl-backlog-size 512mb --logfile "$WORK/redis.log" &
PIDS+=($!)
cli() { redis-cli -p "$PORT" "$@"; }
until cli ping >/dev/null 2>&1; do sleep 0.1; done
# --segment-age 100ms and no pipelining: many segments (a long history has thousands; a busy primary with the
# default --segment-mib 32 seals one every few seconds)
# (redis-benchmark's values compress ~40x, so size alone would seal only a handful).
"$B" capture --source "redis://127.0.0.1:$PORT" --store "$WORK/store" --name bench --segment-age 100ms 2>"$WORK/agent.log" &
AGENT=$!
PIDS+=($AGENT)
until cli info replication | grep -q 'slave0:.*state=online'; do sleep 0.2; done
cli set hist:key v0 >/dev/null
# ~245 replication bytes per SET of a 200-byte value with a 16-byte key.
N=$(( MB_TARGET * 1000000 / 245 ))
half=$(( N / 2 ))
redis-benchmark -p "$PORT" -t set -n "$half" -d 200 -r 10000000 -P 1 -q >/dev/null
cli rename hist:key hist:renamed >/dev/null
cli append hist:renamed x >/dev/null
redis-benchmark -p "$PORT" -t set -n "$half" -d 200 -r 10000000 -P 1 -q >/dev/null
cli incr counter >/dev/null
cli append hist:renamed y >/dev/null
OFF=$(cli info replication | sed -n 's/^master_repl_offset:\([0-9]*\).*/\1/p')
until cli info replication | grep -q "slave0:.*offset=$OFF,"; do sleep 0.2; done
kill -TERM "$AGENT"; wait "$AGENT" || true
STORED=$(du -sb "$WORK/store" | cut -f1)
run() { # prints seconds, leaves the JSON in $WORK/out.json
  local t0 t1; t0=$(date +%s.%N)
  "$B" history "$@" --store "$WORK/store" --json >"$WORK/out.json"
  t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l
}
SCAN=$(run hist:key --scan-all)
SCAN_WRITES=$(python3 -c "import json; print(len(json.load(open('$WORK/out.json'))['writes']))")
FULL=$(run hist:key)
WRITES=$(python3 -c "import json; print(len(json.load(open('$WORK/out.json'))['writes']))")
read -r SEGS SKIPPED RECORDS < <(python3 -c "import json; d=json.load(open('$WORK/out.json')); print(d['segments_read'], d['segments_skipped'], d['records'])")
NONE=$(run never:written)
python3 - "$OFF" "$STORED" "$FULL" "$NONE" "$WRITES" "$SEGS" "$SKIPPED" "$RECORDS" "$SCAN" "$SCAN_WRITES" <<'PY'
import sys
off, stored, full, none, writes, segs, skipped, records, scan, scan_writes = sys.argv[1:]
off, stored, full, none, scan = int(off), int(stored), float(full), float(none), float(scan)
print(f"log: {off/1e6:.0f} MB of replication stream, {int(records):,} records, {int(segs)+int(skipped)} segments; {stored/1e6:.0f} MB stored")
print(f"history hist:key: {int(writes)} writes found in {full:.2f} s ({off/1e6/full:.0f} MB/s, {int(records)/full/1e6:.2f} M records/s)")
print(f"history of a key never written: {none:.2f} s")
print(f"history hist:key --scan-all (every segment read): {scan:.2f} s, {int(scan_writes)} writes")
print(f"filter: {skipped} of {int(segs)+int(skipped)} segments skipped; full scan / filtered = {scan/full:.1f}x")
assert int(writes) == 4, f"expected 4 writes to hist:key, got {writes}"
assert int(scan_writes) == int(writes), "the filtered history must find what the full scan finds"
PY
