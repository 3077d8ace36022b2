//! Kernel upgrade: a node reassigned to an image with another kernel boots
//! it, and its boot-info, boot sessions and logs follow the new kernel.
//!
//! BIOS path (iPXE ROM) on the [`rackboot_tests::testbed`] topology. Image
//! B's kernel is image A's with a few bytes appended and another release
//! string (same length) in its boot header: the Linux boot protocol loads
//! what the setup header declares, so it boots the same, but it is another
//! blob with another blake3 and, for rackboot, another kernel version. Each
//! image carries a module bundle for its release; the guest fetches the
//! `modules.dep` its boot-info points at.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::qemu::QemuOpts;
use rackboot_tests::testbed::{
    ExpectedBoot, ImageSpec, TAP, Testbed, TestbedOpts, blake3_file, kernel_with_release,
    module_bundle, modules_dep_line, padded_kernel, parse_logs,
};

use crate::boot_support::{self, BootArtifacts, CMDLINE};

const GUEST_MAC: &str = "52:54:00:9b:00:03";
const IMAGE_A: &str = "upgrade:a";
const IMAGE_B: &str = "upgrade:b";
/// Appended to the kernel for image B.
const PADDING: &[u8] = b"\0rackboot kernel upgrade test padding\0";
/// From QEMU start to the marker, per boot.
const BOOT_TIMEOUT: Duration = Duration::from_secs(240);

/// Node 1 boots image A; it is reassigned (`assign --node 1`) to image B
/// with a different kernel blob and version and boots again (same MAC, new
/// QEMU run). The second boot's boot-info names B's kernel blake3 and
/// version; `node show 1` lists A's session, then B's (the latest); `logs 1
/// --boot last` has the second boot's line tagged with B's session and
/// `logs 1 --boot <A's session>` the first boot's line.
#[test]
fn kernel_upgrade_follows_sessions() -> Result<()> {
    if let Some(reason) = boot_support::skip_reason(&[]) {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    let t0 = Instant::now();
    let art = BootArtifacts::get("UPGRADE")?;
    let mut tb = Testbed::new("rb-upg")?;
    tb.remove_on_drop(art.initrd.clone());
    let (secs_a, secs_b) = tb.run_reporting("kernel_upgrade_follows_sessions", |tb| {
        tb.start(&TestbedOpts::default())?;
        // Image A: Debian's kernel as is; B: another release in the header.
        let version_a = art.uname.clone();
        let mut version_b = version_a.clone();
        let last = version_b.pop().context("empty kernel release")?;
        version_b.push(if last == 'b' { 'c' } else { 'b' });
        let (version_a, version_b) = (version_a.as_str(), version_b.as_str());
        let kernel_b = tb.dir().join("vmlinuz-b");
        padded_kernel(&art.kernel, &kernel_b, PADDING)?;
        kernel_with_release(&kernel_b, &kernel_b, version_b)?;
        let (modules_a, modules_b) = (
            tb.dir().join("modules-a.tar"),
            tb.dir().join("modules-b.tar"),
        );
        module_bundle(&modules_a, version_a)?;
        module_bundle(&modules_b, version_b)?;
        let blake3_b = blake3_file(&kernel_b)?;
        ensure!(
            blake3_b != art.kernel_blake3,
            "the padded kernel must be another blob"
        );

        // Boot 1: image A, the default.
        tb.push_image(&ImageSpec {
            name: IMAGE_A,
            kernel: &art.kernel,
            initrd: &art.initrd,
            cmdline: CMDLINE,
            kernel_version: version_a,
            modules: Some(&modules_a),
            dtb: None,
        })?;
        tb.assign(&["--default"], IMAGE_A)?;
        let want_a = ExpectedBoot {
            node: 1,
            image: IMAGE_A,
            kernel_blake3: &art.kernel_blake3,
            kernel_version: version_a,
            marker: &art.marker,
        };
        tb.boot(QemuOpts::network_boot("upgrade-a", TAP, GUEST_MAC))?;
        let a = boot_support::check_boot(tb, &want_a, &art.uname, BOOT_TIMEOUT)?;
        // /init powers off: the guest is gone before the node reboots.
        tb.guest()?.wait_for_exit(Duration::from_secs(30))?;

        // Boot 2: node 1 reassigned to image B.
        tb.push_image(&ImageSpec {
            name: IMAGE_B,
            kernel: &kernel_b,
            initrd: &art.initrd,
            cmdline: CMDLINE,
            kernel_version: version_b,
            modules: Some(&modules_b),
            dtb: None,
        })?;
        tb.assign(&["--node", "1"], IMAGE_B)?;
        let want_b = ExpectedBoot {
            node: 1,
            image: IMAGE_B,
            kernel_blake3: &blake3_b,
            kernel_version: version_b,
            marker: &art.marker,
        };
        tb.boot(QemuOpts::network_boot("upgrade-b", TAP, GUEST_MAC))?;
        let b = boot_support::check_boot(tb, &want_b, &art.uname, BOOT_TIMEOUT)?;

        // Sessions: A's (unchanged), then B's, the latest.
        let (sa, sb) = (&a.found.latest, &b.found.latest);
        // Boot-info and module tables followed the kernel each boot was served.
        for (report, session, version) in [(&a, sa, version_a), (&b, sb, version_b)] {
            let path = format!("modules/{version}");
            let dep = modules_dep_line(version);
            for (key, want) in [
                ("SESSION", session.id.as_str()),
                ("MODULES_PATH", path.as_str()),
                ("MODULES_DEP", dep.as_str()),
            ] {
                ensure!(
                    report.info.get(key) == Some(want),
                    "boot-info {key} is {:?}, want {want:?} ({:?})",
                    report.info.get(key),
                    report.info
                );
            }
        }
        ensure!(sa.id != sb.id, "both boots got session {}", sa.id);
        let sessions = &b.found.sessions;
        let pos = |id: &str| sessions.iter().position(|s| s.id == id);
        let (pa, pb) = (
            pos(&sa.id).with_context(|| {
                format!(
                    "`node show 1` no longer lists the first boot's session {}: {sessions:#?}",
                    sa.id
                )
            })?,
            pos(&sb.id).context("second boot's session missing")?,
        );
        ensure!(
            sessions[pa] == *sa,
            "the first boot's session changed: {:?} -> {:?}",
            sa,
            sessions[pa]
        );
        ensure!(
            pa < pb && sa.millis() < sb.millis(),
            "`node show 1` should list A's session {} before B's {}: {sessions:#?}",
            sa.id,
            sb.id
        );
        ensure!(
            sa.image == IMAGE_A && sb.image == IMAGE_B && sb.kernel_is(&blake3_b),
            "sessions {sa:?} / {sb:?} do not follow images A / B"
        );

        // Logs: each boot's line under its own session.
        let logs_a = tb.cli(&["logs", "1", "--boot", &sa.id])?.success()?;
        let lines_a = parse_logs(&logs_a.stdout)?;
        ensure!(
            lines_a
                .iter()
                .any(|l| l.session == sa.id && l.text.contains(&want_a.log_text())),
            "`logs 1 --boot {}` lacks the first boot's line {:?}:\n{logs_a}",
            sa.id,
            want_a.log_text()
        );
        ensure!(
            lines_a.iter().all(|l| l.session == sa.id),
            "`logs 1 --boot {}` shows lines of other sessions:\n{logs_a}",
            sa.id
        );
        ensure!(
            b.found.log.session == sb.id && b.found.log.text.contains(&want_b.log_text()),
            "the second boot's line {:?} is not under B's session {}",
            b.found.log,
            sb.id
        );
        Ok((a.boot_secs, b.boot_secs))
    })?;
    eprintln!(
        "kernel_upgrade_follows_sessions: artifacts {:.1} s, QEMU start -> marker \
         {secs_a:.1} s (image A) and {secs_b:.1} s (image B), total {:.1} s",
        art.secs,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
