//! End to end: a QEMU guest network-boots (BIOS + iPXE ROM) from a rack
//! agent, which serves an image pushed to the coordinator with the real CLI;
//! the booted initramfs fetches its boot-info and sends a syslog line, which
//! the coordinator ties to the boot session of the kernel it was served.
//!
//! Topology: [`rackboot_tests::testbed`] (coordinator in netns ctl, agent on
//! br0 in netns rack, the guest's e1000 on tap0).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use rackboot_tests::qemu::QemuOpts;
use rackboot_tests::testbed::{ExpectedBoot, ImageSpec, NODE1_ADDR, TAP, Testbed, TestbedOpts};

use crate::boot_support::{self, BootArtifacts, CMDLINE};

const GUEST_MAC: &str = "52:54:00:9b:00:01";
const IMAGE: &str = "pxe-smoke:1";
/// From QEMU start to the marker on the console.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

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

/// Why a QEMU PXE test cannot run here (missing tools, not root, or no
/// e1000 iPXE option ROM), if it cannot.
fn pxe_skip_reason() -> Option<String> {
    boot_support::skip_reason(&[]).or_else(|| {
        (!ipxe_rom_present()).then(|| {
            "needs QEMU's e1000 iPXE option ROM (efi-e1000.rom / pxe-e1000.rom): \
             apt-get install ipxe-qemu, or run tests/scripts/install-deps.sh"
                .to_string()
        })
    })
}

/// A guest PXE-boots from the agent: iPXE gets a lease and the generated
/// script, loads our kernel and initramfs, and the initramfs prints its
/// per-run marker and a command line naming node 1 and the image. It also
/// fetches `/boot-info.env` (node 1, the pushed image, kernel blake3 and
/// version) and sends a syslog line, which `rackboot logs 1 --boot last`
/// shows tagged with the session `rackboot node show 1` lists for the
/// pushed kernel. The coordinator lists the guest's MAC as node 1 at
/// 10.99.0.2.
#[test]
fn pxe_boot_from_agent() -> Result<()> {
    if let Some(reason) = pxe_skip_reason() {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    let t0 = Instant::now();
    let art = BootArtifacts::get("PXE")?;
    let mut tb = Testbed::new("rb-pxe")?;
    tb.remove_on_drop(art.initrd.clone());
    let report = tb.run_reporting("pxe_boot_from_agent", |tb| {
        let t = Instant::now();
        tb.start(&TestbedOpts::default())?;
        tb.push_image(&ImageSpec {
            name: IMAGE,
            kernel: &art.kernel,
            initrd: &art.initrd,
            cmdline: CMDLINE,
            kernel_version: "",
            modules: None,
            dtb: None,
        })?;
        tb.assign(&["--default"], IMAGE)?;
        let setup_secs = t.elapsed().as_secs_f64();

        tb.boot(QemuOpts::network_boot("pxe-agent", TAP, GUEST_MAC))?;
        let want = ExpectedBoot {
            node: 1,
            image: IMAGE,
            kernel_blake3: &art.kernel_blake3,
            kernel_version: &art.uname,
            marker: &art.marker,
        };
        let report = boot_support::check_boot(tb, &want, &art.uname, BOOT_TIMEOUT)?;
        ensure!(
            report.found.latest.transport.eq_ignore_ascii_case("http"),
            "iPXE loads the kernel over HTTP, but the session says {:?}",
            report.found.latest.transport
        );

        // The coordinator knows the guest as node 1 at the first address.
        let (node, addr) = tb.node_of_mac(GUEST_MAC)?;
        ensure!(
            node == "1" && addr == NODE1_ADDR,
            "expected {GUEST_MAC} as node 1 at {NODE1_ADDR}, got node {node} at {addr}"
        );
        let show = tb.cli(&["node", "show", "1"])?.success()?;
        ensure!(
            rackboot_tests::testbed::normalize_mac(&show.stdout).contains(GUEST_MAC)
                && show.stdout.contains(NODE1_ADDR),
            "`node show 1` should show {GUEST_MAC} and {NODE1_ADDR}:\n{show}"
        );
        // The boot timeline has every phase, in boot order (QEMU's NIC ROM
        // is iPXE already: no TFTP at all). Phases reach the coordinator in
        // the agent's next session reports: poll.
        let phases = [
            "dhcp_offer",
            "dhcp_ack",
            "kernel_requested",
            "kernel_sent",
            "initrd_sent",
            "first_log_line",
        ];
        let deadline = Instant::now() + Duration::from_secs(15);
        let times = loop {
            let show = tb.cli(&["node", "show", "1", "--timeline"])?.success()?;
            let offsets: Vec<Option<f64>> = phases
                .iter()
                .map(|p| {
                    // `  PHASE  DATE  +SECONDS s`
                    show.stdout.lines().find_map(|l| {
                        match l.split_whitespace().collect::<Vec<_>>().as_slice() {
                            [name, _, off, "s"] if name == p => {
                                off.strip_prefix('+')?.parse::<f64>().ok()
                            }
                            _ => None,
                        }
                    })
                })
                .collect();
            if offsets.iter().all(Option::is_some) {
                break offsets.into_iter().flatten().collect::<Vec<f64>>();
            }
            ensure!(
                Instant::now() < deadline,
                "`node show 1 --timeline` lacks phases after 15 s:\n{show}"
            );
            std::thread::sleep(Duration::from_millis(500));
        };
        ensure!(
            times.windows(2).all(|w| w[0] <= w[1]),
            "timeline phases out of boot order: {phases:?} = {times:?}"
        );
        let shown: Vec<String> = phases
            .iter()
            .zip(&times)
            .map(|(p, t)| format!("{p} +{t:.3}s"))
            .collect();
        eprintln!("pxe_boot_from_agent: timeline {}", shown.join(", "));
        tb.ensure_running()?;
        Ok((setup_secs, report))
    })?;
    let (setup_secs, report) = report;
    eprintln!(
        "pxe_boot_from_agent: artifacts {:.1} s, setup+push {setup_secs:.1} s, \
         QEMU start -> marker {:.1} s, session {}, total {:.1} s",
        art.secs,
        report.boot_secs,
        report.found.latest.id,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Offline: a node known to the rack (`rackboot node add`) with an
/// assigned image; once the agent has the view and the image's blobs, every
/// coordinator is cut off (killed, and the control link taken down) and the
/// agent is restarted. From its persisted view and cache alone it still
/// PXE-boots the node into its assigned kernel and initramfs (the marker,
/// with `rackboot.node=1` and the image on the kernel command line).
#[test]
fn offline_agent_restart_still_boots_assigned_image() -> Result<()> {
    if let Some(reason) = pxe_skip_reason() {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    const MAC: &str = "52:54:00:9b:00:0f";
    const OFFLINE_IMAGE: &str = "offline:1";
    let art = BootArtifacts::get("OFFLINE")?;
    let mut tb = Testbed::new("rb-off")?;
    tb.remove_on_drop(art.initrd.clone());
    tb.run_reporting("offline_agent_restart_still_boots_assigned_image", |tb| {
        tb.start(&TestbedOpts::default())?;
        tb.push_image(&ImageSpec {
            name: OFFLINE_IMAGE,
            kernel: &art.kernel,
            initrd: &art.initrd,
            cmdline: CMDLINE,
            kernel_version: "",
            modules: None,
            dtb: None,
        })?;
        tb.assign(&["--default"], OFFLINE_IMAGE)?;
        tb.cli(&["node", "add", "--rack", "r1", "--mac", MAC])?
            .success()?;
        // The agent has the node and the image's verified blobs: its script
        // for the MAC names the kernel.
        let script_url = format!("http://10.99.0.1/ipxe/{}.ipxe", MAC.replace(':', "-"));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut curl = tb.rack_netns().exec("curl");
            curl.args(["-s", &script_url]);
            let out = rackboot_tests::daemon::run_with_timeout(curl, Duration::from_secs(10))?;
            if out.stdout.contains("kernel ") && out.stdout.contains(OFFLINE_IMAGE) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the agent never served a boot script for {MAC}:\n{out}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }

        tb.stop_coordinator()?;
        tb.restart_agent()?;

        let guest = tb.boot(QemuOpts::network_boot("offline", TAP, MAC))?;
        guest.wait_for_line(
            &rackboot_tests::artifacts::marker_line(&art.marker),
            BOOT_TIMEOUT,
        )?;
        let cmdline = guest
            .transcript_lines()
            .into_iter()
            .find_map(|l| {
                l.split_once("RACKBOOT-CMDLINE:")
                    .map(|(_, c)| c.trim().to_string())
            })
            .unwrap_or_default();
        ensure!(
            cmdline.contains("rackboot.node=1")
                && cmdline.contains(&format!("rackboot.image={OFFLINE_IMAGE}")),
            "the offline boot should be node 1's assigned image: {cmdline:?}"
        );
        Ok(())
    })
}

/// Bytes of the file appended to the initramfs in
/// [`pxe_boot_of_a_512_mib_initrd_over_http`].
const BIG_FILE: usize = 512 << 20;

/// The net initramfs with an uncompressed cpio archive appended holding one
/// file of [`BIG_FILE`] bytes (the kernel unpacks concatenated archives):
/// a 512 MiB+ initrd, each MiB different.
fn big_initrd(small: &Path, dest: &Path) -> Result<()> {
    use std::io::Write;
    let dir = dest.with_extension("d");
    std::fs::create_dir_all(&dir)?;
    {
        let mut f = std::io::BufWriter::new(std::fs::File::create(dir.join("rackboot-big"))?);
        let mut chunk = rackboot_tests::tftplab::random_bytes("big-initrd", 1 << 20);
        for i in 0..(BIG_FILE >> 20) {
            chunk[..8].copy_from_slice(&(i as u64).to_le_bytes());
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }
    let mut cpio = std::process::Command::new("sh");
    cpio.current_dir(&dir).args([
        "-c",
        "echo rackboot-big | cpio --quiet -o -H newc > ../big-part.cpio",
    ]);
    rackboot_tests::daemon::run_with_timeout(cpio, Duration::from_secs(120))?.success()?;
    let part = dir.with_file_name("big-part.cpio");
    let mut out = std::fs::File::create(dest)?;
    let copied = std::io::copy(&mut std::fs::File::open(small)?, &mut out)?;
    // The kernel takes a cpio archive after a compressed one only at a
    // 4-byte aligned offset, and skips zero bytes to reach it.
    let pad = (4 - copied % 4) % 4;
    out.write_all(&vec![0u8; usize::try_from(pad)?])?;
    std::io::copy(&mut std::fs::File::open(&part)?, &mut out)?;
    out.sync_all()?;
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_file(&part)?;
    Ok(())
}

/// A big image: iPXE (BIOS) loads a 512 MiB+ initrd over HTTP from the
/// agent, which serves it from its verified disk cache, and the kernel
/// boots it: the marker, the session and log line as in
/// [`pxe_boot_from_agent`], the kernel's "Freeing initrd memory" of at
/// least the initrd's size (the whole initrd was in memory), and no
/// unpacking error.
#[test]
fn pxe_boot_of_a_512_mib_initrd_over_http() -> Result<()> {
    if let Some(reason) = pxe_skip_reason() {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    let art = BootArtifacts::get("BIG")?;
    let mut tb = Testbed::new("rb-big")?;
    tb.remove_on_drop(art.initrd.clone());
    let big = tb.dir().join("big-initrd.img");
    big_initrd(&art.initrd, &big)?;
    let big_len = std::fs::metadata(&big)?.len();
    let report = tb.run_reporting("pxe_boot_of_a_512_mib_initrd_over_http", |tb| {
        tb.start(&TestbedOpts::default())?;
        let t = Instant::now();
        tb.push_image(&ImageSpec {
            name: "big:1",
            kernel: &art.kernel,
            initrd: &big,
            cmdline: CMDLINE,
            kernel_version: "",
            modules: None,
            dtb: None,
        })?;
        std::fs::remove_file(&big)?;
        tb.assign(&["--default"], "big:1")?;
        let push_secs = t.elapsed().as_secs_f64();
        let mut opts = QemuOpts::network_boot("big-initrd", TAP, "52:54:00:9b:00:02");
        opts.memory_mb = 2048;
        tb.boot(opts)?;
        let want = ExpectedBoot {
            node: 1,
            image: "big:1",
            kernel_blake3: &art.kernel_blake3,
            kernel_version: &art.uname,
            marker: &art.marker,
        };
        let report = boot_support::check_boot(tb, &want, &art.uname, BOOT_TIMEOUT)?;
        ensure!(
            report.found.latest.transport.eq_ignore_ascii_case("http"),
            "iPXE loads the image over HTTP, but the session says {:?}",
            report.found.latest.transport
        );
        let lines = tb.guest()?.transcript_lines();
        ensure!(
            !lines
                .iter()
                .any(|l| l.contains("Initramfs unpacking failed")),
            "the kernel could not unpack the initrd:\n{}",
            lines.join("\n")
        );
        // `Freeing initrd memory: 524800K`
        let freed_kib = lines
            .iter()
            .find_map(|l| {
                let rest = l.split("Freeing initrd memory: ").nth(1)?;
                rest.trim().strip_suffix('K')?.parse::<u64>().ok()
            })
            .ok_or_else(|| anyhow::anyhow!("no \"Freeing initrd memory\" line on the console"))?;
        ensure!(
            freed_kib * 1024 >= big_len - 4096,
            "the kernel held {freed_kib} KiB of initrd, the image's is {big_len} bytes"
        );
        tb.ensure_running()?;
        Ok((push_secs, report.boot_secs, freed_kib))
    })?;
    let (push_secs, boot_secs, freed_kib) = report;
    eprintln!(
        "pxe_boot_of_a_512_mib_initrd_over_http: initrd {big_len} bytes, push {push_secs:.1} s, \
         QEMU start -> marker {boot_secs:.1} s, kernel freed {freed_kib} KiB of initrd"
    );
    Ok(())
}
