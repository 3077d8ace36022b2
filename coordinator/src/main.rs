//! `rackboot-coordinator`: one replica of the coordinator.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use rackboot_coordinator::raft::ReplicaConfig;
use tokio_util::sync::CancellationToken;

/// Run one rackboot coordinator replica.
///
/// A single replica needs no peers. For a replicated group, start every
/// replica with the same `--peer` list (including itself).
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// This replica's id (1, 2, ...).
    #[arg(long, default_value_t = 1)]
    id: u64,
    /// gRPC listen address (admin, agents and peers).
    #[arg(long, default_value = "127.0.0.1:50051")]
    listen: SocketAddr,
    /// Data directory (Raft log, snapshots, blobs).
    #[arg(long, default_value = "./rackboot-coordinator-data")]
    data: PathBuf,
    /// A voter, as ID=HOST:PORT; repeat for each replica. Default: this one alone.
    #[arg(long = "peer", value_name = "ID=ADDR")]
    peers: Vec<String>,
    /// Log format.
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
}

fn parse_peers(args: &Args) -> anyhow::Result<BTreeMap<u64, String>> {
    let mut peers = BTreeMap::new();
    for p in &args.peers {
        let (id, addr) = p
            .split_once('=')
            .with_context(|| format!("--peer {p}: expected ID=HOST:PORT"))?;
        let id: u64 = id
            .parse()
            .with_context(|| format!("--peer {p}: id is not a number"))?;
        if id == 0 {
            bail!("--peer {p}: id 0 is reserved");
        }
        peers.insert(id, addr.to_string());
    }
    if peers.is_empty() {
        peers.insert(args.id, args.listen.to_string());
    }
    if !peers.contains_key(&args.id) {
        bail!("--id {} is not among the --peer list", args.id);
    }
    Ok(peers)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    init_tracing(&args.log_format);
    let peers = parse_peers(&args)?;
    let mut cfg = ReplicaConfig::single(args.data.clone(), args.listen.to_string());
    cfg.id = args.id;
    cfg.peers = peers;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let shutdown = CancellationToken::new();
    let c = rackboot_coordinator::start(cfg, listener, shutdown.clone())
        .await
        .context("coordinator failed to start")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = shutdown.cancelled() => tracing::error!("replica stopped"),
    }
    shutdown.cancel();
    let _ = c.server.await;
    match c.replica_task.await {
        Ok(Err(e)) => bail!("replica failed: {e}"),
        _ => Ok(()),
    }
}

fn init_tracing(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}
