//! A TFTP lab: a rack agent serving a static root on a veth pair between two
//! network namespaces, for tests with real TFTP clients and boot storms.
//!
//! ```text
//!   netns srv                                 netns cli
//!   rackboot-agent --iface rbt-srv             tftp, atftp, curl,
//!   [rackboot-coordinator 127.0.0.1:50051]     rackboot storm
//!   rbt-srv 10.201.0.1/24 ──────── veth ──────── rbt-cli 10.201.0.250/24
//! ```
//!
//! * files go into the agent's static root ([`TftpLab::add_file`],
//!   [`random_bytes`] makes reproducible pseudo-random content);
//! * the agent runs with an unreachable coordinator (it serves its static
//!   root anyway), or with a real coordinator in the server namespace
//!   ([`TftpLab::start_coordinator`]) for DHCP storms, whose unknown MACs it
//!   then accepts;
//! * [`TftpLab::set_loss`] drops a random share of the packets from or to
//!   the server with nftables (`numgen random`) in the client namespace, on
//!   the client's veth (netdev `ingress` / `egress` hooks: a drop there is
//!   silent, whereas a drop in the `output` hook makes the client's
//!   `sendto` fail with EPERM, which real clients treat as fatal);
//! * [`TftpLab::rate_limit`] puts a `tc tbf` qdisc on both veth ends (this
//!   kernel has no netem).
//!
//! Everything lives in the two namespaces and a temporary directory and is
//! removed on drop (daemons first).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::daemon::{self, CliOutput, Daemon};
use crate::netns::{Netns, veth_pair};

/// The agent's address.
pub const SERVER_IP: &str = "10.201.0.1";
/// The agent's address with prefix.
pub const SERVER_CIDR: &str = "10.201.0.1/24";
/// The clients' address (outside the node range that starts at the
/// agent's address + 1, so it cannot clash with a DHCP storm's leases).
pub const CLIENT_IP: &str = "10.201.0.250";
/// The clients' address with prefix.
pub const CLIENT_CIDR: &str = "10.201.0.250/24";
/// The agent's veth (in the server namespace).
pub const SERVER_IF: &str = "rbt-srv";
/// The clients' veth (in the client namespace).
pub const CLIENT_IF: &str = "rbt-cli";
/// Where the coordinator listens, inside the server namespace.
pub const COORDINATOR_LISTEN: &str = "127.0.0.1:50051";
/// The coordinator URL for the agent and the CLI (server namespace).
pub const COORDINATOR_URL: &str = "http://127.0.0.1:50051";
/// A coordinator URL nobody answers: the agent serves its static root anyway.
pub const NO_COORDINATOR_URL: &str = "http://127.0.0.1:9";
/// The rack the agent serves.
pub const RACK: &str = "r1";

/// Which packets [`TftpLab::set_loss`] drops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossDirection {
    /// Packets the server sends (DATA, OACK, ERROR): dropped as they arrive
    /// at the client's veth.
    FromServer,
    /// Packets the clients send to the server (RRQ, ACK): dropped as they
    /// leave the client's veth.
    ToServer,
}

impl std::fmt::Display for LossDirection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            LossDirection::FromServer => "from the server",
            LossDirection::ToServer => "to the server",
        })
    }
}

/// Reproducible pseudo-random bytes: the blake3 extendable output of `seed`.
pub fn random_bytes(seed: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"rackboot-tests random_bytes ")
        .update(seed.as_bytes())
        .finalize_xof()
        .fill(&mut out);
    out
}

/// The blake3 digest of `bytes` in lowercase hex (what `rackboot storm
/// --expect-blake3` takes).
pub fn blake3_hex(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// The two namespaces, the agent (and optionally a coordinator) and the
/// static root. Dropped in order: daemons, namespaces, files.
pub struct TftpLab {
    agent: Option<Daemon>,
    coordinator: Option<Daemon>,
    /// The agent's namespace (and the coordinator's, when there is one).
    pub server: Netns,
    /// The clients' namespace.
    pub client: Netns,
    /// Further `rackboot-agent` flags for [`TftpLab::start_agent`].
    pub agent_args: Vec<String>,
    /// The agent's HTTP port (boot files, `/boot-info`, `/metrics`) on
    /// [`SERVER_IP`]; `None` (the default): `--no-http`.
    pub http_port: Option<u16>,
    /// Further `rackboot-coordinator` flags for
    /// [`TftpLab::start_coordinator`].
    pub coordinator_args: Vec<String>,
    /// Coordinators outside the lab (comma-separated URLs, reachable from
    /// the server namespace): the agent and [`TftpLab::cli`] use them
    /// instead of a coordinator of its own.
    pub coordinator_url: Option<String>,
    root: PathBuf,
    dir: tempfile::TempDir,
}

impl std::fmt::Debug for TftpLab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TftpLab")
            .field("server", &self.server.name())
            .field("client", &self.client.name())
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

impl TftpLab {
    /// Creates the namespaces (`<prefix>-s-…`, `<prefix>-c-…`), the veth
    /// pair with its addresses, and an empty static root. Nothing runs yet.
    pub fn new(prefix: &str) -> Result<TftpLab> {
        let server = Netns::create(&format!("{prefix}-s"))?;
        let client = Netns::create(&format!("{prefix}-c"))?;
        veth_pair(
            &server,
            SERVER_IF,
            Some(SERVER_CIDR),
            &client,
            CLIENT_IF,
            Some(CLIENT_CIDR),
        )?;
        let dir = tempfile::Builder::new()
            .prefix(&format!("rackboot-{prefix}-"))
            .tempdir()
            .context("creating a temporary directory")?;
        // Canonical: the agent's static-root loader wants the real path.
        let dir_path = dir
            .path()
            .canonicalize()
            .with_context(|| format!("canonicalizing {}", dir.path().display()))?;
        let root = dir_path.join("static-root");
        std::fs::create_dir_all(&root).with_context(|| format!("creating {}", root.display()))?;
        Ok(TftpLab {
            agent: None,
            coordinator: None,
            server,
            client,
            agent_args: Vec::new(),
            http_port: None,
            coordinator_args: Vec::new(),
            coordinator_url: None,
            root,
            dir,
        })
    }

    /// The temporary directory (logs, client downloads).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The agent's static root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes `bytes` as `name` (relative, may contain `/`) into the static
    /// root. Call before [`TftpLab::start_agent`]: the agent loads its
    /// static root when it starts.
    pub fn add_file(&self, name: &str, bytes: &[u8]) -> Result<PathBuf> {
        let path = self.root.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))?;
        Ok(path)
    }

    /// Starts `rackboot-coordinator --plaintext --listen 127.0.0.1:50051` in the server
    /// namespace and waits until it accepts connections.
    pub fn start_coordinator(&mut self) -> Result<()> {
        let bin = daemon::binary(daemon::COORDINATOR)?;
        let mut cmd = self.server.exec(&bin);
        cmd.args(["--plaintext", "--listen", COORDINATOR_LISTEN, "--data"])
            .arg(self.dir.path().join("coordinator-data"))
            .args(&self.coordinator_args);
        let log = self.dir.path().join("coordinator.log");
        let coordinator = self
            .coordinator
            .insert(Daemon::spawn("coordinator", cmd, &log)?);
        let listen: SocketAddr = COORDINATOR_LISTEN.parse()?;
        coordinator.wait_for_tcp(listen, Some(&self.server), Duration::from_secs(30))
    }

    /// Starts the agent on [`SERVER_IF`] with the static root, no syslog and
    /// no HTTP (unless [`TftpLab::http_port`] is set), fed by the
    /// coordinator when one was started (else by nobody), and waits until
    /// it serves. With a coordinator it also waits until the rack is
    /// registered.
    pub fn start_agent(&mut self) -> Result<()> {
        let bin = daemon::binary(daemon::AGENT)?;
        let url = match (&self.coordinator_url, &self.coordinator) {
            (Some(u), _) => u.as_str(),
            (None, Some(_)) => COORDINATOR_URL,
            (None, None) => NO_COORDINATOR_URL,
        };
        let http = match self.http_port {
            Some(port) => vec!["--http-port".to_string(), port.to_string()],
            None => vec!["--no-http".to_string()],
        };
        let mut cmd = self.server.exec(&bin);
        cmd.args(["--plaintext", "--rack", RACK, "--coordinator", url])
            .args(["--iface", SERVER_IF])
            .args(&http)
            .args(["--no-syslog", "--data"])
            .arg(self.dir.path().join("agent-data"))
            .arg("--static-root")
            .arg(&self.root)
            .args(&self.agent_args);
        let log = self.dir.path().join("agent.log");
        let agent = self.agent.insert(Daemon::spawn("agent", cmd, &log)?);
        agent.wait_for_log("rack agent serving", Duration::from_secs(30))?;
        if self.coordinator.is_some() || self.coordinator_url.is_some() {
            self.wait_rack_registered(Duration::from_secs(30))?;
        }
        Ok(())
    }

    /// Makes [`TftpLab::start_agent`] run the agent with `--accept probe`,
    /// node addresses from 10.201.0.100 and the provisional pool
    /// 10.201.0.50-59 (10 addresses).
    pub fn use_probe_policy(&mut self) {
        self.agent_args.extend(
            [
                "--accept",
                "probe",
                "--node-base",
                "10.201.0.100",
                "--provisional-range",
                "10.201.0.50-10.201.0.59",
            ]
            .iter()
            .map(ToString::to_string),
        );
    }

    /// Kills the agent (SIGKILL); [`TftpLab::start_agent`] starts it again
    /// on the same data directory.
    pub fn stop_agent(&mut self) -> Result<()> {
        if let Some(mut a) = self.agent.take() {
            a.kill()?;
        }
        Ok(())
    }

    /// Stops the agent as systemd would (SIGTERM, then waits up to 20 s
    /// for it to drain and exit); [`TftpLab::start_agent`] starts it again.
    pub fn stop_agent_gracefully(&mut self) -> Result<()> {
        if let Some(mut a) = self.agent.take() {
            let pid = a.pid().to_string();
            crate::util::run(std::process::Command::new("kill").args(["-TERM", &pid]))?;
            let deadline = Instant::now() + Duration::from_secs(20);
            while a.try_wait()?.is_none() {
                if Instant::now() >= deadline {
                    a.kill()?;
                    bail!("the agent did not exit within 20 s of SIGTERM");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        Ok(())
    }

    /// The agent's data directory.
    pub fn agent_data(&self) -> PathBuf {
        self.dir.path().join("agent-data")
    }

    fn wait_rack_registered(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.agent_mut()?.ensure_running()?;
            let racks = self.cli(&["rack", "list"])?.success()?;
            if racks
                .stdout
                .lines()
                .skip(1)
                .any(|l| l.split_whitespace().next() == Some(RACK))
            {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "rack {RACK} not registered {timeout:?} after the agent started:\n{racks}\n{}",
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs `rackboot --coordinator URL <args>` in the server namespace.
    pub fn cli(&self, args: &[&str]) -> Result<CliOutput> {
        let url = self.coordinator_url.as_deref().unwrap_or(COORDINATOR_URL);
        let mut all = vec!["--coordinator", url];
        all.extend_from_slice(args);
        daemon::cli(Some(&self.server), &all, Duration::from_secs(60))
    }

    /// The running agent.
    pub fn agent_mut(&mut self) -> Result<&mut Daemon> {
        self.agent
            .as_mut()
            .context("the agent has not been started")
    }

    /// The agent's log so far (empty before it starts).
    pub fn agent_log(&self) -> String {
        self.agent.as_ref().map(Daemon::logs).unwrap_or_default()
    }

    /// Sends `signal` (a `kill` name such as `USR1`) to the agent.
    pub fn signal_agent(&mut self, signal: &str) -> Result<()> {
        let agent = self.agent_mut()?;
        agent.ensure_running()?;
        let pid = agent.pid().to_string();
        crate::util::run(std::process::Command::new("kill").args([&format!("-{signal}"), &pid]))
            .map(drop)
    }

    /// Puts `tc qdisc ... tbf rate RATE burst 512kb latency 50ms` (e.g.
    /// `1gbit`) on both veth ends.
    pub fn rate_limit(&self, rate: &str) -> Result<()> {
        for (ns, dev) in [(&self.server, SERVER_IF), (&self.client, CLIENT_IF)] {
            ns.run(
                "tc",
                &[
                    "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", "512kb",
                    "latency", "50ms",
                ],
            )
            .with_context(|| format!("rate-limiting {dev} in {}", ns.name()))?;
        }
        Ok(())
    }

    /// Drops `percent`% of the packets going `direction` at random, with an
    /// nftables table `rbloss` in the client namespace (replacing the rule
    /// set earlier). DHCP (server port 67) is never dropped.
    pub fn set_loss(&self, percent: u32, direction: LossDirection) -> Result<()> {
        ensure!(percent <= 100, "loss of {percent}% is not a percentage");
        self.clear_loss()?;
        if percent == 0 {
            return Ok(());
        }
        let (hook, matcher) = match direction {
            LossDirection::FromServer => ("ingress", format!("ip saddr {SERVER_IP}")),
            LossDirection::ToServer => ("egress", format!("ip daddr {SERVER_IP}")),
        };
        let rules = format!(
            "table netdev rbloss {{\n\
             \tchain loss {{\n\
             \t\ttype filter hook {hook} device \"{CLIENT_IF}\" priority 0;\n\
             \t\t{matcher} udp sport != 67 udp dport != 67 numgen random mod 100 < {percent} counter drop\n\
             \t}}\n\
             }}\n"
        );
        let file = self.dir.path().join("loss.nft");
        std::fs::write(&file, &rules).with_context(|| format!("writing {}", file.display()))?;
        let path = file.to_str().context("temporary path is not UTF-8")?;
        self.client
            .run("nft", &["-f", path])
            .with_context(|| format!("loading nftables rules:\n{rules}"))
            .map(drop)
    }

    /// Removes the loss rules (if any).
    pub fn clear_loss(&self) -> Result<()> {
        let tables = self.client.run("nft", &["list", "tables"])?;
        if tables.lines().any(|l| l.trim() == "table netdev rbloss") {
            self.client
                .run("nft", &["delete", "table", "netdev", "rbloss"])?;
        }
        Ok(())
    }

    /// Packets dropped by the loss rule so far (0 without one).
    pub fn dropped_packets(&self) -> Result<u64> {
        let tables = self.client.run("nft", &["list", "tables"])?;
        if !tables.lines().any(|l| l.trim() == "table netdev rbloss") {
            return Ok(0);
        }
        let listing = self
            .client
            .run("nft", &["list", "table", "netdev", "rbloss"])?;
        let words: Vec<&str> = listing.split_whitespace().collect();
        let count = words
            .windows(2)
            .find(|w| w.first() == Some(&"packets"))
            .and_then(|w| w.get(1))
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no packet counter in:\n{listing}"))?;
        Ok(count)
    }

    /// The agent's (and coordinator's) logs, for failure messages.
    pub fn report(&self) -> String {
        let mut s = String::new();
        for d in [&self.coordinator, &self.agent].into_iter().flatten() {
            s.push_str(&d.report());
            s.push('\n');
        }
        s
    }
}
