//! Who a datagram belongs to: a transfer's id ([`TransferId`]) and the
//! socket of the shell it arrives on or leaves from ([`Local`]). Plain
//! values every other module may name; this module names none of them.

use std::fmt;

/// Identifies one transfer (the shell maps it to the socket it sends from).
/// Never reused by a `Server`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(u64);

impl TransferId {
    /// The smallest id (a bound for range queries; never issued).
    pub(crate) const MIN: TransferId = TransferId(0);

    /// An id from a raw number (tests).
    #[cfg(test)]
    pub(crate) fn from_raw(n: u64) -> TransferId {
        TransferId(n)
    }

    /// The id numbered `n` (the server issues them in order).
    pub(crate) fn new(n: u64) -> TransferId {
        TransferId(n)
    }

    /// The raw number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Which of the shell's sockets a datagram arrived on or leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Local {
    /// The listening socket (UDP 69).
    Listener,
    /// The transfer's socket (its server port, the RFC 1350 transfer ID).
    /// The shell may share one socket among transfers of different
    /// clients (the agent uses a pool of 8): it picks one the first time a
    /// `Transmit` names the transfer and releases it on `Event::Closed`.
    Transfer(TransferId),
}
