//! Storage outside a running replica: founding a group on an empty store
//! ([`bootstrap_store`], also how a backup is restored) and reading the
//! state a stopped replica's store holds ([`stored_state`], the offline
//! backup of a group that lost its quorum).
//!
//! Invariants: a founded store holds one snapshot at [`BOOTSTRAP_INDEX`]
//! naming the founding voters, so a replica joining later is sent a snapshot
//! (which carries the configuration) rather than entries from index 1.
//! [`stored_state`] only reads, and applies only entries known committed.
//!
//! Must not depend on: the [`Core`](super::Core), the owner thread, peers or
//! tokio.

use rackboot_state::State;
use raft::prelude::{ConfState, EntryType, Snapshot};

use super::entries::Proposal;
use super::replica_core::ReplicaFatal;
use super::snapshot;
use super::storage::{Addresses, RaftStore};

/// Index and term of the bootstrap snapshot every founding replica writes, so
/// that a replica joining later (with an empty log) is sent a snapshot, which
/// carries the configuration, instead of entries from index 1.
const BOOTSTRAP_INDEX: u64 = 1;

/// Found a new group on an empty `store`: the founding voters `peers` and
/// the initial `state` (empty for a new cluster, a backup for a restore),
/// as a snapshot at the bootstrap index.
pub fn bootstrap_store(
    store: &RaftStore,
    peers: &Addresses,
    state: &State,
) -> Result<(), ReplicaFatal> {
    let mut snap = Snapshot::default();
    let meta = snap.mut_metadata();
    meta.index = BOOTSTRAP_INDEX;
    meta.term = 1;
    meta.set_conf_state(ConfState {
        voters: peers.keys().copied().collect(),
        ..Default::default()
    });
    snap.set_data(snapshot::encode(peers, state)?.into());
    store.apply_snapshot(&snap, peers)?;
    Ok(())
}

/// The state a stopped replica's `store` holds: its last snapshot with
/// every committed entry after it applied, and the index reached. Reads
/// only; used to back up a replica offline (e.g. the survivor of a lost
/// quorum).
pub fn stored_state(store: &RaftStore) -> Result<(State, u64), ReplicaFatal> {
    use raft::Storage;
    let (mut state, mut index) = match store.stored_snapshot()? {
        Some(snap) => {
            let d = snapshot::decode(snap.get_data())?;
            (d.state, snap.get_metadata().index)
        }
        None => (State::default(), 0),
    };
    // A group of one voter commits what it persists: its whole log. Others
    // only what the stored commit index says (a clean stop writes it).
    let single = store.conf_state().voters.len() == 1;
    let commit = if single {
        raft::Storage::last_index(store)
            .map_err(|e| ReplicaFatal::Snapshot(format!("reading the log: {e}")))?
    } else {
        store.hard_state().commit
    };
    while index < commit {
        let entries = store
            .entries(
                index + 1,
                commit + 1,
                Some(8 << 20),
                raft::GetEntriesContext::empty(false),
            )
            .map_err(|e| ReplicaFatal::Snapshot(format!("reading committed entries: {e}")))?;
        if entries.is_empty() {
            break;
        }
        for entry in entries {
            if entry.get_entry_type() == EntryType::EntryNormal
                && !entry.data.is_empty()
                && let Ok(p) = serde_json::from_slice::<Proposal>(&entry.data)
            {
                // Refused commands leave the state as every replica left it.
                let _ = state.apply(p.envelope);
            }
            index = entry.index;
        }
    }
    Ok((state, index))
}
