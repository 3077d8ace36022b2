//! Boot artifacts for QEMU guests, built by `tests/scripts/` and cached under
//! `target/rackboot-test-artifacts/` ([`artifacts_dir`]).
//!
//! * [`kernel`]: Debian's amd64 kernel (`fetch-kernel.sh`, downloaded once with
//!   `apt-get download`, never installed on the host);
//! * [`initramfs`]: a busybox initramfs whose `/init` prints
//!   `RACKBOOT-MARKER: <marker>` on the console and powers off
//!   (`build-initramfs.sh`);
//! * [`net_initramfs`]: the same with the e1000/virtio-net modules loaded
//!   and, when the kernel command line has `rackboot.dhcp=1`, a DHCP lease
//!   taken with busybox udhcpc (printed as `RACKBOOT-DHCP: bound ip=...`).
//!
//! The console lines `/init` prints, in order:
//!
//! ```text
//! RACKBOOT-KERNEL: <uname -r>
//! RACKBOOT-CMDLINE: <contents of /proc/cmdline>
//! RACKBOOT-NET: <iface> <mac>           (net_initramfs: one per interface)
//! RACKBOOT-DHCP: bound ip=... mask=... router=... siaddr=... serverid=... boot_file=...
//!                                       (net_initramfs + rackboot.dhcp=1;
//!                                        `RACKBOOT-DHCP: failed` otherwise)
//! RACKBOOT-BOOTINFO: NODE=.. IMAGE=.. KERNEL_BLAKE3=.. KERNEL_VERSION=.. LOG_HOST=..
//!                                       (also rackboot.bootinfo=1: from
//!                                        http://<dhcp server>/boot-info.env;
//!                                        `RACKBOOT-BOOTINFO: failed <why>`
//!                                        otherwise)
//! RACKBOOT-LOG-SENT                     (after the syslog line
//!                                        `RACKBOOT-LOG <marker> image=<IMAGE>`
//!                                        went to UDP 514 on LOG_HOST)
//! RACKBOOT-MARKER: <marker>
//! ```
//!
//! All functions are safe to call from parallel tests: work is serialised
//! within the process, and the scripts write their outputs atomically.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result, ensure};

use crate::util::run;

/// Serialises artifact builds within this process.
static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Default marker of `build-initramfs.sh`.
pub const DEFAULT_MARKER: &str = "RACKBOOT-BOOT-OK";

/// Prefix of the marker line printed by the initramfs: the full line is
/// `RACKBOOT-MARKER: <marker>`.
pub const MARKER_PREFIX: &str = "RACKBOOT-MARKER: ";

/// The marker line an initramfs built for `marker` prints.
pub fn marker_line(marker: &str) -> String {
    format!("{MARKER_PREFIX}{marker}")
}

/// `target/rackboot-test-artifacts` (see [`crate::target_dir`]); created on
/// demand.
pub fn artifacts_dir() -> Result<PathBuf> {
    let dir = crate::target_dir().join("rackboot-test-artifacts");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

fn kernel_dir() -> Result<PathBuf> {
    Ok(artifacts_dir()?.join("kernel"))
}

fn script(name: &str) -> Result<PathBuf> {
    let path = crate::scripts_dir().join(name);
    ensure!(
        path.is_file(),
        "helper script {} is missing",
        path.display()
    );
    Ok(path)
}

fn lock() -> std::sync::MutexGuard<'static, ()> {
    // A panic while holding the lock leaves nothing half-done that matters:
    // the scripts write atomically.
    BUILD_LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Path of Debian's kernel image (`vmlinuz`), fetching it on first use
/// (`tests/scripts/fetch-kernel.sh`, a few seconds with a Debian mirror).
pub fn kernel() -> Result<PathBuf> {
    let _guard = lock();
    let dir = kernel_dir()?;
    let vmlinuz = dir.join("vmlinuz");
    if !vmlinuz.is_file() {
        run(Command::new(script("fetch-kernel.sh")?).arg(&dir))
            .context("fetching the test kernel with tests/scripts/fetch-kernel.sh")?;
    }
    ensure!(
        vmlinuz.is_file(),
        "fetch-kernel.sh succeeded but {} is missing",
        vmlinuz.display()
    );
    Ok(vmlinuz)
}

/// Release string of the [`kernel`] (what `uname -r` prints in the guest),
/// e.g. `6.1.0-56-amd64`.
pub fn kernel_version() -> Result<String> {
    kernel()?;
    let path = kernel_dir()?.join("kernel-version");
    let version =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(version.trim().to_string())
}

/// Directory holding the kernel's NIC modules (e1000, virtio-net and their
/// dependencies) as `lib/modules/<version>/...`, plus a `load-order` file
/// listing them dependencies first.
pub fn kernel_modules_dir() -> Result<PathBuf> {
    kernel()?;
    let dir = kernel_dir()?.join("modules");
    ensure!(
        dir.join("load-order").is_file(),
        "{} has no load-order file; delete {} and retry",
        dir.display(),
        kernel_dir()?.display()
    );
    Ok(dir)
}

/// A gzip'd cpio initramfs whose `/init` prints `RACKBOOT-MARKER: <marker>`
/// (see the [module docs](self) for all its output) and powers off. Cached
/// per marker and script version.
///
/// `marker` must be a single line of printable text.
pub fn initramfs(marker: &str) -> Result<PathBuf> {
    build_initramfs(marker, None, None)
}

/// Like [`initramfs`], but the image also holds the [`kernel`]'s NIC modules
/// (e1000, virtio-net), loads them at boot, prints `RACKBOOT-NET: <iface>
/// <mac>` for each interface, and with `rackboot.dhcp=1` on the kernel command
/// line runs a DHCP client (interface: `rackboot.iface=NAME`, default the
/// first non-loopback one) before printing the marker.
pub fn net_initramfs(marker: &str) -> Result<PathBuf> {
    let modules = kernel_modules_dir()?;
    build_initramfs(marker, Some(&modules), None)
}

/// Like [`net_initramfs`], with the discovery probe ([`probe_binary`]): a
/// discovery image. With `rackboot.provisional=1` (added by the agent's
/// discovery script) and a lease, `/init` runs `rackboot-probe`, prints
/// `RACKBOOT-PROBE: node=<name>` and asks for a lease again.
pub fn discovery_initramfs(marker: &str) -> Result<PathBuf> {
    let modules = kernel_modules_dir()?;
    let probe = probe_binary()?;
    build_initramfs(marker, Some(&modules), Some(&probe))
}

/// The statically linked, stripped `rackboot-probe` built by
/// `scripts/build-probe.sh` (cargo decides whether it is up to date).
pub fn probe_binary() -> Result<PathBuf> {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("tests crate has no parent directory")?
        .to_path_buf();
    let out = artifacts_dir()?.join("rackboot-probe");
    let _guard = lock();
    let mut cmd = Command::new(repo.join("scripts/build-probe.sh"));
    cmd.arg(&out);
    run(&mut cmd).context("building the static rackboot-probe with scripts/build-probe.sh")?;
    ensure!(
        out.is_file(),
        "build-probe.sh succeeded but {} is missing",
        out.display()
    );
    Ok(out)
}

fn build_initramfs(marker: &str, modules: Option<&Path>, probe: Option<&Path>) -> Result<PathBuf> {
    ensure!(
        !marker.is_empty() && !marker.chars().any(char::is_control),
        "initramfs marker {marker:?} must be a non-empty single line without control characters"
    );
    let script = script("build-initramfs.sh")?;
    let script_text =
        std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?;

    // Cache key: everything that changes the image.
    let mut key = Fnv64::new();
    key.write(&script_text);
    key.write(b"\0marker\0");
    key.write(marker.as_bytes());
    if let Some(modules) = modules {
        key.write(b"\0modules\0");
        let load_order = std::fs::read(modules.join("load-order"))
            .with_context(|| format!("reading {}/load-order", modules.display()))?;
        key.write(&load_order);
    }
    if let Some(probe) = probe {
        key.write(b"\0probe\0");
        key.write(&std::fs::read(probe).with_context(|| format!("reading {}", probe.display()))?);
    }
    let kind = match (modules.is_some(), probe.is_some()) {
        (_, true) => "discovery-initramfs",
        (true, false) => "net-initramfs",
        (false, false) => "initramfs",
    };
    let out = artifacts_dir()?.join("initramfs").join(format!(
        "{kind}-{}-{:016x}.cpio.gz",
        slug(marker),
        key.finish()
    ));

    let _guard = lock();
    if !out.is_file() {
        let mut cmd = Command::new(&script);
        cmd.arg(&out).arg(marker);
        match modules {
            Some(dir) => cmd.env("RACKBOOT_INITRAMFS_MODULES", dir),
            None => cmd.env_remove("RACKBOOT_INITRAMFS_MODULES"),
        };
        match probe {
            Some(p) => cmd.env("RACKBOOT_INITRAMFS_PROBE", p),
            None => cmd.env_remove("RACKBOOT_INITRAMFS_PROBE"),
        };
        run(&mut cmd).context("building an initramfs with tests/scripts/build-initramfs.sh")?;
    }
    ensure!(
        out.is_file(),
        "build-initramfs.sh succeeded but {} is missing",
        out.display()
    );
    Ok(out)
}

/// Directory of Debian's arm64 kernel and busybox, fetched on first use
/// (`tests/scripts/fetch-arm64.sh`): `vmlinuz`, `kernel-version`, `busybox`.
pub fn arm64_dir() -> Result<PathBuf> {
    let _guard = lock();
    let dir = artifacts_dir()?.join("arm64");
    if !dir.join("vmlinuz").is_file() || !dir.join("busybox").is_file() {
        run(Command::new(script("fetch-arm64.sh")?).arg(&dir))
            .context("fetching the arm64 kernel and busybox with tests/scripts/fetch-arm64.sh")?;
    }
    ensure!(
        dir.join("vmlinuz").is_file() && dir.join("busybox").is_file(),
        "fetch-arm64.sh succeeded but {} lacks vmlinuz or busybox",
        dir.display()
    );
    Ok(dir)
}

/// An arm64 initramfs (Debian's arm64 busybox-static) whose `/init` prints
/// its lines and `RACKBOOT-MARKER: <marker>` and powers off; no modules.
pub fn arm64_initramfs(marker: &str) -> Result<PathBuf> {
    let busybox = arm64_dir()?.join("busybox");
    let script = script("build-initramfs.sh")?;
    let mut key = Fnv64::new();
    key.write(&std::fs::read(&script).with_context(|| format!("reading {}", script.display()))?);
    key.write(b"\0arm64\0");
    key.write(marker.as_bytes());
    let out = artifacts_dir()?.join("initramfs").join(format!(
        "arm64-initramfs-{}-{:016x}.cpio.gz",
        slug(marker),
        key.finish()
    ));
    let _guard = lock();
    if !out.is_file() {
        let mut cmd = Command::new(&script);
        cmd.arg(&out)
            .arg(marker)
            .env("BUSYBOX", &busybox)
            .env_remove("RACKBOOT_INITRAMFS_MODULES")
            .env_remove("RACKBOOT_INITRAMFS_PROBE");
        run(&mut cmd)
            .context("building an arm64 initramfs with tests/scripts/build-initramfs.sh")?;
    }
    Ok(out)
}

/// A file-name-safe, short rendering of `s`.
fn slug(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect()
}

/// FNV-1a, 64 bit: a hash that is stable across Rust versions (unlike
/// `DefaultHasher`), for cache file names.
struct Fnv64(u64);

impl Fnv64 {
    fn new() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slug_is_file_name_safe() {
        assert_eq!(slug("RACKBOOT-BOOT-OK"), "RACKBOOT-BOOT-OK");
        assert_eq!(slug("a b/c"), "a_b_c");
        assert_eq!(slug(&"x".repeat(100)).len(), 40);
    }

    #[test]
    fn fnv_is_stable() {
        let mut h = Fnv64::new();
        h.write(b"a");
        assert_eq!(h.finish(), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn marker_line_format() {
        assert_eq!(marker_line("X"), "RACKBOOT-MARKER: X");
    }
}
