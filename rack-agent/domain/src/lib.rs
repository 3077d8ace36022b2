//! # rackboot-agent-domain
//!
//! What the rack agent knows and decides, without any I/O: the rack view it
//! serves from ([`view`]), the per-node boot files it generates
//! ([`boot_config`]), the one-request boot-info ([`bootinfo`]), the boot
//! timeline of every node ([`timeline`]), the machines it asks the
//! coordinator to number ([`discovery`]), when to try the coordinator again
//! ([`retry`]) and the parsing of node log lines ([`syslog`]).
//!
//! ## Invariants
//! - **Validated at the edge.** A [`view::RackView`] exists only for a
//!   coordinator message whose every field parsed; nothing downstream
//!   re-validates or can meet a malformed address, MAC or hash.
//! - **Time is an input.** Nothing here reads a clock: every function that
//!   depends on time takes `now` (Unix milliseconds, or an `Instant` the
//!   caller keeps), so the timeline and the backoff are tested on a virtual
//!   clock.
//! - **Never panics on input.** Log datagrams and coordinator messages are
//!   untrusted; both have fuzz targets.
//!
//! ## Must never depend on
//! tokio or any async runtime, sockets, the file system, the system clock,
//! tonic (the `rackboot-proto` messages are used without its `grpc`
//! feature), or the agent's shell crate. `.ci/run` checks `cargo tree` for
//! tokio.

pub mod boot_config;
pub mod bootinfo;
pub mod discovery;
pub mod loaders;
pub mod retry;
pub mod router_advert;
pub mod syslog;
pub mod timeline;
pub mod uboot;
pub mod view;
