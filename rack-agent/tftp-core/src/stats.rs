//! Counters, exposed for metrics and the SIGUSR1 state dump.

/// Monotonic counters kept by a [`crate::Server`]. Every dropped datagram is
/// counted under exactly one `dropped_*` reason.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Datagrams handed to [`crate::Server::handle_datagram`].
    pub datagrams_received: u64,
    /// Datagrams sent (every [`crate::Transmit`] produced).
    pub datagrams_sent: u64,
    /// Bytes sent: the UDP payload of every datagram sent (TFTP headers,
    /// retransmissions, OACKs and ERROR replies included).
    pub bytes_sent: u64,

    /// Dropped: not a valid TFTP packet (request parse errors included;
    /// those also get an ERROR 4 reply).
    pub dropped_malformed: u64,
    /// Dropped: a valid non-request packet (DATA, ACK, ERROR, OACK) arrived
    /// on the listening socket.
    pub dropped_unexpected_on_listener: u64,
    /// Dropped: a packet for a transfer that no longer exists.
    pub dropped_unknown_transfer: u64,
    /// Dropped: a packet handed in for a transfer from an address and port
    /// other than its client's (each answered with ERROR 5). A shell that
    /// shares sockets among transfers, as the agent's does, finds the
    /// transfer by (socket, client) and answers datagrams matching none
    /// itself.
    pub dropped_wrong_source: u64,
    /// Dropped: a packet type a read transfer never expects (RRQ, WRQ, DATA,
    /// OACK on a transfer socket).
    pub dropped_unexpected_on_transfer: u64,
    /// Dropped: an ACK for a block outside the window in flight.
    pub dropped_stale_ack: u64,
    /// Dropped: a duplicate ACK (or repeated request) that did not trigger a
    /// resend because this window was already resent once, or it was an
    /// echo of packets already in flight.
    pub dropped_duplicate_ack: u64,
    /// Dropped: the admission queue was full.
    pub dropped_queue_full: u64,
    /// Dropped: the source address already had `max_per_source` transfers.
    pub dropped_per_source: u64,
    /// Requests not taken because the server is draining for shutdown.
    pub dropped_draining: u64,
    /// Dropped: an ERROR from a client whose transfer replaced its own
    /// size probe on the same address and port, taken as the probe's late
    /// abort.
    pub dropped_stale_error: u64,
    /// Requests left unanswered because their file is not ready yet
    /// ([`crate::OpenError::NotReady`]): the client asks again.
    pub dropped_not_ready: u64,

    /// Requests that replaced another request (running or waiting) from
    /// the same address and port: the client left the first.
    pub requests_replaced: u64,
    /// Requests refused: write requests (ERROR 2, read-only server).
    pub refused_write: u64,
    /// Requests refused: unsafe paths (ERROR 2).
    pub refused_path: u64,
    /// Requests refused: unsupported mode (ERROR 4).
    pub refused_mode: u64,
    /// Requests refused: file not found (ERROR 1).
    pub refused_not_found: u64,
    /// Requests refused: the file source denied access (ERROR 2).
    pub refused_access_denied: u64,
    /// Requests refused: the file is larger than TFTP can address
    /// ([`crate::MAX_FILE_SIZE`], or [`crate::MAX_NETASCII_SIZE`] in
    /// netascii mode) (ERROR 3).
    pub refused_too_large: u64,
    /// Transfers aborted because a block could not be read from their
    /// file (an I/O error, or the file shrank).
    pub read_errors: u64,

    /// Repeated requests absorbed by an active or queued transfer.
    pub duplicate_requests: u64,
    /// Requests that had to wait in the admission queue.
    pub queued: u64,
    /// Queued requests dropped because the client stopped asking.
    pub queue_expired: u64,

    /// Transfers started.
    pub transfers_started: u64,
    /// Transfers whose final block was acknowledged.
    pub transfers_completed: u64,
    /// Transfers ended by the client (ERROR) or superseded by a new request.
    pub transfers_aborted: u64,
    /// Transfers that exhausted their retries.
    pub transfers_timed_out: u64,
    /// Of [`Stats::transfers_aborted`]: ended by the client with ERROR 8
    /// (option negotiation refused), which is how PXE ROMs end the
    /// `tsize`-only probe they make before the real download.
    pub transfers_option_refused: u64,

    /// DATA packets sent for the first time.
    pub data_sent: u64,
    /// Packets (DATA or OACK) resent because the retransmit timer fired.
    pub retransmits_timeout: u64,
    /// Packets (DATA or OACK) resent at once on a first duplicate ACK.
    pub retransmits_duplicate: u64,
    /// DATA packets resent because a windowed client acknowledged only part
    /// of a window (RFC 7440: the window restarts after the last block it
    /// has).
    pub retransmits_partial_ack: u64,

    /// Transfers admitted over [`crate::Config::max_active`] because their
    /// request had waited [`crate::Config::queue_first_answer_deadline`].
    pub admitted_over_cap: u64,
    /// Round-robin windows moved to the retry class because they waited a
    /// whole tick, or their client repeated an ACK while they waited.
    pub promoted: u64,
    /// Times [`crate::Server::poll_transmit`] held packets back because the
    /// bandwidth cap was used up.
    pub throttle_stalls: u64,
}
