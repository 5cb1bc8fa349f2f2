#!/usr/bin/env bash
# Installs what the tests and the demo need, only when missing: redis-server and redis-cli from
# Debian's packages. Uses sudo only when not already root. A custom server build can be used
# instead by setting FLASHBACK_TEST_REDIS_SERVER=/path/to/redis-server (then nothing is installed).
set -euo pipefail

if [[ -n "${FLASHBACK_TEST_REDIS_SERVER:-}" ]]; then
    "$FLASHBACK_TEST_REDIS_SERVER" --version
    exit 0
fi
if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then
    exit 0
fi
if ! command -v apt-get >/dev/null; then
    echo "error: redis-server is missing and this is not a Debian/Ubuntu system (no apt-get):" \
         "install redis-server 7.0+ (or valkey-server) yourself, or set FLASHBACK_TEST_REDIS_SERVER" >&2
    exit 1
fi
SUDO=()
if [[ "$(id -u)" != 0 ]]; then
    SUDO=(sudo)
fi
echo "installing redis-server and redis-tools with apt-get" >&2
"${SUDO[@]}" apt-get update
"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y redis-server redis-tools
# The Debian package starts a system redis on :6379; the tests and the demo use their own
# servers on random ports, so it can stay or go, it is not used.
redis-server --version
