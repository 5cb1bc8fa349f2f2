#!/usr/bin/env bash
# The cluster capture benchmark (see bench/cluster_capture.py --help and docs/benchmarks.md).
set -euo pipefail
exec python3 "$(dirname "$0")/cluster_capture.py" "$@"
