#!/usr/bin/env bash
# Key-level restore (10 keys) against a full restore of a ~1 GB dataset, memory and time, in
# the same run (see bench/key_restore.py --help and docs/benchmarks.md).
# Python 3 standard library only; needs redis-server, redis-cli, redis-benchmark, cargo.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
B=${FLASHBACK_BIN:-$REPO/target/release/flashback}
[ -x "$B" ] || (cd "$REPO" && cargo build --release -q -p flashback)
FLASHBACK_BIN=$B exec python3 "$(dirname "$0")/key_restore.py" "$@"
