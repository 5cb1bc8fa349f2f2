#!/usr/bin/env bash
# Runs every cargo-fuzz target in fuzz/fuzz_targets/ for SECONDS_PER_TARGET seconds (default 20)
# over a scratch copy of its seeds (fuzz/seeds/<target>/, committed; never grown by a run), and
# fails on the first crash, naming the target and the input that crashed it. Installs the
# pinned cargo-fuzz when missing. scripts/test.sh runs it; docs/testing.md says how to replay a
# crash and add a target (its file in fuzz_targets/ and its [[bin]] in fuzz/Cargo.toml).
#
# Exit: 0 no crash, 1 a crash or a build failure, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_FUZZ_VERSION=0.13.2
# No sanitizer by default: the targets are safe Rust (a panic, an overflow or a hang is what
# they find, and debug assertions catch those), and AddressSanitizer doubled the cold build
# (libFuzzer's C++ and zstd's C instrumented) and ran ~9x fewer inputs per second.
# FLASHBACK_FUZZ_SANITIZER=address for a long local run that also checks zstd's C.
sanitizer=${FLASHBACK_FUZZ_SANITIZER:-none}
seconds=${1:-20}
if [[ $# -gt 1 || ! "$seconds" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: scripts/fuzz.sh [SECONDS_PER_TARGET]  (default 20)" >&2
    exit 2
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
    echo "error: fuzzing needs the nightly toolchain: rustup toolchain install nightly" >&2
    exit 1
fi
if [[ "$(cargo fuzz --version 2>/dev/null || true)" != "cargo-fuzz $CARGO_FUZZ_VERSION" ]]; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked
fi

targets=()
for f in fuzz/fuzz_targets/*.rs; do
    t=$(basename "$f" .rs)
    # A file without its [[bin]] would be skipped by cargo silently; say so instead.
    if ! grep -q "^path = \"fuzz_targets/$t.rs\"" fuzz/Cargo.toml; then
        echo "error: fuzz/fuzz_targets/$t.rs has no [[bin]] in fuzz/Cargo.toml (name = \"$t\", path = \"fuzz_targets/$t.rs\")" >&2
        exit 1
    fi
    targets+=("$t")
done

# The fuzz workspace's own target dir (fuzz/target): its sanitizer flags would invalidate the
# main build's, and cargo-fuzz looks for the binaries there.
unset CARGO_TARGET_DIR
cargo +nightly fuzz build -s "$sanitizer"
work=$(mktemp -d "${TMPDIR:-/tmp}/flashback-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
    corpus="$work/$t/corpus"
    artifacts="$work/$t/artifacts"
    mkdir -p "$corpus" "$artifacts"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -R "fuzz/seeds/$t/." "$corpus/"
    fi
    echo "fuzz: $t for ${seconds}s ($(ls "$corpus" | wc -l) seeds)" >&2
    # -rss_limit_mb: 2 GiB is libFuzzer's default, kept explicit: the decoders must bound what
    # a crafted length makes them use, and memory over it is reported as a crash. (Catching a
    # single oversized malloc before it is touched, -malloc_limit_mb, needs a sanitizer.)
    if ! cargo +nightly fuzz run -s "$sanitizer" "$t" "$corpus" -- \
        -max_total_time="$seconds" -rss_limit_mb=2048 -artifact_prefix="$artifacts/" \
        -print_final_stats=1 >"$work/$t/log" 2>&1; then
        tail -n 40 "$work/$t/log" >&2
        kept="fuzz/artifacts/$t"
        mkdir -p "$kept"
        cp "$artifacts"/* "$kept/" 2>/dev/null || true
        crash=$(ls "$kept" 2>/dev/null | head -n 1)
        echo "error: fuzz target $t crashed on fuzz/artifacts/$t/${crash:-?} (replay: cargo +nightly fuzz run -s $sanitizer $t fuzz/artifacts/$t/${crash:-FILE}); make it a regression test in crates/format/tests/ and fix it" >&2
        exit 1
    fi
    grep -E '^stat::number_of_executed_units|^Done ' "$work/$t/log" | tr '\n' ' ' >&2 || true
    echo >&2
done
echo "fuzz: ${#targets[@]} targets ran ${seconds}s each without a crash: ${targets[*]}" >&2
