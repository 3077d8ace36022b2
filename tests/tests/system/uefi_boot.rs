//! UEFI end to end: a QEMU guest with OVMF (Debian's `ovmf`) boots with the
//! firmware's own EDK2 PXE stack (virtio-net without option ROM): DHCP with
//! arch 7 gets `ipxe.efi` from the agent's static root over TFTP, iPXE-EFI
//! asks DHCP again as iPXE and loads the generated script, kernel and initrd
//! over HTTP; the initramfs fetches its boot-info and sends a syslog line
//! that the coordinator ties to the boot session of the kernel served.
//!
//! UEFI HTTP Boot: the same guest with OVMF's PXE boot options switched
//! off asks DHCP with vendor class `HTTPClient` and must be answered with a
//! boot URI on the agent, from which the firmware loads iPXE-EFI over HTTP.
//!
//! Topology: [`rackboot_tests::testbed`], with `--static-root` holding
//! Debian's `/usr/lib/ipxe/ipxe.efi` and `snponly.efi` (package `ipxe`).
//!
//! What EDK2 (Debian 12's OVMF 2022.11) needs, as observed here:
//! * PXE: an OFFER carrying option 60 `PXEClient` is a PXE offer; without
//!   option 43 (PXE discovery control) EDK2 files it as a "BINL" offer,
//!   ignores its boot file and asks the boot server on UDP 4011 for one
//!   (REQUESTs at 0, 1, 3, 6 s), then fails with `PXE-E16: No valid offer
//!   received`. An offer with 43 = `06 01 08 ff` (use the boot file given),
//!   or one without option 60 but with a boot file, is taken directly.
//! * HTTP Boot: OVMF creates "UEFI HTTPv4/HTTPv6" boot options after the
//!   PXE ones; `-fw_cfg name=opt/org.tianocore/IPv4PXESupport,string=no`
//!   (and `IPv6PXESupport`) removes the PXE ones, so HTTPv4 goes first. An
//!   OFFER echoing option 60 `HTTPClient` must carry the boot URI (option
//!   67 or `file`), or EDK2 discards it, even when the boot option already
//!   has a URI; without option 60 it only serves as an address lease.
//! * Whatever fails, OVMF ends in its "EFI Internal Shell": the boot checks
//!   stop there instead of waiting out their timeout.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::qemu::{Ovmf, QemuOpts};
use rackboot_tests::testbed::{
    ExpectedBoot, ImageSpec, NODE1_ADDR, SERVER_ADDR, TAP, Testbed, TestbedOpts,
};

use crate::boot_support::{self, BootArtifacts, CMDLINE};

const GUEST_MAC: &str = "52:54:00:9b:00:02";
/// Debian's x86-64 UEFI iPXE (package `ipxe`; a symlink to /boot/ipxe.efi).
const IPXE_EFI: &str = "/usr/lib/ipxe/ipxe.efi";
/// iPXE-EFI using the firmware's network driver (package `ipxe`).
const SNPONLY_EFI: &str = "/usr/lib/ipxe/snponly.efi";
/// From QEMU start to the marker on the console.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// The UEFI firmware and iPXE-EFI, or the reason to skip.
fn uefi_prerequisites() -> std::result::Result<Ovmf, String> {
    if let Some(reason) = boot_support::skip_reason(&[]) {
        return Err(reason);
    }
    let ovmf = Ovmf::find().ok_or_else(|| {
        format!(
            "needs OVMF ({} or {}): apt-get install ovmf, or run tests/scripts/install-deps.sh",
            Ovmf::CANDIDATES[0].0,
            Ovmf::CANDIDATES[1].0
        )
    })?;
    for file in [IPXE_EFI, SNPONLY_EFI] {
        if !Path::new(file).is_file() {
            return Err(format!(
                "needs {file}: apt-get install ipxe, or run tests/scripts/install-deps.sh"
            ));
        }
    }
    Ok(ovmf)
}

/// How the firmware starts.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Firmware {
    /// EDK2 PXE: DHCP arch 7, `ipxe.efi` over TFTP.
    Pxe,
    /// EDK2 HTTP Boot: DHCP vendor class `HTTPClient`, a boot URI over HTTP.
    Http,
}

/// OVMF PXE-boots from the agent: EDK2 (arch 7) gets `ipxe.efi` over TFTP
/// (the agent logs the completed transfer), iPXE-EFI loads kernel and
/// initrd over HTTP, and the initramfs prints its marker and a command line
/// naming node 1 and the image; its boot-info names the pushed kernel, and
/// its syslog line is tagged with the session of that kernel.
#[test]
fn uefi_pxe_boot_from_agent() -> Result<()> {
    uefi_boot("uefi_pxe_boot_from_agent", Firmware::Pxe)
}

/// OVMF HTTP-boots from the agent (PXE boot options off): its DHCP
/// DISCOVER with vendor class `HTTPClient` (arch 16) must be answered with a
/// boot URI on the agent; the firmware loads it over HTTP, and from there
/// the boot goes on as with PXE (iPXE-EFI, script, kernel, initrd over
/// HTTP), with the same boot-info, session and log checks.
#[test]
fn uefi_http_boot_from_agent() -> Result<()> {
    uefi_boot("uefi_http_boot_from_agent", Firmware::Http)
}

fn uefi_boot(test: &str, firmware: Firmware) -> Result<()> {
    let ovmf = match uefi_prerequisites() {
        Ok(ovmf) => ovmf,
        Err(reason) => {
            rackboot_tests::skip(&reason);
            return Ok(());
        }
    };
    let (image, guest_name) = match firmware {
        Firmware::Pxe => ("uefi-pxe:1", "uefi-pxe"),
        Firmware::Http => ("uefi-http:1", "uefi-http"),
    };
    let t0 = Instant::now();
    let art = BootArtifacts::get("UEFI")?;
    let ipxe_efi_size = std::fs::metadata(IPXE_EFI)
        .with_context(|| format!("reading {IPXE_EFI}"))?
        .len();
    let mut tb = Testbed::new("rb-uefi")?;
    tb.remove_on_drop(art.initrd.clone());
    let (setup_secs, report) = tb.run_reporting(test, |tb| {
        let t = Instant::now();
        tb.start(&TestbedOpts {
            static_files: vec![IPXE_EFI.into(), SNPONLY_EFI.into()],
            ..TestbedOpts::default()
        })?;
        tb.push_image(&ImageSpec {
            name: image,
            kernel: &art.kernel,
            initrd: &art.initrd,
            cmdline: CMDLINE,
            kernel_version: "",
            modules: None,
            dtb: None,
        })?;
        tb.assign(&["--default"], image)?;
        let vars = ovmf.vars_copy(tb.dir(), guest_name)?;
        let setup_secs = t.elapsed().as_secs_f64();

        let opts = match firmware {
            Firmware::Pxe => QemuOpts::uefi_network_boot(guest_name, TAP, GUEST_MAC, &ovmf, &vars),
            Firmware::Http => QemuOpts::uefi_http_boot(guest_name, TAP, GUEST_MAC, &ovmf, &vars),
        };
        tb.boot(opts)?;
        let want = ExpectedBoot {
            node: 1,
            image,
            kernel_blake3: &art.kernel_blake3,
            kernel_version: &art.uname,
            marker: &art.marker,
        };
        let report = boot_support::check_boot(tb, &want, &art.uname, BOOT_TIMEOUT)?;

        let transcript = tb.guest()?.transcript();
        match firmware {
            Firmware::Pxe => {
                // EDK2's own PXE ran (not an iPXE option ROM) ...
                ensure!(
                    transcript.contains("Start PXE over IPv4"),
                    "the transcript does not show EDK2's PXE (\"Start PXE over IPv4\"): \
                     did the firmware boot something else?"
                );
                // ... and fetched all of ipxe.efi from the static root over TFTP.
                let agent_log = tb.agent()?.logs();
                let size = format!("bytes: {ipxe_efi_size}");
                ensure!(
                    agent_log.lines().any(|l| l.contains("tftp transfer closed")
                        && l.contains("ipxe.efi")
                        && l.contains("Completed")
                        && l.contains(&size)),
                    "the agent log shows no completed TFTP transfer of ipxe.efi ({ipxe_efi_size} bytes)"
                );
            }
            Firmware::Http => {
                // EDK2's HTTP Boot ran and took its URI from the agent.
                ensure!(
                    transcript.contains("Start HTTP Boot over IPv4"),
                    "the transcript does not show EDK2's HTTP Boot"
                );
                let uri = transcript
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("URI: "))
                    .context("the firmware printed no boot URI")?;
                ensure!(
                    uri.starts_with(&format!("http://{SERVER_ADDR}/")),
                    "boot URI {uri:?} is not on the agent ({SERVER_ADDR})"
                );
            }
        }
        ensure!(
            report.found.latest.transport.eq_ignore_ascii_case("http"),
            "iPXE-EFI loads the kernel over HTTP, but the session says {:?}",
            report.found.latest.transport
        );
        let (node, addr) = tb.node_of_mac(GUEST_MAC)?;
        ensure!(
            node == "1" && addr == NODE1_ADDR,
            "expected {GUEST_MAC} as node 1 at {NODE1_ADDR}, got node {node} at {addr}"
        );
        Ok((setup_secs, report))
    })?;
    eprintln!(
        "{test}: artifacts {:.1} s, setup+push {setup_secs:.1} s, \
         QEMU start -> marker {:.1} s, session {}, total {:.1} s",
        art.secs,
        report.boot_secs,
        report.found.latest.id,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
