#!/usr/bin/env bash
# Rolling bases: restore at T vs a bare load of an RDB of the state at T, and the agent's
# extra CPU/RSS with rolling bases on (see bench/rolling.py --help and docs/benchmarks.md).
# Python 3 standard library only; needs redis-server and target/release/flashback.
set -euo pipefail
exec python3 "$(dirname "$0")/rolling.py" "$@"
