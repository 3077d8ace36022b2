//! End to end: a QEMU guest network-boots (BIOS + iPXE ROM) from a rack
//! agent, which serves an image pushed to the coordinator with the real CLI.
//!
//! ```text
//!   netns ctl                        netns rack
//!   coordinator 10.77.0.1:50051      agent --iface br0 (10.99.0.1/24)
//!   rackboot CLI                     br0 ── tap0 ── QEMU (e1000, -boot n)
//!        └── veth 10.77.0.1/30 ── 10.77.0.2/30 ──┘
//! ```

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::daemon::{self, CliOutput, Daemon};
use rackboot_tests::netns::{Netns, veth_pair};
use rackboot_tests::qemu::{QemuGuest, QemuOpts};
use rackboot_tests::{artifacts, require_commands_or_skip, require_root_or_skip};

const COORDINATOR_LISTEN: &str = "10.77.0.1:50051";
const COORDINATOR_URL: &str = "http://10.77.0.1:50051";
const RACK_BRIDGE_CIDR: &str = "10.99.0.1/24";
/// The first node's address: the agent's (10.99.0.1) + 1.
const NODE1_ADDR: &str = "10.99.0.2";
const GUEST_MAC: &str = "52:54:00:9b:00:01";
const IMAGE: &str = "pxe-smoke:1";
/// From QEMU start to the marker on the console.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const CLI_TIMEOUT: Duration = Duration::from_secs(120);

/// Everything the test runs; dropped in reverse order of declaration
/// (guest, agent, coordinator, namespaces, temp dir).
struct Setup {
    guest: Option<QemuGuest>,
    agent: Option<Daemon>,
    coordinator: Option<Daemon>,
    rack: Netns,
    ctl: Netns,
    dir: tempfile::TempDir,
    initrd: Option<PathBuf>,
}

impl Setup {
    /// Logs of both daemons and the guest's transcript.
    fn report(&self) -> String {
        let mut r = String::new();
        for d in [&self.coordinator, &self.agent].into_iter().flatten() {
            let _ = writeln!(r, "{}\n", d.report());
        }
        if let Some(g) = &self.guest {
            let _ = writeln!(
                r,
                "===== QEMU transcript ({}; {:.1} s since start) =====\n{}\n--- qemu stderr ---\n{}\n===== end of QEMU transcript =====",
                g.transcript_path().display(),
                g.elapsed().as_secs_f64(),
                g.transcript().trim_end(),
                g.stderr().trim_end()
            );
        }
        let _ = writeln!(r, "(temp dir {})", self.dir.path().display());
        r
    }

    fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let mut all = vec!["--coordinator", COORDINATOR_URL];
        all.extend_from_slice(args);
        daemon::cli(Some(&self.ctl), &all, CLI_TIMEOUT)
    }
}

impl Drop for Setup {
    fn drop(&mut self) {
        // Kill the guest and daemons before the namespaces go.
        self.guest.take();
        self.agent.take();
        self.coordinator.take();
        // The initramfs is unique to this run: do not let them pile up.
        if let Some(initrd) = self.initrd.take() {
            let _ = std::fs::remove_file(initrd);
        }
    }
}

fn ipxe_rom_present() -> bool {
    [
        "/usr/lib/ipxe/qemu/efi-e1000.rom",
        "/usr/share/qemu/efi-e1000.rom",
        "/usr/lib/ipxe/qemu/pxe-e1000.rom",
        "/usr/share/qemu/pxe-e1000.rom",
    ]
    .iter()
    .any(|p| Path::new(p).is_file())
}

fn unique_marker() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("PXE-{}-{nanos:x}", std::process::id())
}

fn normalize_mac(s: &str) -> String {
    s.to_ascii_lowercase().replace('-', ":")
}

/// A guest PXE-boots from the agent: iPXE gets a lease and the generated
/// script, loads our kernel and initramfs over TFTP, and the initramfs prints
/// its per-run marker and a command line naming node 1 and the image. The
/// coordinator then lists the guest's MAC as node 1 at 10.99.0.2.
#[test]
fn pxe_boot_from_agent() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(
        [
            "qemu-system-x86_64",
            "ip",
            "bash",
            "timeout",
            "cpio",
            "busybox"
        ],
        Ok(())
    );
    if !ipxe_rom_present() {
        rackboot_tests::skip(
            "needs QEMU's e1000 iPXE option ROM (efi-e1000.rom / pxe-e1000.rom): \
             apt-get install ipxe-qemu, or run tests/scripts/install-deps.sh",
        );
        return Ok(());
    }
    let bins = [
        daemon::binary(daemon::COORDINATOR)?,
        daemon::binary(daemon::AGENT)?,
        daemon::binary(daemon::CLI)?,
    ];
    let t0 = Instant::now();

    let marker = unique_marker();
    let kernel = artifacts::kernel()?;
    let initrd = artifacts::initramfs(&marker)?;
    let artifacts_secs = t0.elapsed().as_secs_f64();

    let ctl = Netns::create("rb-ctl")?;
    let rack = Netns::create("rb-rack")?;
    let mut s = Setup {
        guest: None,
        agent: None,
        coordinator: None,
        rack,
        ctl,
        dir: tempfile::Builder::new().prefix("rackboot-pxe-").tempdir()?,
        initrd: Some(initrd.clone()),
    };
    let result = run(&mut s, &bins, &kernel, &initrd, &marker);
    match &result {
        Ok(timing) => eprintln!(
            "pxe_boot_from_agent: artifacts {artifacts_secs:.1} s, setup+push {:.1} s, \
             QEMU start -> marker {:.1} s, total {:.1} s",
            timing.setup_secs,
            timing.boot_secs,
            t0.elapsed().as_secs_f64()
        ),
        Err(_) => eprintln!(
            "\n######## pxe_boot_from_agent FAILED after {:.1} s; diagnostics follow ########\n{}",
            t0.elapsed().as_secs_f64(),
            s.report()
        ),
    }
    drop(s);
    result.map(drop)
}

struct Timing {
    setup_secs: f64,
    boot_secs: f64,
}

fn run(
    s: &mut Setup,
    bins: &[PathBuf; 3],
    kernel: &Path,
    initrd: &Path,
    marker: &str,
) -> Result<Timing> {
    let [coordinator_bin, agent_bin, _] = bins;
    let t = Instant::now();

    // Network: ctl <-veth-> rack, and in rack br0 with the guest's tap.
    veth_pair(
        &s.ctl,
        "rb-up",
        Some("10.77.0.1/30"),
        &s.rack,
        "rb-down",
        Some("10.77.0.2/30"),
    )?;
    s.rack
        .bridge_with_tap("br0", Some(RACK_BRIDGE_CIDR), "tap0")?;

    // Coordinator in ctl.
    let mut cmd = s.ctl.exec(coordinator_bin);
    cmd.args(["--listen", COORDINATOR_LISTEN, "--data"])
        .arg(s.dir.path().join("coordinator-data"));
    let coordinator = s.coordinator.insert(Daemon::spawn(
        "coordinator",
        cmd,
        &s.dir.path().join("coordinator.log"),
    )?);
    let listen: SocketAddr = COORDINATOR_LISTEN.parse()?;
    coordinator.wait_for_tcp(listen, Some(&s.ctl), Duration::from_secs(30))?;

    // Agent in rack, serving br0.
    let mut cmd = s.rack.exec(agent_bin);
    cmd.args([
        "--rack",
        "r1",
        "--coordinator",
        COORDINATOR_URL,
        "--iface",
        "br0",
        "--data",
    ])
    .arg(s.dir.path().join("agent-data"));
    s.agent = Some(Daemon::spawn(
        "agent",
        cmd,
        &s.dir.path().join("agent.log"),
    )?);

    // Image and default assignment, with the real CLI from ctl.
    let push = s
        .cli(&[
            "image",
            "push",
            IMAGE,
            "--kernel",
            kernel.to_str().context("kernel path not UTF-8")?,
            "--initrd",
            initrd.to_str().context("initrd path not UTF-8")?,
            "--cmdline",
            "console=ttyS0 panic=-1",
        ])?
        .success()?;
    let manifest = push.last_line();
    ensure!(
        manifest.len() == 64 && manifest.bytes().all(|b| b.is_ascii_hexdigit()),
        "image push should end with the manifest hash:\n{push}"
    );
    s.cli(&["assign", "--default", IMAGE])?.success()?;

    // The agent has registered its rack (so it follows the coordinator)
    // before the guest asks for anything.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(agent) = s.agent.as_mut() {
            agent.ensure_running()?;
        }
        let racks = s.cli(&["rack", "list"])?.success()?;
        if racks
            .stdout
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().next() == Some("r1"))
        {
            break;
        }
        if Instant::now() >= deadline {
            bail!("rack r1 not registered 30 s after the agent started:\n{racks}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let setup_secs = t.elapsed().as_secs_f64();

    // The guest.
    let guest = s.guest.insert(QemuGuest::spawn_in(
        &s.rack,
        QemuOpts::network_boot("pxe-agent", "tap0", GUEST_MAC),
    )?);
    let marker_line = guest.wait_for_line(&artifacts::marker_line(marker), BOOT_TIMEOUT)?;
    let boot_secs = guest.elapsed().as_secs_f64();
    ensure!(
        marker_line.trim() == artifacts::marker_line(marker),
        "marker must be alone on its line, got {marker_line:?}"
    );
    let lines = guest.transcript_lines();
    let kernel_line = format!("RACKBOOT-KERNEL: {}", artifacts::kernel_version()?);
    ensure!(
        lines.iter().any(|l| l.trim() == kernel_line),
        "no {kernel_line:?} line: the guest did not boot the pushed kernel"
    );
    let cmdline = lines
        .iter()
        .find_map(|l| l.split_once("RACKBOOT-CMDLINE:").map(|(_, c)| c.trim()))
        .context("no RACKBOOT-CMDLINE line in the transcript")?;
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    let image_arg = format!("rackboot.image={IMAGE}");
    for want in ["console=ttyS0", "panic=-1", "rackboot.node=1", &image_arg] {
        ensure!(
            words.contains(&want),
            "kernel command line {cmdline:?} lacks {want:?}"
        );
    }

    // The coordinator knows the guest as node 1 at the first address.
    let list = s.cli(&["node", "list"])?.success()?;
    let mac = normalize_mac(GUEST_MAC);
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
        .with_context(|| format!("`node list` has no row for {GUEST_MAC}:\n{list}"))?
        .split_whitespace()
        .collect();
    ensure!(
        row.get(node_col) == Some(&"1") && row.get(addr_col) == Some(&NODE1_ADDR),
        "expected {GUEST_MAC} as node 1 at {NODE1_ADDR}, got row {row:?}:\n{list}"
    );
    let show = s.cli(&["node", "show", "1"])?.success()?;
    ensure!(
        normalize_mac(&show.stdout).contains(&mac) && show.stdout.contains(NODE1_ADDR),
        "`node show 1` should show {GUEST_MAC} and {NODE1_ADDR}:\n{show}"
    );

    // Nothing died on the way.
    for d in [s.coordinator.as_mut(), s.agent.as_mut()]
        .into_iter()
        .flatten()
    {
        d.ensure_running()?;
    }
    Ok(Timing {
        setup_secs,
        boot_secs,
    })
}
