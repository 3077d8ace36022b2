//! Read and assignment commands.

use rackboot_proto::v1 as pb;
use rackboot_proto::v1::assign_request::Target;

use crate::client::Conn;

/// Arguments of `assign`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["default", "rack", "node"])))]
pub struct AssignArgs {
    /// Assign as the cluster default.
    #[arg(long)]
    pub default: bool,
    /// Assign to every node of this rack.
    #[arg(long)]
    pub rack: Option<String>,
    /// Assign to this node.
    #[arg(long)]
    pub node: Option<u32>,
    /// Image name.
    pub image: String,
}

/// `image list`.
pub async fn image_list(conn: &Conn) -> anyhow::Result<()> {
    let images = conn
        .images()
        .list_images(pb::ListImagesRequest {})
        .await
        .map_err(|s| conn.err("listing images", s))?
        .into_inner()
        .images;
    say!(
        "{:<28} {:>12} {:>12}  {:<16} MANIFEST",
        "NAME", "KERNEL", "INITRD", "CMDLINE"
    );
    for i in images {
        let size = |b: &Option<pb::BlobRef>| b.as_ref().map(|b| b.size).unwrap_or_default();
        say!(
            "{:<28} {:>12} {:>12}  {:<16} {}",
            i.name,
            size(&i.kernel),
            size(&i.initrd),
            i.cmdline,
            i.manifest_hash
        );
    }
    Ok(())
}

/// `rack list`.
pub async fn rack_list(conn: &Conn) -> anyhow::Result<()> {
    let racks = conn
        .racks()
        .list_racks(pb::ListRacksRequest {})
        .await
        .map_err(|s| conn.err("listing racks", s))?
        .into_inner()
        .racks;
    say!(
        "{:<12} {:<18} {:<16} {:<16} GATEWAY",
        "RACK", "SUBNET", "AGENT", "NODE BASE"
    );
    for r in racks {
        say!(
            "{:<12} {:<18} {:<16} {:<16} {}",
            r.name,
            r.subnet,
            r.server_address,
            r.node_base,
            if r.gateway.is_empty() {
                "-"
            } else {
                &r.gateway
            }
        );
    }
    Ok(())
}

/// `node list`.
pub async fn node_list(conn: &Conn, rack: Option<String>) -> anyhow::Result<()> {
    let nodes = conn
        .nodes()
        .list_nodes(pb::ListNodesRequest {
            rack: rack.unwrap_or_default(),
        })
        .await
        .map_err(|s| conn.err("listing nodes", s))?
        .into_inner()
        .nodes;
    say!(
        "{:<6} {:<8} {:<8} {:<16} {:<18} IMAGE",
        "NODE", "NAME", "RACK", "ADDRESS", "MAC"
    );
    for n in nodes {
        say!(
            "{:<6} {:<8} {:<8} {:<16} {:<18} {}",
            n.number,
            n.name,
            n.rack,
            n.address,
            n.macs.first().map(String::as_str).unwrap_or("-"),
            image_label(&n)
        );
    }
    Ok(())
}

fn image_label(n: &pb::Node) -> String {
    if n.assigned_image.is_empty() {
        "-".to_string()
    } else {
        format!("{} ({})", n.assigned_image, n.assignment_source)
    }
}

/// `node show N`.
pub async fn node_show(conn: &Conn, number: u32) -> anyhow::Result<()> {
    let n = conn
        .nodes()
        .get_node(pb::GetNodeRequest { number })
        .await
        .map_err(|s| conn.err(&format!("node {number}"), s))?
        .into_inner();
    say!("node:     {}", n.number);
    say!("name:     {}", n.name);
    say!("rack:     {} (slot {})", n.rack, n.slot);
    say!("address:  {}", n.address);
    say!("macs:     {}", n.macs.join(", "));
    say!("image:    {}", image_label(&n));
    Ok(())
}

/// `assign`.
pub async fn assign(conn: &Conn, args: AssignArgs) -> anyhow::Result<()> {
    let (target, label) = match (args.default, args.rack, args.node) {
        (true, _, _) => (
            Target::ClusterDefault(true),
            "the cluster default".to_string(),
        ),
        (_, Some(r), _) => (Target::Rack(r.clone()), format!("rack {r}")),
        (_, _, Some(n)) => (Target::Node(n), format!("node {n}")),
        _ => anyhow::bail!("give one of --default, --rack R or --node N"),
    };
    let resp = conn
        .assignments()
        .assign(pb::AssignRequest {
            target: Some(target),
            image: args.image.clone(),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err("assign", s))?
        .into_inner();
    say!(
        "{} now boots {} (revision {})",
        label, args.image, resp.revision
    );
    Ok(())
}

/// `cluster status`.
pub async fn cluster_status(conn: &Conn) -> anyhow::Result<()> {
    let s = conn
        .cluster()
        .status(pb::ClusterStatusRequest {})
        .await
        .map_err(|s| conn.err("cluster status", s))?
        .into_inner();
    say!(
        "replica {} (asked), leader {}, term {}, commit {}, applied {}, revision {}",
        s.id, s.leader_id, s.term, s.commit_index, s.applied_index, s.revision
    );
    say!("{:<4} {:<24} {:<10} MATCHED", "ID", "ADDRESS", "ROLE");
    for m in s.members {
        say!(
            "{:<4} {:<24} {:<10} {}",
            m.id, m.address, m.role, m.matched_index
        );
    }
    Ok(())
}
