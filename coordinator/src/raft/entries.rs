//! What this replica puts into the Raft log and its messages: the payload of
//! a normal entry ([`Proposal`]), the context of a membership change
//! ([`ConfContext`]), and the context of a ReadIndex request ([`read_ctx`],
//! [`parse_read_ctx`]).
//!
//! Invariants: every request carries its origin replica, that replica's
//! incarnation and a per-incarnation request id, so only the replica (and
//! process start) that made a request ever answers it. Entries already in
//! logs must keep decoding: fields are only ever added with a default.
//!
//! Must not depend on: the [`Core`](super::Core), storage or any I/O.

use rackboot_state::Envelope;
use serde::{Deserialize, Serialize};

/// What travels in a normal log entry.
#[derive(Serialize, Deserialize)]
pub(super) struct Proposal {
    /// Replica that proposed it (only it has a waiter).
    pub(super) origin: u64,
    /// That replica's incarnation (process start), so an entry proposed
    /// before a restart never answers a request made after it.
    #[serde(default)]
    pub(super) incarnation: u64,
    /// Per-incarnation request id.
    pub(super) id: u64,
    pub(super) envelope: Envelope,
}

/// What travels in a conf change's context.
#[derive(Serialize, Deserialize)]
pub(super) struct ConfContext {
    pub(super) origin: u64,
    pub(super) incarnation: u64,
    pub(super) id: u64,
    /// Address of the replica being added.
    pub(super) address: Option<String>,
}

/// The context of a ReadIndex request: the incarnation and the request id,
/// big-endian.
pub(super) fn read_ctx(incarnation: u64, id: u64) -> Vec<u8> {
    let mut ctx = incarnation.to_be_bytes().to_vec();
    ctx.extend_from_slice(&id.to_be_bytes());
    ctx
}

/// The request id in a ReadIndex context, when it was made by `incarnation`.
pub(super) fn parse_read_ctx(ctx: &[u8], incarnation: u64) -> Option<u64> {
    let (inc, id) = ctx.split_first_chunk::<8>()?;
    if *inc != incarnation.to_be_bytes() {
        return None;
    }
    let id: [u8; 8] = id.try_into().ok()?;
    Some(u64::from_be_bytes(id))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_ctx_round_trips_only_for_its_incarnation() {
        let ctx = read_ctx(7, 42);
        assert_eq!(parse_read_ctx(&ctx, 7), Some(42));
        assert_eq!(parse_read_ctx(&ctx, 8), None);
        assert_eq!(parse_read_ctx(&ctx[..15], 7), None);
        assert_eq!(parse_read_ctx(&[], 7), None);
    }
}
