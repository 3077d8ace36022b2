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

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::daemon::{self, CliOutput, run_with_timeout};
use rackboot_tests::tftplab::{
    CLIENT_IP, LossDirection, RACK, SERVER_IP, TftpLab, blake3_hex, random_bytes,
};
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

/// The storm's own deadline; the process is killed 10 s later.
const STORM_DEADLINE_SECS: u64 = 75;

/// The numbers in the storm's JSON line that the tests look at.
#[derive(Debug)]
struct StormResult {
    clients: u64,
    ok: u64,
    failed: u64,
    bytes: u64,
    elapsed_s: f64,
    json: String,
}

/// The number after `"key":` in a flat JSON object.
fn json_number(json: &str, key: &str) -> Option<f64> {
    let pat = format!("\"{key}\":");
    let start = json.find(&pat)? + pat.len();
    let rest = json.get(start..)?;
    let end = rest.find([',', '}']).unwrap_or(rest.len());
    rest.get(..end)?.trim().parse().ok()
}

fn parse_storm(out: &CliOutput) -> Result<StormResult> {
    let json = out
        .stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("no JSON line from the storm:\n{out}"))?
        .to_string();
    let num = |key: &str| {
        json_number(&json, key).with_context(|| format!("no {key:?} in the storm's JSON: {json}"))
    };
    Ok(StormResult {
        clients: num("clients")? as u64,
        ok: num("ok")? as u64,
        failed: num("failed")? as u64,
        bytes: num("bytes")? as u64,
        elapsed_s: num("elapsed_s")?,
        json: json.clone(),
    })
}

/// `rackboot storm --server SERVER_IP --json --deadline-secs … <args>` in
/// the client namespace, to completion.
fn storm(lab: &TftpLab, args: &[&str]) -> Result<(CliOutput, StormResult)> {
    let bin = daemon::binary(daemon::CLI)?;
    let mut cmd = lab.client.exec(&bin);
    cmd.args(["storm", "--server", SERVER_IP, "--json", "--deadline-secs"])
        .arg(STORM_DEADLINE_SECS.to_string())
        .args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(STORM_DEADLINE_SECS + 10))?;
    let result = parse_storm(&out)?;
    eprintln!("storm: {}", result.json);
    Ok((out, result))
}

/// A `rackboot storm --server SERVER_IP --json --deadline-secs … <args>`
/// running in the background in the client namespace, its stdout in a file.
struct BackgroundStorm {
    process: rackboot_tests::netns::NsProcess,
    out: std::path::PathBuf,
}

impl BackgroundStorm {
    fn start(lab: &TftpLab, args: &[&str]) -> Result<BackgroundStorm> {
        let bin = daemon::binary(daemon::CLI)?;
        let out = lab.dir().join("storm.out");
        let mut cmd = lab.client.exec(&bin);
        cmd.args(["storm", "--server", SERVER_IP, "--json"])
            .args(args)
            .arg("--deadline-secs")
            .arg(STORM_DEADLINE_SECS.to_string())
            .stdout(File::create(&out)?)
            .stderr(Stdio::inherit());
        Ok(BackgroundStorm {
            process: lab.client.spawn(cmd)?,
            out,
        })
    }

    /// Wait for the storm to end; its output and parsed result.
    fn finish(mut self) -> Result<(CliOutput, StormResult)> {
        let status = self
            .process
            .wait_timeout(Duration::from_secs(STORM_DEADLINE_SECS + 10))?
            .context("the storm did not finish")?;
        let out = CliOutput {
            command: self.process.command().to_string(),
            status,
            stdout: std::fs::read_to_string(&self.out)?,
            stderr: String::new(),
        };
        let r = parse_storm(&out)?;
        Ok((out, r))
    }
}

/// Fails, quoting the storm and the agent, unless every client booted.
fn ensure_all_booted(lab: &TftpLab, out: &CliOutput, r: &StormResult, n: u64) -> Result<()> {
    ensure!(
        r.clients == n && r.ok == n && r.failed == 0 && out.status.success(),
        "{} of {n} clients failed their boot (exit {}): {}\n{}\n{}",
        r.failed,
        out.status,
        r.json,
        out.stderr.trim_end(),
        lab.report()
    );
    Ok(())
}

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
    let (out, r) = storm(
        &lab,
        &[
            "--tftp-only",
            "--file",
            "f1m",
            "--clients",
            "300",
            "--expect-blake3",
            &digest,
        ],
    )?;
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

/// One row of `rackboot node list`.
#[derive(Debug)]
struct NodeRow {
    number: u32,
    rack: String,
    address: Ipv4Addr,
    mac: String,
}

fn parse_node_list(out: &CliOutput) -> Result<Vec<NodeRow>> {
    let mut lines = out.stdout.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().unwrap_or_default();
    ensure!(
        header.split_whitespace().collect::<Vec<_>>()
            == ["NODE", "NAME", "RACK", "ADDRESS", "MAC", "IMAGE"],
        "unexpected node list header {header:?}:\n{out}"
    );
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            let col = |i: usize| {
                cols.get(i)
                    .copied()
                    .with_context(|| format!("short node list row {l:?}"))
            };
            Ok(NodeRow {
                number: col(0)?
                    .parse()
                    .with_context(|| format!("node number in {l:?}"))?,
                rack: col(2)?.to_string(),
                address: col(3)?
                    .parse()
                    .with_context(|| format!("address in {l:?}"))?,
                mac: col(4)?.to_lowercase(),
            })
        })
        .collect()
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
    let (out, r) = storm(
        &lab,
        &[
            "--clients",
            "100",
            "--time-scale",
            "0.25",
            "--expect-blake3",
            &digest,
        ],
    )?;
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

/// The SIGUSR1 dump in the agent's log after `from_line`: the dump's lines
/// (the "TFTP state" line and the indented lines after it), if there is one.
fn last_tftp_dump(log: &str) -> Option<Vec<String>> {
    let lines: Vec<&str> = log.lines().collect();
    let start = lines
        .iter()
        .rposition(|l| l.contains("TFTP state (SIGUSR1)"))?;
    // A new log record starts with an RFC 3339 timestamp (2026-11-21T…).
    let is_record = |l: &str| {
        let b = l.as_bytes();
        b.len() > 11
            && b.get(..4).is_some_and(|y| y.iter().all(u8::is_ascii_digit))
            && b.get(10) == Some(&b'T')
    };
    let dump = lines
        .get(start..)?
        .iter()
        .enumerate()
        .take_while(|(i, l)| *i == 0 || !is_record(l))
        .map(|(_, l)| l.to_string())
        .collect();
    Some(dump)
}

/// The active-transfer lines of a dump (`  t12 10.0.0.2:4000 f1m 63.5% of
/// 1048576 B, blk 1456 win 1, …`).
fn active_lines(dump: &[String]) -> Vec<&String> {
    dump.iter()
        .filter(|l| l.contains("% of ") && l.contains(" B, blk "))
        .collect()
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
    let mut storm = BackgroundStorm::start(
        &lab,
        &[
            "--tftp-only",
            "--file",
            "f1m",
            "--clients",
            "100",
            "--expect-blake3",
            &digest,
        ],
    )?;

    // Signal until a dump shows an active transfer (the first signal may
    // come before the clients' requests, or between transfers).
    let started = Instant::now();
    let mut dumps_seen = 0;
    let mut found = None;
    while found.is_none() && storm.process.try_wait()?.is_none() {
        std::thread::sleep(Duration::from_millis(500));
        lab.signal_agent("USR1")?;
        dumps_seen += 1;
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let log = lab.agent_log();
            if log.matches("TFTP state (SIGUSR1)").count() >= dumps_seen {
                let dump = last_tftp_dump(&log).unwrap_or_default();
                if !active_lines(&dump).is_empty() {
                    found = Some(dump);
                }
                break;
            }
            if Instant::now() >= deadline {
                bail!(
                    "no `TFTP state (SIGUSR1)` in the agent log 5 s after SIGUSR1 #{dumps_seen}:\n{}",
                    lab.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
    }
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
    let header = dump.get(1).map(String::as_str).unwrap_or_default();
    let active: u64 = header
        .trim()
        .strip_prefix("tftp: ")
        .and_then(|h| h.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("dump header should be `tftp: N active …`: {header:?}"))?;
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
    lab.signal_agent("USR1")?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let full = loop {
        let log = lab.agent_log();
        let n = log
            .lines()
            .rev()
            .find(|l| l.contains("agent state (SIGUSR1)"))
            .and_then(|l| l.split("dhcp_provisional_full=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok());
        if let Some(n) = n {
            break n;
        }
        ensure!(Instant::now() < deadline, "no SIGUSR1 state line:\n{log}");
        std::thread::sleep(Duration::from_millis(200));
    };
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
    lab.client.ip(&[
        "addr",
        "add",
        "10.201.0.249/24",
        "dev",
        rackboot_tests::tftplab::CLIENT_IF,
    ])?;
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
    let storm = BackgroundStorm::start(
        &lab,
        &[
            "--tftp-only",
            "--file",
            "f1m",
            "--clients",
            "100",
            "--expect-blake3",
            &digest,
        ],
    )?;
    std::thread::sleep(Duration::from_millis(500));

    // A valid change.
    std::fs::write(
        &cfg,
        "log_level = \"info,rackboot_agent::sync=debug\"\n[dhcp]\nlease_secs = 900\n",
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
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let mut get = lab.client.exec("curl");
        get.args(["-s", "-o"])
            .arg(&fetched)
            .arg(format!("tftp://{SERVER_IP}/late.bin"));
        let got = run_with_timeout(get, Duration::from_secs(10))?;
        if got.status.success() && std::fs::read(&fetched).ok().as_deref() == Some(&late[..]) {
            break;
        }
        ensure!(
            Instant::now() < deadline,
            "a file added to the static root is not served after 15 s:\n{got}\n{}",
            lab.report()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

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
    let root = rackboot_tests::workspace_root();
    let bin = daemon::binary(daemon::AGENT)?;
    let bin_dir = bin
        .parent()
        .context("the agent binary has no directory")?
        .to_path_buf();
    let mut cmd = std::process::Command::new(root.join("tests/bench/soak.sh"));
    cmd.args(["--seconds", "45", "--interval", "5", "--bin-dir"])
        .arg(&bin_dir);
    let out = run_with_timeout(cmd, Duration::from_secs(240))?;
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

/// The agent's HTTP port in the metrics test.
const AGENT_HTTP_PORT: u16 = 8080;
/// Where the coordinator serves its metrics in the metrics test (server
/// namespace).
const COORDINATOR_METRICS: &str = "127.0.0.1:9100";

/// Every metric family the agent exposes, with its type.
const AGENT_FAMILIES: &[(&str, &str)] = &[
    ("rackboot_agent_dhcp_received", "counter"),
    ("rackboot_agent_dhcp_replied", "counter"),
    ("rackboot_agent_dhcp_unknown", "counter"),
    ("rackboot_agent_dhcp_provisional", "counter"),
    ("rackboot_agent_dhcp_probes", "counter"),
    ("rackboot_agent_dhcp_dropped", "counter"),
    ("rackboot_agent_tftp_datagrams_received", "counter"),
    ("rackboot_agent_tftp_datagrams_sent", "counter"),
    ("rackboot_agent_tftp_bytes_sent", "counter"),
    ("rackboot_agent_tftp_transfers_started", "counter"),
    ("rackboot_agent_tftp_transfers_completed", "counter"),
    ("rackboot_agent_tftp_transfers_failed", "counter"),
    ("rackboot_agent_tftp_option_probes", "counter"),
    ("rackboot_agent_tftp_data_packets_sent", "counter"),
    ("rackboot_agent_tftp_retransmits", "counter"),
    ("rackboot_agent_tftp_dropped", "counter"),
    ("rackboot_agent_tftp_refused", "counter"),
    ("rackboot_agent_tftp_duplicate_requests", "counter"),
    ("rackboot_agent_tftp_requests_queued", "counter"),
    ("rackboot_agent_tftp_active_transfers", "gauge"),
    ("rackboot_agent_tftp_queued_requests", "gauge"),
    ("rackboot_agent_http_requests", "counter"),
    ("rackboot_agent_http_response_bytes", "counter"),
    ("rackboot_agent_http_connections", "counter"),
    ("rackboot_agent_http_active_connections", "gauge"),
    ("rackboot_agent_syslog_received", "counter"),
    ("rackboot_agent_syslog_unknown_sender", "counter"),
    ("rackboot_agent_syslog_dropped", "counter"),
    ("rackboot_agent_log_memory_lines", "gauge"),
    ("rackboot_agent_log_spool_lines", "gauge"),
    ("rackboot_agent_log_spool_bytes", "gauge"),
    ("rackboot_agent_log_shipped_lines", "counter"),
    ("rackboot_agent_queue_depth", "gauge"),
    ("rackboot_agent_queue_capacity", "gauge"),
    ("rackboot_agent_cache_blobs", "gauge"),
    ("rackboot_agent_cache_bytes", "gauge"),
    ("rackboot_agent_cache_hits", "counter"),
    ("rackboot_agent_cache_misses", "counter"),
    ("rackboot_agent_cache_repaired_groups", "counter"),
    ("rackboot_agent_cache_evictions", "counter"),
    ("rackboot_agent_cache_max_bytes", "gauge"),
    ("rackboot_agent_view_revision", "gauge"),
    ("rackboot_agent_view_nodes", "gauge"),
    ("rackboot_agent_view_images", "gauge"),
    ("rackboot_agent_coordinator_connected", "gauge"),
    ("rackboot_agent_coordinator_session_errors", "counter"),
    ("rackboot_agent_view_updates", "counter"),
    ("rackboot_agent_view_update_age_seconds", "gauge"),
    ("rackboot_agent_boot_sessions", "counter"),
    ("rackboot_agent_boot_phase_seconds", "histogram"),
];

/// Every metric family the coordinator exposes, with its type.
const COORDINATOR_FAMILIES: &[(&str, &str)] = &[
    ("rackboot_coordinator_raft_id", "gauge"),
    ("rackboot_coordinator_raft_term", "gauge"),
    ("rackboot_coordinator_raft_commit_index", "gauge"),
    ("rackboot_coordinator_raft_applied_index", "gauge"),
    ("rackboot_coordinator_raft_last_index", "gauge"),
    ("rackboot_coordinator_raft_leader_id", "gauge"),
    ("rackboot_coordinator_raft_is_leader", "gauge"),
    ("rackboot_coordinator_raft_members", "gauge"),
    ("rackboot_coordinator_raft_peer_match_index", "gauge"),
    ("rackboot_coordinator_raft_peer_lag", "gauge"),
    ("rackboot_coordinator_state_revision", "gauge"),
    ("rackboot_coordinator_racks", "gauge"),
    ("rackboot_coordinator_nodes", "gauge"),
    ("rackboot_coordinator_images", "gauge"),
    ("rackboot_coordinator_pending_machines", "gauge"),
    ("rackboot_coordinator_blobs_stored", "gauge"),
    ("rackboot_coordinator_blob_bytes_stored", "gauge"),
    ("rackboot_coordinator_watch_streams", "gauge"),
    ("rackboot_coordinator_proposals", "counter"),
    ("rackboot_coordinator_proposal_failures", "counter"),
    ("rackboot_coordinator_grpc_connections", "gauge"),
    ("rackboot_coordinator_grpc_connections_refused", "counter"),
    ("rackboot_coordinator_auth_denied", "counter"),
    ("rackboot_coordinator_grpc_requests", "counter"),
];

/// The agent's boot phases (`rackboot_agent_boot_phase_seconds{phase}`).
const PHASES: &[&str] = &[
    "dhcp_offer",
    "dhcp_ack",
    "first_tftp_byte",
    "kernel_requested",
    "kernel_sent",
    "initrd_sent",
    "first_log_line",
];

/// One sample line of an exposition.
#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed OpenMetrics (Prometheus) text exposition.
#[derive(Debug)]
struct Exposition {
    /// Family name → type, from the `# TYPE` lines.
    types: BTreeMap<String, String>,
    samples: Vec<Sample>,
    text: String,
}

/// `{a="x",b="y\"z"}` → labels, and the rest of the line after `}`.
fn parse_labels(s: &str) -> Result<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    let mut rest = s.strip_prefix('{').context("labels must start with {")?;
    loop {
        rest = rest.trim_start_matches(',');
        if let Some(after) = rest.strip_prefix('}') {
            return Ok((labels, after));
        }
        let eq = rest.find('=').context("label without =")?;
        let key = rest.get(..eq).context("label key")?.to_string();
        let mut chars = rest.get(eq + 1..).context("label value")?.char_indices();
        ensure!(
            chars.next().map(|(_, c)| c) == Some('"'),
            "label value of {key} is not quoted"
        );
        let mut value = String::new();
        let mut end = None;
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('n') => value.push('\n'),
                    Some(c) => value.push(c),
                    None => bail!("dangling escape in label {key}"),
                },
                '"' => {
                    end = Some(i);
                    break;
                }
                c => value.push(c),
            }
        }
        let end = end.with_context(|| format!("unterminated value of label {key}"))?;
        rest = rest.get(eq + 1 + end + 1..).context("after label value")?;
        labels.insert(key, value);
    }
}

fn parse_exposition(text: &str) -> Result<Exposition> {
    let mut types = BTreeMap::new();
    let mut samples = Vec::new();
    let mut eof = false;
    for line in text.lines() {
        ensure!(!eof, "a line after # EOF: {line:?}");
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            let words: Vec<&str> = comment.split_whitespace().collect();
            match words.as_slice() {
                ["TYPE", name, kind] => {
                    types.insert(name.to_string(), kind.to_string());
                }
                ["EOF"] => eof = true,
                _ => {}
            }
            continue;
        }
        let name_end = line
            .find(['{', ' '])
            .with_context(|| format!("sample line without a value: {line:?}"))?;
        let name = line.get(..name_end).unwrap_or_default().to_string();
        let after = line.get(name_end..).unwrap_or_default();
        let (labels, rest) = if after.starts_with('{') {
            parse_labels(after).with_context(|| format!("in {line:?}"))?
        } else {
            (BTreeMap::new(), after)
        };
        let value = rest
            .split_whitespace()
            .next()
            .with_context(|| format!("no value in {line:?}"))?;
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            "-Inf" => f64::NEG_INFINITY,
            v => v
                .parse()
                .with_context(|| format!("value {v:?} in {line:?}"))?,
        };
        samples.push(Sample {
            name,
            labels,
            value,
        });
    }
    ensure!(eof, "the exposition does not end with # EOF");
    Ok(Exposition {
        types,
        samples,
        text: text.to_string(),
    })
}

impl Exposition {
    /// The sum of the samples named `name` whose labels include `labels`
    /// (None when there is none).
    fn sum(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let matching: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
            .collect();
        (!matching.is_empty()).then(|| matching.iter().sum())
    }

    /// Like [`Exposition::sum`], failing (with the exposition) when absent.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Result<f64> {
        self.sum(name, labels)
            .with_context(|| format!("no sample {name}{labels:?} in:\n{}", self.text))
    }

    /// Fails unless every family is declared with its type.
    fn ensure_families(&self, families: &[(&str, &str)]) -> Result<()> {
        let missing: Vec<String> = families
            .iter()
            .filter(|(name, kind)| self.types.get(*name).map(String::as_str) != Some(*kind))
            .map(|(name, kind)| format!("{name} ({kind})"))
            .collect();
        ensure!(
            missing.is_empty(),
            "metric families missing or of another type: {}\n{}",
            missing.join(", "),
            self.text
        );
        Ok(())
    }

    /// The counter samples (`*_total`), by name and labels.
    fn counters(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|s| s.name.ends_with("_total"))
            .map(|s| (format!("{}{:?}", s.name, s.labels), s.value))
            .collect()
    }
}

/// `curl URL` in `ns`, parsed.
fn scrape(ns: &rackboot_tests::netns::Netns, url: &str) -> Result<Exposition> {
    let text = ns
        .run("curl", &["-sS", "--fail", "--max-time", "10", url])
        .with_context(|| format!("scraping {url}"))?;
    parse_exposition(&text).with_context(|| format!("parsing {url}:\n{text}"))
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
    lab.start_coordinator()?;
    lab.start_agent()?;
    let agent_url = format!("http://{SERVER_IP}:{AGENT_HTTP_PORT}/metrics");
    let coordinator_url = format!("http://{COORDINATOR_METRICS}/metrics");

    let before = scrape(&lab.server, &agent_url)?;
    before.ensure_families(AGENT_FAMILIES)?;

    let digest = blake3_hex(&rom);
    let started = Instant::now();
    let mut storm = BackgroundStorm::start(
        &lab,
        &[
            "--clients",
            "100",
            "--time-scale",
            "0.25",
            "--expect-blake3",
            &digest,
        ],
    )?;

    // Scrape while the storm runs (each scrape starts while it is running).
    let mut during = Vec::new();
    while storm.process.try_wait()?.is_none()
        && started.elapsed() < Duration::from_secs(STORM_DEADLINE_SECS + 10)
    {
        let e = scrape(&lab.server, &agent_url)?;
        e.ensure_families(AGENT_FAMILIES)?;
        during.push(e);
        std::thread::sleep(Duration::from_millis(250));
    }
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
        let v = |name: &str| e.sum(name, &[]).unwrap_or(f64::NAN);
        eprintln!(
            "scrape {i} during the storm: dhcp replied {}, tftp bytes {}, active transfers {}",
            v("rackboot_agent_dhcp_replied_total"),
            v("rackboot_agent_tftp_bytes_sent_total"),
            v("rackboot_agent_tftp_active_transfers"),
        );
    }

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
    // Our own scrapes are HTTP requests, and this one is an open connection.
    ensure!(
        after.value("rackboot_agent_http_requests_total", &[("code", "200")])?
            >= (1 + during.len()) as f64
    );
    ensure!(get("rackboot_agent_http_active_connections")? >= 1.0);
    ensure!(get("rackboot_agent_http_response_bytes_total")? > 0.0);
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
    let discover = c
        .samples
        .iter()
        .filter(|s| {
            s.name == "rackboot_coordinator_grpc_requests_total"
                && s.labels
                    .get("method")
                    .is_some_and(|m| m.ends_with("/DiscoverNode"))
        })
        .map(|s| s.value)
        .sum::<f64>();
    ensure!(
        discover >= n,
        "the agent asked to number 100 machines; DiscoverNode requests counted: {discover}\n{}",
        c.text
    );
    lab.agent_mut()?.ensure_running()
}
