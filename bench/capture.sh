#!/usr/bin/env bash
# The capture benchmark (see bench/capture.py --help and docs/benchmarks.md).
# Python 3 standard library only; needs redis-server, redis-benchmark, target/release/flashback.
set -euo pipefail
exec python3 "$(dirname "$0")/capture.py" "$@"
