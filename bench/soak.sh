#!/usr/bin/env bash
# The soak benchmark: days of an agent's maintenance (compaction, retention, uploads, verify
# drills) compressed into minutes, its resources sampled over time
# (see bench/soak.py --help and docs/benchmarks.md).
# Python 3 standard library only; needs redis-server, target/release/flashback, and for
# --store s3 moto_server (scripts/install-s3-test-server.sh).
set -euo pipefail
exec python3 "$(dirname "$0")/soak.py" "$@"
