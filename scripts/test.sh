#!/usr/bin/env bash
# scripts/test.sh: build rackboot and run its whole test suite.
#
# The one command for a fresh Debian 12 machine (and for CI, via .ci/run):
#   * as root: installs the system-test dependencies
#     (tests/scripts/install-deps.sh: qemu, ipxe-qemu, ipxe, ovmf, busybox-static, cpio,
#     grpcurl, ...) and sets RACKBOOT_REQUIRE_SYSTEM_TESTS=1, so that system
#     tests fail instead of skipping when something is missing;
#   * not root: system tests that need root skip loudly ("SKIPPED: ...");
#   * installs cargo-nextest if missing;
#   * builds all binaries (the system tests run target/debug/rackboot*)
#     and every test target and example in one cargo invocation, then runs every test
#     with nextest (.config/nextest.toml: QEMU tests one
#     at a time, hung tests killed after 6 minutes), then the doctests.
#
# Extra arguments go to `cargo nextest run`, e.g. `scripts/test.sh -E
# 'test(pxe)'`. Set RACKBOOT_REQUIRE_SYSTEM_TESTS=0 as root to allow skips.
set -euo pipefail

cd "$(dirname -- "${BASH_SOURCE[0]}")/.."

log() {
    printf '\n==> %s\n' "$*" >&2
}

if [[ "$(id -u)" -eq 0 ]]; then
    log "installing system-test dependencies (tests/scripts/install-deps.sh)"
    tests/scripts/install-deps.sh
    export RACKBOOT_REQUIRE_SYSTEM_TESTS="${RACKBOOT_REQUIRE_SYSTEM_TESTS:-1}"
else
    log "not root: system tests that need root will be skipped (run as root to include them)"
fi

if ! cargo nextest --version >/dev/null 2>&1; then
    log "installing cargo-nextest"
    cargo install cargo-nextest --locked
fi

log "building binaries and tests: cargo build --workspace --bins --tests --examples --locked"
cargo build --workspace --bins --tests --examples --locked

log "running tests: cargo nextest run --workspace --locked --no-fail-fast${RACKBOOT_REQUIRE_SYSTEM_TESTS:+ (RACKBOOT_REQUIRE_SYSTEM_TESTS=$RACKBOOT_REQUIRE_SYSTEM_TESTS)}"
status=0
cargo nextest run --workspace --locked --no-fail-fast "$@" || status=$?

# nextest does not run doctests; run them even when tests failed, like
# --no-fail-fast, and fail at the end.
log "running doctests: cargo test --workspace --doc --locked"
cargo test --workspace --doc --locked || status=$?

if [[ $status -ne 0 ]]; then
    log "FAILED (exit status $status)"
else
    log "all tests passed"
fi
exit "$status"
