//! `rackboot`: administer a rackboot cluster, push images, or run everything
//! in one process (`rackboot dev`).

#[macro_use]
mod output;
mod admin;
mod client;
mod cluster;
mod dev;
mod push;
mod storm;

use clap::{Parser, Subcommand};

/// rackboot: network boot for compute clusters.
///
/// Talks to a coordinator over gRPC. Start one with `rackboot dev` to try it
/// on one machine.
#[derive(Parser, Debug)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Coordinator URL(s), comma separated; the first that answers is used.
    #[arg(
        long,
        global = true,
        env = "RACKBOOT_COORDINATOR",
        default_value = "http://127.0.0.1:50051",
        value_delimiter = ','
    )]
    coordinator: Vec<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Boot images: push, list.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Racks.
    #[command(subcommand)]
    Rack(RackCmd),
    /// Nodes.
    #[command(subcommand)]
    Node(NodeCmd),
    /// Assign an image to every node (--default), a rack, or one node.
    Assign(admin::AssignArgs),
    /// A node's boot logs, tied to the boot session (kernel) they came from.
    Logs(admin::LogsArgs),
    /// Site key-values every node finds in its boot-info (JSON `meta`,
    /// `RACKBOOT_META_<KEY>` lines).
    #[command(subcommand)]
    Meta(MetaCmd),
    /// Coordinator cluster.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Run a one-replica coordinator and one rack agent in this process.
    Dev(dev::DevArgs),
    /// Emulate a boot storm: N PXE ROM clients doing DHCP and TFTP at once.
    Storm(storm::StormArgs),
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Upload a kernel and initrd (chunked, skipping blobs already stored) and commit the image.
    Push(push::PushArgs),
    /// List committed images.
    List,
}

#[derive(Subcommand, Debug)]
enum RackCmd {
    /// List racks.
    List,
}

#[derive(Subcommand, Debug)]
enum NodeCmd {
    /// List nodes.
    List {
        /// Only this rack.
        #[arg(long)]
        rack: Option<String>,
    },
    /// Show one node: addresses, image, recent boot sessions.
    Show {
        /// Node number.
        number: u32,
        /// Also print the latest boot's timeline: DHCP offer and ACK, first
        /// TFTP byte, kernel requested and sent, initrd sent, first log line.
        #[arg(long)]
        timeline: bool,
    },
}

#[derive(Subcommand, Debug)]
enum MetaCmd {
    /// Set a key (1-64 of A-Z a-z 0-9 _, not starting with a digit; the
    /// value up to 4096 bytes, no line breaks).
    Set {
        /// Key.
        key: String,
        /// Value.
        value: String,
    },
    /// Remove a key.
    Unset {
        /// Key.
        key: String,
    },
    /// List every key and value.
    List,
}

#[derive(Subcommand, Debug)]
enum ClusterCmd {
    /// Members, leader, term, commit and applied index, each replica's lag.
    Status,
    /// Add a replica (as a learner, promoted to voter once caught up).
    Add(cluster::AddArgs),
    /// Remove a replica.
    Remove {
        /// Replica id.
        id: u64,
    },
    /// Add a new replica, then remove an old one.
    Replace(cluster::ReplaceArgs),
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Storm(args) => storm::run(args).await,
        cmd => {
            init_quiet_tracing();
            run_admin(cmd, &cli.coordinator).await
        }
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run_admin(cmd: Command, coordinators: &[String]) -> anyhow::Result<()> {
    let conn = client::Conn::connect(coordinators).await?;
    match cmd {
        Command::Image(ImageCmd::Push(args)) => push::run(&conn, args).await,
        Command::Image(ImageCmd::List) => admin::image_list(&conn).await,
        Command::Rack(RackCmd::List) => admin::rack_list(&conn).await,
        Command::Node(NodeCmd::List { rack }) => admin::node_list(&conn, rack).await,
        Command::Node(NodeCmd::Show { number, timeline }) => {
            admin::node_show(&conn, number, timeline).await
        }
        Command::Meta(MetaCmd::Set { key, value }) => {
            admin::meta_set(&conn, key, Some(value)).await
        }
        Command::Meta(MetaCmd::Unset { key }) => admin::meta_set(&conn, key, None).await,
        Command::Meta(MetaCmd::List) => admin::meta_list(&conn).await,
        Command::Assign(args) => admin::assign(&conn, args).await,
        Command::Logs(args) => admin::logs(&conn, args).await,
        Command::Cluster(ClusterCmd::Status) => cluster::status(&conn).await,
        Command::Cluster(ClusterCmd::Add(args)) => cluster::add(&conn, args).await,
        Command::Cluster(ClusterCmd::Remove { id }) => cluster::remove(&conn, id).await,
        Command::Cluster(ClusterCmd::Replace(args)) => cluster::replace(&conn, args).await,
        Command::Dev(_) | Command::Storm(_) => not_admin(),
    }
}

fn not_admin() -> anyhow::Result<()> {
    anyhow::bail!("dev and storm are not admin commands")
}

fn init_quiet_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
