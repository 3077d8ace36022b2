//! Group membership as the [`Core`] sees and changes it: [`MemberChange`]
//! requests, proposing them ([`Core::change_members`]), applying committed
//! conf changes (the peer address book follows them), and the replica's
//! [`ReplicaStatus`] with its members.
//!
//! Invariants: at most one conf change is in flight (raft-rs would silently
//! turn a second one into an empty entry, so it is refused with
//! [`ReplicaError::ConfChangePending`]); a conf change refused by raft-rs is
//! refused identically on every replica; a replica never forgets its own
//! address when it is removed.
//!
//! Must not depend on: the owner thread, peer transport or tokio.

use std::collections::BTreeMap;

use raft::StateRole;
use raft::prelude::{ConfChangeSingle, ConfChangeType, ConfChangeV2};

use super::entries::ConfContext;
use super::pending::Event;
use super::replica_core::{Core, ReplicaFatal};
use super::{MemberStatus, ReplicaError, ReplicaStatus};

/// A membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberChange {
    /// Add a replica that receives the log but does not vote.
    AddLearner {
        /// Replica id.
        id: u64,
        /// Its peer address.
        address: String,
    },
    /// Add a voter, or promote a learner.
    AddVoter {
        /// Replica id.
        id: u64,
        /// Its peer address.
        address: String,
    },
    /// Remove a voter or learner.
    Remove {
        /// Replica id.
        id: u64,
    },
}

impl Core {
    /// Propose a membership change (leader only).
    pub fn change_members(&mut self, change: MemberChange) -> Result<u64, ReplicaError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        // raft-rs turns a conf change proposed while another is unapplied
        // (a new leader counts its whole log as pending) into an empty entry
        // and reports success: the caller would wait for nothing.
        if self.raw.raft.has_pending_conf() {
            return Err(ReplicaError::ConfChangePending);
        }
        let id = self.next_req();
        let (node_id, change_type, address) = match change {
            MemberChange::AddLearner { id, address } => {
                (id, ConfChangeType::AddLearnerNode, Some(address))
            }
            MemberChange::AddVoter { id, address } => (id, ConfChangeType::AddNode, Some(address)),
            MemberChange::Remove { id } => (id, ConfChangeType::RemoveNode, None),
        };
        let ctx = ConfContext {
            origin: self.cfg.id,
            incarnation: self.incarnation,
            id,
            address,
        };
        let ctx = serde_json::to_vec(&ctx).map_err(|e| ReplicaError::Refused(e.to_string()))?;
        let mut single = ConfChangeSingle {
            node_id,
            ..Default::default()
        };
        single.set_change_type(change_type);
        let mut cc = ConfChangeV2::default();
        cc.set_changes(vec![single].into());
        match self.raw.propose_conf_change(ctx, cc) {
            Ok(()) => {
                self.pending.changes.insert(id, self.ticks, ());
                Ok(id)
            }
            Err(raft::Error::ProposalDropped) => Err(ReplicaError::Membership(
                "another membership change is still in progress; retry".to_string(),
            )),
            Err(e) => Err(ReplicaError::Membership(e.to_string())),
        }
    }

    /// Apply a committed conf change at `index`, answering its waiter when
    /// this replica proposed it.
    pub(super) fn apply_conf_change_v2(
        &mut self,
        index: u64,
        cc: &ConfChangeV2,
        context: &[u8],
    ) -> Result<(), ReplicaFatal> {
        let ctx: Option<ConfContext> = serde_json::from_slice(context).ok();
        let cs = match self.raw.apply_conf_change(cc) {
            Ok(cs) => cs,
            Err(e) => {
                // Refused the same way everywhere (e.g. removing the last voter).
                tracing::error!(error = %e, index, "conf change refused");
                self.set_applied(index);
                self.answer_change(ctx, Err(ReplicaError::Membership(e.to_string())));
                return Ok(());
            }
        };
        for change in cc.get_changes() {
            match change.get_change_type() {
                ConfChangeType::AddNode | ConfChangeType::AddLearnerNode => {
                    if let Some(addr) = ctx.as_ref().and_then(|c| c.address.clone()) {
                        self.addresses.insert(change.node_id, addr);
                    }
                }
                ConfChangeType::RemoveNode => {
                    if change.node_id == self.cfg.id {
                        tracing::warn!(
                            "this replica was removed from the cluster; it can be stopped"
                        );
                    } else {
                        self.addresses.remove(&change.node_id);
                    }
                }
            }
        }
        self.store.set_conf_state(&cs, &self.addresses)?;
        self.set_applied(index);
        tracing::info!(voters = ?cs.voters, learners = ?cs.learners, index, "membership changed");
        self.answer_change(ctx, Ok(()));
        Ok(())
    }

    /// Answer the waiter of the change `ctx` describes, when it is ours.
    fn answer_change(&mut self, ctx: Option<ConfContext>, result: Result<(), ReplicaError>) {
        if let Some(ctx) = ctx.filter(|c| self.is_mine(c.origin, c.incarnation))
            && self.pending.changes.remove(ctx.id)
        {
            self.events.push(Event::Done {
                req: ctx.id,
                result,
            });
        }
    }

    /// The replica's status.
    pub fn status(&self) -> ReplicaStatus {
        let raft = &self.raw.raft;
        let conf = raft.prs().conf();
        let leader = raft.state == StateRole::Leader;
        let mut members = BTreeMap::new();
        let voters: Vec<u64> = conf.voters().ids().iter().collect();
        for (id, voter) in voters
            .iter()
            .map(|id| (*id, true))
            .chain(conf.learners().iter().map(|id| (*id, false)))
        {
            let matched = if leader {
                raft.prs().get(id).map(|p| p.matched).unwrap_or_default()
            } else {
                0
            };
            members.insert(
                id,
                MemberStatus {
                    address: self.addresses.get(&id).cloned().unwrap_or_default(),
                    voter,
                    matched,
                },
            );
        }
        let role = match members.get(&self.cfg.id) {
            None => "removed",
            Some(m) if !m.voter => "learner",
            Some(_) => match raft.state {
                StateRole::Leader => "leader",
                StateRole::Follower => "follower",
                StateRole::Candidate => "candidate",
                StateRole::PreCandidate => "pre-candidate",
            },
        };
        let revision = self
            .applied
            .read()
            .map(|a| a.state.revision())
            .unwrap_or_default();
        ReplicaStatus {
            id: self.cfg.id,
            leader_id: raft.leader_id,
            term: raft.term,
            commit: raft.raft_log.committed,
            applied: self.applied_index,
            last_index: raft.raft_log.last_index(),
            revision,
            role: role.to_string(),
            members,
        }
    }
}
