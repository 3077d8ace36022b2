//! What the server tells the shell: events, outcomes, state snapshots.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::packet::ErrorCode;
use crate::path::SafePath;
use crate::server::TransferId;

/// Something the shell should know about (log, count, release a socket).
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
    /// A transfer ended; no [`crate::Transmit`] will name it again, so its socket
    /// can be dropped.
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
    /// transfer had progressed: it started over, and a new transfer
    /// replaces this one.
    Superseded,
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
}
