#!/usr/bin/env bash
# Restore at T vs a bare load of the state at T and vs Redis's own AOF-PITR path, on one
# steady-state history with rolling bases (see bench/restore_speed.py --help, docs/benchmarks.md).
# Python 3 standard library only; needs redis-server, redis-check-aof, target/release/flashback.
set -euo pipefail
exec python3 "$(dirname "$0")/restore_speed.py" "$@"
