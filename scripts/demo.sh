#!/usr/bin/env bash
# The end-to-end demo on a fresh machine with Rust: installs redis-server if missing, then runs
# `flashback demo` (a throwaway redis-server, captured; an accident; a restore to the second
# before it, printed next to the damaged data).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
exec cargo run --release -- demo "$@"
