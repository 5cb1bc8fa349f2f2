#!/usr/bin/env bash
# Installs the S3-protocol server the object-store tests (crates/flashback/tests/s3.rs) start on
# 127.0.0.1: moto's standalone server (PyPI `moto[server]`, pinned), into a Python virtual
# environment in a cache directory, and prints the environment variable that points the tests
# at it:
#
#   FLASHBACK_TEST_MOTO=<venv>/bin/moto_server
#
# Usage:
#   scripts/install-s3-test-server.sh            # install (when missing), print the `export` line
#   eval "$(scripts/install-s3-test-server.sh)"  # … and set it in this shell
#
# Idempotent: a venv whose moto imports and has the pinned version is used as it is (well under
# a second). Cache dir: $FLASHBACK_MOTO_VENV, else ${XDG_CACHE_HOME:-~/.cache}/flashback-moto (the
# tests look there too when FLASHBACK_TEST_MOTO is unset). Progress goes to stderr; stdout
# carries only the export line.
set -euo pipefail

MOTO_VERSION=5.2.5
VENV="${FLASHBACK_MOTO_VENV:-${XDG_CACHE_HOME:-${HOME:?set HOME or FLASHBACK_MOTO_VENV}/.cache}/flashback-moto}"
BIN="$VENV/bin/moto_server"

installed() {
    [[ -x "$BIN" && -x "$VENV/bin/python" ]] &&
        [[ "$("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("moto"))' 2>/dev/null)" == "$MOTO_VERSION" ]] &&
        "$VENV/bin/python" -c 'import flask, werkzeug' 2>/dev/null
}

if ! installed; then
    py=""
    for c in python3 python; do
        if command -v "$c" >/dev/null && "$c" -c 'import venv, ensurepip' 2>/dev/null; then
            py="$c"
            break
        fi
    done
    if [[ -z "$py" ]]; then
        echo "install-s3-test-server: no Python with venv found; install python3-venv" \
             "(apt-get install python3-venv) and run this again" >&2
        exit 1
    fi
    echo "install-s3-test-server: installing moto[server]==$MOTO_VERSION into $VENV" >&2
    "$py" -m venv "$VENV" >&2
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check \
        "moto[server]==$MOTO_VERSION" >&2
    if ! installed; then
        echo "install-s3-test-server: $BIN does not work after installing; remove $VENV and retry" >&2
        exit 1
    fi
fi
echo "export FLASHBACK_TEST_MOTO=$BIN"
