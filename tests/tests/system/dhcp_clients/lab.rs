//! Drivers of the rackboot side of the DHCP client tests: a test's temporary
//! directory and daemons ([`Lab`]: the coordinator and an agent in one
//! namespace, dnsmasq, dhcrelay), the nodes the coordinator reports for a
//! MAC, and [`wait_until`], the deadline-bounded poll every wait here uses.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use rackboot_tests::daemon::{self, CliOutput, Daemon};
use rackboot_tests::netns::Netns;
use rackboot_tests::testbed::{node_of_mac_in, normalize_mac};
pub(super) use rackboot_tests::util::wait_until;

/// Where the coordinator listens, in the agent's namespace.
const COORDINATOR_LISTEN: &str = "127.0.0.1:50051";
/// The URL the agent and the CLI use.
const COORDINATOR_URL: &str = "http://127.0.0.1:50051";
/// The rack.
const RACK: &str = "r1";

/// A test's temporary directory and daemons (killed on drop, before the
/// namespaces the test declared earlier are deleted).
pub(super) struct Lab {
    daemons: Vec<Daemon>,
    dir: tempfile::TempDir,
    started: Instant,
}

impl Lab {
    pub(super) fn new(prefix: &str) -> Result<Lab> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("rackboot-{prefix}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        Ok(Lab {
            daemons: Vec::new(),
            dir,
            started: Instant::now(),
        })
    }

    pub(super) fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub(super) fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Starts `cmd` as daemon `name` (log `<name>.log`) and waits for a log
    /// line containing `ready`.
    pub(super) fn spawn(&mut self, name: &str, cmd: Command, ready: &str) -> Result<()> {
        let log = self.path(&format!("{name}.log"));
        let mut d = Daemon::spawn(name, cmd, &log)?;
        d.wait_for_log(ready, Duration::from_secs(30))?;
        self.daemons.push(d);
        Ok(())
    }

    /// The coordinator and an agent in `ns` on `iface`, with `extra` flags;
    /// waits until the agent serves and its rack is registered.
    pub(super) fn start_rackboot(&mut self, ns: &Netns, iface: &str, extra: &[&str]) -> Result<()> {
        let mut cmd = ns.exec(daemon::binary(daemon::COORDINATOR)?);
        cmd.args(["--plaintext", "--listen", COORDINATOR_LISTEN, "--data"])
            .arg(self.path("coordinator-data"));
        let log = self.path("coordinator.log");
        let mut coordinator = Daemon::spawn("coordinator", cmd, &log)?;
        let listen: SocketAddr = COORDINATOR_LISTEN.parse()?;
        coordinator.wait_for_tcp(listen, Some(ns), Duration::from_secs(30))?;
        self.daemons.push(coordinator);

        let mut cmd = ns.exec(daemon::binary(daemon::AGENT)?);
        cmd.args([
            "--plaintext",
            "--rack",
            RACK,
            "--coordinator",
            COORDINATOR_URL,
            "--iface",
            iface,
            "--no-http",
            "--no-syslog",
        ])
        .args(extra)
        .arg("--data")
        .arg(self.path("agent-data"));
        self.spawn("agent", cmd, "rack agent serving")?;

        let mut last = None;
        let registered = wait_until(Duration::from_secs(30), Duration::from_millis(200), || {
            let racks = self.cli(ns, &["rack", "list"])?.success()?;
            if racks
                .stdout
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(RACK))
            {
                return Ok(Some(()));
            }
            self.ensure_running()?;
            last = Some(racks);
            Ok(None)
        })?;
        if registered.is_none() {
            let racks = last.map(|r| r.to_string()).unwrap_or_default();
            bail!("rack {RACK} not registered 30 s after the agent started:\n{racks}");
        }
        Ok(())
    }

    /// `rackboot --coordinator URL <args>` in `ns`.
    pub(super) fn cli(&self, ns: &Netns, args: &[&str]) -> Result<CliOutput> {
        let mut all = vec!["--coordinator", COORDINATOR_URL];
        all.extend_from_slice(args);
        daemon::cli(Some(ns), &all, Duration::from_secs(60))
    }

    pub(super) fn ensure_running(&mut self) -> Result<()> {
        self.daemons.iter_mut().try_for_each(Daemon::ensure_running)
    }

    /// Daemon logs and client logs, for failure reports.
    fn report(&self) -> String {
        let mut r = String::new();
        for d in &self.daemons {
            r.push_str(&d.report());
            r.push('\n');
        }
        let mut logs: Vec<PathBuf> = std::fs::read_dir(self.dir())
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        logs.sort();
        for path in logs {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let is_daemon = self
                .daemons
                .iter()
                .any(|d| d.log_path().file_name() == path.file_name());
            if name.ends_with(".log") && !is_daemon {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                r.push_str(&format!("===== {name} =====\n{}\n", text.trim_end()));
            }
        }
        r.push_str(&format!("(temp dir {})\n", self.dir().display()));
        r
    }

    /// Passes `result` through; on failure prints the report first.
    pub(super) fn finish<T>(&self, test: &str, result: Result<T>) -> Result<T> {
        let secs = self.started.elapsed().as_secs_f64();
        match &result {
            Ok(_) => eprintln!("{test}: passed in {secs:.1} s"),
            Err(_) => eprintln!(
                "\n######## {test} FAILED after {secs:.1} s; diagnostics follow ########\n{}",
                self.report()
            ),
        }
        result
    }
}

// ---- nodes -----------------------------------------------------------------

/// A node as the CLI reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Node {
    pub(super) number: u32,
    pub(super) name: String,
    pub(super) address: Ipv4Addr,
}

/// The node with `mac`, from `rackboot node list` and `rackboot node show`
/// (which must agree).
pub(super) fn node_of(lab: &Lab, ns: &Netns, mac: &str) -> Result<Node> {
    let list = lab.cli(ns, &["node", "list"])?.success()?;
    let (number, address) = node_of_mac_in(&list, mac)?;
    let show = lab.cli(ns, &["node", "show", &number])?.success()?;
    let field = |key: &str| {
        show.stdout
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .map(|v| v.trim().to_string())
            .with_context(|| format!("`node show {number}` has no {key:?} line:\n{show}"))
    };
    let node = Node {
        number: number
            .parse()
            .with_context(|| format!("node number {number:?} in:\n{list}"))?,
        name: field("name:")?,
        address: field("address:")?
            .parse()
            .with_context(|| format!("address in:\n{show}"))?,
    };
    ensure!(
        node.address.to_string() == address,
        "`node list` says {address}, `node show` says {}:\n{list}\n{show}",
        node.address
    );
    let macs = normalize_mac(&field("macs:")?);
    ensure!(
        macs.contains(&normalize_mac(mac)),
        "`node show {number}` does not list {mac}:\n{show}"
    );
    Ok(node)
}

/// Waits (up to 10 s) until the coordinator lists a node for `mac`.
pub(super) fn wait_node(lab: &Lab, ns: &Netns, mac: &str) -> Result<Node> {
    let mut last = None;
    let node = wait_until(
        Duration::from_secs(10),
        Duration::from_millis(200),
        || match node_of(lab, ns, mac) {
            Ok(n) => Ok(Some(n)),
            Err(e) => {
                last = Some(e);
                Ok(None)
            }
        },
    )?;
    match node {
        Some(n) => Ok(n),
        None => {
            let e = last.unwrap_or_else(|| anyhow::anyhow!("`node_of` never ran"));
            Err(e.context(format!("no node for {mac} 10 s after its DISCOVER")))
        }
    }
}

/// Number of rows in `rackboot node list`.
pub(super) fn node_count(lab: &Lab, ns: &Netns) -> Result<usize> {
    let list = lab.cli(ns, &["node", "list"])?.success()?;
    Ok(list
        .stdout
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .count())
}
