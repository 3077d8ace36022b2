//! The rackboot coordinator: owns the cluster's durable state (racks, node
//! numbers, image manifests, assignments) in a Raft-replicated state machine
//! and serves it over gRPC to administrators and rack agents.
//!
//! The coordinator is never on the path of a DHCP, TFTP or HTTP packet: agents
//! hold a synced copy of their rack's state and answer nodes from it.
//!
//! Layout: [`raft`] (the replica: its sans-IO core, the thread that owns it,
//! its redb storage), [`blobs`] (content-addressed blob files),
//! [`replication`] (blobs pulled between replicas, pushes acknowledged on a
//! quorum), [`api`] (gRPC handlers), [`server`] (start-up), [`auth`] (who
//! may call what, from the client certificate), [`conncap`] (front-door
//! connection limits), [`config`] (settings), [`backup`] (state backups),
//! [`metrics`] (Prometheus exposition), [`keyed_locks`] (one async lock per
//! key). The state machine itself lives in `rackboot-state`, pure.
//!
//! Invariants: a write is acknowledged only once its Raft entry is committed
//! and applied on the replica that answers; every replica applies the same
//! entries in the same order to the same state; a stored blob always hashes
//! to its name; blocking work (fsync, file I/O, hashing) never runs on an
//! async runtime thread.
//!
//! Must not depend on: the rack agent (`rackboot-agent`, a dev-dependency
//! for tests only), the CLI, or anything that serves nodes; it talks to
//! agents only through the gRPC API in `rackboot-proto`.

pub mod api;
pub mod auth;
pub mod backup;
pub mod blobs;
pub mod config;
pub mod conncap;
pub mod keyed_locks;
pub mod metrics;
pub mod raft;
pub mod replication;
pub mod server;

pub use server::{Coordinator, start};
