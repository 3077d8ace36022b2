//! `ClusterService`: Raft status and membership changes.

use std::time::{Duration, Instant};

use rackboot_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::convert::replica_error;
use crate::raft::{MemberChange, ReplicaError, ReplicaStatus};

/// `ClusterService`.
pub struct ClusterApi(pub Ctx);

/// Default wait for a new member to catch up before promotion.
const CATCH_UP: Duration = Duration::from_secs(30);

fn status_response(s: &ReplicaStatus, digest: (u64, String)) -> pb::ClusterStatusResponse {
    let members = s
        .members
        .iter()
        .map(|(&id, m)| pb::ClusterMember {
            id,
            address: m.address.clone(),
            role: if !m.voter {
                "learner"
            } else if id == s.leader_id {
                "leader"
            } else {
                "follower"
            }
            .to_string(),
            matched_index: m.matched,
            lag: if s.role == "leader" {
                s.last_index.saturating_sub(m.matched)
            } else {
                0
            },
            voter: m.voter,
        })
        .collect();
    pb::ClusterStatusResponse {
        id: s.id,
        leader_id: s.leader_id,
        term: s.term,
        commit_index: s.commit,
        applied_index: s.applied,
        revision: s.revision,
        members,
        last_index: s.last_index,
        state_digest: digest.1,
        role: s.role.clone(),
        digest_index: digest.0,
    }
}

impl ClusterApi {
    fn leader_only(&self) -> Result<ReplicaStatus, Status> {
        let s = self.0.replica.status();
        if s.role != "leader" {
            return Err(replica_error(ReplicaError::NotLeader {
                leader: s.leader(),
            }));
        }
        Ok(s)
    }

    /// Wait (briefly) until the published status shows what a membership
    /// change just applied: outcomes are delivered as soon as an entry is
    /// applied, the status a moment later.
    async fn settle(&self, done: impl Fn(&ReplicaStatus) -> bool) {
        let mut changes = self.0.replica.status_changes();
        let deadline = Instant::now() + Duration::from_secs(1);
        while !done(&self.0.replica.status()) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let _ = tokio::time::timeout(left, changes.changed()).await;
        }
    }

    fn respond(&self) -> Response<pb::ClusterStatusResponse> {
        let s = self.0.replica.status();
        let digest = self.0.replica.state_digest();
        Response::new(status_response(&s, digest))
    }

    /// Wait until `id` has replicated the leader's commit index as of now.
    async fn catch_up(&self, id: u64, limit: Duration) -> Result<(), Status> {
        let deadline = Instant::now() + limit;
        let target = self.0.replica.status().commit;
        let mut changes = self.0.replica.status_changes();
        loop {
            let s = self.0.replica.status();
            if s.role != "leader" {
                return Err(replica_error(ReplicaError::NotLeader {
                    leader: s.leader(),
                }));
            }
            if s.members.get(&id).is_some_and(|m| m.matched >= target) {
                return Ok(());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Status::deadline_exceeded(format!(
                    "replica {id} was added as a learner but has not caught up to index {target} \
                     within {limit:?}; is it running (--join)? Run `cluster add` again to promote it"
                )));
            }
            let _ =
                tokio::time::timeout(left.min(Duration::from_millis(200)), changes.changed()).await;
        }
    }
}

#[tonic::async_trait]
impl pb::cluster_service_server::ClusterService for ClusterApi {
    type ExportStateStream = super::admin::BoxStream<pb::StateChunk>;

    async fn export_state(
        &self,
        _req: Request<pb::ExportStateRequest>,
    ) -> Result<Response<Self::ExportStateStream>, Status> {
        self.0.read().await?;
        let bytes = {
            let state = self.0.replica.state();
            let index = self.0.replica.status().applied;
            crate::backup::encode(&state, index).map_err(|e| Status::internal(e.to_string()))?
        };
        tracing::info!(bytes = bytes.len(), "state exported for a backup");
        let chunks: Vec<Result<pb::StateChunk, Status>> = bytes
            .chunks(1 << 20)
            .map(|c| Ok(pb::StateChunk { data: c.to_vec() }))
            .collect();
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn status(
        &self,
        _req: Request<pb::ClusterStatusRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        Ok(self.respond())
    }

    async fn add_member(
        &self,
        req: Request<pb::AddMemberRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let r = req.into_inner();
        if r.id == 0 {
            return Err(Status::invalid_argument("id: 0 is reserved"));
        }
        if r.address.is_empty() || !r.address.contains(':') {
            return Err(Status::invalid_argument(format!(
                "address: '{}' is not HOST:PORT",
                r.address
            )));
        }
        let s = self.leader_only()?;
        let present = s.members.get(&r.id).cloned();
        if let Some(m) = &present
            && m.address != r.address
        {
            return Err(Status::failed_precondition(format!(
                "replica {} is already a member at {}; remove it first to move it",
                r.id, m.address
            )));
        }
        if present.as_ref().is_some_and(|m| m.voter) {
            return Ok(self.respond());
        }
        if present.is_none() {
            self.0
                .replica
                .change_members(MemberChange::AddLearner {
                    id: r.id,
                    address: r.address.clone(),
                })
                .await
                .map_err(replica_error)?;
            tracing::info!(id = r.id, address = %r.address, "learner added");
            self.settle(|s| s.members.contains_key(&r.id)).await;
        }
        if r.learner_only {
            return Ok(self.respond());
        }
        let limit = match r.catch_up_timeout_ms {
            0 => CATCH_UP,
            ms => Duration::from_millis(u64::from(ms)),
        };
        self.catch_up(r.id, limit).await?;
        self.0
            .replica
            .change_members(MemberChange::AddVoter {
                id: r.id,
                address: r.address.clone(),
            })
            .await
            .map_err(replica_error)?;
        tracing::info!(id = r.id, "promoted to voter");
        self.settle(|s| s.members.get(&r.id).is_some_and(|m| m.voter))
            .await;
        Ok(self.respond())
    }

    async fn remove_member(
        &self,
        req: Request<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::ClusterStatusResponse>, Status> {
        let id = req.into_inner().id;
        let s = self.leader_only()?;
        if !s.members.contains_key(&id) {
            return Ok(self.respond());
        }
        if s.members.values().filter(|m| m.voter).count() == 1 && s.members[&id].voter {
            return Err(Status::failed_precondition(format!(
                "replica {id} is the last voter; it cannot be removed"
            )));
        }
        if id == s.id {
            // Hand leadership to the most caught-up voter, then send the
            // caller there.
            let to = s
                .members
                .iter()
                .filter(|(other, m)| **other != id && m.voter)
                .max_by_key(|(_, m)| m.matched)
                .map(|(other, _)| *other)
                .ok_or_else(|| Status::failed_precondition("no other voter to lead"))?;
            self.0
                .replica
                .transfer_leader(to)
                .await
                .map_err(replica_error)?;
            let mut changes = self.0.replica.status_changes();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let now = self.0.replica.status();
                if now.leader_id != id && now.leader_id != 0 {
                    let mut st = Status::unavailable(format!(
                        "leadership handed to replica {}; retry the removal there",
                        now.leader_id
                    ));
                    if let Some((_, addr)) = now.leader()
                        && let Ok(v) = addr.parse()
                    {
                        st.metadata_mut().insert(super::convert::LEADER_HINT, v);
                    }
                    return Err(st);
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(Status::unavailable(
                        "leadership transfer did not complete; retry",
                    ));
                }
                let _ = tokio::time::timeout(left, changes.changed()).await;
            }
        }
        self.0
            .replica
            .change_members(MemberChange::Remove { id })
            .await
            .map_err(replica_error)?;
        tracing::info!(id, "member removed");
        self.settle(|s| !s.members.contains_key(&id)).await;
        Ok(self.respond())
    }
}
