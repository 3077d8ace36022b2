//! Drivers of `rackboot storm` for the storm tests: a run to completion
//! ([`storm`]) or in the background ([`BackgroundStorm`]), the numbers of
//! its JSON verdict ([`StormResult`]), the check that every client
//! booted, and the short soak script.

use std::ffi::OsStr;
use std::fs::File;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{self, CliOutput, run_with_timeout};
use rackboot_tests::tftplab::{SERVER_IP, TftpLab};

/// The storm's own deadline; the process is killed 10 s later.
pub(super) const STORM_DEADLINE_SECS: u64 = 75;

/// The numbers in the storm's JSON line that the tests look at.
#[derive(Debug)]
pub(super) struct StormResult {
    pub(super) clients: u64,
    pub(super) ok: u64,
    pub(super) failed: u64,
    pub(super) bytes: u64,
    pub(super) elapsed_s: f64,
    pub(super) json: String,
}

/// The number after `"key":` in a flat JSON object.
pub(super) fn json_number(json: &str, key: &str) -> Option<f64> {
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
pub(super) fn storm<S: AsRef<OsStr>>(
    lab: &TftpLab,
    args: &[S],
) -> Result<(CliOutput, StormResult)> {
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
pub(super) struct BackgroundStorm {
    process: rackboot_tests::netns::NsProcess,
    out: std::path::PathBuf,
}

impl BackgroundStorm {
    pub(super) fn start<S: AsRef<OsStr>>(lab: &TftpLab, args: &[S]) -> Result<BackgroundStorm> {
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

    /// Whether the storm is still running.
    pub(super) fn running(&mut self) -> Result<bool> {
        Ok(self.process.try_wait()?.is_none())
    }

    /// Wait for the storm to end; its output and parsed result.
    pub(super) fn finish(mut self) -> Result<(CliOutput, StormResult)> {
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
pub(super) fn ensure_all_booted(
    lab: &TftpLab,
    out: &CliOutput,
    r: &StormResult,
    n: u64,
) -> Result<()> {
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

/// Storm flags for `clients` emulated PXE ROMs fetching `file` over TFTP
/// only, each copy checked against blake3 `digest`.
pub(super) fn tftp_args(file: &str, clients: u32, digest: &str) -> Vec<String> {
    let clients = clients.to_string();
    ["--tftp-only", "--file", file, "--clients", &clients]
        .into_iter()
        .chain(["--expect-blake3", digest])
        .map(String::from)
        .collect()
}

/// Storm flags for `clients` emulated PXE ROMs with unknown MACs doing DHCP
/// and TFTP with the firmware timers at a quarter, each copy of the boot
/// file checked against blake3 `digest`.
pub(super) fn dhcp_tftp_args(clients: u32, digest: &str) -> Vec<String> {
    let clients = clients.to_string();
    ["--clients", &clients, "--time-scale", "0.25"]
        .into_iter()
        .chain(["--expect-blake3", digest])
        .map(String::from)
        .collect()
}

/// Runs `tests/bench/soak.sh --seconds SECONDS --interval 5` against the
/// workspace's debug binaries, to completion (at most 240 s).
pub(super) fn run_soak(seconds: u32) -> Result<CliOutput> {
    let root = rackboot_tests::workspace_root();
    let bin = daemon::binary(daemon::AGENT)?;
    let bin_dir = bin
        .parent()
        .context("the agent binary has no directory")?
        .to_path_buf();
    let mut cmd = std::process::Command::new(root.join("tests/bench/soak.sh"));
    cmd.args([
        "--seconds",
        &seconds.to_string(),
        "--interval",
        "5",
        "--bin-dir",
    ])
    .arg(&bin_dir);
    run_with_timeout(cmd, Duration::from_secs(240))
}
