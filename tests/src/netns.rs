//! Throw-away network namespaces for system tests.
//!
//! Everything this module creates (veth pairs, bridges, tap devices,
//! addresses) lives inside namespaces made by [`Netns::create`]; nothing
//! touches the host's own interfaces. Dropping a [`Netns`] kills every
//! process still running in it and deletes it, which also destroys all its
//! interfaces (and the peers of its veths, wherever they are).
//!
//! All operations shell out to `ip` (iproute2) and need root.
//!
//! ```no_run
//! use rackboot_tests::netns::{Netns, veth_pair};
//! # fn main() -> anyhow::Result<()> {
//! let server = Netns::create("rb-srv")?;
//! let rack = Netns::create("rb-rack")?;
//! // These addresses exist only inside the two namespaces.
//! veth_pair(&server, "up0", Some("192.0.2.1/24"), &rack, "down0", Some("192.0.2.2/24"))?;
//! rack.bridge_with_tap("br0", Some("198.51.100.1/24"), "tap0")?;
//! let mut agent = rack.exec("rackboot-agent");
//! agent.args(["--interface", "br0"]);
//! let _agent = rack.spawn(agent)?; // killed when dropped, or with `rack`
//! # Ok(())
//! # }
//! ```

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::util::{display_command, run};

/// Longest interface name Linux accepts (`IFNAMSIZ - 1`).
pub const MAX_IFNAME_LEN: usize = 15;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A network namespace owned by the test; deleted (with everything in it) on
/// drop.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// Creates a namespace named `<prefix>-<pid>-<counter>`, unique within
    /// this machine while the process lives, and brings its loopback up.
    ///
    /// `prefix` should be short and made of `[A-Za-z0-9_-]`.
    pub fn create(prefix: &str) -> Result<Netns> {
        ensure!(
            !prefix.is_empty()
                && prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            "namespace prefix {prefix:?} must be non-empty and use only [A-Za-z0-9_-]"
        );
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        run(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name} (needs root)"))?;
        let ns = Netns { name };
        ns.link_up("lo")?;
        Ok(ns)
    }

    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a namespace called `name` currently exists.
    pub fn exists(name: &str) -> bool {
        Path::new("/run/netns").join(name).exists()
    }

    /// A [`Command`] running `program` inside this namespace
    /// (`ip netns exec NAME program`). Add arguments, environment and stdio
    /// to it as usual; run it with [`util::run`](crate::util::run), or
    /// [`Netns::spawn`] for long-running processes.
    ///
    /// The process gets the namespace's network and a private `/sys` for it;
    /// the file system and everything else are the host's. Its pid is the pid
    /// of `program` itself (`ip` execs it).
    pub fn exec<S: AsRef<OsStr>>(&self, program: S) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// Runs `program args...` inside the namespace to completion and returns
    /// its stdout; fails with its stderr if it exits unsuccessfully.
    pub fn run<S: AsRef<OsStr>>(&self, program: S, args: &[&str]) -> Result<String> {
        run(self.exec(program).args(args))
    }

    /// Runs `ip <args>` for this namespace (`ip -n NAME args...`) and returns
    /// its stdout.
    pub fn ip(&self, args: &[&str]) -> Result<String> {
        run(Command::new("ip").args(["-n", &self.name]).args(args))
    }

    /// Starts `cmd` (normally made by [`Netns::exec`]) in the background.
    /// stdin is closed unless `cmd` sets it. The returned [`NsProcess`] kills
    /// the process when dropped; [`Netns`]'s drop kills whatever is left.
    pub fn spawn(&self, mut cmd: Command) -> Result<NsProcess> {
        let command = display_command(&cmd);
        if !command.starts_with(&format!("ip netns exec {} ", self.name)) {
            bail!("Netns::spawn expects a command made by Netns::exec, got `{command}`");
        }
        let child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start `{command}`"))?;
        Ok(NsProcess { child, command })
    }

    /// Pids of all processes whose network namespace is this one
    /// (`ip netns pids NAME`).
    pub fn pids(&self) -> Result<Vec<u32>> {
        let out = run(Command::new("ip").args(["netns", "pids", &self.name]))?;
        Ok(out
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect())
    }

    /// Sets interface `ifname` up.
    pub fn link_up(&self, ifname: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "up"]).map(drop)
    }

    /// Adds address `cidr` (e.g. `192.0.2.1/24`) to interface `ifname`.
    pub fn add_addr(&self, ifname: &str, cidr: &str) -> Result<()> {
        self.ip(&["addr", "add", cidr, "dev", ifname]).map(drop)
    }

    /// Creates bridge `name` (up, with forwarding delay 0 so ports forward at
    /// once), optionally with address `cidr`.
    pub fn add_bridge(&self, name: &str, cidr: Option<&str>) -> Result<()> {
        check_ifname(name)?;
        self.ip(&[
            "link",
            "add",
            name,
            "type",
            "bridge",
            "forward_delay",
            "0",
            "stp_state",
            "0",
        ])?;
        if let Some(cidr) = cidr {
            self.add_addr(name, cidr)?;
        }
        self.link_up(name)
    }

    /// Creates a persistent tap device `name` (`ip tuntap add dev NAME mode
    /// tap`) and sets it up. A QEMU started in this namespace can use it with
    /// `-netdev tap,ifname=NAME,script=no,downscript=no`.
    pub fn add_tap(&self, name: &str) -> Result<()> {
        check_ifname(name)?;
        self.ip(&["tuntap", "add", "dev", name, "mode", "tap"])?;
        self.link_up(name)
    }

    /// Makes interface `ifname` a port of bridge `bridge`.
    pub fn attach_to_bridge(&self, ifname: &str, bridge: &str) -> Result<()> {
        self.ip(&["link", "set", ifname, "master", bridge])
            .map(drop)
    }

    /// Creates bridge `bridge` (with optional address `cidr`) and tap device
    /// `tap` attached to it: the usual network for one QEMU guest. Add more
    /// guests with [`Netns::add_tap`] + [`Netns::attach_to_bridge`].
    pub fn bridge_with_tap(&self, bridge: &str, cidr: Option<&str>, tap: &str) -> Result<()> {
        self.add_bridge(bridge, cidr)?;
        self.add_tap(tap)?;
        self.attach_to_bridge(tap, bridge)
    }

    /// Kills (SIGKILL) every process in the namespace, waiting up to 5 s for
    /// them to be gone.
    pub fn kill_all(&self) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "processes {pids:?} in namespace {} survive SIGKILL",
                    self.name
                );
            }
            let mut kill = Command::new("kill");
            kill.arg("-KILL").args(pids.iter().map(u32::to_string));
            // Some may already have exited; the loop checks again.
            let _ = crate::util::run_output(&mut kill);
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if let Err(e) = self.kill_all() {
            eprintln!("rackboot-tests: cleaning namespace {}: {e:#}", self.name);
        }
        if let Err(e) = run(Command::new("ip").args(["netns", "del", &self.name])) {
            eprintln!("rackboot-tests: deleting namespace {}: {e:#}", self.name);
        }
    }
}

/// Creates a veth pair joining two namespaces: `a_if` in `a` and `b_if` in
/// `b`, both up, with optional addresses (CIDR, e.g. `192.0.2.1/24`).
///
/// Interface names must be at most [`MAX_IFNAME_LEN`] (15) bytes.
pub fn veth_pair(
    a: &Netns,
    a_if: &str,
    a_cidr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_cidr: Option<&str>,
) -> Result<()> {
    check_ifname(a_if)?;
    check_ifname(b_if)?;
    a.ip(&[
        "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b.name,
    ])?;
    for (ns, ifname, cidr) in [(a, a_if, a_cidr), (b, b_if, b_cidr)] {
        if let Some(cidr) = cidr {
            ns.add_addr(ifname, cidr)?;
        }
        ns.link_up(ifname)?;
    }
    Ok(())
}

/// Fails unless `name` is a valid Linux interface name (1–15 bytes, no `/`,
/// whitespace or `:`).
pub fn check_ifname(name: &str) -> Result<()> {
    ensure!(
        !name.is_empty()
            && name.len() <= MAX_IFNAME_LEN
            && !name.contains(['/', ':'])
            && !name.chars().any(char::is_whitespace),
        "bad interface name {name:?}: 1..={MAX_IFNAME_LEN} bytes, no '/', ':' or whitespace"
    );
    Ok(())
}

/// A background process started by [`Netns::spawn`]; killed (SIGKILL) and
/// reaped on drop.
#[derive(Debug)]
pub struct NsProcess {
    child: Child,
    command: String,
}

impl NsProcess {
    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line, for messages.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The underlying [`Child`], e.g. to take piped stdout.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("waiting for `{}`", self.command))
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still
    /// running then.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the process (SIGKILL) and reaps it; a no-op if it has exited.
    pub fn kill(&mut self) -> Result<()> {
        if self.try_wait()?.is_none() {
            // It may exit between the check and the kill: ignore that error.
            let _ = self.child.kill();
            self.child
                .wait()
                .with_context(|| format!("reaping `{}`", self.command))?;
        }
        Ok(())
    }
}

impl Drop for NsProcess {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
