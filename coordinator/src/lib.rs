//! The rackboot coordinator: owns the cluster's durable state (racks, node
//! numbers, image manifests, assignments) in a Raft-replicated state machine
//! and serves it over gRPC to administrators and rack agents.
//!
//! The coordinator is never on the path of a DHCP, TFTP or HTTP packet: agents
//! hold a synced copy of their rack's state and answer nodes from it.
//!
//! Layout: [`raft`] (the replica task and its redb storage), [`blobs`]
//! (content-addressed blob files), [`replication`] (blobs pulled between
//! replicas, pushes acknowledged on a quorum), [`api`] (gRPC handlers), [`server`]
//! (start-up), [`auth`] (who may call what, from the client certificate),
//! [`metrics`] (Prometheus exposition). The state machine itself
//! lives in `rackboot-state`, pure.

pub mod api;
pub mod auth;
pub mod backup;
pub mod blobs;
pub mod config;
pub mod conncap;
pub mod metrics;
pub mod raft;
pub mod replication;
pub mod server;

pub use server::{Coordinator, start};
