//! # rackboot-agent
//!
//! The rackboot rack agent: serves one rack's nodes (DHCP, TFTP, HTTP,
//! syslog) from a synced, persisted local view of the coordinator's state.
//!
//! ## Layout (one role per module group)
//! - [`serve`]: serving the rack: the DHCP, TFTP, HTTP and syslog shells
//!   around their sans-IO cores, and the admission guards.
//! - [`timeline`]: the one task that owns the boot timeline
//!   (`rackboot_agent_domain::timeline`), fed by the servers.
//! - [`upstream`]: talking to the coordinator: following the rack view,
//!   asking it to number machines, shipping logs and boot sessions.
//! - [`store`]: local storage: the verified blob cache, the served file
//!   table, the log spool, the persisted view.
//! - [`telemetry`]: the agent's metrics and their listener.
//! - [`config`]: command line and configuration file.
//! - [`process`]: starting and stopping the whole agent.
//!
//! Imports go one way: `process` → everything; `config` → `process`;
//! `telemetry` → `serve`, `store`, `upstream`, `timeline`; `serve` →
//! `store`, `timeline`; `upstream` → `store`; `store` → `timeline`. CI
//! checks the module graph has no cycle (`scripts/check-module-graph.sh`).
//!
//! ## Invariants
//! - No request from a node ever waits on the coordinator. The servers
//!   answer from the last view and the in-memory file table; `upstream`
//!   updates both in the background, and a restarted agent serves its
//!   persisted view while the coordinator is unreachable.
//! - Protocol logic lives in the sans-IO crates `rackboot-dhcp-core` and
//!   `rackboot-tftp-core`, domain logic in `rackboot-agent-domain`; the
//!   modules here only move bytes and time.
//! - Blocking file-system work runs on blocking threads, never on a
//!   runtime worker (`clippy.toml` refuses `std::fs` outside an allow-list).
//!
//! ## Must never depend on
//! the coordinator crate (`rackboot-coordinator`): the agent talks to it
//! over gRPC only.

pub mod config;
pub mod process;
pub mod serve;
pub mod store;
pub mod telemetry;
pub mod timeline;
pub mod upstream;

pub use config::settings::AgentConfig;
pub use process::agent::{Agent, AgentError, start};
