//! `rackboot-coordinator`: one replica of the coordinator.

use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use rackboot_coordinator::config::{self, Overrides};
use tokio_util::sync::CancellationToken;

/// Run one rackboot coordinator replica.
///
/// Settings come from `--config FILE` (TOML) with any flag given here laid
/// over it. A single replica needs no peers. For a replicated group, give
/// every replica the same peer list (including itself); a replica added to a
/// running group later starts with `--join`.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    // The help lists every key a file may hold, read from the settings.
    #[arg(long, value_name = "FILE", help = config_file_help())]
    config: Option<PathBuf>,
    /// Check the configuration (file and flags), print the problem with its
    /// file, key and reason, and exit: 0 if it is valid, 1 if not.
    #[arg(long)]
    check_config: bool,
    /// Back up this replica's state from its data directory into FILE and
    /// exit. The replica must be stopped. Works without a quorum: the way
    /// to recover a group that lost it (restore the backup into a new one).
    #[arg(long, value_name = "FILE", conflicts_with = "restore_state")]
    export_state: Option<PathBuf>,
    /// Found a new group from a backup (`rackboot cluster backup` or
    /// --export-state) in the empty data directory, with --peer/[peers] as
    /// its voters, and exit; then start the replica(s) normally.
    #[arg(long, value_name = "FILE")]
    restore_state: Option<PathBuf>,
    /// This replica's id (1, 2, ...). Default 1.
    #[arg(long)]
    id: Option<u64>,
    /// gRPC listen address (admin, agents and peers). Default 127.0.0.1:50051.
    #[arg(long)]
    listen: Option<String>,
    /// Data directory (Raft log, snapshots, blobs). Default ./rackboot-coordinator-data.
    #[arg(long)]
    data: Option<PathBuf>,
    /// A voter, as ID=HOST:PORT; repeat for each replica. Default: this one alone.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    peers: Vec<String>,
    /// Raft tick in milliseconds. Default 50.
    #[arg(long)]
    tick_ms: Option<u64>,
    /// Election timeout in ticks. Default 10.
    #[arg(long)]
    election_ticks: Option<usize>,
    /// Heartbeat interval in ticks. Default 2.
    #[arg(long)]
    heartbeat_ticks: Option<usize>,
    /// Applied entries between snapshots. Default 10000.
    #[arg(long)]
    snapshot_every: Option<u64>,
    /// Start with empty storage and no voters, and wait to be added
    /// (`rackboot cluster add ID ADDR`); --peer names the running replicas.
    #[arg(long)]
    join: bool,
    /// Log format.
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
    /// Serve Prometheus metrics (GET /metrics, plain HTTP) on this address,
    /// e.g. 0.0.0.0:9100. Default: off.
    #[arg(long, value_name = "ADDR")]
    metrics_listen: Option<std::net::SocketAddr>,
    /// Seconds an interrupted `image push` keeps its verified data here (a
    /// retried push sends only the rest) and a blob that no committed image
    /// names is kept before it is collected. Default 3600.
    #[arg(long, value_name = "SECS")]
    upload_grace_secs: Option<u64>,
    /// Cluster CA certificate (`rackboot certs init`); with --tls-cert and
    /// --tls-key, gRPC is served over mutual TLS (clients, agents and peer
    /// replicas must present a certificate of this CA).
    #[arg(long, value_name = "FILE")]
    tls_ca: Option<PathBuf>,
    /// This replica's certificate (`rackboot certs issue coordinator`).
    #[arg(long, value_name = "FILE")]
    tls_cert: Option<PathBuf>,
    /// This replica's key.
    #[arg(long, value_name = "FILE")]
    tls_key: Option<PathBuf>,
    /// Serve gRPC WITHOUT TLS: anyone who reaches the port administers the
    /// cluster. A lab only; without TLS files the replica refuses to start
    /// unless this (or `plaintext = true`) is given.
    #[arg(long)]
    plaintext: bool,
}

/// `--config`'s help: the file and every key it may hold.
fn config_file_help() -> String {
    format!(
        "TOML configuration file (keys: {})",
        config::file_keys().join(", ")
    )
}

impl Args {
    fn settings(&self) -> Result<config::Settings, config::ConfigError> {
        let file = match &self.config {
            Some(p) => Some((p.as_path(), config::load_file(p)?)),
            None => None,
        };
        config::resolve(file, &self.overrides())
    }

    fn overrides(&self) -> Overrides {
        Overrides {
            id: self.id,
            listen: self.listen.clone(),
            data_dir: self.data.clone(),
            peers: self.peers.clone(),
            tick_ms: self.tick_ms,
            election_ticks: self.election_ticks,
            heartbeat_ticks: self.heartbeat_ticks,
            snapshot_every: self.snapshot_every,
            join: self.join,
            metrics_listen: self.metrics_listen,
            upload_grace_secs: self.upload_grace_secs,
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            plaintext: self.plaintext,
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.check_config {
        match args
            .settings()
            .and_then(|s| s.transport(args.config.as_deref()).map(|_| ()))
        {
            Ok(()) => {
                println!(
                    "configuration OK{}",
                    args.config
                        .as_ref()
                        .map(|f| format!(" ({})", f.display()))
                        .unwrap_or_default()
                );
                return Ok(());
            }
            Err(e) => {
                eprintln!("configuration invalid:\n  {e}");
                std::process::exit(1);
            }
        }
    }
    if let Some(out) = &args.export_state {
        let settings = args.settings()?;
        let (revision, index) =
            rackboot_coordinator::backup::export_offline(&settings.data_dir, out)
                .with_context(|| format!("backing up {}", settings.data_dir.display()))?;
        println!(
            "state of {} (revision {revision}, Raft index {index}) written to {}",
            settings.data_dir.display(),
            out.display()
        );
        return Ok(());
    }
    if let Some(file) = &args.restore_state {
        let settings = args.settings()?;
        let revision =
            rackboot_coordinator::backup::restore(&settings.data_dir, file, &settings.peers)
                .with_context(|| format!("restoring {}", file.display()))?;
        println!(
            "restored revision {revision} from {} into {} (voters: {:?}); start the replicas, \
             copy the blobs/ directory along",
            file.display(),
            settings.data_dir.display(),
            settings.peers.keys().collect::<Vec<_>>()
        );
        return Ok(());
    }
    init_tracing(&args.log_format);
    let settings = args.settings()?;
    match settings.transport(args.config.as_deref())? {
        config::Transport::Tls(files) => {
            rackboot_coordinator::server::use_tls(files)?;
            tracing::info!(ca = %files.ca.display(), cert = %files.cert.display(), "gRPC over mutual TLS");
        }
        config::Transport::Plaintext => tracing::warn!(
            "PLAINTEXT gRPC (asked for with --plaintext / plaintext = true): anyone who reaches \
             {} can administer this cluster; for a lab only (rackboot certs makes the TLS files)",
            settings.listen
        ),
    }
    let cfg = config::replica_config(&settings);
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .with_context(|| format!("cannot listen on {}", settings.listen))?;
    let shutdown = CancellationToken::new();
    let mut c = rackboot_coordinator::start(cfg, listener, shutdown.clone())
        .await
        .context("coordinator failed to start")?;
    if let Some(addr) = settings.metrics_listen {
        let l = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr} for metrics"))?;
        let m = rackboot_metrics::serve(l, c.metrics.clone(), shutdown.clone());
        tokio::spawn(m);
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot watch SIGTERM")?;
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot watch SIGHUP")?;
    // A replica that stopped (storage failure, or raft-rs refusing state it
    // cannot trust) takes the process down: never serve without it.
    let ended = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => { tracing::info!("interrupted; shutting down"); break None }
            _ = term.recv() => { tracing::info!("terminated; shutting down"); break None }
            _ = hup.recv() => {
                // Every replica setting shapes the Raft group or its storage:
                // report what changed; nothing is applied live.
                match args.settings() {
                    Err(e) => tracing::error!(error = %e, "SIGHUP: configuration refused; the running one stays"),
                    Ok(new) => {
                        let changed = settings.changed(&new);
                        tracing::info!(applied = ?Vec::<&str>::new(), needs_restart = ?changed, "SIGHUP: configuration re-read");
                    }
                }
            }
            r = &mut c.replica_task => break Some(r),
        }
    };
    shutdown.cancel();
    let _ = c.server.await;
    let ended = match ended {
        Some(r) => r,
        None => c.replica_task.await,
    };
    match ended {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => bail!("replica failed: {e}"),
        Err(e) => bail!("replica task died: {e}"),
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
