//! `rackboot dev`: a one-replica coordinator and one rack agent in one
//! process, on embedded storage. For trying rackboot on one machine.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use rackboot_agent::config::args::ServeArgs;
use rackboot_coordinator::raft::ReplicaConfig;
use tokio_util::sync::CancellationToken;

/// Arguments of `dev`.
#[derive(clap::Args, Debug)]
pub struct DevArgs {
    /// Data directory (coordinator state and blobs, agent cache).
    #[arg(long, default_value = "./rackboot-data")]
    pub data: PathBuf,
    /// gRPC listen address of the embedded coordinator.
    #[arg(long, default_value = "127.0.0.1:50051")]
    pub grpc_listen: SocketAddr,
    /// Rack name of the embedded agent.
    #[arg(long, default_value = "r1")]
    pub rack: String,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Run until interrupted.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,raft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .try_init();
    let shutdown = CancellationToken::new();
    let listener = tokio::net::TcpListener::bind(args.grpc_listen)
        .await
        .with_context(|| format!("cannot listen for gRPC on {}", args.grpc_listen))?;
    let coord_cfg =
        ReplicaConfig::single(args.data.join("coordinator"), args.grpc_listen.to_string());
    let coordinator = rackboot_coordinator::start(coord_cfg, listener, shutdown.clone())
        .await
        .context("embedded coordinator failed to start")?;
    let url = format!("http://{}", coordinator.local_addr);
    let loopback = args.serve.iface.is_none();
    let agent_cfg = args
        .serve
        .into_config(args.rack, vec![url.clone()], args.data.join("agent"))
        .context("invalid agent settings")?;
    let agent = rackboot_agent::start(agent_cfg, shutdown.clone())
        .await
        .context("embedded agent failed to start")?;
    println!(
        "rackboot dev: coordinator gRPC on {url} (reflection on: try `grpcurl -plaintext {} list`)",
        coordinator.local_addr
    );
    let warning = format!(
        "rackboot dev: PLAINTEXT gRPC, no TLS: anyone who reaches {} administers this \
         coordinator; dev mode is for one machine or a lab (a site runs \
         rackboot-coordinator and rackboot-agent with `rackboot certs`)",
        coordinator.local_addr
    );
    println!("{warning}");
    tracing::warn!("{warning}");
    let http = agent
        .http_addr
        .map(|h| format!(", HTTP on {h}"))
        .unwrap_or_default();
    println!(
        "rackboot dev: DHCP on {}, TFTP on {}{http}",
        agent.dhcp_addr, agent.tftp_addr
    );
    if loopback {
        println!(
            "rackboot dev: serving LOOPBACK on unprivileged ports (no --iface given); real PXE clients need --iface IFACE (standard ports 67/69/80, root or CAP_NET_BIND_SERVICE)"
        );
    }
    println!(
        "rackboot dev: data in {}; Ctrl-C to stop",
        args.data.display()
    );
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for ctrl-c")?,
        _ = shutdown.cancelled() => tracing::error!("a component stopped"),
    }
    shutdown.cancel();
    let _ = coordinator.server.await;
    for t in agent.tasks {
        let _ = t.await;
    }
    Ok(())
}
