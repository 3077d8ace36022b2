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
    if let Some(reason) = boot_support::skip_reason(&[]) {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    if !ipxe_rom_present() {
        rackboot_tests::skip(
            "needs QEMU's e1000 iPXE option ROM (efi-e1000.rom / pxe-e1000.rom): \
             apt-get install ipxe-qemu, or run tests/scripts/install-deps.sh",
        );
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
    if let Some(reason) = boot_support::skip_reason(&[]) {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    if !ipxe_rom_present() {
        rackboot_tests::skip("needs QEMU's e1000 iPXE option ROM (ipxe-qemu)");
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
