#!/usr/bin/env bash
# Restore time at the end of a long history, with compaction against without
# (see bench/restore_history.py --help and docs/benchmarks.md).
# Python 3 standard library only; needs redis-server and target/release/flashback.
set -euo pipefail
exec python3 "$(dirname "$0")/restore_history.py" "$@"
