//! Deployment material in `deploy/`: the systemd units pass
//! `systemd-analyze verify` (`deploy/verify-units.sh`), every example and
//! default configuration in `deploy/config/` passes the real daemons'
//! `--check-config`, and the one-machine lab (`deploy/lab/up.sh`, three
//! coordinators, two racks, a QEMU node) boots its node and leaves nothing
//! behind after `deploy/lab/down.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::{self, CliOutput, run_with_timeout};
use rackboot_tests::netns::Netns;
use rackboot_tests::{artifacts, commands_skip_reason, root_skip_reason, skip, workspace_root};

fn deploy_dir() -> PathBuf {
    workspace_root().join("deploy")
}

/// The directory holding the workspace's binaries (what `RACKBOOT_BIN`
/// names for the scripts).
fn bin_dir() -> Result<PathBuf> {
    let coordinator = daemon::binary(daemon::COORDINATOR)?;
    daemon::binary(daemon::AGENT)?;
    daemon::binary(daemon::CLI)?;
    Ok(coordinator
        .parent()
        .context("binary path has no parent")?
        .to_path_buf())
}

/// `systemd-analyze verify` accepts both units without a single warning
/// (the script fails on any output), with the workspace's binaries in place
/// of /usr/bin.
#[test]
fn systemd_units_pass_systemd_analyze_verify() -> Result<()> {
    if let Some(reason) = commands_skip_reason(&["systemd-analyze", "bash"]) {
        skip(&reason);
        return Ok(());
    }
    let mut cmd = Command::new(deploy_dir().join("verify-units.sh"));
    cmd.env("RACKBOOT_BIN", bin_dir()?);
    let out = run_with_timeout(cmd, Duration::from_secs(60))?.success()?;
    for unit in ["rackboot-agent.service", "rackboot-coordinator.service"] {
        ensure!(
            out.stdout.contains(&format!("OK   {unit}")),
            "{unit} not verified:\n{out}"
        );
    }
    ensure!(out.stdout.contains("all 2 units verified"), "{out}");
    Ok(())
}

/// The agent files of `deploy/config/`, with the interface each names and
/// the address that interface has on its rack's management node. A file
/// not listed here (or listed but missing) fails the test: every file
/// shipped is checked.
const AGENT_FILES: [(&str, Option<(&str, &str)>); 3] = [
    ("agent.toml", None),
    ("agent-r1.toml", Some(("eth1", "10.0.1.1/24"))),
    ("agent-r2.toml", Some(("enp3s0f1", "10.0.2.1/24"))),
];
const COORDINATOR_FILES: [&str; 4] = [
    "coordinator.toml",
    "coordinator-1.toml",
    "coordinator-2.toml",
    "coordinator-3.toml",
];

fn check_config(mut cmd: Command, file: &Path) -> Result<CliOutput> {
    cmd.arg("--config").arg(file).arg("--check-config");
    run_with_timeout(cmd, Duration::from_secs(20))
}

/// Where the shipped files expect the cluster's certificates.
const SITE_PKI: &str = "/etc/rackboot/pki/";

/// The certificates the site files name, made with the real `rackboot
/// certs` in `pki`: the CA, replicas c1–c3 and the agents of r1 and r2.
fn make_site_pki(pki: &Path) -> Result<()> {
    let dir = pki.display().to_string();
    let certs = |args: &[&str]| -> Result<()> {
        let mut all = vec!["certs"];
        all.extend_from_slice(args);
        all.extend_from_slice(&["--dir", &dir]);
        daemon::cli(None, &all, Duration::from_secs(30))?.success()?;
        Ok(())
    };
    certs(&["init"])?;
    for (name, ip) in [("c1", "10.1.0.1"), ("c2", "10.1.0.2"), ("c3", "10.1.0.3")] {
        certs(&["issue", "coordinator", "--name", name, "--ip", ip])?;
    }
    for rack in ["r1", "r2"] {
        certs(&["issue", "agent", "--rack", rack])?;
    }
    Ok(())
}

/// `name` from deploy/config/ with [`SITE_PKI`] pointed at `pki`, written
/// into `out` (the file otherwise unchanged).
fn with_pki(name: &str, pki: &Path, out: &Path) -> Result<PathBuf> {
    let src = deploy_dir().join("config").join(name);
    let text =
        std::fs::read_to_string(&src).with_context(|| format!("reading {}", src.display()))?;
    let dest = out.join(name);
    std::fs::write(
        &dest,
        text.replace(SITE_PKI, &format!("{}/", pki.display())),
    )?;
    Ok(dest)
}

/// Every configuration in `deploy/config/` is valid under the real
/// binaries' `--check-config`. The site files (replicas c1–c3, racks r1 and
/// r2) run mutual TLS: as shipped, without the certificates, they are
/// refused naming `tls_ca`; with certificates made by `rackboot certs` at
/// the path they name, accepted. An agent file naming an interface is checked
/// in a network namespace that has that interface with the address the file
/// expects (the check refuses an interface without an IPv4 address; first
/// shown, in the same namespace before the interface exists).
#[test]
fn deploy_configs_pass_check_config() -> Result<()> {
    let dir = deploy_dir().join("config");
    let mut shipped: Vec<String> = std::fs::read_dir(&dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    shipped.sort();
    let mut known: Vec<String> = AGENT_FILES
        .iter()
        .map(|(f, _)| f.to_string())
        .chain(COORDINATOR_FILES.iter().map(|f| f.to_string()))
        .collect();
    known.sort();
    ensure!(
        shipped == known,
        "deploy/config/ holds {shipped:?}, this test checks {known:?}: list every file in AGENT_FILES or COORDINATOR_FILES"
    );

    let coordinator = daemon::binary(daemon::COORDINATOR)?;
    let agent = daemon::binary(daemon::AGENT)?;
    let tmp = tempfile::Builder::new()
        .prefix("rackboot-deploy-cfg-")
        .tempdir()?;
    let pki = tmp.path().join("pki");
    make_site_pki(&pki)?;
    let site = |name: &str| -> Result<bool> {
        let text = std::fs::read_to_string(dir.join(name))?;
        Ok(text
            .lines()
            .any(|l| l.starts_with("tls_ca") && l.contains(SITE_PKI)))
    };
    for name in COORDINATOR_FILES {
        let file = dir.join(name);
        let out = check_config(Command::new(&coordinator), &file)?;
        if site(name)? {
            ensure!(
                !out.status.success() && out.stderr.contains("key `tls_ca`"),
                "{name} without its certificates must be refused naming `tls_ca`: {out}"
            );
            let out = check_config(
                Command::new(&coordinator),
                &with_pki(name, &pki, tmp.path())?,
            )?;
            ensure!(
                out.status.success() && out.stdout.contains("configuration OK"),
                "{name} with its certificates: {out}"
            );
        } else {
            ensure!(
                out.status.success() && out.stdout.contains("configuration OK"),
                "{name}: {out}"
            );
        }
    }
    for (name, iface) in AGENT_FILES {
        if iface.is_none() {
            let out = check_config(Command::new(&agent), &dir.join(name))?;
            ensure!(
                out.status.success() && out.stdout.contains("configuration OK"),
                "{name}: {out}"
            );
        }
    }
    let site_coordinators = COORDINATOR_FILES
        .iter()
        .filter(|n| site(n).unwrap_or(false))
        .count();
    ensure!(
        site_coordinators == 3,
        "the three replica files should run mutual TLS, {site_coordinators} do"
    );

    if let Some(reason) = root_skip_reason().or_else(|| commands_skip_reason(&["ip"])) {
        skip(&format!(
            "(agent files naming an interface; the rest passed) {reason}"
        ));
        return Ok(());
    }
    for (name, iface) in AGENT_FILES {
        let Some((ifname, cidr)) = iface else {
            continue;
        };
        ensure!(site(name)?, "{name} should run mutual TLS");
        let file = with_pki(name, &pki, tmp.path())?;
        let ns = Netns::create("rb-depcfg")?;
        let out = check_config(ns.exec(&agent), &file)?;
        ensure!(
            !out.status.success() && out.stderr.contains("key `iface`"),
            "{name} without interface {ifname} must be refused naming `iface`: {out}"
        );
        ns.ip(&[
            "link", "add", ifname, "type", "veth", "peer", "name", "rbpeer0",
        ])?;
        ns.add_addr(ifname, cidr)?;
        ns.link_up(ifname)?;
        let out = check_config(ns.exec(&agent), &file)?;
        ensure!(
            out.status.success() && out.stdout.contains("configuration OK"),
            "{name} with {ifname} {cidr}: {out}"
        );
    }
    Ok(())
}

/// `deploy/lab/up.sh` builds the lab (3 coordinators, 2 racks with agents
/// running as nobody with only CAP_NET_BIND_SERVICE, all over mutual TLS
/// with certificates from `rackboot certs`), pushes an image and
/// boots a QEMU node in rack r1 up to the initramfs's marker; then
/// `deploy/lab/down.sh` (run twice) leaves no namespace, process or state
/// directory. Runs in nextest's `qemu` group.
#[test]
fn lab_up_boot_down() -> Result<()> {
    if let Some(reason) = root_skip_reason().or_else(|| {
        commands_skip_reason(&[
            "qemu-system-x86_64",
            "ip",
            "bash",
            "setsid",
            "setpriv",
            "cpio",
            "busybox",
        ])
    }) {
        skip(&reason);
        return Ok(());
    }
    let t0 = Instant::now();
    let bin = bin_dir()?;
    artifacts::kernel()?;
    let artifacts = artifacts::artifacts_dir()?;
    let tmp = tempfile::Builder::new()
        .prefix("rackboot-deploy-lab-")
        .tempdir()?;
    let lab_dir = tmp.path().join("lab");
    let prefix = format!("rbdep{}", std::process::id());
    let env = |cmd: &mut Command| {
        cmd.env("RACKBOOT_BIN", &bin)
            .env("RACKBOOT_ARTIFACTS", &artifacts)
            .env("RACKBOOT_LAB_DIR", &lab_dir)
            .env("RACKBOOT_LAB_PREFIX", &prefix)
            .env("RACKBOOT_LAB_BOOT_TIMEOUT", "240");
    };
    let down = || -> Result<CliOutput> {
        let mut cmd = Command::new(deploy_dir().join("lab/down.sh"));
        env(&mut cmd);
        run_with_timeout(cmd, Duration::from_secs(60))
    };

    let mut up = Command::new(deploy_dir().join("lab/up.sh"));
    env(&mut up);
    let up = run_with_timeout(up, Duration::from_secs(300));
    let up_secs = t0.elapsed().as_secs_f64();
    // What it started, before down.sh removes the record.
    let pids: Vec<u32> = std::fs::read_dir(lab_dir.join("pids"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                .filter_map(|s| s.split_whitespace().next()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // Down in any case, then judge.
    let first_down = down();
    let second_down = down();

    let up = up?;
    ensure!(
        up.status.success()
            && up
                .stdout
                .contains("BOOTED: RACKBOOT-MARKER: RACKBOOT-LAB-BOOT-OK"),
        "up.sh did not boot the node:\n{up}"
    );
    ensure!(
        up.stdout
            .contains("RACKBOOT-LOG RACKBOOT-LAB-BOOT-OK image=lab:1"),
        "the node's syslog line did not reach the coordinators:\n{up}"
    );
    ensure!(
        up.stdout.contains("mutual TLS: 5 of 5 daemons"),
        "every coordinator and agent of the lab should run mutual TLS:\n{up}"
    );
    ensure!(
        pids.len() == 6,
        "up.sh should record 3 coordinators, 2 agents and QEMU, got pids {pids:?}"
    );
    let first_down = first_down?.success()?;
    second_down?.success()?;
    let namespaces = ["core", "c1", "c2", "c3", "r1", "r2"].map(|n| format!("{prefix}-{n}"));
    for ns in &namespaces {
        ensure!(
            !Netns::exists(ns),
            "namespace {ns} left after down.sh:\n{first_down}"
        );
    }
    for pid in pids {
        ensure!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left after down.sh:\n{first_down}"
        );
    }
    ensure!(
        !lab_dir.exists(),
        "{} left after down.sh",
        lab_dir.display()
    );
    eprintln!(
        "lab: up + boot {up_secs:.1} s, up + boot + down {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
