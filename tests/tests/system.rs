//! System tests: real processes, network namespaces and QEMU guests.
//!
//! They need root and the packages from `tests/scripts/install-deps.sh`;
//! without them each test prints a loud `SKIPPED:` line and passes (set
//! `RACKBOOT_REQUIRE_SYSTEM_TESTS=1` to make that a failure). Run with
//! `cargo test -p rackboot-tests --test system -- --nocapture` to watch.

// Test modules live in `tests/system/`. A crate root file looks for its
// modules beside itself, hence the explicit paths.
#[path = "system/harness_selftest.rs"]
mod harness_selftest;
