//! rackboot's own binaries as test processes.
//!
//! * [`binary`] finds `rackboot`, `rackboot-coordinator` and `rackboot-agent`
//!   in `target/debug/` (built by `cargo build --workspace --bins`; tests do
//!   not build them, to keep `cargo test` from rebuilding the world);
//! * [`Daemon`] is a long-running process (coordinator, agent) whose stdout
//!   and stderr go to a log file, killed on drop, that can be waited on until
//!   it accepts TCP connections ([`Daemon::wait_for_tcp`]), even inside a
//!   [`Netns`];
//! * [`free_loopback_port`] and [`LoopbackCoordinator`] start a single
//!   coordinator on `127.0.0.1` for tests that need no root;
//! * [`cli`] runs the `rackboot` CLI to completion ([`CliOutput`]).
//!
//! Processes get `NO_COLOR=1` so that their logs are plain text.

use std::fs::File;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::Netns;
use crate::util::display_command;

/// The `rackboot` CLI.
pub const CLI: &str = "rackboot";
/// The coordinator binary.
pub const COORDINATOR: &str = "rackboot-coordinator";
/// The rack agent binary.
pub const AGENT: &str = "rackboot-agent";

/// Path of workspace binary `name` in `<target>/debug/`; fails, telling how
/// to build it, when it is missing.
pub fn binary(name: &str) -> Result<PathBuf> {
    let path = crate::target_dir().join("debug").join(name);
    ensure!(
        path.is_file(),
        "binary {} not found: build the workspace's binaries first with \
         `cargo build --workspace --bins` (the system tests use them but do not build them)",
        path.display()
    );
    Ok(path)
}

/// A TCP port on 127.0.0.1 that was free a moment ago (bound to port 0,
/// read, released). Another process may take it before the caller does:
/// callers retry on "address in use" (see [`LoopbackCoordinator::start`]).
pub fn free_loopback_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("binding 127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

/// A background process whose output goes to a log file; killed (SIGKILL)
/// on drop.
#[derive(Debug)]
pub struct Daemon {
    name: String,
    child: Child,
    command: String,
    log: PathBuf,
    started: Instant,
}

impl Daemon {
    /// Starts `cmd` (stdin closed, stdout and stderr appended to `log`, env
    /// `NO_COLOR=1`). `cmd` may be made by [`Netns::exec`] to run in a
    /// namespace. `name` is for messages.
    pub fn spawn(name: &str, mut cmd: Command, log: &Path) -> Result<Daemon> {
        let command = display_command(&cmd);
        let file = File::options()
            .create(true)
            .append(true)
            .open(log)
            .with_context(|| format!("creating log file {}", log.display()))?;
        let child = cmd
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot start {name}: `{command}`"))?;
        Ok(Daemon {
            name: name.to_string(),
            child,
            command,
            log: log.to_path_buf(),
            started: Instant::now(),
        })
    }

    /// The name given to [`Daemon::spawn`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The command line.
    pub fn command(&self) -> &str {
        &self.command
    }

    /// The log file.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// The log so far (terminal escapes removed), or a note why it cannot be
    /// read.
    pub fn logs(&self) -> String {
        match std::fs::read(&self.log) {
            Ok(bytes) => bytes
                .split(|&b| b == b'\n')
                .map(crate::qemu::clean_line)
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("<cannot read {}: {e}>", self.log.display()),
        }
    }

    /// A banner-framed dump of the log, for failure reports.
    pub fn report(&self) -> String {
        format!(
            "===== {} log ({}; pid {}; `{}`) =====\n{}\n===== end of {} log =====",
            self.name,
            self.log.display(),
            self.pid(),
            self.command,
            self.logs().trim_end(),
            self.name
        )
    }

    /// The exit status if the process has exited, without blocking.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        self.child
            .try_wait()
            .with_context(|| format!("waiting for {}", self.name))
    }

    /// Fails (quoting the log) if the process has exited.
    pub fn ensure_running(&mut self) -> Result<()> {
        if let Some(status) = self.try_wait()? {
            bail!(
                "{} exited with {status} after {:.1} s\n{}",
                self.name,
                self.started.elapsed().as_secs_f64(),
                self.report()
            );
        }
        Ok(())
    }

    /// Waits until `addr` accepts TCP connections, from the host's network
    /// or, with `netns`, from inside that namespace. Fails if the process
    /// exits first or `timeout` passes, quoting the log.
    pub fn wait_for_tcp(
        &mut self,
        addr: SocketAddr,
        netns: Option<&Netns>,
        timeout: Duration,
    ) -> Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            self.ensure_running()?;
            let accepted = match netns {
                None => TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok(),
                Some(ns) => {
                    // bash's /dev/tcp connects from inside the namespace.
                    let script = format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port());
                    ns.exec("timeout")
                        .args(["2", "bash", "-c", &script])
                        .stdin(Stdio::null())
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status()
                        .map(|s| s.success())
                        .unwrap_or(false)
                }
            };
            if accepted {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{} does not accept connections on {addr} after {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits until the log has a line containing `pattern`; returns it.
    pub fn wait_for_log(&mut self, pattern: &str, timeout: Duration) -> Result<String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(line) = self.logs().lines().find(|l| l.contains(pattern)) {
                return Ok(line.to_string());
            }
            self.ensure_running()?;
            if Instant::now() >= deadline {
                bail!(
                    "{}: no log line containing {pattern:?} after {timeout:?}\n{}",
                    self.name,
                    self.report()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process (SIGKILL) and reaps it; a no-op if it has exited.
    pub fn kill(&mut self) -> Result<()> {
        if self.try_wait()?.is_none() {
            let _ = self.child.kill();
            self.child
                .wait()
                .with_context(|| format!("reaping {}", self.name))?;
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}

/// A single-replica coordinator on a free 127.0.0.1 port with its data
/// directory and log in a temporary directory; killed and removed on drop.
#[derive(Debug)]
pub struct LoopbackCoordinator {
    /// The running coordinator.
    pub daemon: Daemon,
    /// Where it listens.
    pub addr: SocketAddr,
    data: PathBuf,
    // Dropped after `daemon` (fields drop in declaration order).
    dir: tempfile::TempDir,
}

impl LoopbackCoordinator {
    /// Starts `rackboot-coordinator --plaintext --listen 127.0.0.1:<free
    /// port> --data <tmp>/data` and waits (up to 30 s) until the port accepts
    /// connections. Retries with another port if the chosen one was taken
    /// in between.
    pub fn start() -> Result<LoopbackCoordinator> {
        Self::start_with(&[])
    }

    /// [`LoopbackCoordinator::start`] with more flags.
    pub fn start_with(extra: &[&str]) -> Result<LoopbackCoordinator> {
        let bin = binary(COORDINATOR)?;
        let dir = tempfile::Builder::new()
            .prefix("rackboot-coord-")
            .tempdir()
            .context("creating a temporary directory")?;
        let data = dir.path().join("data");
        let mut last_err = None;
        for attempt in 0..3 {
            let port = free_loopback_port()?;
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = dir.path().join(format!("coordinator-{attempt}.log"));
            let mut cmd = Command::new(&bin);
            cmd.args(["--plaintext", "--listen"])
                .arg(addr.to_string())
                .arg("--data")
                .arg(&data)
                .args(extra);
            let mut daemon = Daemon::spawn("coordinator", cmd, &log)?;
            match daemon.wait_for_tcp(addr, None, Duration::from_secs(30)) {
                Ok(()) => {
                    return Ok(LoopbackCoordinator {
                        daemon,
                        addr,
                        data,
                        dir,
                    });
                }
                Err(e) => {
                    // Only a lost race for the port is worth another try.
                    let in_use = daemon.logs().to_lowercase().contains("in use");
                    last_err = Some(e);
                    if !in_use {
                        break;
                    }
                }
            }
        }
        Err(last_err.unwrap_or_else(|| anyhow::anyhow!("coordinator did not start")))
    }

    /// `http://127.0.0.1:PORT`, the URL the CLI takes.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The coordinator's data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The temporary directory holding data and logs; other test files can
    /// go there too.
    pub fn temp_dir(&self) -> &Path {
        self.dir.path()
    }
}

/// Result of a finished CLI run.
#[derive(Debug, Clone)]
pub struct CliOutput {
    /// The command line, for messages.
    pub command: String,
    /// Exit status.
    pub status: ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl CliOutput {
    /// stdout and stderr together, for searching messages wherever the CLI
    /// printed them.
    pub fn combined(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }

    /// Fails, quoting everything, unless the command succeeded; returns
    /// `self` for chaining.
    pub fn success(self) -> Result<CliOutput> {
        ensure!(self.status.success(), "{self}");
        Ok(self)
    }

    /// Fails, quoting everything, if the command succeeded.
    pub fn failure(self) -> Result<CliOutput> {
        ensure!(!self.status.success(), "expected a failure, but: {self}");
        Ok(self)
    }

    /// The last non-empty line of stdout, trimmed.
    pub fn last_line(&self) -> &str {
        self.stdout
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("")
    }
}

impl std::fmt::Display for CliOutput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.status,
            self.stdout.trim_end(),
            self.stderr.trim_end()
        )
    }
}

/// Runs the `rackboot` CLI with `args` to completion (in `netns` if given),
/// with `RACKBOOT_COORDINATOR` removed from its environment, and a timeout:
/// the process is killed after `timeout` and that is an error.
pub fn cli(netns: Option<&Netns>, args: &[&str], timeout: Duration) -> Result<CliOutput> {
    let bin = binary(CLI)?;
    let mut cmd = match netns {
        Some(ns) => ns.exec(&bin),
        None => Command::new(&bin),
    };
    cmd.args(args).env_remove("RACKBOOT_COORDINATOR");
    run_with_timeout(cmd, timeout)
}

/// The text of `/metrics` on `127.0.0.1:port` (curl, 5 s). A daemon binds
/// its metrics listener a moment after its main port, so a refused
/// connection is tried again for up to 10 s.
pub fn loopback_metrics(port: u16) -> Result<String> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = Command::new("curl");
        c.args(["-sS", "--fail", "--max-time", "5"])
            .arg(format!("http://127.0.0.1:{port}/metrics"));
        let out = run_with_timeout(c, Duration::from_secs(10))?;
        // curl exit 7: could not connect.
        if out.status.code() == Some(7) && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        }
        return Ok(out.success()?.stdout);
    }
}

/// Runs `cmd` to completion (stdin closed, output captured), killing it and
/// failing after `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Result<CliOutput> {
    let command = display_command(&cmd);
    let mut child = cmd
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot run `{command}`"))?;
    // Read both pipes on threads so a chatty command cannot block on a full
    // pipe while we wait for it.
    let mut out_pipe = child.stdout.take().context("stdout not piped")?;
    let mut err_pipe = child.stderr.take().context("stderr not piped")?;
    let out_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut out_pipe, &mut s);
        s
    });
    let err_thread = std::thread::spawn(move || {
        let mut s = Vec::new();
        let _ = std::io::Read::read_to_end(&mut err_pipe, &mut s);
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = out_thread.join().unwrap_or_default();
            let stderr = err_thread.join().unwrap_or_default();
            bail!(
                "`{command}` still running after {timeout:?}; killed\n--- stdout ---\n{}\n--- stderr ---\n{}",
                String::from_utf8_lossy(&stdout).trim_end(),
                String::from_utf8_lossy(&stderr).trim_end()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let stdout = out_thread.join().unwrap_or_default();
    let stderr = err_thread.join().unwrap_or_default();
    Ok(CliOutput {
        command,
        status,
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    })
}
