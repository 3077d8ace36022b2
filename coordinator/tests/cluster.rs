//! Integration tests of the replicated coordinator: replicas as separate OS
//! processes of the real binary (leader kills, partitions, crashes at every
//! persistence step, membership), and a deterministic simulation of several
//! replicas over an in-memory network.
//!
//! Durations are short by default (CI); the full-length runs are enabled by
//! environment variables, e.g. `RACKBOOT_LEADER_KILL_SECS=120`,
//! `RACKBOOT_PARTITION_SECS=10`, `RACKBOOT_SIM_SEEDS=500` (see each module).
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]
// `harness::exclusive` is a std mutex held for a whole multi-process test on
// purpose: each test has its own runtime, and the guard only serializes them.
#![allow(clippy::await_holding_lock)]

#[path = "cluster/bad_messages.rs"]
mod bad_messages;
#[path = "cluster/blobs.rs"]
mod blobs;
#[path = "cluster/crash.rs"]
mod crash;
#[path = "cluster/harness.rs"]
mod harness;
#[path = "cluster/history.rs"]
mod history;
#[path = "cluster/leader_kill.rs"]
mod leader_kill;
#[path = "cluster/membership.rs"]
mod membership;
#[path = "cluster/partitions.rs"]
mod partitions;
#[path = "cluster/push_faults.rs"]
mod push_faults;
#[path = "cluster/restart_validity.rs"]
mod restart_validity;
#[path = "cluster/sim.rs"]
mod sim;
