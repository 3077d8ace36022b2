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
        say!(
            "{:<8} {:<20} {:<40} {}",
            m.rack,
            m.seen_at,
            m.macs.join(","),
            inventory.join(" ")
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
