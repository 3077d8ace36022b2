//! Boot storms against the rack agent with `rackboot storm`: behaviour, not
//! benchmarks (outcomes are asserted, never timings; the benchmark is
//! `tests/bench/tftp-storm.sh`).
//!
//! * 300 emulated PXE ROMs fetch 1 MiB each through a 1 Gbit `tc tbf` link
//!   with 2% of the agent's packets dropped: none fails, every copy has the
//!   file's blake3;
//! * 100 ROMs do DHCP (unknown MACs, accepted through the coordinator) and
//!   TFTP with the firmware timers at a quarter: all boot, and the
//!   coordinator lists 100 distinct node numbers and addresses;
//! * SIGUSR1 to the agent during a storm logs the TFTP state dump with the
//!   active transfers;
//! * the agent's `/metrics` scraped during a DHCP + TFTP storm, and the
//!   coordinator's (`--metrics-listen`) after it, have every metric family
//!   and counters that moved.
//!
//! Each test runs the agent, the storm and the kernel's packet path on the
//! same two cores: nextest runs them one at a time (test group
//! `netns-heavy`, `.config/nextest.toml`).
//!
//! This file holds the cases; the drivers are beside it: `run` (the storm
//! processes and their verdict), `observe` (SIGUSR1 dumps, the node list,
//! link counters, TFTP fetches, `wait_until`) and `metrics` (the
//! exposition parser and the expected metric families).

mod metrics;
mod observe;
mod run;

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::tftplab::{
    CLIENT_IF, CLIENT_IP, LossDirection, RACK, SERVER_IP, TftpLab, blake3_hex, random_bytes,
};
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

use metrics::{
    AGENT_FAMILIES, AGENT_HTTP_PORT, AGENT_METRICS, COORDINATOR_FAMILIES, COORDINATOR_METRICS,
    PHASES, scrape,
};
use observe::{
    active_lines, dump_active_count, parse_node_list, server_tx_bytes, tftp_get,
    usr1_provisional_full, usr1_until_active_dump, wait_agent_sent, wait_until,
};
use run::{
    BackgroundStorm, STORM_DEADLINE_SECS, dhcp_tftp_args, ensure_all_booted, json_number, run_soak,
    storm, tftp_args,
};

/// 300 PXE ROMs × 1 MiB through 1 Gbit with 2% of the agent's packets
/// lost: 0 failed boots, every copy byte-exact (blake3 checked by the
/// storm for every client).
#[test]
fn tftp_storm_300_clients_1mib_1gbit_2pct_loss() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "nft", "tc"], Ok(()));
    let file = random_bytes("storm-1m", 1 << 20);
    let mut lab = TftpLab::new("rbst3")?;
    lab.add_file("f1m", &file)?;
    lab.start_agent()?;
    lab.rate_limit("1gbit")?;
    lab.set_loss(2, LossDirection::FromServer)?;

    let digest = blake3_hex(&file);
    let (out, r) = storm(&lab, &tftp_args("f1m", 300, &digest))?;
    ensure_all_booted(&lab, &out, &r, 300)?;
    ensure!(
        r.bytes == 300 << 20,
        "300 clients should have received 300 MiB, the storm counts {} bytes",
        r.bytes
    );
    let dropped = lab.dropped_packets()?;
    eprintln!(
        "300 × 1 MiB in {:.1} s; nftables dropped {dropped} packets",
        r.elapsed_s
    );
    ensure!(dropped > 0, "the loss rule dropped nothing");
    lab.agent_mut()?.ensure_running()
}

/// 100 PXE ROMs with unknown MACs do DHCP (accepted through the
/// coordinator) and TFTP, firmware timers ×0.25: all boot; the coordinator
/// then lists 100 nodes with distinct numbers, addresses and MACs.
#[test]
fn dhcp_tftp_storm_100_clients_get_distinct_nodes() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "nft"], Ok(()));
    // The agent hands BIOS PXE clients `undionly.kpxe` (option 93 = 0).
    let rom = random_bytes("storm-undionly", 200 * 1024);
    let mut lab = TftpLab::new("rbstd")?;
    lab.add_file("undionly.kpxe", &rom)?;
    lab.start_coordinator()?;
    lab.start_agent()?;

    let digest = blake3_hex(&rom);
    let (out, r) = storm(&lab, &dhcp_tftp_args(100, &digest))?;
    ensure_all_booted(&lab, &out, &r, 100)?;
    ensure!(
        r.bytes == 100 * rom.len() as u64,
        "every client should have fetched the {}-byte boot file once; the storm counts {} bytes",
        rom.len(),
        r.bytes
    );

    let list = lab.cli(&["node", "list", "--rack", RACK])?.success()?;
    let nodes = parse_node_list(&list)?;
    ensure!(
        nodes.len() == 100,
        "the coordinator should list 100 nodes, it lists {}:\n{list}",
        nodes.len()
    );
    let numbers: BTreeSet<u32> = nodes.iter().map(|n| n.number).collect();
    let addresses: BTreeSet<Ipv4Addr> = nodes.iter().map(|n| n.address).collect();
    let macs: BTreeSet<&str> = nodes.iter().map(|n| n.mac.as_str()).collect();
    ensure!(
        numbers.len() == 100 && addresses.len() == 100 && macs.len() == 100,
        "node numbers, addresses and MACs must be distinct: {} numbers, {} addresses, {} MACs \
         for 100 nodes:\n{list}",
        numbers.len(),
        addresses.len(),
        macs.len()
    );
    // Lowest free number first, starting at 1.
    ensure!(
        numbers == (1..=100).collect(),
        "100 new nodes should be numbered 1..=100:\n{list}"
    );
    let expected_macs: BTreeSet<String> = (0..100u32)
        .map(|i| format!("52:54:00:00:{:02x}:{:02x}", i >> 8, i & 0xff))
        .collect();
    ensure!(
        macs.iter().all(|m| expected_macs.contains(*m)),
        "the nodes' MACs should be the storm's 52:54:00:00:00:00 + i:\n{list}"
    );
    let server: Ipv4Addr = SERVER_IP.parse()?;
    let client: Ipv4Addr = CLIENT_IP.parse()?;
    for n in &nodes {
        let [a, b, c, _] = n.address.octets();
        ensure!(
            [a, b, c] == [10, 201, 0] && n.address != server && n.address != client,
            "node {} has address {} outside the rack subnet or taken:\n{list}",
            n.number,
            n.address
        );
        ensure!(n.rack == RACK, "node {} is in rack {:?}", n.number, n.rack);
    }
    lab.agent_mut()?.ensure_running()
}

/// SIGUSR1 during a storm: the agent logs its state and the TFTP state
/// dump, with at least one active transfer (client, file, progress).
#[test]
fn sigusr1_during_storm_logs_tftp_state() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "tc", "kill"], Ok(()));
    let file = random_bytes("storm-usr1", 1 << 20);
    let mut lab = TftpLab::new("rbstu")?;
    lab.add_file("f1m", &file)?;
    lab.start_agent()?;
    // 100 MiB through 200 Mbit: the storm lasts several seconds.
    lab.rate_limit("200mbit")?;

    let digest = blake3_hex(&file);
    let mut storm = BackgroundStorm::start(&lab, &tftp_args("f1m", 100, &digest))?;

    // Signal until a dump shows an active transfer.
    let started = Instant::now();
    let (found, dumps_seen) = usr1_until_active_dump(&mut lab, &mut storm)?;
    let dump = found.with_context(|| {
        format!(
            "{dumps_seen} SIGUSR1 dumps during the storm, none with an active transfer:\n{}",
            lab.report()
        )
    })?;
    eprintln!(
        "dump #{dumps_seen} after {:.1} s:\n{}",
        started.elapsed().as_secs_f64(),
        dump.iter().take(8).cloned().collect::<Vec<_>>().join("\n")
    );
    let log = lab.agent_log();
    let state_line = log
        .lines()
        .rev()
        .find(|l| l.contains("agent state (SIGUSR1)"))
        .with_context(|| format!("the agent-state line is missing:\n{}", lab.report()))?;
    for field in [
        "revision=",
        "dhcp_received=",
        "dhcp_drops=",
        "dhcp_provisional_leases=",
        "discovery_queue=",
        "cache_blobs=",
        "cache_bytes=",
    ] {
        ensure!(
            state_line.contains(field),
            "the state dump should show {field}: {state_line}"
        );
    }
    let active = dump_active_count(&dump)?;
    let lines = active_lines(&dump);
    ensure!(
        active >= 1
            && lines
                .iter()
                .all(|l| l.contains(" f1m ") && l.contains("1048576 B")),
        "the dump should list active transfers of f1m ({active} active):\n{}",
        dump.join("\n")
    );

    // The storm itself still boots everyone.
    let (out, r) = storm.finish()?;
    eprintln!("storm: {}", r.json);
    ensure_all_booted(&lab, &out, &r, 100)?;
    lab.agent_mut()?.ensure_running()
}

/// A flood of 100,000 DISCOVERs from random MACs (`rackboot storm --flood`)
/// against an agent with `--accept probe` and a 10-address provisional pool,
/// while 50 known machines (registered with `rackboot node add`) do their
/// DHCP: every known machine is leased (0 NAKs), the flood numbers nobody
/// (the coordinator still lists exactly the 50), and the agent counts the
/// exhausted pool (`dhcp_provisional_full` in its SIGUSR1 state line).
#[test]
fn dhcp_flood_of_random_macs_leaves_known_nodes_booting() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "kill"], Ok(()));
    let mut lab = TftpLab::new("rbstf")?;
    lab.use_probe_policy();
    lab.start_coordinator()?;
    lab.start_agent()?;
    let known: Vec<String> = (0..50u32)
        .map(|i| format!("52:54:00:ab:00:{i:02x}"))
        .collect();
    let mut add = vec!["node", "add", "--rack", RACK];
    for m in &known {
        add.extend(["--mac", m.as_str()]);
    }
    lab.cli(&add)?.success()?;
    lab.agent_mut()?
        .wait_for_log("nodes=50", Duration::from_secs(20))?;

    let (out, r) = storm(
        &lab,
        &[
            "--dhcp-only",
            "--clients",
            "50",
            "--mac-base",
            "52:54:00:ab:00:00",
            "--flood",
            "100000",
            "--flood-rate",
            "20000",
        ],
    )?;
    ensure!(
        r.clients == 50 && r.ok == 50 && r.failed == 0,
        "every known machine must be leased during the flood: {}\n{out}",
        r.json
    );
    ensure!(
        json_number(&r.json, "naks") == Some(0.0),
        "known machines must get no NAK: {}",
        r.json
    );
    ensure!(
        out.stderr.contains("flood: 100000 DHCPDISCOVERs"),
        "the flood should have sent 100000 DISCOVERs:\n{out}"
    );
    let list = lab.cli(&["node", "list", "--rack", RACK])?.success()?;
    let nodes = parse_node_list(&list)?;
    ensure!(
        nodes.len() == 50,
        "the flood must number nobody: {} nodes listed:\n{list}",
        nodes.len()
    );
    let full = usr1_provisional_full(&mut lab)?;
    ensure!(
        full > 0,
        "the flood must exhaust the 10-address pool and be counted (dhcp_provisional_full={full})"
    );
    lab.agent_mut()?.ensure_running()
}

/// A TFTP flood from another machine of the rack: 10,000 read requests for
/// the boot file, each from a fresh port and never acknowledged (half-open
/// transfers), at 5,000/s, while 50 known machines boot it as PXE ROMs do
/// from their own address, powered on 1 s into the flood: every one boots.
#[test]
fn tftp_flood_of_10000_requests_leaves_known_nodes_booting() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip"], Ok(()));
    let mut lab = TftpLab::new("rbstt")?;
    let boot = random_bytes("tftp-flood", 1 << 20);
    lab.add_file("boot.bin", &boot)?;
    lab.start_agent()?;
    lab.client
        .ip(&["addr", "add", "10.201.0.249/24", "dev", CLIENT_IF])?;
    let (out, r) = storm(
        &lab,
        &[
            "--tftp-only",
            "--file",
            "boot.bin",
            "--clients",
            "50",
            "--bind",
            CLIENT_IP,
            "--expect-blake3",
            &blake3_hex(&boot),
            "--tftp-flood",
            "10000",
            "--flood-rate",
            "5000",
            "--flood-from",
            "10.201.0.249",
        ],
    )?;
    ensure!(
        out.stderr.contains("tftp flood: 10000 unacknowledged RRQs"),
        "the flood should have sent 10000 RRQs:\n{out}"
    );
    ensure!(
        r.clients == 50 && r.ok == 50 && r.failed == 0,
        "every known machine must boot during the flood: {}\n{out}\n{}",
        r.json,
        lab.report()
    );
    lab.agent_mut()?.ensure_running()
}

/// SIGHUP during a TFTP storm (100 clients × 1 MiB through 200 Mbit): a
/// valid new configuration file (another lease time and log filter) is
/// applied and logged as applied; an invalid one (a misspelt key) is refused
/// with its file and key and the agent keeps serving; a file added to the
/// static root meanwhile is served without a restart; and the storm still
/// boots every client (no transfer dropped).
#[test]
fn sighup_applies_valid_config_and_refuses_invalid_during_storm() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "tc", "kill"], Ok(()));
    let file = random_bytes("storm-hup", 1 << 20);
    let mut lab = TftpLab::new("rbsth")?;
    lab.add_file("f1m", &file)?;
    let cfg = lab.dir().join("agent.toml");
    std::fs::write(&cfg, "[dhcp]\nlease_secs = 600\n")?;
    lab.agent_args = vec!["--config".into(), cfg.display().to_string()];
    lab.start_agent()?;
    lab.rate_limit("200mbit")?;

    let digest = blake3_hex(&file);
    let sent_before = server_tx_bytes(&lab)?;
    let storm = BackgroundStorm::start(&lab, &tftp_args("f1m", 100, &digest))?;
    // The signals below must land while transfers are in flight: wait until
    // a whole file's worth has gone out.
    wait_agent_sent(&lab, sent_before, file.len() as u64)?;

    // A valid change.
    std::fs::write(
        &cfg,
        "log_level = \"info,rackboot_agent::upstream::follow=debug\"\n[dhcp]\nlease_secs = 900\n",
    )?;
    lab.signal_agent("HUP")?;
    let line = lab
        .agent_mut()?
        .wait_for_log("SIGHUP: configuration re-read", Duration::from_secs(10))?;
    ensure!(
        line.contains("lease_secs") && line.contains("log_level"),
        "lease_secs and log_level should be applied: {line}"
    );
    // An invalid one: refused, named, and the agent keeps serving.
    std::fs::write(&cfg, "[dhcp]\nlese_secs = 900\n")?;
    lab.signal_agent("HUP")?;
    let refused = lab
        .agent_mut()?
        .wait_for_log("configuration refused", Duration::from_secs(10))?;
    let log = lab.agent_log();
    ensure!(
        log.contains("dhcp.lese_secs") && log.contains("agent.toml"),
        "the refusal should name the file and the key:\n{refused}\n{log}"
    );
    // A file added to the static root is served without a restart.
    let late = random_bytes("storm-hup-late", 4096);
    lab.add_file("late.bin", &late)?;
    let fetched = lab.dir().join("late.got");
    let mut last = None;
    let served = wait_until(Duration::from_secs(15), Duration::from_millis(500), || {
        let got = tftp_get(&lab, "late.bin", &fetched)?;
        if got.status.success() && std::fs::read(&fetched).ok().as_deref() == Some(&late[..]) {
            return Ok(Some(()));
        }
        last = Some(got);
        Ok(None)
    })?;
    ensure!(
        served.is_some(),
        "a file added to the static root is not served after 15 s:\n{}\n{}",
        last.map(|got| got.to_string()).unwrap_or_default(),
        lab.report()
    );

    let (out, r) = storm.finish()?;
    ensure_all_booted(&lab, &out, &r, 100)?;
    lab.agent_mut()?.ensure_running()
}

/// The short soak (`tests/bench/soak.sh --seconds 45`, the debug binaries):
/// rounds of DHCP+TFTP and HTTP storms, syslog lines, boot-info requests and
/// SIGHUPs against a coordinator and an agent; every storm boots everyone,
/// and after the warm-up neither daemon's RSS grows by more than 20% nor its
/// fd count by more than 16 (the script's verdict). The hour-long run is
/// reported in docs/BENCHMARKS.md.
#[test]
fn soak_short_keeps_memory_and_fds_flat() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "tc", "curl", "awk"], Ok(()));
    let out = run_soak(45)?;
    ensure!(
        out.status.success() && out.stdout.contains("VERDICT: flat"),
        "the short soak should stay flat:\n{out}"
    );
    ensure!(
        !out.stdout.contains("storms ok 0/"),
        "the soak ran no storm:\n{out}"
    );
    Ok(())
}

/// The agent's `/metrics` scraped while 100 PXE ROMs with unknown MACs do
/// DHCP and TFTP (as in `dhcp_tftp_storm_100_clients_get_distinct_nodes`),
/// and again after; the coordinator's (`--metrics-listen`) after the storm.
/// Every family is there, counters only grow, and they moved: replies,
/// TFTP bytes and transfers, boot phase observations, 100 nodes.
#[test]
fn metrics_scraped_during_dhcp_tftp_storm() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "nft", "curl"], Ok(()));
    let rom = random_bytes("storm-metrics", 200 * 1024);
    let mut lab = TftpLab::new("rbstm")?;
    lab.add_file("undionly.kpxe", &rom)?;
    lab.http_port = Some(AGENT_HTTP_PORT);
    lab.coordinator_args = vec!["--metrics-listen".into(), COORDINATOR_METRICS.into()];
    lab.agent_args = vec!["--metrics-listen".into(), AGENT_METRICS.into()];
    lab.start_coordinator()?;
    lab.start_agent()?;
    let agent_url = format!("http://{AGENT_METRICS}/metrics");
    let coordinator_url = format!("http://{COORDINATOR_METRICS}/metrics");

    let before = scrape(&lab.server, &agent_url)?;
    before.ensure_families(AGENT_FAMILIES)?;

    let digest = blake3_hex(&rom);
    let started = Instant::now();
    let mut storm = BackgroundStorm::start(&lab, &dhcp_tftp_args(100, &digest))?;

    // Scrape while the storm runs (each scrape starts while it is running),
    // every 250 ms until it ends; `storm.finish` below fails if it never does.
    let mut during = Vec::new();
    wait_until(
        Duration::from_secs(STORM_DEADLINE_SECS + 10),
        Duration::from_millis(250),
        || {
            if !storm.running()? {
                return Ok(Some(()));
            }
            let e = scrape(&lab.server, &agent_url)?;
            e.ensure_families(AGENT_FAMILIES)?;
            during.push(e);
            Ok(None)
        },
    )?;
    let (out, r) = storm.finish()?;
    eprintln!(
        "storm: {} ({} scrapes during it, {:.1} s)",
        r.json,
        during.len(),
        started.elapsed().as_secs_f64()
    );
    ensure_all_booted(&lab, &out, &r, 100)?;
    ensure!(
        !during.is_empty(),
        "no scrape of {agent_url} started while the storm ran"
    );
    for (i, e) in during.iter().enumerate() {
        eprintln!("scrape {i} during the storm: {}", e.agent_progress());
    }

    // One HTTP boot fetch (the ROM) from the rack, counted on the boot port.
    let rom_url = format!("http://{SERVER_IP}:{AGENT_HTTP_PORT}/undionly.kpxe");
    lab.client.run(
        "curl",
        &[
            "-sS",
            "--fail",
            "--max-time",
            "10",
            "-o",
            "/dev/null",
            &rom_url,
        ],
    )?;
    let after = scrape(&lab.server, &agent_url)?;
    after.ensure_families(AGENT_FAMILIES)?;
    // Counters never go back.
    let last = after.counters();
    for e in std::iter::once(&before).chain(&during) {
        for (key, v) in e.counters() {
            let now = last.get(&key).copied().unwrap_or(f64::NAN);
            ensure!(
                now >= v,
                "counter {key} went from {v} (during the storm) to {now} (after it)"
            );
        }
    }
    let n = 100.0;
    let get = |name: &str| after.value(name, &[]);
    ensure!(
        get("rackboot_agent_dhcp_received_total")? >= 2.0 * n,
        "DHCP received"
    );
    // Every client had an OFFER and an ACK.
    ensure!(
        get("rackboot_agent_dhcp_replied_total")? >= 2.0 * n,
        "DHCP replies: {}",
        get("rackboot_agent_dhcp_replied_total")?
    );
    ensure!(
        get("rackboot_agent_dhcp_unknown_total")? >= n,
        "every new MAC was first unknown"
    );
    ensure!(
        get("rackboot_agent_tftp_transfers_started_total")? >= n
            && get("rackboot_agent_tftp_transfers_completed_total")? >= n,
        "100 TFTP transfers started and completed"
    );
    ensure!(
        get("rackboot_agent_tftp_bytes_sent_total")? >= n * rom.len() as f64,
        "TFTP bytes sent: {} for 100 × {} bytes",
        get("rackboot_agent_tftp_bytes_sent_total")?,
        rom.len()
    );
    ensure!(get("rackboot_agent_tftp_data_packets_sent_total")? > 0.0);
    ensure!(get("rackboot_agent_tftp_datagrams_received_total")? > 0.0);
    // Histograms: every phase has its series; the DHCP phases of the
    // storm's (by then known) clients were observed.
    for phase in PHASES {
        after.value(
            "rackboot_agent_boot_phase_seconds_count",
            &[("phase", phase)],
        )?;
        after.value(
            "rackboot_agent_boot_phase_seconds_bucket",
            &[("phase", phase), ("le", "+Inf")],
        )?;
    }
    for phase in ["dhcp_offer", "dhcp_ack"] {
        let count = after.value(
            "rackboot_agent_boot_phase_seconds_count",
            &[("phase", phase)],
        )?;
        ensure!(
            count >= 1.0,
            "no boot phase observation of {phase}:\n{}",
            after.text
        );
    }
    ensure!(
        get("rackboot_agent_coordinator_connected")? == 1.0,
        "the agent should be connected to its coordinator"
    );
    ensure!(
        get("rackboot_agent_view_nodes")? == n,
        "100 nodes in the view"
    );
    ensure!(get("rackboot_agent_view_revision")? > 0.0);
    ensure!(get("rackboot_agent_view_updates_total")? > 0.0);
    ensure!(get("rackboot_agent_view_update_age_seconds")? >= 0.0);
    // The ROM fetch is an HTTP request of the boot port; the scrapes are
    // not (they go to the operator listener).
    ensure!(after.value("rackboot_agent_http_requests_total", &[("code", "200")])? >= 1.0);
    ensure!(get("rackboot_agent_http_active_connections")? >= 0.0);
    ensure!(get("rackboot_agent_http_response_bytes_total")? >= rom.len() as f64);
    for queue in ["unknown_machines", "boot_sessions"] {
        after.value("rackboot_agent_queue_depth", &[("queue", queue)])?;
        ensure!(after.value("rackboot_agent_queue_capacity", &[("queue", queue)])? > 0.0);
    }

    let c = scrape(&lab.server, &coordinator_url)?;
    c.ensure_families(COORDINATOR_FAMILIES)?;
    let cget = |name: &str| c.value(name, &[]);
    ensure!(cget("rackboot_coordinator_raft_is_leader")? == 1.0);
    let id = cget("rackboot_coordinator_raft_id")?;
    ensure!(cget("rackboot_coordinator_raft_leader_id")? == id);
    ensure!(cget("rackboot_coordinator_raft_term")? >= 1.0);
    ensure!(
        cget("rackboot_coordinator_raft_commit_index")? >= n
            && cget("rackboot_coordinator_raft_applied_index")? >= n,
        "100 nodes took at least 100 entries"
    );
    c.value(
        "rackboot_coordinator_raft_peer_match_index",
        &[("peer", &format!("{id}"))],
    )?;
    ensure!(cget("rackboot_coordinator_nodes")? == n);
    ensure!(cget("rackboot_coordinator_racks")? == 1.0);
    ensure!(cget("rackboot_coordinator_state_revision")? >= n);
    ensure!(
        cget("rackboot_coordinator_watch_streams")? >= 1.0,
        "the agent watches its rack"
    );
    ensure!(cget("rackboot_coordinator_proposals_total")? >= n);
    let discover = c.sum_where("rackboot_coordinator_grpc_requests_total", |labels| {
        labels
            .get("method")
            .is_some_and(|m| m.ends_with("/DiscoverNode"))
    });
    ensure!(
        discover >= n,
        "the agent asked to number 100 machines; DiscoverNode requests counted: {discover}\n{}",
        c.text
    );
    lab.agent_mut()?.ensure_running()
}
