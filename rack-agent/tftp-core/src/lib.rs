//! rackboot-tftp-core: a sans-IO TFTP server core.
//!
//! This crate holds the whole TFTP protocol logic of the rack agent — packet
//! codec, option negotiation (RFC 2347/2348/2349/7440), path validation,
//! per-transfer state machines, retransmission timers, the send scheduler,
//! the per-link bandwidth cap and admission control — with no I/O of its
//! own. It follows quinn-proto's split: the owner (the agent's TFTP task,
//! "the shell") feeds inputs in and drains outputs out.
//!
//! # Driving a [`Server`]
//!
//! ```text
//! loop {
//!     wait for a datagram on any socket, or until server.poll_timeout()
//!     server.handle_datagram(now, local, src, bytes, &files)   // for each datagram
//!     server.handle_timeout(now)                                 // every wake-up
//!     while let Some(t) = server.poll_transmit() { send t.payload from t.local to t.dest }
//!     while let Some(e) = server.poll_event()    { Closed => forget its (socket, client) pair; log; … }
//! }
//! // On SIGUSR1: log server.dump(). For DHCP: server.load().pressure.
//! ```
//!
//! [`Server::poll_transmit`] returns `None` both when nothing waits and
//! when the bandwidth cap is used up; [`Server::poll_timeout`] then names
//! the moment the cap has credit again, so a shell that sleeps until then
//! and calls [`Server::handle_timeout`] sends at the configured rate. The
//! server's clock is the latest `now` it was given.
//!
//! # Scheduling (seeds 000, 002, 003)
//!
//! Handling an ACK only marks its transfer as having a window to send; the
//! packets are built when polled, in this order ([`Priority`]): ERROR
//! replies; transfers whose client showed it missed data (duplicate or
//! partial ACK, the retransmit timer, a repeated request) or that waited a
//! whole tick; then everyone else round-robin, one window per turn. A
//! per-link token bucket paces it all; when the packets waiting would take
//! longer than [`Config::admission_pause_backlog`] to send, new transfers
//! wait in the admission queue, and a waiting request is admitted anyway
//! (over [`Config::max_active`], within [`Config::max_overflow`]) once it
//! has waited [`Config::queue_first_answer_deadline`]. [`Server::load`]
//! summarises the pressure for the DHCP side; [`Server::snapshot`] and
//! [`Server::dump`] give the state dump.
//!
//! The shell owns one listening socket (UDP 69, [`Local::Listener`]) and
//! sends each transfer from a port of its own choosing
//! ([`Local::Transfer`]), its RFC 1350 transfer ID. A transfer is the pair
//! (server port, client address and port), so ports can be shared by the
//! transfers of different clients: the agent's shell keeps a pool of 8
//! transfer sockets for any number of transfers. It picks a transfer's
//! socket the first time a [`Transmit`] names a new [`TransferId`] (one
//! whose port that client is not already using), hands a datagram arriving
//! on a pool socket to the transfer of that (socket, client) pair, and
//! forgets the pair on [`Event::Closed`]. Once `Closed { id }` is queued no
//! [`Transmit`] names `id` again (unsent packets are discarded), so the
//! order in which the shell drains transmits and events does not matter.
//!
//! # Invariants
//!
//! - **Never depends on tokio, sockets, the filesystem, a clock or
//!   randomness.** Time is passed in as `now: Instant`; file content comes
//!   from a caller-supplied [`FileSource`] as a [`Content`]: bytes in
//!   memory (each DATA packet a zero-copy slice) or a [`ReadAt`] the caller
//!   reads one block at a time (a file on disk, never loaded whole). `cargo tree -p
//!   rackboot-tftp-core` must show no tokio.
//! - **Bad input never panics.** Every datagram is parsed by
//!   [`Packet::parse`]; malformed ones are counted in [`Stats`] and dropped.
//!   Requested file names become a [`SafePath`] before anything else sees
//!   them.
//! - **Every table is bounded.** At most [`Config::max_active`] +
//!   [`Config::max_overflow`] transfers run; at most [`Config::max_queue`]
//!   wait, FIFO, and stale waiters expire. The scheduler holds one entry per
//!   transfer.
//! - **No Sorcerer's Apprentice.** A duplicate ACK causes at most one resend
//!   per window, and none when it may echo our own duplicates; an ACK of
//!   part of a window that may answer our duplicate only slides the window
//!   (see the `transfer` module). Otherwise the server resends only on its
//!   own short (RTT-adaptive, at most [`Config::retransmit_max`], never
//!   exponential) timer, armed when the packets actually leave.
//! - **A transfer ends exactly once**, with one [`Event::Closed`], and then
//!   leaves no state behind.

mod admission;
mod bucket;
mod config;
mod event;
mod id;
mod mode;
pub mod options;
pub mod packet;
pub mod path;
mod scheduler;
mod server;
mod snapshot;
mod source;
mod stats;
mod transfer;

pub use config::{Config, ConfigError, ETHERNET_UDP_OVERHEAD, LINK_1GBE_BYTES_PER_SEC};
pub use event::{AbortReason, Event, Outcome, TransferSummary};
pub use mode::Mode;
pub use options::{Negotiated, OptionLimits};
pub use packet::{ErrorCode, Packet, PacketError, RawOption};
pub use path::{PathError, SafePath};
pub use scheduler::Priority;
pub use server::{Local, Server, TransferId, Transmit};
pub use snapshot::{Load, QueuedSummary, Snapshot};
pub use source::{Content, FileSource, OpenError, ReadAt};

/// Largest file served: PXE ROMs read `tsize` into 32 bits
/// (`PXENV_TFTP_GET_FSIZE`), so anything larger is refused with a clear
/// ERROR rather than sent with a size that wraps. (Block numbers past
/// 65,535 roll over to 0, as tftp-hpa and iPXE expect.)
pub const MAX_FILE_SIZE: u64 = u32::MAX as u64;

/// Largest file served in netascii mode (converted in memory).
pub const MAX_NETASCII_SIZE: u64 = 16 << 20;
pub use stats::Stats;

#[cfg(test)]
mod tests;
