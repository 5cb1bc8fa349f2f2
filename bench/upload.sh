#!/usr/bin/env bash
# Upload throughput of the capture agent against raw object_store PUTs of the same bytes
# (see bench/upload.py --help and docs/benchmarks.md). Python 3 standard library only; needs
# redis-server, moto_server (scripts/install-s3-test-server.sh), target/release/flashback and
# target/release/examples/upload_bench (cargo build --release -p flashback --example upload_bench).
set -euo pipefail
exec python3 "$(dirname "$0")/upload.py" "$@"
