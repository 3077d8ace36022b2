//! Drivers that watch the agent and the coordinator during the storm tests:
//! the agent's SIGUSR1 state dumps, `rackboot node list`, the bytes the
//! agent has sent on its link, a TFTP fetch with curl, and [`wait_until`],
//! the deadline-bounded poll every wait here uses.

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{CliOutput, run_with_timeout};
use rackboot_tests::tftplab::{SERVER_IF, SERVER_IP, TftpLab};
pub(super) use rackboot_tests::util::wait_until;

use super::run::BackgroundStorm;

// ---- the coordinator's node list -------------------------------------------

/// One row of `rackboot node list`.
#[derive(Debug)]
pub(super) struct NodeRow {
    pub(super) number: u32,
    pub(super) rack: String,
    pub(super) address: Ipv4Addr,
    pub(super) mac: String,
}

pub(super) fn parse_node_list(out: &CliOutput) -> Result<Vec<NodeRow>> {
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

// ---- the agent's SIGUSR1 state dumps --------------------------------------

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
pub(super) fn active_lines(dump: &[String]) -> Vec<&String> {
    dump.iter()
        .filter(|l| l.contains("% of ") && l.contains(" B, blk "))
        .collect()
}

/// The number of active transfers in a dump's header line (`tftp: N active
/// …`, the line after the "TFTP state" one).
pub(super) fn dump_active_count(dump: &[String]) -> Result<u64> {
    let header = dump.get(1).map(String::as_str).unwrap_or_default();
    header
        .trim()
        .strip_prefix("tftp: ")
        .and_then(|h| h.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("dump header should be `tftp: N active …`: {header:?}"))
}

/// Waits (up to 5 s) until the agent's log holds `count` TFTP state dumps;
/// returns the last one.
fn wait_tftp_dump(lab: &TftpLab, count: usize) -> Result<Vec<String>> {
    let dump = wait_until(Duration::from_secs(5), Duration::from_millis(50), || {
        let log = lab.agent_log();
        Ok((log.matches("TFTP state (SIGUSR1)").count() >= count)
            .then(|| last_tftp_dump(&log).unwrap_or_default()))
    })?;
    dump.with_context(|| {
        format!(
            "no `TFTP state (SIGUSR1)` in the agent log 5 s after SIGUSR1 #{count}:\n{}",
            lab.report()
        )
    })
}

/// Signals SIGUSR1 to the agent every 500 ms while `storm` runs, for at
/// most 60 s, until a TFTP state dump shows an active transfer (the first
/// signal may come before the clients' requests, or between transfers).
/// Returns that dump (`None` if the storm ended or 60 s passed first) and
/// the number of signals sent.
pub(super) fn usr1_until_active_dump(
    lab: &mut TftpLab,
    storm: &mut BackgroundStorm,
) -> Result<(Option<Vec<String>>, usize)> {
    let mut dumps_seen = 0;
    let found = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
        if !storm.running()? {
            // Over: no transfer left to see. Ends the wait without a dump.
            return Ok(Some(None));
        }
        lab.signal_agent("USR1")?;
        dumps_seen += 1;
        let dump = wait_tftp_dump(lab, dumps_seen)?;
        Ok((!active_lines(&dump).is_empty()).then_some(Some(dump)))
    })?;
    Ok((found.flatten(), dumps_seen))
}

/// Signals SIGUSR1 to the agent and waits (up to 10 s) for its state line;
/// returns the line's `dhcp_provisional_full` count.
pub(super) fn usr1_provisional_full(lab: &mut TftpLab) -> Result<u64> {
    lab.signal_agent("USR1")?;
    let mut log = String::new();
    let full = wait_until(Duration::from_secs(10), Duration::from_millis(200), || {
        log = lab.agent_log();
        Ok(log
            .lines()
            .rev()
            .find(|l| l.contains("agent state (SIGUSR1)"))
            .and_then(|l| l.split("dhcp_provisional_full=").nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok()))
    })?;
    full.with_context(|| format!("no SIGUSR1 state line:\n{log}"))
}

// ---- the agent's link and files ---------------------------------------------

/// Bytes the agent's interface ([`SERVER_IF`]) has sent so far (from the
/// server namespace's `/sys`).
pub(super) fn server_tx_bytes(lab: &TftpLab) -> Result<u64> {
    let path = format!("/sys/class/net/{SERVER_IF}/statistics/tx_bytes");
    let text = lab.server.run("cat", &[&path])?;
    text.trim()
        .parse()
        .with_context(|| format!("{path} holds {text:?}"))
}

/// Waits (up to 10 s) until the agent's interface has sent `bytes` more
/// than `before` (from [`server_tx_bytes`]): a storm's transfers are under
/// way.
pub(super) fn wait_agent_sent(lab: &TftpLab, before: u64, bytes: u64) -> Result<()> {
    let mut sent = 0;
    let flowing = wait_until(Duration::from_secs(10), Duration::from_millis(50), || {
        sent = server_tx_bytes(lab)?.saturating_sub(before);
        Ok((sent >= bytes).then_some(()))
    })?;
    flowing.with_context(|| {
        format!(
            "the agent sent {sent} bytes in 10 s since the storm started, not {bytes}:\n{}",
            lab.report()
        )
    })
}

/// `curl tftp://SERVER_IP/<name>` from the client namespace into `to`.
pub(super) fn tftp_get(lab: &TftpLab, name: &str, to: &Path) -> Result<CliOutput> {
    let mut get = lab.client.exec("curl");
    get.args(["-s", "-o"])
        .arg(to)
        .arg(format!("tftp://{SERVER_IP}/{name}"));
    run_with_timeout(get, Duration::from_secs(10))
}
