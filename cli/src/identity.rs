//! Node identity commands: `node replace`, `node retire`, `node pending`,
//! `node accept`.

use rackboot_proto::v1 as pb;

use crate::client::Conn;

/// `node replace N --mac M [--mac M2 …]`.
pub async fn replace(conn: &Conn, number: u32, macs: Vec<String>) -> anyhow::Result<()> {
    let n = conn
        .nodes()
        .replace_node(pb::ReplaceNodeRequest {
            number,
            macs,
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("replace node {number}"), s))?
        .into_inner();
    say!(
        "node {} ({}, {}) is now the machine with {}; its image and logs stay",
        n.number,
        n.name,
        n.address,
        n.macs.join(", ")
    );
    Ok(())
}

/// `node retire N`.
pub async fn retire(conn: &Conn, number: u32) -> anyhow::Result<()> {
    let n = conn
        .nodes()
        .retire_node(pb::RetireNodeRequest {
            number,
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("retire node {number}"), s))?
        .into_inner();
    say!(
        "node {} ({}, {}) retired: its MACs are unknown again; number and address are kept for `rackboot node replace {} --mac …`",
        n.number,
        n.name,
        n.address,
        n.number
    );
    Ok(())
}

/// `node pending`.
pub async fn pending(conn: &Conn) -> anyhow::Result<()> {
    let machines = conn
        .nodes()
        .list_pending(pb::ListPendingRequest {})
        .await
        .map_err(|s| conn.err("listing machines waiting for acceptance", s))?
        .into_inner()
        .machines;
    if machines.is_empty() {
        say!("no machine waits for acceptance");
        return Ok(());
    }
    say!(
        "{:<8} {:<20} {:<40} INVENTORY",
        "RACK",
        "SEEN (unix)",
        "MACS"
    );
    for m in machines {
        let inventory: Vec<String> = {
            let mut kv: Vec<_> = m.inventory.iter().collect();
            kv.sort();
            kv.into_iter().map(|(k, v)| format!("{k}={v}")).collect()
        };
        let names = if m.names_node != 0 {
            format!(
                "  (names node {}'s MAC: `node accept` joins the others to it)",
                m.names_node
            )
        } else {
            String::new()
        };
        say!(
            "{:<8} {:<20} {:<40} {}{}",
            m.rack,
            m.seen_at,
            m.macs.join(","),
            inventory.join(" "),
            names
        );
    }
    Ok(())
}

/// `node accept MAC`.
pub async fn accept(conn: &Conn, mac: String) -> anyhow::Result<()> {
    let n = conn
        .nodes()
        .accept_machine(pb::AcceptMachineRequest {
            mac: mac.clone(),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("accept {mac}"), s))?
        .into_inner();
    say!(
        "machine {} accepted as node {} ({}, {})",
        n.macs.join(", "),
        n.number,
        n.name,
        n.address
    );
    Ok(())
}

/// `node reject MAC`.
pub async fn reject(conn: &Conn, mac: String) -> anyhow::Result<()> {
    let m = conn
        .nodes()
        .reject_machine(pb::RejectMachineRequest {
            mac: mac.clone(),
            idempotency_key: String::new(),
        })
        .await
        .map_err(|s| conn.err(&format!("reject {mac}"), s))?
        .into_inner();
    say!(
        "machine {} (rack {}) rejected: no longer waiting",
        m.macs.join(", "),
        m.rack
    );
    Ok(())
}

/// `node add --rack R (--mac M … | --file FILE)`: one machine per `--mac`,
/// or per line of FILE (its MACs separated by commas or blanks; `#`
/// comments).
pub async fn add(
    conn: &Conn,
    rack: String,
    macs: Vec<String>,
    file: Option<std::path::PathBuf>,
) -> anyhow::Result<()> {
    let mut machines: Vec<pb::add_nodes_request::Machine> = macs
        .into_iter()
        .map(|m| pb::add_nodes_request::Machine { macs: vec![m] })
        .collect();
    if let Some(path) = file {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?;
        for line in text.lines() {
            let line = line.split('#').next().unwrap_or_default();
            let macs: Vec<String> = line
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter(|w| !w.is_empty())
                .map(str::to_string)
                .collect();
            if !macs.is_empty() {
                machines.push(pb::add_nodes_request::Machine { macs });
            }
        }
    }
    anyhow::ensure!(!machines.is_empty(), "give --mac MAC or --file FILE");
    let total = machines.len();
    let mut added = 0usize;
    for chunk in machines.chunks(10_000) {
        let nodes = conn
            .nodes()
            .add_nodes(pb::AddNodesRequest {
                rack: rack.clone(),
                machines: chunk.to_vec(),
                idempotency_key: String::new(),
            })
            .await
            .map_err(|s| conn.err("adding nodes", s))?
            .into_inner()
            .nodes;
        for n in &nodes {
            if total <= 20 {
                say!(
                    "node {} ({}, {}): {}",
                    n.number,
                    n.name,
                    n.address,
                    n.macs.join(", ")
                );
            }
        }
        added += nodes.len();
    }
    say!("{added} machine(s) in rack {rack}");
    Ok(())
}
