//! System tests: real processes, network namespaces and QEMU guests.
//!
//! They need root and the packages from `tests/scripts/install-deps.sh`;
//! without them each test prints a loud `SKIPPED:` line and passes (set
//! `RACKBOOT_REQUIRE_SYSTEM_TESTS=1` to make that a failure). Run with
//! `cargo test -p rackboot-tests --test system -- --nocapture` to watch.
//!
//! Tests of rackboot itself run the workspace's binaries from
//! `target/debug/` (`rackboot`, `rackboot-coordinator`, `rackboot-agent`):
//! build them first with `cargo build --workspace --bins`
//! (`scripts/test.sh` does). The `cli` and `grpc_reflection` tests use
//! loopback only and need no root.
//!
//! * `cli`: `rackboot` against a loopback coordinator (push, errors);
//! * `grpc_reflection`: `grpcurl` lists and calls the coordinator's API;
//! * `harness_selftest`: the harness's own artifacts, namespaces and QEMU;
//! * `pxe_boot`: a QEMU guest PXE-boots from a rack agent (root, QEMU).

// Test modules live in `tests/system/`. A crate root file looks for its
// modules beside itself, hence the explicit paths.
#[path = "system/cli.rs"]
mod cli;
#[path = "system/grpc_reflection.rs"]
mod grpc_reflection;
#[path = "system/harness_selftest.rs"]
mod harness_selftest;
#[path = "system/pxe_boot.rs"]
mod pxe_boot;
