//! `rackboot`: administer a rackboot cluster, push images, or run everything
//! in one process (`rackboot dev`).
//!
//! Invariants: administration goes through the coordinator's gRPC API only
//! (what `rackboot` can do, `grpcurl` can do); every failure exits non-zero
//! with a message that names what to fix. Must not depend on the daemons'
//! internals except to start them whole, in-process, for `rackboot dev`
//! (the coordinator's and agent's `start` functions).

#[macro_use]
mod output;
mod admin;
mod certs;
mod client;
mod cluster;
mod dev;
mod identity;
mod manual;
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
    /// Cluster CA certificate; with --tls-cert and --tls-key, talk to the
    /// coordinators over mutual TLS (an admin certificate from `rackboot
    /// certs issue admin`).
    #[arg(long, global = true, env = "RACKBOOT_TLS_CA", value_name = "FILE")]
    tls_ca: Option<std::path::PathBuf>,
    /// Client certificate.
    #[arg(long, global = true, env = "RACKBOOT_TLS_CERT", value_name = "FILE")]
    tls_cert: Option<std::path::PathBuf>,
    /// Client key.
    #[arg(long, global = true, env = "RACKBOOT_TLS_KEY", value_name = "FILE")]
    tls_key: Option<std::path::PathBuf>,
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
    /// Assign an image to every node (--default), a rack, one node, or to
    /// machines without a number (--discovery: the image running `rackboot
    /// probe`).
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
    /// Certificates for mutual TLS: a cluster CA, and certificates for
    /// coordinators, agents (bound to their rack) and admins.
    #[command(subcommand)]
    Certs(certs::CertsCmd),
    /// Discovery probe (run in the discovery image, as root): report every
    /// MAC of this machine and a short inventory to the rack agent in one
    /// DHCPINFORM, and wait for the node number. The same as the small
    /// static `rackboot-probe` binary meant for initramfs images.
    Probe(rackboot_probe::ProbeArgs),
    /// Print the shell completion script for bash, zsh, fish, elvish or
    /// powershell, e.g. `rackboot completions bash >
    /// /etc/bash_completion.d/rackboot` (the Debian package installs them).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Write the man pages (`rackboot.1`, and `rackboot-SUBCOMMAND.1` for
    /// each subcommand) into a directory (the Debian package installs them).
    Man {
        /// Where to write them (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: std::path::PathBuf,
    },
}

#[derive(Subcommand, Debug)]
enum ImageCmd {
    /// Upload a kernel and initrd (chunked, skipping blobs already stored) and commit the image.
    Push(push::PushArgs),
    /// List committed images and tags.
    List,
    /// Point a tag (a movable name, e.g. compute:latest) at an image. Nodes,
    /// racks or the default assigned the tag boot what it points to; moving
    /// it changes what they boot next (agents pre-fetch at once).
    Tag {
        /// The tag (not an image name).
        tag: String,
        /// The image it points to.
        image: String,
    },
}

#[derive(Subcommand, Debug)]
enum RackCmd {
    /// List racks.
    List,
    /// What a rack's agent holds in its blob cache (as it last reported)
    /// and what the rack's assigned images still need. Exit status 1 when
    /// something needed is missing.
    Cache {
        /// Rack name.
        rack: String,
    },
    /// Change a rack's network settings, moving its nodes' addresses when
    /// the node base changes (an agent re-registering with other values is
    /// refused, so a move is always this explicit command). Every node
    /// keeps its number and slot; its address becomes node base + slot, and
    /// machines move at their next DHCP renewal. Then give the rack's agent
    /// the same values (`--node-base`, its address and subnet) and restart
    /// it: until then its re-registration is refused.
    ///
    /// Example: `rackboot rack move r1 --subnet 10.0.1.0/24 --server-address
    /// 10.0.1.1 --node-base 10.0.1.200 --gateway 10.0.1.254`
    Move {
        /// Rack name.
        rack: String,
        /// Rack subnet (CIDR).
        #[arg(long)]
        subnet: String,
        /// The agent's address on the rack network.
        #[arg(long)]
        server_address: String,
        /// Address of slot 0.
        #[arg(long)]
        node_base: String,
        /// Gateway handed to nodes (none if not given).
        #[arg(long)]
        gateway: Option<String>,
    },
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
    /// Give node N — its number, address, name and assignment — to new
    /// hardware (a replaced mainboard or NIC): its MACs become exactly the
    /// given ones.
    Replace {
        /// Node number.
        number: u32,
        /// A MAC of the new hardware (repeat for every NIC).
        #[arg(long = "mac", required = true)]
        macs: Vec<String>,
    },
    /// Take node N out of service: its MACs become unknown, its number and
    /// address stay reserved (for `node replace`).
    Retire {
        /// Node number.
        number: u32,
    },
    /// Machines waiting for acceptance (racks whose agent runs
    /// `--accept manual`), with what their probe reported.
    Pending,
    /// Register machines known in advance (e.g. a vendor's MAC list): each
    /// gets the next free number in the rack; already known MACs keep
    /// theirs.
    Add {
        /// Rack.
        #[arg(long)]
        rack: String,
        /// A machine's MAC (one machine per --mac).
        #[arg(long = "mac")]
        macs: Vec<String>,
        /// A file with one machine per line: its MACs separated by commas or
        /// blanks (`#` starts a comment).
        #[arg(long)]
        file: Option<std::path::PathBuf>,
    },
    /// Accept a waiting machine (by any of its MACs): it gets the next free
    /// number.
    Accept {
        /// One of its MACs.
        mac: String,
    },
    /// Forget a waiting machine without numbering it (by any of its MACs);
    /// if it reports again it waits again. Waiting machines are also
    /// forgotten a day after they were first seen.
    Reject {
        /// One of its MACs.
        mac: String,
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
    /// Back up the replicated state (nodes, racks, images, assignments,
    /// sessions, logs; not the blobs) into FILE, verified. Restore with
    /// `rackboot-coordinator --restore-state FILE`.
    Backup {
        /// Output file.
        file: std::path::PathBuf,
    },
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match rackboot_proto::tls::TlsFiles::from_parts(
        cli.tls_ca.clone(),
        cli.tls_cert.clone(),
        cli.tls_key.clone(),
    ) {
        Ok(None) => {}
        Ok(Some(files)) => match files.client() {
            Ok(c) => {
                rackboot_proto::tls::install_client(c);
            }
            Err(e) => {
                eprintln!("error: TLS: {e}");
                std::process::exit(1);
            }
        },
        Err(e) => {
            eprintln!("error: --tls-ca/--tls-cert/--tls-key: {e}");
            std::process::exit(1);
        }
    }
    let result = match cli.command {
        Command::Dev(args) => dev::run(args).await,
        Command::Storm(args) => storm::run(args).await,
        Command::Certs(cmd) => certs::run(cmd),
        Command::Completions { shell } => manual::completions::<Cli>(shell),
        Command::Man { dir } => manual::man_pages::<Cli>(&dir).map(|pages| {
            say!("wrote {} man pages to {}", pages.len(), dir.display());
        }),
        Command::Probe(args) => tokio::task::spawn_blocking(move || rackboot_probe::run(&args))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
            .map(|out| println!("node={}", out.node)),
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
        Command::Image(ImageCmd::Tag { tag, image }) => admin::image_tag(&conn, tag, image).await,
        Command::Rack(RackCmd::List) => admin::rack_list(&conn).await,
        Command::Rack(RackCmd::Cache { rack }) => admin::rack_cache(&conn, rack).await,
        Command::Rack(RackCmd::Move {
            rack,
            subnet,
            server_address,
            node_base,
            gateway,
        }) => {
            let rack = rackboot_proto::v1::Rack {
                name: rack,
                subnet,
                server_address,
                node_base,
                gateway: gateway.unwrap_or_default(),
            };
            admin::rack_move(&conn, rack).await
        }
        Command::Node(NodeCmd::List { rack }) => admin::node_list(&conn, rack).await,
        Command::Node(NodeCmd::Show { number, timeline }) => {
            admin::node_show(&conn, number, timeline).await
        }
        Command::Node(NodeCmd::Replace { number, macs }) => {
            identity::replace(&conn, number, macs).await
        }
        Command::Node(NodeCmd::Retire { number }) => identity::retire(&conn, number).await,
        Command::Node(NodeCmd::Pending) => identity::pending(&conn).await,
        Command::Node(NodeCmd::Add { rack, macs, file }) => {
            identity::add(&conn, rack, macs, file).await
        }
        Command::Node(NodeCmd::Accept { mac }) => identity::accept(&conn, mac).await,
        Command::Node(NodeCmd::Reject { mac }) => identity::reject(&conn, mac).await,
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
        Command::Cluster(ClusterCmd::Backup { file }) => cluster::backup(&conn, &file).await,
        Command::Dev(_)
        | Command::Storm(_)
        | Command::Probe(_)
        | Command::Certs(_)
        | Command::Completions { .. }
        | Command::Man { .. } => not_admin(),
    }
}

fn not_admin() -> anyhow::Result<()> {
    anyhow::bail!("dev, storm and probe are not admin commands")
}

fn init_quiet_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
