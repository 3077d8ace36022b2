//! `rackboot-agent`: serves one rack.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rackboot_agent::config::args::ServeArgs;
use rackboot_agent::config::file::{self as config, Layered, MainFlags};
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Run a rackboot rack agent: DHCP, TFTP, HTTP and syslog for one rack, fed
/// by the coordinator.
///
/// Settings come from `--config FILE` (TOML, see docs/configuration.md) with
/// any flag given here laid over it. SIGHUP re-reads the file and applies
/// what can change live (static root, lease time, boot file names, log
/// level), logging what needs a restart; a file that does not validate is
/// refused and the running settings stay. SIGUSR1 logs the agent's state;
/// SIGTERM drains within 10 s.
#[derive(Parser, Debug)]
#[command(version, about, long_about)]
struct Args {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Check the configuration (file and flags), print every problem with
    /// its file, key and reason, and exit: 0 if it is valid, 1 if not.
    #[arg(long)]
    check_config: bool,
    /// Rack name (lowercase letters, digits, . _ -). Default r1.
    #[arg(long)]
    rack: Option<String>,
    /// Coordinator URL(s), comma separated; tried in order. Default
    /// http://127.0.0.1:50051.
    #[arg(long, env = "RACKBOOT_COORDINATOR", value_delimiter = ',')]
    coordinator: Vec<String>,
    /// Data directory (persisted rack view, blob cache, log spool). Default
    /// ./rackboot-agent-data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Log filter (`info`, `debug`, `rackboot_agent=debug,info`; RUST_LOG
    /// wins when set). Default info.
    #[arg(long)]
    log_level: Option<String>,
    /// Log format: plain or json. Default plain.
    #[arg(long)]
    log_format: Option<String>,
    /// Cluster CA certificate; with --tls-cert and --tls-key the agent talks
    /// to the coordinators over mutual TLS.
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// The agent's certificate (`rackboot certs issue agent --rack R`).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// Its key.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Talk to the coordinators WITHOUT TLS (http:// URLs): a lab only.
    /// Without TLS files the agent refuses to start unless this (or
    /// `plaintext = true`) is given.
    #[arg(long)]
    plaintext: bool,
    #[command(flatten)]
    serve: ServeArgs,
}

impl Args {
    fn flags(&self) -> MainFlags {
        MainFlags {
            rack: self.rack.clone(),
            coordinators: self.coordinator.clone(),
            data: self.data.clone(),
            log_level: self.log_level.clone(),
            log_format: self.log_format.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            plaintext: self.plaintext,
        }
    }

    fn layered(&self) -> Result<Layered, Vec<rackboot_config::ConfigError>> {
        config::load(self.config.as_deref(), self.flags(), self.serve.clone())
    }
}

fn report(errors: &[rackboot_config::ConfigError]) -> String {
    errors
        .iter()
        .map(|e| format!("  {e}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    raise_open_file_limit();
    let checked = args.layered().and_then(|l| l.resolve().map(|cfg| (l, cfg)));
    if args.check_config {
        match checked {
            Ok((l, _)) => {
                println!(
                    "configuration OK{}",
                    l.file
                        .map(|f| format!(" ({})", f.display()))
                        .unwrap_or_default()
                );
                return Ok(());
            }
            Err(errors) => {
                eprintln!("configuration invalid:\n{}", report(&errors));
                std::process::exit(1);
            }
        }
    }
    let (layered, cfg) = match checked {
        Ok(x) => x,
        Err(errors) => anyhow::bail!("invalid agent settings:\n{}", report(&errors)),
    };
    // RUST_LOG wins over the configured level.
    let env_filter = std::env::var("RUST_LOG").ok();
    let filter = EnvFilter::try_new(env_filter.as_deref().unwrap_or(&layered.log_level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if layered.log_format == "json" {
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().json())
            .init();
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(tracing_subscriber::fmt::layer().with_ansi(ansi))
            .init();
    }

    match &layered.tls {
        Some(files) => {
            let client = files.client().context("reading the TLS files")?;
            rackboot_proto::tls::install_client(client);
            tracing::info!(ca = %files.ca.display(), cert = %files.cert.display(), "coordinator connections over mutual TLS");
        }
        None => tracing::warn!(
            "PLAINTEXT to the coordinators (asked for with --plaintext / plaintext = true): \
             for a lab only; set tls_ca, tls_cert and tls_key (rackboot certs)"
        ),
    }
    let shutdown = CancellationToken::new();
    let mut agent = rackboot_agent::start(cfg, shutdown.clone())
        .await
        .context("agent failed to start")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing the SIGHUP handler")?;
    let mut log_level = layered.log_level.clone();
    loop {
        tokio::select! {
            r = tokio::signal::ctrl_c() => { r.context("waiting for ctrl-c")?; break; }
            _ = term.recv() => break,
            _ = hup.recv() => {
                match args.layered().and_then(|l| l.resolve().map(|cfg| (l, cfg))) {
                    Err(errors) => tracing::error!(
                        "SIGHUP: configuration refused, the running one stays:\n{}",
                        report(&errors)
                    ),
                    Ok((l, new)) => {
                        let (mut applied, restart) = agent.control.apply(&new).await;
                        if l.log_level != log_level && env_filter.is_none() {
                            let ok = EnvFilter::try_new(&l.log_level)
                                .ok()
                                .is_some_and(|f| reload.reload(f).is_ok());
                            if ok {
                                applied.push("log_level");
                                log_level = l.log_level.clone();
                            } else {
                                tracing::warn!(level = %l.log_level, "SIGHUP: log level not applied");
                            }
                        }
                        tracing::info!(
                            applied = ?applied,
                            needs_restart = ?restart,
                            "SIGHUP: configuration re-read"
                        );
                    }
                }
            }
        }
    }
    tracing::info!("shutting down (unshipped node logs go to the spool)");
    shutdown.cancel();
    // Bounded: a task stuck on I/O does not hold the exit.
    let drain = async {
        for t in agent.tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(std::time::Duration::from_secs(10), drain)
        .await
        .is_err()
    {
        tracing::warn!("tasks still running after 10 s; exiting anyway");
    }
    Ok(())
}

/// Files are served from disk: each TFTP transfer and HTTP response of a
/// static-root file may hold a descriptor, beside every connection. Raise
/// the soft limit on open files to the hard one (systemd's unit sets it).
fn raise_open_file_limit() {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(e) = setrlimit(Resource::Nofile, raised) {
            eprintln!("rackboot-agent: cannot raise the open-file limit: {e}");
        }
    }
}
