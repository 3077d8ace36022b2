//! What the server tells the shell: events, outcomes, state snapshots.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::id::TransferId;
use crate::packet::ErrorCode;
use crate::path::SafePath;
use crate::scheduler::Priority;

/// Something the shell should know about (log, count, release a transfer's
/// socket).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A transfer was admitted and its first packet queued.
    Started {
        /// The transfer.
        id: TransferId,
        /// The client's address and port.
        client: SocketAddr,
        /// The file.
        path: SafePath,
        /// Bytes to send.
        size: u64,
    },
    /// A transfer ended; no [`crate::Transmit`] will name it again, so the
    /// shell can release its socket (or, with shared sockets, its (socket,
    /// client) pair).
    Closed {
        /// The transfer.
        id: TransferId,
        /// The client's address and port.
        client: SocketAddr,
        /// The file.
        path: SafePath,
        /// How it ended.
        outcome: Outcome,
    },
    /// A request was answered with an ERROR (from the listener).
    Refused {
        /// Who asked.
        client: SocketAddr,
        /// The requested name, when the request could be parsed.
        filename: Option<String>,
        /// The error code sent.
        code: ErrorCode,
        /// The error message sent.
        message: String,
    },
}

/// How a transfer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The final block was acknowledged.
    Completed {
        /// File size in bytes (as sent).
        bytes: u64,
        /// From start to final ACK.
        duration: Duration,
    },
    /// The transfer was ended early.
    Aborted {
        /// Why.
        reason: AbortReason,
    },
    /// The retransmit limit was reached without an answer.
    TimedOut {
        /// Bytes the client had acknowledged.
        acked_bytes: u64,
    },
}

/// Why a transfer was aborted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AbortReason {
    /// The client sent an ERROR. EDK2's tsize-only probe ends this way,
    /// with code 8 right after the OACK.
    ClientError {
        /// The client's error code.
        code: ErrorCode,
        /// The client's message (at most 255 characters).
        message: String,
    },
    /// The same client port asked for the same file again after the
    /// transfer had progressed and then stalled for a tick: it started
    /// over, and a new transfer replaces this one. (A repeat while the
    /// client still acknowledges is a delayed or duplicated copy of its
    /// first request, and is ignored.)
    Superseded,
    /// The server was shutting down and its drain period ran out first.
    Shutdown,
    /// A block could not be read from the file (an I/O error, or the file
    /// shrank under the transfer).
    ReadFailed {
        /// What the read said.
        message: String,
    },
}

/// One active transfer, for the state dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransferSummary {
    /// The transfer.
    pub id: TransferId,
    /// The client's address and port.
    pub client: SocketAddr,
    /// The file.
    pub path: SafePath,
    /// File size in bytes.
    pub size: u64,
    /// Bytes acknowledged so far.
    pub acked_bytes: u64,
    /// Negotiated block size.
    pub blksize: u16,
    /// Negotiated window size.
    pub windowsize: u16,
    /// When the transfer started.
    pub started: Instant,
    /// Whether it still waits for the ACK of its OACK.
    pub negotiating: bool,
    /// Timer resends since the last progress.
    pub retries: u32,
    /// Packets resent over the whole transfer (any reason).
    pub retransmits: u64,
    /// Smoothed round-trip time, once measured.
    pub rtt: Option<Duration>,
    /// `Some` while packets of the current window (or the OACK) wait for
    /// their turn in the scheduler, in that class; `None` when everything is
    /// sent and the server waits for the client's ACK.
    pub waiting: Option<Priority>,
    /// When the first packet (OACK or DATA 1) left.
    pub first_sent: Option<Instant>,
    /// When the last packet to this client left.
    pub last_sent: Option<Instant>,
    /// When the client last acknowledged something new (or the start).
    pub last_progress: Instant,
}

impl TransferSummary {
    /// Fraction of the file acknowledged, 0.0..=1.0 (1.0 for an empty file).
    pub fn progress(&self) -> f64 {
        if self.size == 0 {
            1.0
        } else {
            self.acked_bytes as f64 / self.size as f64
        }
    }
}
