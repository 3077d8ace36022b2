//! The rackboot rack agent: serves one rack's nodes (DHCP, TFTP) from a
//! synced, persisted local view of the coordinator's state.
//!
//! Invariant: no request from a node ever waits on the coordinator. The
//! servers answer from the last view and the in-memory file table; the sync
//! task updates both in the background, and a restarted agent serves its
//! persisted view while the coordinator is unreachable.
//!
//! Protocol logic lives in the sans-IO crates `rackboot-dhcp-core` and
//! `rackboot-tftp-core`; the modules here (`dhcp`, `tftp`) only move bytes
//! and time.

pub mod agent;
pub mod args;
pub mod boot;
pub mod bootinfo;
pub mod cache;
pub mod config;
pub mod dhcp;
pub mod files;
pub mod guard;
pub mod http;
pub mod logship;
pub mod logspool;
pub mod metrics;
pub mod sessions;
pub mod sync;
pub mod syslog;
pub mod tftp;
pub mod view;

pub use agent::{Agent, AgentConfig, AgentError, start};
