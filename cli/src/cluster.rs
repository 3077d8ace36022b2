//! `rackboot cluster status | add | remove | replace`: the coordinator's Raft
//! group. Membership changes go to the leader (the client follows the
//! `rackboot-leader` hint a follower answers with).

use std::time::Duration;

use rackboot_proto::v1 as pb;

use crate::admin;
use crate::client::Conn;

/// Arguments of `cluster add`.
#[derive(clap::Args, Debug)]
pub struct AddArgs {
    /// New replica's id.
    pub id: u64,
    /// Its peer address (HOST:PORT), as the other replicas reach it.
    pub address: String,
    /// Keep it a learner (replicates, does not vote).
    #[arg(long)]
    pub learner: bool,
    /// Seconds to wait for it to catch up before promoting it to voter.
    #[arg(long, default_value_t = 30)]
    pub catch_up_secs: u32,
}

/// Arguments of `cluster replace`.
#[derive(clap::Args, Debug)]
pub struct ReplaceArgs {
    /// Replica to retire.
    pub old: u64,
    /// New replica's id.
    pub id: u64,
    /// New replica's peer address.
    pub address: String,
    /// Seconds to wait for the new replica to catch up.
    #[arg(long, default_value_t = 30)]
    pub catch_up_secs: u32,
}

/// `cluster status`: the asked replica's view, then each member's own view
/// (its applied index and state digest) and its lag behind the leader.
pub async fn status(conn: &Conn) -> anyhow::Result<()> {
    admin::cluster_status(conn).await?;
    let s = conn
        .cluster()
        .status(pb::ClusterStatusRequest {})
        .await
        .map_err(|s| conn.err("cluster status", s))?
        .into_inner();
    // The leader knows every member's matched index.
    let leader_view = match s.members.iter().find(|m| m.id == s.leader_id) {
        Some(l) if s.leader_id != s.id => ask(&l.address).await.ok(),
        _ => Some(s.clone()),
    };
    let leader_last = leader_view.as_ref().map(|l| l.last_index);
    say!("");
    say!(
        "{:<4} {:<22} {:<9} {:>6} {:>9} {:>9} {:>9} {:>7}  DIGEST",
        "ID",
        "ADDRESS",
        "ROLE",
        "TERM",
        "COMMIT",
        "APPLIED",
        "MATCHED",
        "LAG"
    );
    for m in &s.members {
        let own = ask(&m.address).await;
        let matched = leader_view
            .as_ref()
            .and_then(|l| l.members.iter().find(|x| x.id == m.id))
            .map(|x| x.matched_index);
        let lag = match (leader_last, matched) {
            (Some(last), Some(matched)) => last.saturating_sub(matched).to_string(),
            _ => "?".to_string(),
        };
        match own {
            Ok(o) => say!(
                "{:<4} {:<22} {:<9} {:>6} {:>9} {:>9} {:>9} {:>7}  {}",
                m.id,
                m.address,
                o.role,
                o.term,
                o.commit_index,
                o.applied_index,
                matched.map_or("?".to_string(), |x| x.to_string()),
                lag,
                o.state_digest.get(..16).unwrap_or("-"),
            ),
            Err(e) => say!(
                "{:<4} {:<22} {:<9} unreachable: {e}",
                m.id,
                m.address,
                m.role
            ),
        }
    }
    Ok(())
}

/// One replica's own status, with a short timeout.
async fn ask(address: &str) -> anyhow::Result<pb::ClusterStatusResponse> {
    let c = Conn::direct(address)?;
    let r = tokio::time::timeout(
        Duration::from_secs(2),
        c.cluster().status(pb::ClusterStatusRequest {}),
    )
    .await
    .map_err(|_| anyhow::anyhow!("no answer within 2 s"))?
    .map_err(|s| anyhow::anyhow!("{}", s.message()))?;
    Ok(r.into_inner())
}

fn print_members(s: &pb::ClusterStatusResponse) {
    let members: Vec<String> = s
        .members
        .iter()
        .map(|m| format!("{} ({}, {})", m.id, m.address, m.role))
        .collect();
    say!("members: {}", members.join(", "));
}

/// `cluster add`.
pub async fn add(conn: &Conn, args: AddArgs) -> anyhow::Result<()> {
    let s = conn
        .cluster()
        .add_member(pb::AddMemberRequest {
            id: args.id,
            address: args.address.clone(),
            learner_only: args.learner,
            catch_up_timeout_ms: args.catch_up_secs.saturating_mul(1000),
        })
        .await
        .map_err(|s| conn.err(&format!("adding replica {}", args.id), s))?
        .into_inner();
    say!(
        "replica {} at {} added as {}",
        args.id,
        args.address,
        if args.learner { "learner" } else { "voter" }
    );
    print_members(&s);
    Ok(())
}

/// `cluster remove`.
pub async fn remove(conn: &Conn, id: u64) -> anyhow::Result<()> {
    let s = conn
        .cluster()
        .remove_member(pb::RemoveMemberRequest { id })
        .await
        .map_err(|s| conn.err(&format!("removing replica {id}"), s))?
        .into_inner();
    say!("replica {id} removed; it can be stopped");
    print_members(&s);
    Ok(())
}

/// `cluster replace OLD ID ADDR`: add the new replica (caught up, voting),
/// then remove the old one.
pub async fn replace(conn: &Conn, args: ReplaceArgs) -> anyhow::Result<()> {
    add(
        conn,
        AddArgs {
            id: args.id,
            address: args.address,
            learner: false,
            catch_up_secs: args.catch_up_secs,
        },
    )
    .await?;
    remove(conn, args.old).await
}

/// `cluster backup FILE`.
pub async fn backup(conn: &Conn, file: &std::path::Path) -> anyhow::Result<()> {
    let mut stream = conn
        .cluster()
        .export_state(pb::ExportStateRequest {})
        .await
        .map_err(|s| conn.err("exporting the state", s))?
        .into_inner();
    let mut bytes = Vec::new();
    while let Some(chunk) = stream
        .message()
        .await
        .map_err(|s| conn.err("exporting the state", s))?
    {
        bytes.extend_from_slice(&chunk.data);
    }
    let state = rackboot_coordinator::backup::decode(&bytes)
        .map_err(|e| anyhow::anyhow!("the coordinator sent a backup that does not verify: {e}"))?;
    rackboot_coordinator::backup::write_atomically(file, &bytes)?;
    say!(
        "backup of revision {} ({} bytes, {} nodes) written to {}",
        state.revision(),
        bytes.len(),
        state.nodes().count(),
        file.display()
    );
    Ok(())
}
