//! Checks of the harness itself: artifacts boot, namespaces connect and
//! clean up.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::netns::{Netns, veth_pair};
use rackboot_tests::qemu::{Nic, QemuGuest, QemuOpts};
use rackboot_tests::{artifacts, require_commands_or_skip, require_root_or_skip};

/// The fetched kernel boots the built initramfs under QEMU (no KVM) and
/// prints the marker, its version and its command line.
#[test]
fn direct_kernel_boot_prints_marker() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(
        [
            "qemu-system-x86_64",
            "apt-get",
            "dpkg-deb",
            "cpio",
            "busybox"
        ],
        Ok(())
    );

    let t = Instant::now();
    let kernel = artifacts::kernel()?;
    let version = artifacts::kernel_version()?;
    eprintln!(
        "kernel {version} ready in {:.1} s: {}",
        t.elapsed().as_secs_f64(),
        kernel.display()
    );

    let marker = "SELFTEST-DIRECT-BOOT";
    let t = Instant::now();
    let initrd = artifacts::initramfs(marker)?;
    let size = std::fs::metadata(&initrd)?.len();
    eprintln!(
        "initramfs ready in {:.1} s: {} ({size} bytes)",
        t.elapsed().as_secs_f64(),
        initrd.display()
    );

    let mut guest = QemuGuest::spawn(QemuOpts::direct_kernel(
        "selftest-direct",
        &kernel,
        &initrd,
        "quiet rackboot.selftest=1",
    ))?;
    let marker_line =
        guest.wait_for_line(&artifacts::marker_line(marker), Duration::from_secs(120))?;
    eprintln!(
        "marker after {:.1} s: {marker_line:?} (transcript {})",
        guest.elapsed().as_secs_f64(),
        guest.transcript_path().display()
    );
    ensure!(
        marker_line.trim() == artifacts::marker_line(marker),
        "marker must be alone on its line, got {marker_line:?}"
    );

    let lines = guest.transcript_lines();
    let kernel_line = format!("RACKBOOT-KERNEL: {version}");
    ensure!(
        lines.iter().any(|l| l.contains(&kernel_line)),
        "no {kernel_line:?} line in the transcript:\n{}",
        guest.transcript()
    );
    ensure!(
        lines
            .iter()
            .any(|l| l.contains("RACKBOOT-CMDLINE:") && l.contains("rackboot.selftest=1")),
        "no RACKBOOT-CMDLINE line with our command line in the transcript:\n{}",
        guest.transcript()
    );

    // /init powers off, so QEMU exits by itself ...
    let status = guest.wait_for_exit(Duration::from_secs(30))?;
    ensure!(status.success(), "QEMU exited with {status}");

    // ... and waiting for a line that never comes then fails at once, with
    // the console's tail in the error.
    let t = Instant::now();
    let err = guest
        .wait_for_line("NO-SUCH-LINE", Duration::from_secs(60))
        .expect_err("a line that never comes must not be found");
    let msg = format!("{err:#}");
    ensure!(
        t.elapsed() < Duration::from_secs(5) && msg.contains("QEMU exited"),
        "expected a quick 'QEMU exited' error, got after {:?}: {msg}",
        t.elapsed()
    );
    ensure!(
        msg.contains(&artifacts::marker_line(marker)) && msg.contains("full transcript"),
        "the error should quote the console and name the transcript file: {msg}"
    );
    Ok(())
}

/// Two namespaces joined by a veth pair reach each other, and are gone
/// (with their interfaces) once dropped.
#[test]
fn netns_veth_ping() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox"], Ok(()));

    let (a_name, b_name);
    {
        let a = Netns::create("rbt-a")?;
        let b = Netns::create("rbt-b")?;
        a_name = a.name().to_string();
        b_name = b.name().to_string();
        ensure!(Netns::exists(&a_name) && Netns::exists(&b_name));

        // Documentation range (RFC 5737): exists only inside these namespaces.
        veth_pair(
            &a,
            "rbt-va",
            Some("192.0.2.1/24"),
            &b,
            "rbt-vb",
            Some("192.0.2.2/24"),
        )?;
        let out = a
            .run("busybox", &["ping", "-c", "2", "-W", "2", "192.0.2.2"])
            .context("ping from a to b")?;
        ensure!(out.contains("2 packets received"), "ping a->b: {out}");
        b.run("busybox", &["ping", "-c", "1", "-W", "2", "192.0.2.1"])
            .context("ping from b to a")?;

        // A process spawned in the namespace is killed with it.
        let sleeper = a.spawn({
            let mut c = a.exec("sleep");
            c.arg("600");
            c
        })?;
        // `ip netns exec` enters the namespace after it is spawned: under
        // load the pid shows up there a moment later.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !a.pids()?.contains(&sleeper.pid()) {
            ensure!(
                std::time::Instant::now() < deadline,
                "sleep (pid {}) not in namespace a after 5 s",
                sleeper.pid()
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        std::mem::forget(sleeper); // leave it to Netns's drop
    }
    ensure!(!Netns::exists(&a_name), "namespace {a_name} survived drop");
    ensure!(!Netns::exists(&b_name), "namespace {b_name} survived drop");
    let host_links =
        rackboot_tests::util::run(std::process::Command::new("ip").args(["-o", "link"]))?;
    ensure!(
        !host_links.contains("rbt-va") && !host_links.contains("rbt-vb"),
        "veth ends leaked into the host namespace:\n{host_links}"
    );
    Ok(())
}

/// A network-booting guest on a tap device in a namespace reaches the
/// namespace's bridge: iPXE (the e1000 option ROM) gets a lease from busybox
/// udhcpd running there. Checks the plumbing a PXE test relies on, without
/// any rackboot code.
#[test]
fn network_boot_ipxe_gets_lease_on_tap_bridge() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox", "qemu-system-x86_64"], Ok(()));

    let rack = Netns::create("rbt-rack")?;
    rack.bridge_with_tap("br0", Some("192.0.2.1/24"), "tap0")?;

    let _udhcpd = start_udhcpd(&rack, "br0")?;

    let mac = "52:54:00:7e:57:01";
    let mut guest =
        QemuGuest::spawn_in(&rack, QemuOpts::network_boot("selftest-pxe", "tap0", mac))?;
    guest.wait_for_line("iPXE", Duration::from_secs(60))?;
    // iPXE: "Configuring (net0 52:54:00:7e:57:01)...... ok" (DHCP done), then
    // "net0: 192.0.2.10x/255.255.255.0".
    let configured = guest.wait_for_line(&format!("(net0 {mac})"), Duration::from_secs(60))?;
    let addr = guest.wait_for_line("net0: 192.0.2.1", Duration::from_secs(60))?;
    eprintln!(
        "iPXE lease after {:.1} s: {configured:?} / {addr:?}",
        guest.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The net initramfs loads the e1000 module and gets a DHCP lease (busybox
/// udhcpd in the namespace) when booted with `rackboot.dhcp=1`.
#[test]
fn net_initramfs_takes_dhcp_lease() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox", "qemu-system-x86_64", "cpio"], Ok(()));

    let rack = Netns::create("rbt-rack")?;
    rack.bridge_with_tap("br0", Some("192.0.2.1/24"), "tap0")?;
    let _udhcpd = start_udhcpd(&rack, "br0")?;

    let marker = "SELFTEST-NET";
    let mac = "52:54:00:7e:57:02";
    let opts = QemuOpts::direct_kernel(
        "selftest-net-initramfs",
        artifacts::kernel()?,
        artifacts::net_initramfs(marker)?,
        "quiet rackboot.dhcp=1",
    )
    .with_nic(Nic::e1000("tap0", mac));
    let mut guest = QemuGuest::spawn_in(&rack, opts)?;
    guest.wait_for_line(
        &format!("RACKBOOT-NET: eth0 {mac}"),
        Duration::from_secs(120),
    )?;
    let lease = guest.wait_for_line("RACKBOOT-DHCP:", Duration::from_secs(60))?;
    ensure!(
        lease.contains("bound ip=192.0.2.1") && lease.contains("serverid=192.0.2.1"),
        "unexpected lease line {lease:?}"
    );
    guest.wait_for_line(&artifacts::marker_line(marker), Duration::from_secs(30))?;
    eprintln!("{lease} after {:.1} s", guest.elapsed().as_secs_f64());
    Ok(())
}

/// Starts busybox udhcpd on `bridge` in `ns`, leasing 192.0.2.100-110
/// (the bridge must have 192.0.2.1/24), logging to `udhcpd.log` in the
/// returned directory. Killed when the result is dropped.
fn start_udhcpd(
    ns: &Netns,
    bridge: &str,
) -> Result<(rackboot_tests::netns::NsProcess, tempfile::TempDir)> {
    let dir = tempfile::tempdir()?;
    let leases = dir.path().join("leases");
    std::fs::write(&leases, b"")?;
    let conf = dir.path().join("udhcpd.conf");
    std::fs::write(
        &conf,
        format!(
            "start 192.0.2.100\nend 192.0.2.110\ninterface {bridge}\nmax_leases 10\n\
             lease_file {}\noption subnet 255.255.255.0\noption lease 600\n",
            leases.display()
        ),
    )?;
    let log = std::fs::File::create(dir.path().join("udhcpd.log"))?;
    let mut udhcpd = ns.exec("busybox");
    udhcpd
        .arg("udhcpd")
        .arg("-f")
        .arg(&conf)
        .stdout(log.try_clone()?)
        .stderr(log);
    Ok((ns.spawn(udhcpd)?, dir))
}
