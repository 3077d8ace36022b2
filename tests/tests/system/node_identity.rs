//! Node identity (seeds 003, 004): a machine seen for the first time gets a
//! provisional lease, not a number; the probe in the discovery image reports
//! every MAC of the machine; then it is numbered once, with all its MACs,
//! and moves to its permanent address.
//!
//! * `qemu_two_nic_machine_is_numbered_once_by_its_probe` (root, QEMU): a
//!   guest with two NICs PXE-boots with `--accept probe`: its first lease is
//!   in the provisional range, it boots the discovery image (`assign
//!   --discovery`), `rackboot-probe` reports both MACs, the guest learns
//!   `n1`, and its next lease is node 1's permanent address; the coordinator
//!   lists one node with both MACs and the probe's inventory;
//! * `manual_accept_replace_and_retire` (root): with `--accept manual`, a
//!   machine (a namespace with a veth on the rack bridge and a second,
//!   dummy NIC) takes a provisional lease with busybox `udhcpc` and runs the
//!   real `rackboot probe`: it is held (`node pending` lists both MACs, no
//!   node exists) until `rackboot node accept`, after which the waiting probe
//!   prints its node; `node retire` forgets its MACs and keeps its number,
//!   `node replace` gives that number to another MAC, which then gets the
//!   node's address from the agent; `rack move` then moves node 1's
//!   address with the rack's node base;
//!   A probe without the token of its discovery script is not taken (the
//!   machine is not even held); with it (fetched over TFTP as firmware
//!   would), it is.
//! * `offline_agent_gives_provisional_leases_never_numbers` (root): an agent
//!   that has never reached a coordinator, with `--accept probe`, still
//!   gives an unknown machine a provisional lease, and its probe gets no
//!   number (it times out): nothing is invented locally.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{self, run_with_timeout};
use rackboot_tests::netns::{Netns, veth_pair};
use rackboot_tests::qemu::{Nic, QemuOpts};
use rackboot_tests::testbed::{BRIDGE, ImageSpec, TAP, Testbed, TestbedOpts, normalize_mac};
use rackboot_tests::tftplab::{CLIENT_IF, SERVER_IP, TftpLab};
use rackboot_tests::{artifacts, require_commands_or_skip, require_root_or_skip};

use crate::boot_support::{self, unique_marker};

/// Node addresses start here (the pool lies below).
const NODE_BASE: &str = "10.99.0.100";
/// Provisional pool.
const POOL: &str = "10.99.0.50-10.99.0.59";
const POOL_PREFIX: &str = "10.99.0.5";
/// The agent on the rack bridge.
const AGENT: &str = "10.99.0.1";

fn probe_agent_args(policy: &str) -> Vec<String> {
    [
        "--accept",
        policy,
        "--node-base",
        NODE_BASE,
        "--provisional-range",
        POOL,
        "--provisional-lease-secs",
        "60",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// Rows of `rackboot node list` after the header.
fn node_rows(tb: &Testbed) -> Result<Vec<String>> {
    let list = tb.cli(&["node", "list"])?.success()?;
    Ok(list.stdout.lines().skip(1).map(str::to_string).collect())
}

#[test]
fn qemu_two_nic_machine_is_numbered_once_by_its_probe() -> Result<()> {
    if let Some(reason) = boot_support::skip_reason(&[]) {
        rackboot_tests::skip(&reason);
        return Ok(());
    }
    const MAC1: &str = "52:54:00:9d:00:01";
    const MAC2: &str = "52:54:00:9d:00:02";
    let marker = unique_marker("PROBE");
    let kernel = artifacts::kernel()?;
    let initrd = artifacts::discovery_initramfs(&marker)?;
    let mut tb = Testbed::new("rb-probe")?;
    tb.remove_on_drop(initrd.clone());
    tb.run_reporting("qemu_two_nic_machine_is_numbered_once_by_its_probe", |tb| {
        tb.start(&TestbedOpts {
            agent_args: probe_agent_args("probe"),
            extra_taps: vec!["tap1".into()],
            ..TestbedOpts::default()
        })?;
        tb.push_image(&ImageSpec {
            name: "discovery:1",
            kernel: &kernel,
            initrd: &initrd,
            cmdline: "console=ttyS0 panic=-1 rackboot.dhcp=1",
            kernel_version: "",
            modules: None,
            dtb: None,
        })?;
        tb.assign(&["--discovery"], "discovery:1")?;
        // The second NIC: an e1000 (so the kernel names it eth1, after the
        // boot NIC) without option ROM, on its own tap.
        let second = Nic {
            tap: "tap1".into(),
            mac: MAC2.into(),
            model: "e1000".into(),
            romfile: Some(String::new()),
            bootindex: None,
        };
        let guest = tb.boot(QemuOpts::network_boot("probe", TAP, MAC1).with_nic(second))?;
        let timeout = Duration::from_secs(240);
        let first = guest.wait_for_line("RACKBOOT-DHCP: bound", timeout)?;
        ensure!(
            first.contains(&format!("ip={POOL_PREFIX}")),
            "the unknown machine's first lease must be provisional ({POOL}): {first}"
        );
        let probe = guest.wait_for_line("RACKBOOT-PROBE:", Duration::from_secs(150))?;
        ensure!(
            probe.contains("node=n1"),
            "the probe should learn it is n1: {probe}"
        );
        let provisional = format!("ip={POOL_PREFIX}");
        let second_lease =
            guest.wait_for_line_matching("a permanent lease", Duration::from_secs(60), |l| {
                l.contains("RACKBOOT-DHCP: bound") && !l.contains(&provisional)
            })?;
        ensure!(
            second_lease.contains(&format!("ip={NODE_BASE} ")),
            "after numbering the machine must get node 1's address {NODE_BASE}: {second_lease}"
        );
        guest.wait_for_line(&artifacts::marker_line(&marker), Duration::from_secs(60))?;

        let rows = node_rows(tb)?;
        ensure!(
            rows.len() == 1,
            "one machine with two NICs must be one node:\n{}",
            rows.join("\n")
        );
        let (node, addr) = tb.node_of_mac(MAC1)?;
        ensure!(
            node == "1" && addr == NODE_BASE,
            "{MAC1} should be node 1 at {NODE_BASE}, got node {node} at {addr}"
        );
        let show = tb.cli(&["node", "show", "1"])?.success()?;
        let shown = normalize_mac(&show.stdout);
        ensure!(
            shown.contains(MAC1) && shown.contains(MAC2) && show.stdout.contains("nics=2"),
            "`node show 1` should list both MACs and the probe's inventory (nics=2):\n{show}"
        );
        Ok(())
    })
}

/// udhcpc event script that writes the bound address to `$1.addr`.
const UDHCPC_SCRIPT: &str = r#"#!/bin/sh
case "$1" in
    deconfig) ip -4 addr flush dev "$interface"; ip link set "$interface" up ;;
    bound|renew)
        ip -4 addr flush dev "$interface"
        ip -4 addr add "$ip/${mask:-24}" dev "$interface"
        echo "$ip" > "$RB_LEASE_FILE" ;;
esac
exit 0
"#;

/// A machine on the rack bridge: namespace `<prefix>-m`, `eth0` (a veth
/// whose peer is a port of br0) with `mac`, and a second NIC `eth1` (a veth
/// whose peer stays unattached in the rack namespace) with `mac2`.
fn machine(tb: &Testbed, prefix: &str, mac: &str, mac2: &str) -> Result<Netns> {
    let ns = Netns::create(&format!("{prefix}-m"))?;
    let port = format!("{prefix}p");
    veth_pair(tb.rack_netns(), &port, None, &ns, "eth0", None)?;
    tb.rack_netns().attach_to_bridge(&port, BRIDGE)?;
    ns.ip(&["link", "set", "eth0", "address", mac])?;
    veth_pair(
        tb.rack_netns(),
        &format!("{prefix}q"),
        None,
        &ns,
        "eth1",
        None,
    )?;
    ns.ip(&["link", "set", "eth1", "address", mac2])?;
    ns.link_up("lo")?;
    Ok(ns)
}

/// The probe token the agent at `server` hands `mac` at this namespace's
/// address: the `rackboot.token=` of its discovery script
/// (`ipxe/<mac>.ipxe`), fetched over TFTP with busybox as firmware would.
fn discovery_token(dir: &std::path::Path, ns: &Netns, server: &str, mac: &str) -> Result<String> {
    let file = dir.join(format!("discovery-{}.ipxe", mac.replace(':', "")));
    let mut cmd = ns.exec("busybox");
    cmd.args(["tftp", "-g", "-r"])
        .arg(format!("ipxe/{}.ipxe", mac.replace(':', "-")))
        .arg("-l")
        .arg(&file)
        .arg(server);
    let out = run_with_timeout(cmd, Duration::from_secs(20))?;
    let script = std::fs::read_to_string(&file)
        .with_context(|| format!("no discovery script over TFTP:\n{out}"))?;
    script
        .split_whitespace()
        .find_map(|w| w.strip_prefix("rackboot.token="))
        .map(str::to_string)
        .with_context(|| format!("the discovery script carries no token:\n{script}"))
}

/// The MAC of the lab client's interface.
fn lab_client_mac(lab: &TftpLab) -> Result<String> {
    let link = lab.client.ip(&["-o", "link", "show", "dev", CLIENT_IF])?;
    link.split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("no MAC in {link:?}"))
}

/// Runs busybox udhcpc once in `ns` on eth0 and returns the bound address.
fn udhcpc(tb: &Testbed, ns: &Netns, tag: &str) -> Result<String> {
    udhcpc_on(tb.dir(), ns, "eth0", tag)
}

/// Runs busybox udhcpc once in `ns` on `iface` (files in `dir`) and returns
/// the bound address.
fn udhcpc_on(dir: &std::path::Path, ns: &Netns, iface: &str, tag: &str) -> Result<String> {
    let script = dir.join("udhcpc.sh");
    std::fs::write(&script, UDHCPC_SCRIPT)?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let lease = dir.join(format!("{tag}.lease"));
    let _ = std::fs::remove_file(&lease);
    let mut cmd = ns.exec("busybox");
    cmd.args([
        "udhcpc", "-i", iface, "-f", "-q", "-n", "-t", "8", "-T", "2", "-s",
    ])
    .arg(&script)
    .env("RB_LEASE_FILE", &lease);
    let out = run_with_timeout(cmd, Duration::from_secs(40))?;
    let addr =
        std::fs::read_to_string(&lease).with_context(|| format!("udhcpc got no lease:\n{out}"))?;
    Ok(addr.trim().to_string())
}

#[test]
fn manual_accept_replace_and_retire() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["busybox", "ip"], Ok(()));
    const MAC1: &str = "52:54:00:9e:00:01";
    const MAC2: &str = "52:54:00:9e:00:02";
    const MAC3: &str = "52:54:00:9e:00:03";
    let mut tb = Testbed::new("rb-acc")?;
    tb.start(&TestbedOpts {
        agent_args: probe_agent_args("manual"),
        ..TestbedOpts::default()
    })?;
    tb.run_reporting("manual_accept_replace_and_retire", |tb| {
        let m = machine(tb, "rb-acc1", MAC1, MAC2)?;
        let addr = udhcpc(tb, &m, "first")?;
        ensure!(
            addr.starts_with(POOL_PREFIX),
            "an unknown machine gets a provisional lease ({POOL}), got {addr}"
        );
        ensure!(node_rows(tb)?.is_empty(), "no node before the probe");

        // The real probe without the token its discovery script carries:
        // not taken (nothing held), it gets no number and gives up.
        let cli = daemon::binary(daemon::CLI)?;
        let mut probe = m.exec(&cli);
        probe.args([
            "probe",
            "--addr",
            &addr,
            "--server",
            AGENT,
            "--timeout-secs",
            "4",
        ]);
        probe.args(["--interval-secs", "1"]);
        let tokenless = run_with_timeout(probe, Duration::from_secs(20))?;
        ensure!(
            !tokenless.status.success() && tokenless.stderr.contains("no probe token"),
            "a probe without a token should say so and time out:\n{tokenless}"
        );
        let pending = tb.cli(&["node", "pending"])?.success()?;
        ensure!(
            !normalize_mac(&pending.stdout).contains(MAC1),
            "a report without a token must not be held:\n{pending}"
        );

        // With its token, waiting in the background for acceptance.
        let token = discovery_token(tb.dir(), &m, AGENT, MAC1)?;
        let mut probe = m.exec(&cli);
        probe.args([
            "probe",
            "--addr",
            &addr,
            "--server",
            AGENT,
            "--token",
            &token,
            "--timeout-secs",
            "60",
        ]);
        probe.args(["--interval-secs", "1"]);
        let probe = std::thread::spawn(move || run_with_timeout(probe, Duration::from_secs(70)));

        // Held: pending lists both MACs; no node.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pending = tb.cli(&["node", "pending"])?.success()?;
            let p = normalize_mac(&pending.stdout);
            if p.contains(MAC1) && p.contains(MAC2) {
                break;
            }
            ensure!(Instant::now() < deadline, "machine never held:\n{pending}");
            std::thread::sleep(Duration::from_millis(300));
        }
        ensure!(
            node_rows(tb)?.is_empty(),
            "a held machine has no number yet"
        );

        // Rejected: forgotten (a MAC nobody holds cannot be rejected)…
        let rejected = tb.cli(&["node", "reject", MAC1])?.success()?;
        ensure!(
            normalize_mac(&rejected.stdout).contains(MAC2) && rejected.stdout.contains("rejected"),
            "reject names the machine's MACs:\n{rejected}"
        );
        let unknown = tb.cli(&["node", "reject", "52:54:00:ee:ee:ee"])?;
        ensure!(
            !unknown.status.success() && unknown.stderr.contains("no machine waiting"),
            "rejecting a MAC nobody holds fails clearly:\n{unknown}"
        );
        // …and held again at its probe's next report.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let pending = tb.cli(&["node", "pending"])?.success()?;
            if normalize_mac(&pending.stdout).contains(MAC1) {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "machine never held again:\n{pending}"
            );
            std::thread::sleep(Duration::from_millis(300));
        }

        tb.cli(&["node", "accept", MAC2])?.success()?;
        let out = probe
            .join()
            .map_err(|_| anyhow::anyhow!("probe thread panicked"))??;
        ensure!(
            out.status.success() && out.stdout.contains("node=n1"),
            "the waiting probe should learn n1 after accept:\n{out}"
        );
        let (node, node_addr) = tb.node_of_mac(MAC1)?;
        ensure!(
            node == "1" && node_addr == NODE_BASE,
            "node {node} at {node_addr}"
        );
        let show = tb.cli(&["node", "show", "1"])?.success()?;
        let shown = normalize_mac(&show.stdout);
        ensure!(
            shown.contains(MAC1) && shown.contains(MAC2),
            "both MACs belong to node 1:\n{show}"
        );
        // The machine, asking afresh, now gets its permanent address.
        let addr = udhcpc(tb, &m, "second")?;
        ensure!(
            addr == NODE_BASE,
            "numbered machine got {addr}, not {NODE_BASE}"
        );

        // Retire: number kept, MACs forgotten.
        tb.cli(&["node", "retire", "1"])?.success()?;
        let show = tb.cli(&["node", "show", "1"])?.success()?;
        ensure!(show.stdout.contains("retired"), "{show}");
        // Replace: new hardware takes number 1 and its address.
        tb.cli(&["node", "replace", "1", "--mac", MAC3])?
            .success()?;
        let (node, node_addr) = tb.node_of_mac(MAC3)?;
        ensure!(
            node == "1" && node_addr == NODE_BASE,
            "replacement got node {node} at {node_addr}"
        );
        let new_hw = machine(tb, "rb-acc3", MAC3, "52:54:00:9e:00:04")?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let addr = udhcpc(tb, &new_hw, "replacement")?;
            if addr == NODE_BASE {
                break;
            }
            ensure!(
                Instant::now() < deadline,
                "the replacement hardware should get node 1's address, got {addr}"
            );
        }
        // A MAC of another node cannot be given away.
        let refused = tb.cli(&["node", "replace", "1", "--mac", "ff:ff:ff:ff:ff:ff"])?;
        ensure!(
            !refused.status.success(),
            "a broadcast MAC must be refused:\n{refused}"
        );
        // Moving the rack is an administrator's explicit command: node 1
        // keeps its number and slot, its address follows the node base.
        let moved = tb.cli(&[
            "rack",
            "move",
            "r1",
            "--subnet",
            "10.99.0.0/24",
            "--server-address",
            AGENT,
            "--node-base",
            "10.99.0.110",
        ])?;
        ensure!(
            moved.status.success() && moved.stdout.contains("1 node(s) changed address"),
            "rack move should move node 1:\n{moved}"
        );
        let (node, node_addr) = tb.node_of_mac(MAC3)?;
        ensure!(
            node == "1" && node_addr == "10.99.0.110",
            "after the move node {node} is at {node_addr}"
        );
        Ok(())
    })
}

#[test]
fn offline_agent_gives_provisional_leases_never_numbers() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["busybox", "ip"], Ok(()));
    let mut lab = TftpLab::new("rboff")?;
    lab.use_probe_policy();
    // No coordinator: the agent points at a closed port.
    lab.start_agent()?;
    let addr = udhcpc_on(lab.dir(), &lab.client, CLIENT_IF, "offline")?;
    ensure!(
        addr.starts_with("10.201.0.5"),
        "an unknown machine behind an offline agent gets a provisional lease, got {addr}"
    );
    let cli = daemon::binary(daemon::CLI)?;
    let token = discovery_token(lab.dir(), &lab.client, SERVER_IP, &lab_client_mac(&lab)?)?;
    let mut probe = lab.client.exec(&cli);
    probe.args([
        "probe",
        "--addr",
        &addr,
        "--server",
        SERVER_IP,
        "--token",
        &token,
        "--timeout-secs",
        "4",
    ]);
    probe.args(["--interval-secs", "1"]);
    let out = run_with_timeout(probe, Duration::from_secs(20))?;
    ensure!(
        !out.status.success() && !out.stdout.contains("node="),
        "an offline agent must not number a machine:\n{out}"
    );
    let log = lab.agent_log();
    ensure!(
        log.contains("asking the coordinator to number a machine"),
        "the probe report should be queued for the coordinator:\n{log}"
    );
    lab.agent_mut()?.ensure_running()
}
