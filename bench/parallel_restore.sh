#!/usr/bin/env bash
# Serial against partitioned (--parallel N) restore of one store: wall time of each, and the
# two results' DEBUG DIGEST (must be equal). See docs/benchmarks.md.
# Needs redis-server, redis-cli, redis-benchmark and a built flashback.
# Usage: bench/parallel_restore.sh [N] ; env KEYS (base keys), WRITES (log writes).
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=${FLASHBACK_BIN:-$REPO/target/release/flashback}
[ -x "$B" ] || (cd "$REPO" && cargo build --release -q -p flashback)
N=${1:-2}
KEYS=${KEYS:-200000}
WRITES=${WRITES:-400000}
DIR=$(mktemp -d)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
redis-server --port "$PORT" --save "" --appendonly no --enable-debug-command yes --dir "$DIR" --daemonize no >"$DIR/src.log" 2>&1 &
SRC=$!
AGENT=
cleanup() { [ -n "$AGENT" ] && kill "$AGENT" 2>/dev/null; kill "$SRC" 2>/dev/null; rm -rf "$DIR"; }
trap cleanup EXIT
until redis-cli -p "$PORT" ping >/dev/null 2>&1; do sleep 0.1; done
redis-cli -p "$PORT" DEBUG POPULATE "$KEYS" key 100 >/dev/null
"$B" capture --source "redis://127.0.0.1:$PORT" --store "$DIR/store" --name src 2>"$DIR/agent.log" &
AGENT=$!
until grep -q "replicas_waiting_bgsave:0\|slave0:.*online" <(redis-cli -p "$PORT" info replication); do sleep 0.2; done
redis-benchmark -p "$PORT" -n "$WRITES" -r "$KEYS" -P 16 -q -t set,incr,lpush,sadd,hset >/dev/null
sleep 3
kill -TERM "$AGENT"; wait "$AGENT" || true; AGENT=
digest() {
  local p; p=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  redis-server --port "$p" --save "" --enable-debug-command yes --dir "$(dirname "$1")" --dbfilename "$(basename "$1")" --daemonize no >/dev/null 2>&1 &
  local pid=$!
  until redis-cli -p "$p" ping 2>/dev/null | grep -q PONG; do sleep 0.1; done
  redis-cli -p "$p" DEBUG DIGEST; kill "$pid"; wait "$pid" 2>/dev/null || true
}
for n in 1 "$N"; do
  start=$(date +%s.%N)
  "$B" restore --store "$DIR/store" --latest --rdb "$DIR/r$n.rdb" --parallel "$n" --progress none >"$DIR/r$n.out"
  end=$(date +%s.%N)
  printf 'parallel %s: %.2f s  digest %s\n' "$n" "$(echo "$end - $start" | bc)" "$(digest "$DIR/r$n.rdb")"
  grep -E '^(applied|parallel|restore time)' "$DIR/r$n.out" | sed 's/^/    /'
done
