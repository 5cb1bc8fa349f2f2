#!/usr/bin/env bash
# flashback timeline from segment summaries against a full log scan, on a long capture
# (see bench/timeline.py --help and docs/benchmarks.md).
# Python 3 standard library only; needs redis-server, redis-benchmark and target/release/flashback.
set -euo pipefail
exec python3 "$(dirname "$0")/timeline.py" "$@"
