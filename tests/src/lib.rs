//! Test harness for rackboot's system tests.
//!
//! This crate is a library used by the integration tests in `tests/tests/`
//! (one binary, `system`). It provides:
//!
//! * [`netns`]: throw-away network namespaces ([`netns::Netns`]) with veth
//!   pairs, bridges and tap devices, all created *inside* namespaces that the
//!   test owns, removed again on drop;
//! * [`artifacts`]: a Debian kernel and busybox initramfs images, made by the
//!   shell scripts in `tests/scripts/` and cached under
//!   `target/rackboot-test-artifacts/`;
//! * [`daemon`]: rackboot's own binaries (coordinator, agent, CLI) as test
//!   processes with log files, found in `target/debug/`;
//! * [`qemu`]: a QEMU guest ([`qemu::QemuGuest`]) booting from the network
//!   (BIOS + iPXE option ROM, or UEFI with OVMF's own PXE stack) or directly
//!   from a kernel, whose serial console can be waited on line by line;
//! * [`testbed`]: the boot tests' topology (coordinator and rack agent in two
//!   namespaces, guests on the rack bridge) and checks of what a booted guest
//!   reports (boot-info, boot sessions, logs at the coordinator);
//! * [`tftplab`]: a rack agent serving a static root on a veth between two
//!   namespaces, with nftables loss and `tc tbf` rate limits, for tests with
//!   real TFTP clients and boot storms;
//! * [`dhcpcap`]: `tcpdump` captures in a namespace, decoded as DHCP, for
//!   tests that check what a server or relay put on the wire;
//! * skip helpers: [`is_root`], [`have_command`] and the
//!   [`require_root_or_skip!`] / [`require_commands_or_skip!`] macros.
//!
//! System tests need root (namespaces, tap devices) and a few Debian packages
//! (`tests/scripts/install-deps.sh` installs them). Without them a test prints
//! a loud `SKIPPED: ...` line and returns successfully, unless the
//! environment variable `RACKBOOT_REQUIRE_SYSTEM_TESTS=1` is set, in which
//! case skipping fails the test instead (for CI machines that must run them).
//!
//! ```no_run
//! use std::time::Duration;
//! use rackboot_tests::{artifacts, qemu::{QemuGuest, QemuOpts}, require_root_or_skip};
//!
//! # fn main() -> anyhow::Result<()> {
//! require_root_or_skip!(Ok(()));
//! let kernel = artifacts::kernel()?;
//! let initrd = artifacts::initramfs("HELLO")?;
//! let mut guest = QemuGuest::spawn(QemuOpts::direct_kernel("hello", kernel, initrd, "quiet"))?;
//! guest.wait_for_line("RACKBOOT-MARKER: HELLO", Duration::from_secs(120))?;
//! # Ok(())
//! # }
//! ```
//!
//! ## Invariants
//! - Test traffic goes only to loopback or to namespaces a test created;
//!   every namespace, bridge and process a helper creates is removed on
//!   drop.
//!
//! ## Must never depend on
//! the daemons as libraries for what a system test checks: they run as
//! processes, as an operator runs them.

pub mod artifacts;
pub mod daemon;
pub mod dhcpcap;
pub mod netns;
pub mod qemu;
pub mod testbed;
pub mod tftplab;
pub mod util;

use std::io::Write;
use std::path::{Path, PathBuf};

/// Name of the environment variable that turns skips into failures when set
/// to `1`: `RACKBOOT_REQUIRE_SYSTEM_TESTS=1 cargo test -p rackboot-tests`.
pub const REQUIRE_ENV: &str = "RACKBOOT_REQUIRE_SYSTEM_TESTS";

/// Whether the current process runs with effective uid 0.
///
/// Read from `/proc/self/status` (no `unsafe`); `false` if that fails.
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find_map(|line| line.strip_prefix("Uid:"))
                .and_then(|uids| uids.split_whitespace().nth(1).map(|euid| euid == "0"))
        })
        .unwrap_or(false)
}

/// Whether `program` is an executable file on `PATH` (or, when it contains a
/// `/`, at that path).
pub fn have_command(program: &str) -> bool {
    find_command(program).is_some()
}

/// Full path of `program` as found on `PATH`, like `command -v`.
pub fn find_command(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let is_exec = |p: &Path| {
        p.metadata()
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false)
    };
    if program.contains('/') {
        let p = PathBuf::from(program);
        return is_exec(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| is_exec(p))
}

/// The name of the running test, as libtest names its thread
/// (e.g. `harness_selftest::netns_veth_ping`), or `"<unknown test>"`.
pub fn current_test_name() -> String {
    std::thread::current()
        .name()
        .filter(|n| *n != "main")
        .unwrap_or("<unknown test>")
        .to_string()
}

/// Reports that the current test cannot run and why.
///
/// Prints a loud `SKIPPED: <test> <reason>` banner straight to the process's
/// stderr, bypassing libtest's output capture, so it shows in a plain
/// `cargo test` run too. Returns normally, so the caller should `return`
/// right after; the macros [`require_root_or_skip!`] and
/// [`require_commands_or_skip!`] do that.
///
/// # Panics
///
/// If `RACKBOOT_REQUIRE_SYSTEM_TESTS=1` is set: then a skip is a failure.
pub fn skip(reason: &str) {
    let test = current_test_name();
    let line = format!("SKIPPED: {test} {reason}");
    let bar = "#".repeat(line.len().min(100));
    // `eprintln!` would be captured (and hidden for a passing test); a
    // direct write to the stderr handle is not.
    let _ = writeln!(std::io::stderr().lock(), "\n{bar}\n{line}\n{bar}");
    if std::env::var(REQUIRE_ENV).as_deref() == Ok("1") {
        panic!("{line} (and {REQUIRE_ENV}=1 forbids skipping)");
    }
}

/// The reason for skipping when not root, or `None` when running as root.
pub fn root_skip_reason() -> Option<String> {
    (!is_root()).then(|| {
        "needs root (network namespaces, tap devices, QEMU networking); \
         run the tests as root, e.g. `sudo -E cargo test -p rackboot-tests`"
            .to_string()
    })
}

/// The reason for skipping when any of `programs` is missing from `PATH`,
/// or `None` when all are there.
pub fn commands_skip_reason(programs: &[&str]) -> Option<String> {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| !have_command(p))
        .collect();
    (!missing.is_empty()).then(|| {
        format!(
            "needs {} on PATH (run tests/scripts/install-deps.sh as root)",
            missing.join(", ")
        )
    })
}

/// Returns from the calling test (after a loud `SKIPPED:` message, see
/// [`skip`]) unless the process runs as root.
///
/// Use `require_root_or_skip!()` in tests returning `()` and
/// `require_root_or_skip!(Ok(()))` in tests returning a `Result`.
#[macro_export]
macro_rules! require_root_or_skip {
    () => {
        $crate::require_root_or_skip!(())
    };
    ($ret:expr) => {
        if let Some(reason) = $crate::root_skip_reason() {
            $crate::skip(&reason);
            return $ret;
        }
    };
}

/// Returns from the calling test (after a loud `SKIPPED:` message, see
/// [`skip`]) unless every listed program is on `PATH`.
///
/// `require_commands_or_skip!(["qemu-system-x86_64", "busybox"])` in tests
/// returning `()`, `require_commands_or_skip!(["ip"], Ok(()))` in tests
/// returning a `Result`.
#[macro_export]
macro_rules! require_commands_or_skip {
    ([$($prog:expr),+ $(,)?]) => {
        $crate::require_commands_or_skip!([$($prog),+], ())
    };
    ([$($prog:expr),+ $(,)?], $ret:expr) => {
        if let Some(reason) = $crate::commands_skip_reason(&[$($prog),+]) {
            $crate::skip(&reason);
            return $ret;
        }
    };
}

/// The workspace root (the parent of this crate's directory).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| manifest_dir.to_path_buf())
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` if set (relative paths are
/// taken from the workspace root), else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => workspace_root().join(dir),
        _ => workspace_root().join("target"),
    }
}

/// Directory of the helper shell scripts (`tests/scripts`).
pub fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts")
}
