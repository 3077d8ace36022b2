//! The rack test bed of the boot tests: a coordinator and a rack agent in
//! two network namespaces, driven with the real `rackboot` CLI, and QEMU
//! guests on the agent's rack bridge.
//!
//! ```text
//!   netns ctl                        netns rack
//!   coordinator 10.77.0.1:50051      agent --iface br0 (10.99.0.1/24)
//!   rackboot CLI                     br0 ── tap0 ── QEMU guest
//!        └── veth 10.77.0.1/30 ── 10.77.0.2/30 ──┘
//! ```
//!
//! The agent serves DHCP, TFTP, HTTP and syslog on br0; the first node it
//! accepts is node 1 at [`NODE1_ADDR`]. With [`TestbedOpts::static_files`]
//! it also gets a static root (firmware such as `ipxe.efi`).
//!
//! The second half of this module checks what a guest booted with
//! [`artifacts::net_initramfs`](crate::artifacts::net_initramfs) and
//! `rackboot.dhcp=1 rackboot.bootinfo=1` reports: its boot-info line
//! ([`BootInfoLine`]), and that its syslog line reached the coordinator tied
//! to the boot session of the kernel it was served ([`check_session_and_log`],
//! parsing `rackboot node show` ([`parse_sessions`]) and `rackboot logs`
//! ([`parse_logs`])).
//!
//! ```no_run
//! use rackboot_tests::testbed::{Testbed, TestbedOpts};
//! # fn main() -> anyhow::Result<()> {
//! let mut tb = Testbed::new("rb")?;
//! let result = tb.start(&TestbedOpts::default());
//! if result.is_err() {
//!     eprintln!("{}", tb.report());
//! }
//! # result
//! # }
//! ```

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::daemon::{self, CliOutput, Daemon};
use crate::netns::{Netns, veth_pair};
use crate::qemu::{QemuGuest, QemuOpts};

/// Where the coordinator listens (in namespace ctl).
pub const COORDINATOR_LISTEN: &str = "10.77.0.1:50051";
/// The URL the CLI and the agent use.
pub const COORDINATOR_URL: &str = "http://10.77.0.1:50051";
/// The agent's address on the rack bridge.
pub const RACK_BRIDGE_CIDR: &str = "10.99.0.1/24";
/// The agent's address (server, log host).
pub const SERVER_ADDR: &str = "10.99.0.1";
/// The first node's address: the agent's + 1.
pub const NODE1_ADDR: &str = "10.99.0.2";
/// The rack bridge in namespace rack.
pub const BRIDGE: &str = "br0";
/// The guest's tap device on [`BRIDGE`].
pub const TAP: &str = "tap0";
/// Timeout of one CLI call.
pub const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// What [`Testbed::start`] sets up besides the defaults.
#[derive(Debug, Clone, Default)]
pub struct TestbedOpts {
    /// Files copied (symlinks followed) into a static root directory given
    /// to the agent with `--static-root`, under their own file names; no
    /// static root when empty.
    pub static_files: Vec<PathBuf>,
    /// Further `rackboot-agent` flags (e.g. `--accept probe`).
    pub agent_args: Vec<String>,
    /// Further tap devices created in the rack namespace, not attached to
    /// the bridge (e.g. a guest's second NIC).
    pub extra_taps: Vec<String>,
}

/// An image to push with [`Testbed::push_image`].
#[derive(Debug, Clone)]
pub struct ImageSpec<'a> {
    /// Image name.
    pub name: &'a str,
    /// Kernel file.
    pub kernel: &'a Path,
    /// Initrd file.
    pub initrd: &'a Path,
    /// Kernel command line.
    pub cmdline: &'a str,
    /// `--kernel-version` (must agree with the kernel's boot header; empty
    /// = read it from there).
    pub kernel_version: &'a str,
    /// `--modules`: a kernel-module bundle, if any.
    pub modules: Option<&'a Path>,
    /// `--dtb`: a device tree blob, if any.
    pub dtb: Option<&'a Path>,
}

/// Namespaces, daemons, guests and a temporary directory; everything is
/// killed and removed on drop (guests first, namespaces last).
pub struct Testbed {
    guest: Option<QemuGuest>,
    /// Guests of earlier boots (exited), kept for [`Testbed::report`].
    past_guests: Vec<QemuGuest>,
    agent: Option<Daemon>,
    /// The agent's command line (program first), for [`Testbed::restart_agent`].
    agent_cmd: Option<Vec<std::ffi::OsString>>,
    coordinator: Option<Daemon>,
    rack: Netns,
    ctl: Netns,
    remove_on_drop: Vec<PathBuf>,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for Testbed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Testbed")
            .field("ctl", &self.ctl.name())
            .field("rack", &self.rack.name())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl Testbed {
    /// Creates the two namespaces (`<prefix>-ctl-…`, `<prefix>-rack-…`) and
    /// the temporary directory; nothing runs yet ([`Testbed::start`]).
    pub fn new(prefix: &str) -> Result<Testbed> {
        let ctl = Netns::create(&format!("{prefix}-ctl"))?;
        let rack = Netns::create(&format!("{prefix}-rack"))?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("rackboot-{prefix}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        Ok(Testbed {
            guest: None,
            past_guests: Vec::new(),
            agent: None,
            agent_cmd: None,
            coordinator: None,
            rack,
            ctl,
            remove_on_drop: Vec::new(),
            dir,
        })
    }

    /// Network, coordinator (waits until it accepts connections), agent on
    /// br0, and waits until the agent has registered rack `r1`.
    pub fn start(&mut self, opts: &TestbedOpts) -> Result<()> {
        let coordinator_bin = daemon::binary(daemon::COORDINATOR)?;
        let agent_bin = daemon::binary(daemon::AGENT)?;
        daemon::binary(daemon::CLI)?;

        veth_pair(
            &self.ctl,
            "rb-up",
            Some("10.77.0.1/30"),
            &self.rack,
            "rb-down",
            Some("10.77.0.2/30"),
        )?;
        self.rack
            .bridge_with_tap(BRIDGE, Some(RACK_BRIDGE_CIDR), TAP)?;
        for tap in &opts.extra_taps {
            self.rack.add_tap(tap)?;
        }

        let mut cmd = self.ctl.exec(&coordinator_bin);
        cmd.args(["--plaintext", "--listen", COORDINATOR_LISTEN, "--data"])
            .arg(self.dir.path().join("coordinator-data"));
        let coordinator = self.coordinator.insert(Daemon::spawn(
            "coordinator",
            cmd,
            &self.dir.path().join("coordinator.log"),
        )?);
        let listen: SocketAddr = COORDINATOR_LISTEN.parse()?;
        coordinator.wait_for_tcp(listen, Some(&self.ctl), Duration::from_secs(30))?;

        let mut cmd = self.rack.exec(&agent_bin);
        cmd.args([
            "--plaintext",
            "--rack",
            "r1",
            "--coordinator",
            COORDINATOR_URL,
            "--iface",
            BRIDGE,
            "--data",
        ])
        .arg(self.dir.path().join("agent-data"));
        if !opts.static_files.is_empty() {
            // Absolute, so the agent's view of it cannot depend on its cwd.
            let root = self.dir.path().join("static-root");
            std::fs::create_dir_all(&root)
                .with_context(|| format!("creating {}", root.display()))?;
            for file in &opts.static_files {
                let name = file
                    .file_name()
                    .with_context(|| format!("static file {} has no name", file.display()))?;
                // fs::copy follows symlinks (Debian's ipxe.efi is one).
                std::fs::copy(file, root.join(name)).with_context(|| {
                    format!("copying {} into {}", file.display(), root.display())
                })?;
            }
            cmd.arg("--static-root").arg(&root);
        }
        cmd.args(&opts.agent_args);
        self.agent_cmd = Some(
            std::iter::once(cmd.get_program().to_os_string())
                .chain(cmd.get_args().map(|a| a.to_os_string()))
                .collect(),
        );
        self.agent = Some(Daemon::spawn(
            "agent",
            cmd,
            &self.dir.path().join("agent.log"),
        )?);
        self.wait_rack_registered(Duration::from_secs(30))
    }

    /// Kills the coordinator (SIGKILL) and takes the control link down: the
    /// agent is cut off from every coordinator.
    pub fn stop_coordinator(&mut self) -> Result<()> {
        if let Some(mut c) = self.coordinator.take() {
            c.kill()?;
        }
        self.rack.ip(&["link", "set", "rb-down", "down"])?;
        Ok(())
    }

    /// Kills the agent and starts it again with the same command line (its
    /// log continues in `agent.log`, opened anew); waits until it serves.
    pub fn restart_agent(&mut self) -> Result<()> {
        let argv = self.agent_cmd.clone().context("agent not started")?;
        if let Some(mut a) = self.agent.take() {
            a.kill()?;
        }
        let (program, args) = argv.split_first().context("empty agent command")?;
        let mut cmd = std::process::Command::new(program);
        cmd.args(args);
        let log = self.dir.path().join("agent-restarted.log");
        let agent = self
            .agent
            .insert(Daemon::spawn("agent (restarted)", cmd, &log)?);
        agent.wait_for_log("rack agent serving", Duration::from_secs(30))?;
        Ok(())
    }

    fn wait_rack_registered(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let racks = self.cli(&["rack", "list"])?.success()?;
            if racks
                .stdout
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some("r1"))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!("rack r1 not registered {timeout:?} after the agent started:\n{racks}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `rackboot --coordinator URL <args>` in namespace ctl.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let mut all = vec!["--coordinator", COORDINATOR_URL];
        all.extend_from_slice(args);
        daemon::cli(Some(&self.ctl), &all, CLI_TIMEOUT)
    }

    /// `rackboot image push`; returns the manifest hash it prints last.
    pub fn push_image(&self, image: &ImageSpec<'_>) -> Result<String> {
        let mut args = vec![
            "image",
            "push",
            image.name,
            "--kernel",
            image.kernel.to_str().context("kernel path not UTF-8")?,
            "--initrd",
            image.initrd.to_str().context("initrd path not UTF-8")?,
            "--cmdline",
            image.cmdline,
            "--kernel-version",
            image.kernel_version,
        ];
        if let Some(m) = image.modules {
            args.extend(["--modules", m.to_str().context("modules path not UTF-8")?]);
        }
        if let Some(d) = image.dtb {
            args.extend(["--dtb", d.to_str().context("dtb path not UTF-8")?]);
        }
        let push = self.cli(&args)?.success()?;
        let manifest = push.last_line();
        ensure!(
            manifest.len() == 64 && manifest.bytes().all(|b| b.is_ascii_hexdigit()),
            "image push should end with the manifest hash:\n{push}"
        );
        Ok(manifest.to_string())
    }

    /// `rackboot assign <target...> IMAGE`, e.g. `assign(&["--default"], "img")`.
    pub fn assign(&self, target: &[&str], image: &str) -> Result<()> {
        let mut args = vec!["assign"];
        args.extend_from_slice(target);
        args.push(image);
        self.cli(&args)?.success().map(drop)
    }

    /// Starts a guest in namespace rack (its NICs on [`TAP`]); an earlier
    /// guest is killed first and kept for the report.
    pub fn boot(&mut self, opts: QemuOpts) -> Result<&mut QemuGuest> {
        if let Some(mut old) = self.guest.take() {
            old.kill()?;
            self.past_guests.push(old);
        }
        let guest = QemuGuest::spawn_in(&self.rack, opts)?;
        Ok(self.guest.insert(guest))
    }

    /// The current guest.
    pub fn guest(&mut self) -> Result<&mut QemuGuest> {
        self.guest.as_mut().context("no guest started")
    }

    /// The agent.
    pub fn agent(&self) -> Result<&Daemon> {
        self.agent.as_ref().context("agent not started")
    }

    /// Fails (quoting its log) if the coordinator or the agent has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        for d in [self.coordinator.as_mut(), self.agent.as_mut()]
            .into_iter()
            .flatten()
        {
            d.ensure_running()?;
        }
        Ok(())
    }

    /// The rack namespace (agent, bridge [`BRIDGE`], taps).
    pub fn rack_netns(&self) -> &Netns {
        &self.rack
    }

    /// The temporary directory (logs, data, static root); removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Deletes `path` when the test bed is dropped (e.g. a per-run
    /// initramfs in the artifacts cache).
    pub fn remove_on_drop(&mut self, path: PathBuf) {
        self.remove_on_drop.push(path);
    }

    /// `(node, address)` of the machine with `mac` in `rackboot node list`.
    pub fn node_of_mac(&self, mac: &str) -> Result<(String, String)> {
        let list = self.cli(&["node", "list"])?.success()?;
        node_of_mac_in(&list, mac)
    }

    /// Logs of both daemons and the transcripts of all guests, for failure
    /// reports.
    pub fn report(&self) -> String {
        let mut r = String::new();
        for d in [&self.coordinator, &self.agent].into_iter().flatten() {
            let _ = writeln!(r, "{}\n", d.report());
        }
        for g in self.past_guests.iter().chain(&self.guest) {
            let _ = writeln!(
                r,
                "===== QEMU transcript of {} ({}; {:.1} s since start) =====\n{}\n--- qemu stderr ---\n{}\n===== end of QEMU transcript =====",
                g.name(),
                g.transcript_path().display(),
                g.elapsed().as_secs_f64(),
                g.transcript().trim_end(),
                g.stderr().trim_end()
            );
        }
        let _ = writeln!(r, "(temp dir {})", self.dir.path().display());
        r
    }

    /// Runs `body`; on failure prints a banner with `test`'s name, the
    /// elapsed time and [`Testbed::report`] to stderr before returning the
    /// error.
    pub fn run_reporting<T>(
        &mut self,
        test: &str,
        body: impl FnOnce(&mut Testbed) -> Result<T>,
    ) -> Result<T> {
        let t0 = Instant::now();
        let result = body(self);
        if result.is_err() {
            eprintln!(
                "\n######## {test} FAILED after {:.1} s; diagnostics follow ########\n{}",
                t0.elapsed().as_secs_f64(),
                self.report()
            );
        }
        result
    }
}

impl Drop for Testbed {
    fn drop(&mut self) {
        // Kill the guests and daemons before the namespaces go.
        self.guest.take();
        self.past_guests.clear();
        self.agent.take();
        self.coordinator.take();
        for path in self.remove_on_drop.drain(..) {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// `(node, address)` of the machine with `mac` in the output of `rackboot
/// node list` (columns found by their header names, `NODE` and `ADDRESS`).
pub fn node_of_mac_in(list: &CliOutput, mac: &str) -> Result<(String, String)> {
    let mac = normalize_mac(mac);
    // Columns by header name: NODE NAME RACK ADDRESS MAC IMAGE.
    let header: Vec<&str> = list
        .stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let column = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .with_context(|| format!("`node list` has no {name} column:\n{list}"))
    };
    let (node_col, addr_col) = (column("NODE")?, column("ADDRESS")?);
    let row: Vec<&str> = list
        .stdout
        .lines()
        .skip(1)
        .find(|l| normalize_mac(l).contains(&mac))
        .with_context(|| format!("`node list` has no row for {mac}:\n{list}"))?
        .split_whitespace()
        .collect();
    let cell = |i: usize| {
        row.get(i)
            .map(|s| s.to_string())
            .with_context(|| format!("short row {row:?} in `node list`:\n{list}"))
    };
    Ok((cell(node_col)?, cell(addr_col)?))
}

/// Lower-case MAC with `:` separators (`52-54-…` and `52:54:…` compare
/// equal).
pub fn normalize_mac(s: &str) -> String {
    s.to_ascii_lowercase().replace('-', ":")
}

/// blake3 of a file's contents, lower-case hex (what `image push` and the
/// agent name blobs by).
pub fn blake3_file(path: &Path) -> Result<String> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(blake3::hash(&bytes).to_hex().to_string())
}

/// Copies `kernel` to `dest` with `padding` appended. The Linux x86 boot
/// protocol loads only what the setup header declares, so the copy boots
/// like the original while its blake3 (and so its blob) differs.
pub fn padded_kernel(kernel: &Path, dest: &Path, padding: &[u8]) -> Result<()> {
    let mut bytes =
        std::fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    bytes.extend_from_slice(padding);
    std::fs::write(dest, bytes).with_context(|| format!("writing {}", dest.display()))
}

/// Writes `kernel` to `dest` with the release in its boot header replaced
/// by `release` (same length: the setup code is not moved). The running
/// kernel still reports its built-in release; rackboot reads the header's.
pub fn kernel_with_release(kernel: &Path, dest: &Path, release: &str) -> Result<()> {
    let mut bytes =
        std::fs::read(kernel).with_context(|| format!("reading {}", kernel.display()))?;
    let old = rackboot_image::kernel_release(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: {e}", kernel.display()))?;
    ensure!(
        old.len() == release.len(),
        "release {release:?} must be as long as {old:?}"
    );
    let ptr = usize::from(u16::from_le_bytes([bytes[0x20E], bytes[0x20F]])) + 0x200;
    bytes[ptr..ptr + release.len()].copy_from_slice(release.as_bytes());
    ensure!(
        rackboot_image::kernel_release(&bytes).ok().as_deref() == Some(release),
        "patching the release failed"
    );
    std::fs::write(dest, bytes).with_context(|| format!("writing {}", dest.display()))
}

/// Writes a module bundle for `release` to `dest`: `lib/modules/<release>/`
/// with a `modules.dep` whose first line is [`modules_dep_line`].
pub fn module_bundle(dest: &Path, release: &str) -> Result<()> {
    let dep = format!("{}\n", modules_dep_line(release));
    let tar = rackboot_image::bundle::build_tar(&[
        (
            &format!("lib/modules/{release}/modules.dep"),
            dep.as_bytes(),
        ),
        (
            &format!("lib/modules/{release}/kernel/rackboot/test.ko"),
            b"not a real module",
        ),
        ("etc/modprobe.d/rackboot-test.conf", b"options test x=1\n"),
    ]);
    std::fs::write(dest, tar).with_context(|| format!("writing {}", dest.display()))
}

/// The first line of [`module_bundle`]'s `modules.dep`.
pub fn modules_dep_line(release: &str) -> String {
    format!("kernel/rackboot/{release}.ko:")
}

// ---- what the guest reports ------------------------------------------------

/// Prefix of the initramfs's boot-info line.
pub const BOOTINFO_PREFIX: &str = "RACKBOOT-BOOTINFO:";
/// Printed by the initramfs once its syslog line is on the wire.
pub const LOG_SENT: &str = "RACKBOOT-LOG-SENT";

/// The initramfs's `RACKBOOT-BOOTINFO: KEY=value ...` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootInfoLine {
    /// KEY → value.
    pub fields: BTreeMap<String, String>,
}

impl BootInfoLine {
    /// Parses a console line containing [`BOOTINFO_PREFIX`].
    pub fn parse(line: &str) -> Result<BootInfoLine> {
        let (_, rest) = line
            .split_once(BOOTINFO_PREFIX)
            .with_context(|| format!("not a boot-info line: {line:?}"))?;
        let rest = rest.trim();
        ensure!(
            !rest.starts_with("failed"),
            "the guest could not get its boot-info: {line:?}"
        );
        let fields = rest
            .split_whitespace()
            .map(|kv| {
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .with_context(|| format!("{kv:?} in boot-info line {line:?} is not KEY=value"))
            })
            .collect::<Result<_>>()?;
        Ok(BootInfoLine { fields })
    }

    /// The value of `key` (empty values count as absent).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }
}

/// What a boot should have produced.
#[derive(Debug, Clone)]
pub struct ExpectedBoot<'a> {
    /// Node number.
    pub node: u32,
    /// Image name.
    pub image: &'a str,
    /// blake3 of the kernel file pushed for the image.
    pub kernel_blake3: &'a str,
    /// Its `--kernel-version`.
    pub kernel_version: &'a str,
    /// The initramfs's marker: its syslog line is `RACKBOOT-LOG <marker>
    /// image=<image>`.
    pub marker: &'a str,
}

impl ExpectedBoot<'_> {
    /// The text of the syslog line the guest sends.
    pub fn log_text(&self) -> String {
        format!("RACKBOOT-LOG {} image={}", self.marker, self.image)
    }
}

/// Console lines after which a guest will not boot Linux any more: the
/// firmware ran out of boot options. Waits stop at them instead of running
/// into their timeout.
pub const FIRMWARE_GAVE_UP: [&str; 3] = [
    // OVMF, after every network boot option failed.
    "\"EFI Internal Shell\"",
    // iPXE option ROM (BIOS) and SeaBIOS.
    "No more network devices",
    "No bootable device",
];

/// Waits for the guest's boot-info line and checks it against `want`:
/// node, image, kernel blake3 and kernel version. Returns the line. Fails
/// at once when the firmware gives up ([`FIRMWARE_GAVE_UP`]).
pub fn check_bootinfo(
    guest: &mut QemuGuest,
    want: &ExpectedBoot<'_>,
    timeout: Duration,
) -> Result<BootInfoLine> {
    let line = guest.wait_for_line_matching(
        &format!("a line containing {BOOTINFO_PREFIX:?}"),
        timeout,
        |l| l.contains(BOOTINFO_PREFIX) || FIRMWARE_GAVE_UP.iter().any(|p| l.contains(p)),
    )?;
    ensure!(
        line.contains(BOOTINFO_PREFIX),
        "guest {}: the firmware gave up after {:.1} s without booting Linux: {line:?}",
        guest.name(),
        guest.elapsed().as_secs_f64()
    );
    let info = BootInfoLine::parse(&line)?;
    let node = want.node.to_string();
    for (key, value) in [
        ("NODE", node.as_str()),
        ("IMAGE", want.image),
        ("KERNEL_BLAKE3", want.kernel_blake3),
        ("KERNEL_VERSION", want.kernel_version),
    ] {
        ensure!(
            info.get(key) == Some(value),
            "boot-info {key} is {:?}, want {value:?} (line {line:?})",
            info.get(key)
        );
    }
    Ok(info)
}

/// One session line of `rackboot node show N`:
/// `  <session-id>  <image>  kernel <blake3-prefix…> <kernel-version>  <transport>  <time>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRow {
    /// `<node>-<unix millis>`.
    pub id: String,
    /// Image name.
    pub image: String,
    /// Leading hex digits of the kernel's blake3 (ellipsis removed).
    pub kernel_prefix: String,
    /// Kernel version.
    pub kernel_version: String,
    /// `tftp` or `http`.
    pub transport: String,
    /// The rest of the line (time).
    pub time: String,
}

impl SessionRow {
    /// The unix millis in the session id (`<node>-<millis>`), for ordering.
    pub fn millis(&self) -> Option<u64> {
        self.id.rsplit_once('-')?.1.parse().ok()
    }

    /// Whether the row's kernel prefix names `blake3` (at least 8 hex
    /// digits, a prefix of it).
    pub fn kernel_is(&self, blake3: &str) -> bool {
        self.kernel_prefix.len() >= 8 && blake3.starts_with(&self.kernel_prefix)
    }
}

/// The sessions listed by `rackboot node show N` (the indented lines after
/// a `sessions:` line), in the order printed.
pub fn parse_sessions(node_show: &str) -> Result<Vec<SessionRow>> {
    let mut lines = node_show.lines();
    lines
        .by_ref()
        .find(|l| l.trim_start().starts_with("sessions:"))
        .with_context(|| format!("`node show` has no sessions: section:\n{node_show}"))?;
    let mut rows = Vec::new();
    for line in lines {
        if line.trim().is_empty() || !line.starts_with(char::is_whitespace) {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            let k = words.iter().position(|w| *w == "kernel")?;
            if k != 2 || words.len() < 6 {
                return None;
            }
            let prefix = words[3]
                .trim_end_matches('…')
                .trim_end_matches("...")
                .to_ascii_lowercase();
            Some(SessionRow {
                id: words[0].to_string(),
                image: words[1].to_string(),
                kernel_prefix: prefix,
                kernel_version: words[4].to_string(),
                transport: words[5].to_string(),
                time: words[6..].join(" "),
            })
        })();
        rows.push(parsed.with_context(|| {
            format!(
                "session line {line:?} is not `<id> <image> kernel <blake3…> <version> <transport> <time>`"
            )
        })?);
    }
    Ok(rows)
}

/// One line of `rackboot logs N`: `<session-id> <unix-millis> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// Boot session the line was tagged with.
    pub session: String,
    /// When it was received.
    pub unix_millis: u64,
    /// The line's text.
    pub text: String,
}

/// Parses `rackboot logs` output (empty lines skipped).
pub fn parse_logs(out: &str) -> Result<Vec<LogLine>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.splitn(3, ' ');
            let (Some(session), Some(millis), text) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("log line {l:?} is not `<session-id> <unix-millis> <text>`");
            };
            Ok(LogLine {
                session: session.to_string(),
                unix_millis: millis
                    .parse()
                    .with_context(|| format!("log line {l:?}: {millis:?} is not unix millis"))?,
                text: text.unwrap_or_default().to_string(),
            })
        })
        .collect()
}

/// The latest session (highest millis in its id) of `rows`.
pub fn latest_session(rows: &[SessionRow]) -> Option<&SessionRow> {
    rows.iter().max_by_key(|r| r.millis().unwrap_or(0))
}

/// What [`check_session_and_log`] found.
#[derive(Debug, Clone)]
pub struct SessionAndLog {
    /// All sessions `node show` listed.
    pub sessions: Vec<SessionRow>,
    /// The latest one: the boot just checked.
    pub latest: SessionRow,
    /// The guest's log line, as `rackboot logs N --boot last` printed it.
    pub log: LogLine,
}

/// After the guest printed [`LOG_SENT`]: within `timeout`, `rackboot node
/// show N` lists as latest session one of `want`'s image and kernel (blake3
/// prefix and version), and `rackboot logs N --boot last` has the guest's
/// line ([`ExpectedBoot::log_text`]) tagged with that session's id.
pub fn check_session_and_log(
    tb: &Testbed,
    want: &ExpectedBoot<'_>,
    timeout: Duration,
) -> Result<SessionAndLog> {
    let node = want.node.to_string();
    let text = want.log_text();
    let deadline = Instant::now() + timeout;
    loop {
        // Every attempt records why it is not good yet; the last reason is
        // the error.
        let attempt = (|| -> Result<SessionAndLog> {
            let show = tb.cli(&["node", "show", &node])?.success()?;
            let sessions = parse_sessions(&show.stdout)?;
            let latest = latest_session(&sessions)
                .with_context(|| format!("`node show {node}` lists no session:\n{show}"))?
                .clone();
            ensure!(
                latest.image == want.image
                    && latest.kernel_is(want.kernel_blake3)
                    && latest.kernel_version == want.kernel_version,
                "latest session {latest:?} is not image {} with kernel {} {}:\n{show}",
                want.image,
                want.kernel_blake3,
                want.kernel_version
            );
            let logs = tb.cli(&["logs", &node, "--boot", "last"])?.success()?;
            let lines = parse_logs(&logs.stdout)?;
            let log = lines
                .iter()
                .find(|l| l.text.contains(&text))
                .with_context(|| format!("no log line containing {text:?} yet:\n{logs}"))?
                .clone();
            ensure!(
                log.session == latest.id,
                "log line {log:?} is tagged with session {}, but the latest session is {}:\n{logs}\n{show}",
                log.session,
                latest.id
            );
            Ok(SessionAndLog {
                sessions,
                latest,
                log,
            })
        })();
        match attempt {
            Ok(found) => return Ok(found),
            Err(e) if Instant::now() >= deadline => {
                return Err(e.context(format!(
                    "node {node}'s session and log line not at the coordinator {timeout:?} after {LOG_SENT}"
                )));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(500)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const K: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn bootinfo_line_parses() {
        let l = BootInfoLine::parse(
            "[    3.1] RACKBOOT-BOOTINFO: NODE=1 IMAGE=a:1 KERNEL_BLAKE3=ab KERNEL_VERSION= LOG_HOST=10.99.0.1",
        )
        .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(l.get("NODE"), Some("1"));
        assert_eq!(l.get("IMAGE"), Some("a:1"));
        assert_eq!(l.get("KERNEL_VERSION"), None);
        assert!(BootInfoLine::parse("RACKBOOT-BOOTINFO: failed wget").is_err());
    }

    #[test]
    fn sessions_parse() {
        let show = format!(
            "node 1 (n1)\n  address 10.99.0.2\nsessions:\n  1-1700000000000  img:a  kernel {}… 6.1.0-test-a  http  2026-11-21 20:00:00\n  1-1700000005000  img:b  kernel {}... 6.1.0-test-b  tftp  2026-11-21 20:00:05\nlogs: 2\n",
            &K[..12],
            &K[..12]
        );
        let rows = parse_sessions(&show).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, "1-1700000000000");
        assert_eq!(rows[0].image, "img:a");
        assert!(rows[0].kernel_is(K));
        assert!(!rows[0].kernel_is("ff"));
        assert_eq!(rows[1].kernel_version, "6.1.0-test-b");
        assert_eq!(rows[1].transport, "tftp");
        assert_eq!(rows[1].time, "2026-11-21 20:00:05");
        assert_eq!(
            latest_session(&rows).map(|r| r.id.as_str()),
            Some("1-1700000005000")
        );
        assert!(parse_sessions("node 1\n").is_err());
        assert!(parse_sessions("sessions:\n  garbage\n").is_err());
        assert_eq!(parse_sessions("sessions:\n").map(|r| r.len()).ok(), Some(0));
    }

    #[test]
    fn logs_parse() {
        let logs = parse_logs("1-17 1700000000123 <14>x rackboot-test: RACKBOOT-LOG m image=a\n\n")
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(logs.len(), 1);
        assert_eq!(logs[0].session, "1-17");
        assert_eq!(logs[0].unix_millis, 1_700_000_000_123);
        assert!(logs[0].text.ends_with("RACKBOOT-LOG m image=a"));
        assert!(parse_logs("1-17 notmillis x").is_err());
    }

    #[test]
    fn expected_log_text() {
        let e = ExpectedBoot {
            node: 1,
            image: "img:a",
            kernel_blake3: K,
            kernel_version: "v",
            marker: "M",
        };
        assert_eq!(e.log_text(), "RACKBOOT-LOG M image=img:a");
    }
}
