//! # rackboot-storm
//!
//! A boot-storm emulator, the library behind `rackboot storm`. N emulated
//! PXE ROM clients, each with its own MAC, do what real firmware does —
//! DHCP DISCOVER/REQUEST with PXE options and the firmware's retry timers,
//! then TFTP with a tsize probe, abort, and the real request — and fail
//! their boot where a ROM would. With `--transport http` the files come
//! over HTTP/1.1 instead, as iPXE loads a kernel and initrd: one keep-alive
//! TCP connection per client, a GET per file, bounded retries. Floods of
//! DHCPDISCOVERs from random MACs and of unacknowledged TFTP requests can
//! run alongside, to see whether known machines still boot.
//!
//! [`StormArgs`] are the command's flags (a `clap::Args`, flattened into
//! the CLI); [`run`] runs one storm and returns a [`StormOutcome`] whose
//! [`Report`] the caller prints as JSON or a table.
//!
//! ## Layout
//!
//! - sans-IO clients, no sockets and no clock: [`dhcp_client`],
//!   [`tftp_client`], [`http_client`];
//! - `driver`: the I/O shells running them over tokio sockets and timers
//!   (`driver::dhcp`, `driver::tftp`, `driver::http`);
//! - `flood` and `pacer`: the DHCP and TFTP floods and their pacing;
//! - `shard`: `--tftp-only` clients on single-threaded runtimes;
//! - `run`: the storm from flags to [`StormOutcome`]; [`report`]: what it
//!   measured.
//!
//! ## Invariants
//!
//! - Every protocol decision (what to send, when to retry, whether a file
//!   is good) is in a sans-IO client; the drivers only move bytes and time.
//! - [`run`] neither prints nor exits: failed boots are counted in the
//!   [`Report`], and [`StormError`] is only for flags that cannot work and
//!   for the emulator's own sockets and threads.
//! - The flags, the JSON fields and the table are a contract with the
//!   scripts in `tests/bench/` and the system tests: they do not change
//!   with the code's layout.
//! - A load generator without randomness: the flood's MACs come from a
//!   fixed-seed splitmix64, client `i` has MAC `--mac-base` + `i`.
//!
//! ## Dependencies
//!
//! The emulator talks to servers only over the wire, as real clients do:
//! it must not depend on `rackboot-coordinator` or `rackboot-agent` (nor
//! their state or configuration crates). It uses `rackboot-tftp-core` for
//! the TFTP packet codec only; tests may use the server cores
//! (`rackboot-dhcp-core`, `rackboot-tftp-core`) to check the clients
//! against them.

mod args;
pub mod dhcp_client;
mod driver;
mod error;
mod flood;
pub mod http_client;
mod mac;
mod pacer;
pub mod report;
mod run;
mod shard;
pub mod tftp_client;

pub use args::{StormArgs, Transport};
pub use error::StormError;
pub use report::{ClientOutcome, Report};
pub use run::{FloodStats, StormOutcome, run};
