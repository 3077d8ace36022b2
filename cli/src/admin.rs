//! Read and assignment commands.

use rackboot_proto::v1 as pb;
use rackboot_proto::v1::assign_request::Target;

use crate::client::Conn;

/// Arguments of `assign`.
#[derive(clap::Args, Debug)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["default", "rack", "node", "discovery"])))]
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
    /// Boot machines without a node number (provisional leases) into this
    /// image: the discovery image that runs `rackboot probe`.
    #[arg(long)]
    pub discovery: bool,
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
        .into_inner();
    let tags = images.tags;
    let images = images.images;
    say!(
        "{:<28} {:>12} {:>12}  {:<16} MANIFEST",
        "NAME",
        "KERNEL",
        "INITRD",
        "CMDLINE"
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
    if !tags.is_empty() {
        say!("");
        say!("{:<28} IMAGE", "TAG");
        for t in tags {
            say!("{:<28} {}", t.tag, t.image);
        }
    }
    Ok(())
}

/// `image tag TAG IMAGE`.
pub async fn image_tag(conn: &Conn, tag: String, image: String) -> anyhow::Result<()> {
    let r = conn
        .images()
        .tag_image(pb::TagImageRequest {
            tag: tag.clone(),
            image: image.clone(),
        })
        .await
        .map_err(|s| conn.err(&format!("tagging {image} as {tag}"), s))?
        .into_inner();
    if r.previous.is_empty() {
        say!("tag {tag} -> {image} (revision {})", r.revision);
    } else {
        say!(
            "tag {tag} moved {} -> {image} (revision {})",
            r.previous,
            r.revision
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
        "RACK",
        "SUBNET",
        "AGENT",
        "NODE BASE"
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

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / f64::from(1u32 << 20))
}

/// `rack cache RACK`.
/// `rack move`.
pub async fn rack_move(conn: &Conn, rack: pb::Rack) -> anyhow::Result<()> {
    let name = rack.name.clone();
    let r = conn
        .racks()
        .move_rack(pb::MoveRackRequest {
            rack: Some(rack),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("moving rack {name}"), s))?
        .into_inner();
    let rack = r.rack.unwrap_or_default();
    say!(
        "rack {} now {} (agent {}, node base {}{}): {} node(s) changed address; give its agent the same values and restart it",
        rack.name,
        rack.subnet,
        rack.server_address,
        rack.node_base,
        if rack.gateway.is_empty() {
            String::new()
        } else {
            format!(", gateway {}", rack.gateway)
        },
        r.nodes_moved
    );
    Ok(())
}

pub async fn rack_cache(conn: &Conn, rack: String) -> anyhow::Result<()> {
    let c = conn
        .racks()
        .get_rack_cache(pb::GetRackCacheRequest { rack: rack.clone() })
        .await
        .map_err(|s| conn.err(&format!("reading rack {rack}'s cache"), s))?
        .into_inner();
    if c.agent_id.is_empty() {
        say!("rack {}: its agent has not reported its cache yet", c.rack);
    } else {
        let age = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
            .saturating_sub(c.reported_unix_millis);
        say!(
            "rack {}: agent {} holds {} of {} bound ({} evicted, {} corrupt groups refetched), reported {}s ago",
            c.rack,
            c.agent_id,
            mib(c.bytes),
            mib(c.max_bytes),
            c.evicted,
            c.repaired_groups,
            age / 1000
        );
        for p in &c.problems {
            say!("PROBLEM: {p}");
        }
    }
    say!("{:<10} {:<12} {:<66} USED BY", "STATUS", "SIZE", "BLAKE3");
    let mut missing = 0;
    for b in &c.blobs {
        let status = match (b.held, b.needed) {
            (true, true) => "held",
            (true, false) => "unneeded",
            (false, true) => {
                missing += 1;
                "MISSING"
            }
            (false, false) => continue,
        };
        let blob = b.blob.clone().unwrap_or_default();
        say!(
            "{:<10} {:<12} {:<66} {}",
            status,
            mib(blob.size),
            blob.blake3,
            if b.used_by.is_empty() {
                "-".to_string()
            } else {
                b.used_by.join(", ")
            }
        );
    }
    if missing > 0 {
        anyhow::bail!(
            "rack {}: {missing} needed blob(s) not in its agent's cache yet",
            c.rack
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
        "NODE",
        "NAME",
        "RACK",
        "ADDRESS",
        "MAC"
    );
    for n in nodes {
        say!(
            "{:<6} {:<8} {:<8} {:<16} {:<18} {}",
            n.number,
            n.name,
            n.rack,
            n.address,
            n.macs
                .first()
                .map(String::as_str)
                .unwrap_or(if n.retired { "(retired)" } else { "-" }),
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
pub async fn node_show(conn: &Conn, number: u32, timeline: bool) -> anyhow::Result<()> {
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
    say!(
        "macs:     {}",
        if n.retired {
            "none (retired: `rackboot node replace` gives it to new hardware)".to_string()
        } else {
            n.macs.join(", ")
        }
    );
    say!("image:    {}", image_label(&n));
    if !n.inventory.is_empty() {
        let mut kv: Vec<_> = n.inventory.iter().collect();
        kv.sort();
        let kv: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
        say!("probe:    {}", kv.join(" "));
    }
    let sessions = conn
        .nodes()
        .list_boot_sessions(pb::ListBootSessionsRequest { number })
        .await
        .map_err(|s| conn.err(&format!("boot sessions of node {number}"), s))?
        .into_inner()
        .sessions;
    say!(
        "sessions: {}",
        if sessions.is_empty() {
            "none yet"
        } else {
            "(oldest first)"
        }
    );
    if timeline {
        match sessions.last() {
            Some(s) => print_timeline(s),
            None => say!("timeline: no boot recorded yet"),
        }
    }
    for s in sessions {
        let k: String = s.kernel_blake3.chars().take(16).collect();
        let version = if s.kernel_version.is_empty() {
            "-"
        } else {
            &s.kernel_version
        };
        say!(
            "  {}  {}  kernel {k}… {version}  {}  {}",
            s.id,
            s.image,
            s.transport,
            format_millis(s.unix_millis)
        );
    }
    Ok(())
}

fn print_timeline(s: &pb::BootSession) {
    say!("timeline of session {} ({}):", s.id, s.image);
    let start = rackboot_state::PHASES
        .iter()
        .filter_map(|p| s.phases.get(*p))
        .min()
        .copied();
    for phase in rackboot_state::PHASES {
        match (s.phases.get(phase), start) {
            (Some(&at), Some(t0)) => say!(
                "  {phase:<17} {}  +{:.3} s",
                format_millis(at),
                at.saturating_sub(t0) as f64 / 1000.0
            ),
            _ => say!("  {phase:<17} -"),
        }
    }
}

/// `meta set` / `meta unset`.
pub async fn meta_set(conn: &Conn, key: String, value: Option<String>) -> anyhow::Result<()> {
    let unset = value.is_none();
    let r = conn
        .meta()
        .set_meta(pb::SetMetaRequest {
            key: key.clone(),
            value: value.unwrap_or_default(),
            unset,
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("meta {key}"), s))?
        .into_inner();
    say!(
        "meta {key} {} (revision {})",
        if unset { "removed" } else { "set" },
        r.revision
    );
    Ok(())
}

/// `meta list`.
pub async fn meta_list(conn: &Conn) -> anyhow::Result<()> {
    let meta = conn
        .meta()
        .list_meta(pb::ListMetaRequest {})
        .await
        .map_err(|s| conn.err("listing meta", s))?
        .into_inner()
        .meta;
    let mut keys: Vec<_> = meta.into_iter().collect();
    keys.sort();
    if keys.is_empty() {
        say!("no site key-values set");
    }
    for (k, v) in keys {
        say!("{k}={v}");
    }
    Ok(())
}

/// Unix milliseconds as UTC `YYYY-MM-DDTHH:MM:SS.mmmZ`.
pub fn format_millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = i64::try_from(days).unwrap_or(0) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

/// Arguments of `logs`.
#[derive(clap::Args, Debug)]
pub struct LogsArgs {
    /// Node number.
    pub number: u32,
    /// Which boot: `last`, a session id (see `node show`), or all kept sessions when omitted.
    #[arg(long)]
    pub boot: Option<String>,
    /// Keep printing new lines as they arrive (polls every second; Ctrl-C to stop).
    #[arg(long)]
    pub follow: bool,
}

/// `logs N`: one line per log line, `SESSION UNIX_MILLIS TEXT`.
pub async fn logs(conn: &Conn, args: LogsArgs) -> anyhow::Result<()> {
    let mut after = 0u64;
    // `--boot last` is resolved once, so following stays on that boot.
    let mut boot = args.boot.clone().unwrap_or_default();
    loop {
        let r = conn
            .nodes()
            .get_logs(pb::GetLogsRequest {
                number: args.number,
                boot: boot.clone(),
                after_unix_millis: after,
            })
            .await
            .map_err(|s| conn.err(&format!("logs of node {}", args.number), s))?
            .into_inner();
        if !r.session.is_empty() {
            boot = r.session.clone();
        }
        for l in r.lines {
            after = after.max(l.unix_millis);
            let session = if l.session.is_empty() {
                "-"
            } else {
                &l.session
            };
            say!("{session} {} {}", l.unix_millis, l.text);
        }
        if !args.follow {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    }
}

/// `assign`.
pub async fn assign(conn: &Conn, args: AssignArgs) -> anyhow::Result<()> {
    let (target, label) = match (args.default, args.rack, args.node, args.discovery) {
        (true, _, _, _) => (
            Target::ClusterDefault(true),
            "the cluster default".to_string(),
        ),
        (_, Some(r), _, _) => (Target::Rack(r.clone()), format!("rack {r}")),
        (_, _, Some(n), _) => (Target::Node(n), format!("node {n}")),
        (_, _, _, true) => (
            Target::Discovery(true),
            "every machine without a number".to_string(),
        ),
        _ => anyhow::bail!("give one of --default, --rack R, --node N or --discovery"),
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
        label,
        args.image,
        resp.revision
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
        s.id,
        s.leader_id,
        s.term,
        s.commit_index,
        s.applied_index,
        s.revision
    );
    say!("{:<4} {:<24} {:<10} MATCHED", "ID", "ADDRESS", "ROLE");
    for m in s.members {
        say!(
            "{:<4} {:<24} {:<10} {}",
            m.id,
            m.address,
            m.role,
            m.matched_index
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn millis_format_as_utc() {
        assert_eq!(super::format_millis(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            super::format_millis(1_795_294_262_123),
            "2026-11-21T20:51:02.123Z"
        );
    }
}
