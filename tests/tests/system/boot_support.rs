//! What the boot tests (`pxe_boot`, `uefi_boot`, `kernel_upgrade`) share:
//! their skip checks, per-run artifacts, and the checks of one guest boot
//! (console lines, boot-info, session and log line at the coordinator).
//! The topology itself is [`rackboot_tests::testbed`].

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use rackboot_tests::testbed::{self, ExpectedBoot, LOG_SENT, SessionAndLog, Testbed, blake3_file};
use rackboot_tests::{artifacts, commands_skip_reason, root_skip_reason};

/// The image command line of every boot test: console on the serial port,
/// a panic ends QEMU, and the initramfs takes a DHCP lease, fetches its
/// boot-info and sends its syslog line.
pub const CMDLINE: &str = "console=ttyS0 panic=-1 rackboot.dhcp=1 rackboot.bootinfo=1";

/// After [`LOG_SENT`], how long the line may take to reach the coordinator.
pub const LOG_TIMEOUT: Duration = Duration::from_secs(15);

/// Why a boot test must skip, if it must: not root, or a program missing.
pub fn skip_reason(extra_commands: &[&str]) -> Option<String> {
    let mut commands = vec![
        "qemu-system-x86_64",
        "ip",
        "bash",
        "timeout",
        "cpio",
        "busybox",
    ];
    commands.extend_from_slice(extra_commands);
    root_skip_reason().or_else(|| commands_skip_reason(&commands))
}

/// A marker unique to this run, `<prefix>-<pid>-<nanos>`.
pub fn unique_marker(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos:x}", std::process::id())
}

/// The kernel and a per-run net initramfs.
pub struct BootArtifacts {
    /// Per-run marker the initramfs prints (and logs).
    pub marker: String,
    /// Debian's kernel.
    pub kernel: PathBuf,
    /// Its blake3.
    pub kernel_blake3: String,
    /// Its release (`uname -r` in the guest).
    pub uname: String,
    /// The net initramfs for [`BootArtifacts::marker`]: delete it after the
    /// run ([`Testbed::remove_on_drop`]).
    pub initrd: PathBuf,
    /// Time it took to get them.
    pub secs: f64,
}

impl BootArtifacts {
    /// Fetches/builds them.
    pub fn get(marker_prefix: &str) -> Result<BootArtifacts> {
        let t = Instant::now();
        let marker = unique_marker(marker_prefix);
        let kernel = artifacts::kernel()?;
        Ok(BootArtifacts {
            kernel_blake3: blake3_file(&kernel)?,
            uname: artifacts::kernel_version()?,
            initrd: artifacts::net_initramfs(&marker)?,
            kernel,
            marker,
            secs: t.elapsed().as_secs_f64(),
        })
    }
}

/// What one checked boot measured and found.
pub struct BootReport {
    /// QEMU start → marker on the console.
    pub boot_secs: f64,
    /// The session and log line at the coordinator.
    pub found: SessionAndLog,
    /// The guest's boot-info line.
    pub info: testbed::BootInfoLine,
}

/// Checks the current guest's boot as `want` describes it, in console
/// order: the boot-info line (within `boot_timeout` of QEMU's start),
/// [`LOG_SENT`], the marker alone on its line, the kernel release `uname`
/// and a command line naming the node and image; then the session and log
/// line at the coordinator ([`testbed::check_session_and_log`]).
pub fn check_boot(
    tb: &mut Testbed,
    want: &ExpectedBoot<'_>,
    uname: &str,
    boot_timeout: Duration,
) -> Result<BootReport> {
    let guest = tb.guest()?;
    let started = Instant::now() - guest.elapsed();
    let remaining = |what: &str| {
        boot_timeout
            .checked_sub(started.elapsed())
            .with_context(|| format!("boot budget of {boot_timeout:?} spent before {what}"))
    };
    let info = testbed::check_bootinfo(guest, want, remaining("the boot-info line")?)?;
    guest.wait_for_line(LOG_SENT, remaining(LOG_SENT)?)?;
    let marker_line = artifacts::marker_line(want.marker);
    let line = guest.wait_for_line(&marker_line, remaining("the marker")?)?;
    let boot_secs = guest.elapsed().as_secs_f64();
    ensure!(
        line.trim() == marker_line,
        "marker must be alone on its line, got {line:?}"
    );
    let lines = guest.transcript_lines();
    let kernel_line = format!("RACKBOOT-KERNEL: {uname}");
    ensure!(
        lines.iter().any(|l| l.trim() == kernel_line),
        "no {kernel_line:?} line: the guest did not boot the pushed kernel"
    );
    let cmdline = lines
        .iter()
        .find_map(|l| l.split_once("RACKBOOT-CMDLINE:").map(|(_, c)| c.trim()))
        .context("no RACKBOOT-CMDLINE line in the transcript")?;
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let node_arg = format!("rackboot.node={}", want.node);
    let image_arg = format!("rackboot.image={}", want.image);
    for expected in CMDLINE
        .split_whitespace()
        .chain([node_arg.as_str(), image_arg.as_str()])
    {
        ensure!(
            words.contains(&expected),
            "kernel command line {cmdline:?} lacks {expected:?}"
        );
    }
    let found = testbed::check_session_and_log(tb, want, LOG_TIMEOUT)?;
    tb.ensure_running()?;
    Ok(BootReport {
        boot_secs,
        found,
        info,
    })
}
