//! U-Boot boards boot through the agent: Debian's `u-boot-qemu` on QEMU
//! `virt` boards runs its distro network boot (DHCP, then
//! `boot.scr.uimg` from the next-server over TFTP, `source`d), and the
//! agent answers each node with its own boot script.
//!
//! * arm64: two guests at once boot Debian's arm64 kernel and an arm64
//!   busybox initramfs to their marker, one of them with a device tree
//!   carried by the image; the same two boots against dnsmasq with a
//!   static `boot.scr.uimg` (made with `mkimage`) are timed beside it.
//! * riscv64 (OpenSBI + U-Boot `qemu-riscv64_smode`): a lease with
//!   next-server, the boot script and the kernel it names are fetched
//!   (Debian 12 ships no riscv64 kernel, so the boot stops there).
//! * arm64 UEFI clients are never pointed at a loader the static root does
//!   not hold; the agent says so in its log and in `rackboot rack cache`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::artifacts;
use rackboot_tests::daemon::{Daemon, run_with_timeout};
use rackboot_tests::netns::Netns;
use rackboot_tests::qemu::{QemuGuest, QemuOpts, UbootArch};
use rackboot_tests::testbed::{
    BRIDGE, ImageSpec, TAP, Testbed, TestbedOpts, blake3_file, parse_sessions,
};

use crate::boot_support::unique_marker;

/// The arm64 image's command line: the PL011 console, a panic ends QEMU.
const CMDLINE: &str = "console=ttyAMA0 panic=-1";
/// From QEMU start to the marker, under TCG with the other guest running.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);
const MACS: [&str; 2] = ["52:54:00:a6:00:01", "52:54:00:a6:00:02"];
const SECOND_TAP: &str = "tap1";

/// Why these tests skip: not root, or QEMU / U-Boot / tools missing.
fn skip_reason(arch: UbootArch, extra: &[&str]) -> Option<String> {
    let mut commands = vec![arch.qemu(), "ip", "bash", "cpio", "busybox"];
    commands.extend_from_slice(extra);
    if let Some(r) = rackboot_tests::root_skip_reason()
        .or_else(|| rackboot_tests::commands_skip_reason(&commands))
    {
        return Some(r);
    }
    arch.firmware()
        .iter()
        .find(|f| !Path::new(f).is_file())
        .map(|f| format!("needs {f} (apt-get install u-boot-qemu opensbi, or run tests/scripts/install-deps.sh)"))
}

/// The arm64 kernel, its release, a per-run initramfs, and QEMU's own
/// device tree for the `virt` board (dumped, to travel in the image).
struct Arm64 {
    kernel: PathBuf,
    kernel_blake3: String,
    uname: String,
    marker: String,
    initrd: PathBuf,
    dtb: PathBuf,
}

fn arm64_artifacts(dir: &Path) -> Result<Arm64> {
    let kdir = artifacts::arm64_dir()?;
    let marker = unique_marker("UBOOT");
    let initrd = artifacts::arm64_initramfs(&marker)?;
    // QEMU's own tree for the board as the guests run it (with firmware:
    // no PL061/gpio-keys). QEMU pads it to 1 MiB; `dtc` writes it compact,
    // as distributions ship .dtb files.
    let padded = dir.join("virt-padded.dtb");
    let mut dump = Command::new(UbootArch::Aarch64.qemu());
    dump.arg("-machine")
        .arg(format!("virt,dumpdtb={}", padded.display()))
        .args([
            "-cpu",
            "cortex-a57",
            "-m",
            "512",
            "-nographic",
            "-nodefaults",
        ])
        // With firmware the board has no PL061/gpio-keys: dump that tree.
        .args(["-bios", UbootArch::AARCH64_UBOOT]);
    let out = run_with_timeout(dump, Duration::from_secs(30))?;
    ensure!(
        padded.is_file(),
        "QEMU did not dump its virt device tree:\n{out}"
    );
    let dtb = dir.join("virt.dtb");
    let mut dtc = Command::new("dtc");
    dtc.args(["-I", "dtb", "-O", "dtb", "-o"])
        .arg(&dtb)
        .arg(&padded);
    let out = run_with_timeout(dtc, Duration::from_secs(30))?;
    ensure!(dtb.is_file(), "dtc did not compact the device tree:\n{out}");
    let kernel = kdir.join("vmlinuz");
    Ok(Arm64 {
        kernel_blake3: blake3_file(&kernel)?,
        uname: std::fs::read_to_string(kdir.join("kernel-version"))?
            .trim()
            .to_string(),
        kernel,
        marker,
        initrd,
        dtb,
    })
}

/// Waits for the marker and checks the kernel and command line; returns
/// QEMU start → marker in seconds.
fn check_guest(guest: &mut QemuGuest, art: &Arm64, node_image: Option<&str>) -> Result<f64> {
    let marker = artifacts::marker_line(&art.marker);
    guest.wait_for_line(&marker, BOOT_TIMEOUT)?;
    let secs = guest.elapsed().as_secs_f64();
    let lines = guest.transcript_lines();
    let kernel_line = format!("RACKBOOT-KERNEL: {}", art.uname);
    ensure!(
        lines.iter().any(|l| l.trim() == kernel_line),
        "{}: no {kernel_line:?}: the guest did not boot Debian's arm64 kernel",
        guest.name()
    );
    if let Some(image) = node_image {
        let cmdline = lines
            .iter()
            .find_map(|l| {
                l.split_once("RACKBOOT-CMDLINE:")
                    .map(|(_, c)| c.trim().to_string())
            })
            .context("no RACKBOOT-CMDLINE line")?;
        ensure!(
            cmdline.contains("console=ttyAMA0")
                && cmdline.contains("rackboot.node=")
                && cmdline.contains(&format!("rackboot.image={image}")),
            "{}: command line {cmdline:?} should be the image's plus rackboot's parameters",
            guest.name()
        );
    }
    Ok(secs)
}

/// Two arm64 U-Boot guests at once boot through the agent: each gets a
/// lease with next-server, its own boot script (by its address), the
/// image's device tree, kernel and initrd over TFTP, and reaches its marker
/// with its node number on the command line; each node's boot session at
/// the coordinator names the kernel. Then the same two boots from dnsmasq
/// with a static boot script, timed beside it.
#[test]
fn uboot_arm64_two_guests_boot_from_agent() -> Result<()> {
    if let Some(reason) = skip_reason(UbootArch::Aarch64, &["dnsmasq", "mkimage"]) {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    const IMAGE: &str = "arm64-uboot:1";
    let mut tb = Testbed::new("rb-uboot")?;
    let art = arm64_artifacts(tb.dir())?;
    tb.remove_on_drop(art.initrd.clone());
    let agent_secs = tb.run_reporting("uboot_arm64_two_guests_boot_from_agent", |tb| {
        tb.start(&TestbedOpts {
            extra_taps: vec![SECOND_TAP.into()],
            ..TestbedOpts::default()
        })?;
        tb.rack_netns().attach_to_bridge(SECOND_TAP, BRIDGE)?;
        tb.push_image(&ImageSpec {
            name: IMAGE,
            kernel: &art.kernel,
            initrd: &art.initrd,
            cmdline: CMDLINE,
            kernel_version: &art.uname,
            modules: None,
            dtb: Some(&art.dtb),
        })?;
        tb.assign(&["--default"], IMAGE)?;
        // Known nodes, and the agent holds the image's blobs before the
        // guests start: the time measured is the boot's.
        for mac in MACS {
            tb.cli(&["node", "add", "--rack", "r1", "--mac", mac])?.success()?;
        }
        wait_for_cache(tb, 3)?;

        let t = Instant::now();
        tb.boot(QemuOpts::uboot("uboot-a64-1", UbootArch::Aarch64, TAP, MACS[0]))?;
        let mut second = QemuGuest::spawn_in(
            tb.rack_netns(),
            QemuOpts::uboot("uboot-a64-2", UbootArch::Aarch64, SECOND_TAP, MACS[1]),
        )?;
        let first_secs = check_guest(tb.guest()?, &art, Some(IMAGE))?;
        let second_secs = check_guest(&mut second, &art, Some(IMAGE)).map_err(|e| {
            e.context(format!(
                "second guest transcript:\n{}",
                second.transcript().trim_end()
            ))
        })?;
        let both = t.elapsed().as_secs_f64();
        // U-Boot fetched the image's device tree, not only its own.
        let dtb_blake3 = blake3_file(&art.dtb)?;
        for g in [tb.guest()?.transcript(), second.transcript()] {
            ensure!(
                g.contains(&format!("blobs/{dtb_blake3}")),
                "U-Boot should load the image's device tree blobs/{dtb_blake3}:\n{g}"
            );
        }
        // Both machines are nodes whose latest session names the kernel the
        // agent served them over TFTP.
        for mac in MACS {
            let (node, _addr) = tb.node_of_mac(mac)?;
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let show = tb.cli(&["node", "show", &node])?.success()?;
                let sessions = parse_sessions(&show.stdout)?;
                if sessions.iter().any(|s| s.kernel_is(&art.kernel_blake3) && s.image == IMAGE) {
                    break;
                }
                ensure!(
                    Instant::now() < deadline,
                    "node {node} ({mac}) has no session for the arm64 kernel:\n{show}"
                );
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        eprintln!(
            "uboot_arm64: agent: two guests QEMU start -> marker {first_secs:.1} s and {second_secs:.1} s ({both:.1} s for both)"
        );
        Ok(both)
    })?;
    // Reference: dnsmasq (DHCP + TFTP) with a static boot.scr.uimg, in a
    // namespace of its own (the testbed keeps the artifacts until then).
    let reference = dnsmasq_reference(&art)?;
    drop(tb);
    eprintln!(
        "uboot_arm64: two guests at once, QEMU start -> both markers: rackboot agent {agent_secs:.1} s, dnsmasq + static script {reference:.1} s"
    );
    Ok(())
}

/// Waits until `rackboot rack cache r1` shows `held` blobs held and none
/// missing (blobs are needed once a node is assigned the image).
fn wait_for_cache(tb: &Testbed, held: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Exits non-zero while blobs are missing.
        let out = tb.cli(&["rack", "cache", "r1"])?;
        let n = out.stdout.lines().filter(|l| l.starts_with("held")).count();
        if n >= held && !out.stdout.contains("MISSING") {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the agent did not cache the image's {held} blobs:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Two guests at once against dnsmasq serving DHCP and TFTP from a
/// directory with the kernel, initrd, device tree and a `boot.scr.uimg`
/// made by `mkimage`; returns QEMU start → both markers in seconds.
fn dnsmasq_reference(art: &Arm64) -> Result<f64> {
    let ns = Netns::create("rb-ubref")?;
    let dir = tempfile::Builder::new()
        .prefix("rackboot-ubref-")
        .tempdir()?;
    let root = dir.path().join("tftp");
    std::fs::create_dir_all(&root)?;
    std::fs::copy(&art.kernel, root.join("Image"))?;
    std::fs::copy(&art.initrd, root.join("initrd"))?;
    std::fs::copy(&art.dtb, root.join("virt.dtb"))?;
    std::fs::write(
        dir.path().join("boot.txt"),
        format!(
            "setenv bootargs '{CMDLINE}'\ntftpboot ${{fdt_addr}} virt.dtb\ntftpboot ${{kernel_addr_r}} Image\ntftpboot ${{ramdisk_addr_r}} initrd\nbooti ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} ${{fdt_addr}}\n"
        ),
    )?;
    let out = Command::new("mkimage")
        .args([
            "-A", "arm64", "-O", "linux", "-T", "script", "-C", "none", "-d",
        ])
        .arg(dir.path().join("boot.txt"))
        .arg(root.join("boot.scr.uimg"))
        .output()?;
    ensure!(out.status.success(), "mkimage failed: {out:?}");
    ns.bridge_with_tap(BRIDGE, Some("10.98.0.1/24"), TAP)?;
    ns.add_tap(SECOND_TAP)?;
    ns.attach_to_bridge(SECOND_TAP, BRIDGE)?;
    let mut cmd = ns.exec("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--port=0",
        "--bind-interfaces",
        "--interface",
        BRIDGE,
        "--dhcp-range=10.98.0.10,10.98.0.50,255.255.255.0,1h",
        "--enable-tftp",
        "--log-dhcp",
    ])
    .arg(format!("--tftp-root={}", root.display()))
    .arg(format!(
        "--pid-file={}",
        dir.path().join("dnsmasq.pid").display()
    ));
    let _dnsmasq = Daemon::spawn("dnsmasq", cmd, &dir.path().join("dnsmasq.log"))?;
    std::thread::sleep(Duration::from_millis(500));
    let t = Instant::now();
    let mut a = QemuGuest::spawn_in(
        &ns,
        QemuOpts::uboot("ubref-1", UbootArch::Aarch64, TAP, MACS[0]),
    )?;
    let mut b = QemuGuest::spawn_in(
        &ns,
        QemuOpts::uboot("ubref-2", UbootArch::Aarch64, SECOND_TAP, MACS[1]),
    )?;
    for g in [&mut a, &mut b] {
        if let Err(e) = check_guest(g, art, None) {
            let log = std::fs::read_to_string(dir.path().join("dnsmasq.log")).unwrap_or_default();
            bail!("{e:#}\n--- dnsmasq log ---\n{log}");
        }
    }
    Ok(t.elapsed().as_secs_f64())
}

/// A riscv64 U-Boot guest (OpenSBI + `qemu-riscv64_smode`) gets a lease
/// with next-server, fetches its boot script and the kernel it names from
/// the agent (Debian 12 has no riscv64 kernel: the "kernel" is arbitrary
/// bytes, so the boot ends at `booti`, after the fetches).
#[test]
fn uboot_riscv64_fetches_its_script_and_kernel() -> Result<()> {
    if let Some(reason) = skip_reason(UbootArch::Riscv64, &[]) {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    const IMAGE: &str = "riscv64-uboot:1";
    const MAC: &str = "52:54:00:a7:00:01";
    let mut tb = Testbed::new("rb-ubrv")?;
    let kernel = tb.dir().join("riscv-kernel");
    let initrd = tb.dir().join("riscv-initrd");
    // Distinct, recognisable contents.
    std::fs::write(&kernel, vec![0x5a; 300_000])?;
    std::fs::write(&initrd, vec![0xa5; 100_000])?;
    let kernel_blake3 = blake3_file(&kernel)?;
    tb.run_reporting("uboot_riscv64_fetches_its_script_and_kernel", |tb| {
        tb.start(&TestbedOpts::default())?;
        tb.push_image(&ImageSpec {
            name: IMAGE,
            kernel: &kernel,
            initrd: &initrd,
            cmdline: "console=ttyS0",
            kernel_version: "6.1.0-riscv64",
            modules: None,
            dtb: None,
        })?;
        tb.assign(&["--default"], IMAGE)?;
        tb.cli(&["node", "add", "--rack", "r1", "--mac", MAC])?
            .success()?;
        wait_for_cache(tb, 2)?;
        let guest = tb.boot(QemuOpts::uboot("uboot-rv64", UbootArch::Riscv64, TAP, MAC))?;
        // U-Boot prints where it fetches from: the agent, as next-server.
        guest.wait_for_line("TFTP from server 10.99.0.1", Duration::from_secs(120))?;
        guest.wait_for_line(
            &format!("rackboot: n1 boots {IMAGE}"),
            Duration::from_secs(60),
        )?;
        guest.wait_for_line(
            &format!("Filename 'blobs/{kernel_blake3}'"),
            Duration::from_secs(60),
        )?;
        guest.wait_for_line("Bytes transferred = 300000", Duration::from_secs(120))?;
        eprintln!(
            "uboot_riscv64: QEMU start -> kernel fetched {:.1} s",
            guest.elapsed().as_secs_f64()
        );
        let (node, addr) = tb.node_of_mac(MAC)?;
        ensure!(
            node == "1" && addr == "10.99.0.2",
            "{MAC} should be node 1 at 10.99.0.2, is {node} at {addr}"
        );
        Ok(())
    })
}

/// The configured arm64 UEFI loader is not in the static root: the agent
/// says so at start (its log) and in `rackboot rack cache`, and an arm64
/// UEFI PXE request (U-Boot's own UEFI step sends exactly this) is offered
/// no boot file. Once Debian's `grubnetaa64.efi` appears in the static
/// root, clients are offered that instead and the problem is gone.
#[test]
fn missing_arm64_loader_is_reported_and_never_offered() -> Result<()> {
    if let Some(reason) = rackboot_tests::root_skip_reason()
        .or_else(|| rackboot_tests::commands_skip_reason(&["ip", "busybox"]))
    {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    let mut tb = Testbed::new("rb-ubldr")?;
    let undionly = tb.dir().join("undionly.kpxe");
    std::fs::write(&undionly, b"not really iPXE")?;
    tb.run_reporting("missing_arm64_loader_is_reported_and_never_offered", |tb| {
        tb.start(&TestbedOpts {
            static_files: vec![undionly.clone()],
            ..TestbedOpts::default()
        })?;
        let log = tb.agent()?.logs();
        ensure!(
            log.contains("arm64 UEFI loader ipxe-arm64.efi is not in the static root"),
            "the agent should say at start that the arm64 loader is missing:\n{log}"
        );
        // In status: the rack's cache report.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let out = tb.cli(&["rack", "cache", "r1"])?.success()?;
            if out
                .stdout
                .contains("PROBLEM: arm64 UEFI loader ipxe-arm64.efi is not in the static root")
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "`rack cache r1` should show the problem:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(500));
        }
        let offer = arm64_uefi_offer(tb)?;
        ensure!(
            offer.boot_file.is_none(),
            "an arm64 UEFI client must not be pointed at a missing loader, got {:?}",
            offer.boot_file
        );
        // A loader appears: it is offered, the problem clears.
        let root = tb.dir().join("static-root");
        std::fs::write(root.join("grubnetaa64.efi"), b"grub for arm64")?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let offer = arm64_uefi_offer(tb)?;
            let out = tb.cli(&["rack", "cache", "r1"])?.success()?;
            if offer.boot_file.as_deref() == Some("grubnetaa64.efi")
                && !out.stdout.contains("PROBLEM")
            {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "after grubnetaa64.efi appeared: offered {:?}, cache report:\n{out}",
                offer.boot_file
            );
            std::thread::sleep(Duration::from_millis(1000));
        }
        Ok(())
    })
}

/// What a DHCP lease said.
struct Offer {
    boot_file: Option<String>,
}

/// Takes one lease as an arm64 UEFI PXE client (vendor class
/// `PXEClient:Arch:00011:UNDI:003000`, option 93 = 11, as U-Boot's UEFI
/// step sends them) with busybox udhcpc on a veth into the rack bridge,
/// and returns the lease's boot file.
fn arm64_uefi_offer(tb: &Testbed) -> Result<Offer> {
    let ns = tb.rack_netns();
    if ns.ip(&["link", "show", "dev", "rbq1"]).is_err() {
        ns.ip(&[
            "link", "add", "rbq0", "type", "veth", "peer", "name", "rbq1",
        ])?;
        ns.attach_to_bridge("rbq0", BRIDGE)?;
        ns.link_up("rbq0")?;
        ns.link_up("rbq1")?;
    }
    let script = tb.dir().join("udhcpc-print.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\n[ \"$1\" = bound ] && echo \"LEASE ip=$ip siaddr=$siaddr boot_file=$boot_file\"\nexit 0\n",
    )?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let mut cmd = ns.exec("busybox");
    cmd.args([
        "udhcpc", "-i", "rbq1", "-f", "-q", "-n", "-t", "4", "-T", "2",
    ])
    .args([
        "-V",
        "PXEClient:Arch:00011:UNDI:003000",
        "-x",
        "0x5d:000b",
        "-s",
    ])
    .arg(&script);
    let out = run_with_timeout(cmd, Duration::from_secs(20))?;
    let line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("LEASE "))
        .with_context(|| format!("udhcpc got no lease as an arm64 UEFI client:\n{out}"))?;
    ensure!(
        line.contains("siaddr=10.99.0.1"),
        "the lease should name the agent as next-server: {line}"
    );
    let file = line
        .split_once("boot_file=")
        .map(|(_, f)| f.trim().to_string())
        .filter(|f| !f.is_empty());
    Ok(Offer { boot_file: file })
}
