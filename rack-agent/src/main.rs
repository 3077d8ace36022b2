//! `rackboot-agent`: serves one rack.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use rackboot_agent::args::ServeArgs;
use tokio_util::sync::CancellationToken;

/// Run a rackboot rack agent: DHCP and TFTP for one rack, fed by the coordinator.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Args {
    /// Rack name (lowercase letters, digits, . _ -).
    #[arg(long, default_value = "r1")]
    rack: String,
    /// Coordinator URL(s), comma separated; tried in order.
    #[arg(
        long,
        env = "RACKBOOT_COORDINATOR",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    coordinator: Vec<String>,
    /// Data directory (persisted rack view, blob cache).
    #[arg(long, default_value = "./rackboot-agent-data")]
    data: PathBuf,
    #[command(flatten)]
    serve: ServeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = args
        .serve
        .into_config(args.rack, args.coordinator, args.data)
        .context("invalid agent settings")?;
    let shutdown = CancellationToken::new();
    let agent = rackboot_agent::start(cfg, shutdown.clone())
        .await
        .context("agent failed to start")?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = term.recv() => {}
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
