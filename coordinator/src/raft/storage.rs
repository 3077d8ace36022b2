//! Durable Raft storage in redb: log entries, HardState, ConfState and the
//! latest snapshot. Every write transaction commits with immediate durability
//! (fsync) before it returns, which is what the `Ready` order relies on.
//!
//! Only the task owning the `RawNode` writes; raft-rs reads through the
//! [`raft::Storage`] impl. A small in-memory index (first/last index, hard
//! state, conf state, snapshot metadata) avoids a read transaction for the
//! hottest calls.
//!
//! Besides Raft's own records the store keeps the members' peer addresses,
//! written in the same transaction as the conf state they belong to.
//!
//! When raft-rs asks for a snapshot newer than the stored one,
//! [`raft::Storage::snapshot`] answers "temporarily unavailable" and records
//! the wish ([`RaftStore::wanted_snapshot`]); the owner then takes a fresh
//! snapshot of its applied state, and raft-rs asks again.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use protobuf::Message as PbMessage;
use raft::prelude::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");
const KEY_HARD_STATE: &str = "hard_state";
const KEY_CONF_STATE: &str = "conf_state";
const KEY_SNAPSHOT: &str = "snapshot";
const KEY_ADDRESSES: &str = "addresses";

/// A storage failure. Fatal for the replica: it must stop rather than go on
/// with state it could not persist.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("raft store {path}: {source}")]
    Db {
        /// Database file.
        path: String,
        /// Cause.
        #[source]
        source: Box<redb::Error>,
    },
    /// A stored record does not decode.
    #[error("raft store: corrupt {what}: {reason}")]
    Corrupt {
        /// Which record.
        what: String,
        /// Decoder message.
        reason: String,
    },
    /// Append would leave a gap or overwrite compacted entries.
    #[error("raft store: append at {first} but log is [{log_first}, {log_last}]")]
    NonContiguous {
        /// First index appended.
        first: u64,
        /// First index stored.
        log_first: u64,
        /// Last index stored.
        log_last: u64,
    },
}

#[derive(Debug, Clone, Default)]
struct Index {
    hard_state: HardState,
    conf_state: ConfState,
    snapshot_meta: SnapshotMetadata,
    /// Last log index, or snapshot index when the log is empty.
    last: u64,
}

impl Index {
    fn first(&self) -> u64 {
        self.snapshot_meta.index + 1
    }
}

/// Peer addresses by replica id.
pub type Addresses = BTreeMap<u64, String>;

/// redb-backed Raft storage. Cheap to clone; clones share the database.
#[derive(Clone)]
pub struct RaftStore {
    db: Arc<Database>,
    path: Arc<str>,
    index: Arc<RwLock<Index>>,
    /// Lowest snapshot index raft-rs asked for and did not get (0 = none).
    wanted: Arc<AtomicU64>,
}

fn db_err(path: &str, e: impl Into<redb::Error>) -> StoreError {
    StoreError::Db {
        path: path.to_string(),
        source: Box::new(e.into()),
    }
}

fn decode<M: PbMessage>(what: &str, bytes: &[u8]) -> Result<M, StoreError> {
    M::parse_from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn encode<M: PbMessage>(what: &str, m: &M) -> Result<Vec<u8>, StoreError> {
    m.write_to_bytes().map_err(|e| StoreError::Corrupt {
        what: what.to_string(),
        reason: e.to_string(),
    })
}

fn encode_addresses(a: &Addresses) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(a).map_err(|e| StoreError::Corrupt {
        what: "addresses".to_string(),
        reason: e.to_string(),
    })
}

fn to_raft(e: StoreError) -> raft::Error {
    raft::Error::Store(StorageError::Other(Box::new(e)))
}

impl RaftStore {
    /// Open (or create) the store in `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let p: Arc<str> = path.display().to_string().into();
        let db = Database::create(path).map_err(|e| db_err(&p, e))?;
        Self::with_db(db, p)
    }

    /// A store in memory (simulation tests): the same code, no file, no fsync.
    pub fn in_memory() -> Result<Self, StoreError> {
        let p: Arc<str> = "(memory)".into();
        let db = Database::builder()
            .create_with_backend(redb::backends::InMemoryBackend::new())
            .map_err(|e| db_err(&p, e))?;
        Self::with_db(db, p)
    }

    fn with_db(db: Database, path: Arc<str>) -> Result<Self, StoreError> {
        let store = RaftStore {
            db: Arc::new(db),
            path,
            index: Arc::new(RwLock::new(Index::default())),
            wanted: Arc::new(AtomicU64::new(0)),
        };
        store.load_index()?;
        Ok(store)
    }

    /// A write transaction. Durability is immediate (fsync on commit), except
    /// in the `mutant-no-fsync` build, which exists to prove the crash tests
    /// notice.
    fn begin_write(&self) -> Result<redb::WriteTransaction, StoreError> {
        let p = &*self.path;
        #[allow(unused_mut)]
        let mut txn = self.db.begin_write().map_err(|e| db_err(p, e))?;
        #[cfg(feature = "mutant-no-fsync")]
        {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| StoreError::Corrupt {
                    what: "durability".to_string(),
                    reason: e.to_string(),
                })?;
        }
        Ok(txn)
    }

    fn load_index(&self) -> Result<(), StoreError> {
        let p = &*self.path;
        let txn = self.begin_write()?;
        let mut idx = Index::default();
        {
            let meta = txn.open_table(META).map_err(|e| db_err(p, e))?;
            if let Some(v) = meta.get(KEY_HARD_STATE).map_err(|e| db_err(p, e))? {
                idx.hard_state = decode("hard state", v.value())?;
            }
            if let Some(v) = meta.get(KEY_CONF_STATE).map_err(|e| db_err(p, e))? {
                idx.conf_state = decode("conf state", v.value())?;
            }
            if let Some(v) = meta.get(KEY_SNAPSHOT).map_err(|e| db_err(p, e))? {
                let snap: Snapshot = decode("snapshot", v.value())?;
                idx.snapshot_meta = snap.get_metadata().clone();
            }
            let log = txn.open_table(LOG).map_err(|e| db_err(p, e))?;
            idx.last = match log.last().map_err(|e| db_err(p, e))? {
                Some((k, _)) => k.value(),
                None => idx.snapshot_meta.index,
            };
        }
        txn.commit().map_err(|e| db_err(p, e))?;
        *self.write_index() = idx;
        Ok(())
    }

    fn read_index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write_index(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// True when nothing was ever stored (a fresh replica).
    pub fn is_empty(&self) -> bool {
        let idx = self.read_index();
        idx.last == 0 && idx.conf_state.voters.is_empty() && idx.conf_state.learners.is_empty()
    }

    /// The current hard state.
    pub fn hard_state(&self) -> HardState {
        self.read_index().hard_state.clone()
    }

    /// The current conf state.
    pub fn conf_state(&self) -> ConfState {
        self.read_index().conf_state.clone()
    }

    /// Persist entries (truncating any conflicting suffix) and, if given, the
    /// hard state, in one durable transaction.
    pub fn persist(
        &self,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), StoreError> {
        if entries.is_empty() && hard_state.is_none() {
            return Ok(());
        }
        let p = &*self.path;
        let (first_stored, last_stored) = {
            let idx = self.read_index();
            (idx.first(), idx.last)
        };
        if let Some(first) = entries.first()
            && (first.index < first_stored || first.index > last_stored + 1)
        {
            return Err(StoreError::NonContiguous {
                first: first.index,
                log_first: first_stored,
                log_last: last_stored,
            });
        }
        let txn = self.begin_write()?;
        {
            if let Some(first) = entries.first() {
                let mut log = txn.open_table(LOG).map_err(|e| db_err(p, e))?;
                // Conflicting suffix: everything from the first new index on.
                log.retain_in(first.index.., |_, _| false)
                    .map_err(|e| db_err(p, e))?;
                for e in entries {
                    let bytes = encode("entry", e)?;
                    log.insert(e.index, bytes.as_slice())
                        .map_err(|e| db_err(p, e))?;
                }
            }
            if let Some(hs) = hard_state {
                let mut meta = txn.open_table(META).map_err(|e| db_err(p, e))?;
                let bytes = encode("hard state", hs)?;
                meta.insert(KEY_HARD_STATE, bytes.as_slice())
                    .map_err(|e| db_err(p, e))?;
            }
        }
        txn.commit().map_err(|e| db_err(p, e))?;
        let mut idx = self.write_index();
        if let Some(last) = entries.last() {
            idx.last = last.index;
        }
        if let Some(hs) = hard_state {
            idx.hard_state = hs.clone();
        }
        Ok(())
    }

    /// Persist only the commit index (from a light ready).
    pub fn set_commit(&self, commit: u64) -> Result<(), StoreError> {
        let mut hs = self.hard_state();
        if hs.commit == commit {
            return Ok(());
        }
        hs.commit = commit;
        self.persist(&[], Some(&hs))
    }

    /// Persist a conf state (after applying a conf change) and the members'
    /// addresses, in one transaction.
    pub fn set_conf_state(&self, cs: &ConfState, addresses: &Addresses) -> Result<(), StoreError> {
        let p = &*self.path;
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| db_err(p, e))?;
            let bytes = encode("conf state", cs)?;
            meta.insert(KEY_CONF_STATE, bytes.as_slice())
                .map_err(|e| db_err(p, e))?;
            meta.insert(KEY_ADDRESSES, encode_addresses(addresses)?.as_slice())
                .map_err(|e| db_err(p, e))?;
        }
        txn.commit().map_err(|e| db_err(p, e))?;
        self.write_index().conf_state = cs.clone();
        Ok(())
    }

    /// Install a snapshot received from the leader (or the bootstrap
    /// snapshot): replaces the log; `addresses` are the members' addresses it
    /// carries.
    pub fn apply_snapshot(&self, snap: &Snapshot, addresses: &Addresses) -> Result<(), StoreError> {
        let p = &*self.path;
        let meta = snap.get_metadata();
        let mut hs = self.hard_state();
        hs.term = hs.term.max(meta.term);
        hs.commit = meta.index;
        let txn = self.begin_write()?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| db_err(p, e))?;
            log.retain(|_, _| false).map_err(|e| db_err(p, e))?;
            let mut m = txn.open_table(META).map_err(|e| db_err(p, e))?;
            m.insert(KEY_SNAPSHOT, encode("snapshot", snap)?.as_slice())
                .map_err(|e| db_err(p, e))?;
            m.insert(KEY_HARD_STATE, encode("hard state", &hs)?.as_slice())
                .map_err(|e| db_err(p, e))?;
            m.insert(
                KEY_CONF_STATE,
                encode("conf state", meta.get_conf_state())?.as_slice(),
            )
            .map_err(|e| db_err(p, e))?;
            m.insert(KEY_ADDRESSES, encode_addresses(addresses)?.as_slice())
                .map_err(|e| db_err(p, e))?;
        }
        txn.commit().map_err(|e| db_err(p, e))?;
        let mut idx = self.write_index();
        idx.snapshot_meta = meta.clone();
        idx.hard_state = hs;
        idx.conf_state = meta.get_conf_state().clone();
        idx.last = meta.index;
        Ok(())
    }

    /// Record a snapshot of the applied state at `index` and drop log entries
    /// up to it (keeping the snapshot's own entry term via its metadata).
    pub fn compact_to_snapshot(&self, index: u64, data: Vec<u8>) -> Result<(), StoreError> {
        let p = &*self.path;
        let term = raft::Storage::term(self, index).map_err(|e| StoreError::Corrupt {
            what: format!("term of entry {index}"),
            reason: e.to_string(),
        })?;
        let mut snap = Snapshot::default();
        snap.set_data(data.into());
        let meta = snap.mut_metadata();
        meta.index = index;
        meta.term = term;
        meta.set_conf_state(self.conf_state());
        // The applied index never exceeds the stored commit index, or raft-rs
        // refuses to restart from this snapshot.
        let mut hs = self.hard_state();
        hs.commit = hs.commit.max(index);
        let txn = self.begin_write()?;
        {
            let mut m = txn.open_table(META).map_err(|e| db_err(p, e))?;
            m.insert(KEY_SNAPSHOT, encode("snapshot", &snap)?.as_slice())
                .map_err(|e| db_err(p, e))?;
            m.insert(KEY_HARD_STATE, encode("hard state", &hs)?.as_slice())
                .map_err(|e| db_err(p, e))?;
            let mut log = txn.open_table(LOG).map_err(|e| db_err(p, e))?;
            log.retain_in(..=index, |_, _| false)
                .map_err(|e| db_err(p, e))?;
        }
        txn.commit().map_err(|e| db_err(p, e))?;
        let mut idx = self.write_index();
        idx.snapshot_meta = snap.get_metadata().clone();
        idx.last = idx.last.max(index);
        idx.hard_state = hs;
        drop(idx);
        // A wish for a snapshot up to here is fulfilled.
        let _ = self
            .wanted
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (w != 0 && w <= index).then_some(0)
            });
        Ok(())
    }

    /// The lowest snapshot index raft-rs asked for and could not get (0 = none).
    pub fn wanted_snapshot(&self) -> u64 {
        self.wanted.load(Ordering::Acquire)
    }

    /// The raw value of a meta key, if stored.
    fn read_meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let p = &*self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, e))?;
        let meta = match txn.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(db_err(p, e)),
        };
        let value = meta.get(key).map_err(|e| db_err(p, e))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// The stored member addresses, if any were ever stored.
    pub fn addresses(&self) -> Result<Option<Addresses>, StoreError> {
        self.read_meta(KEY_ADDRESSES)?
            .map(|v| {
                serde_json::from_slice(&v).map_err(|e| StoreError::Corrupt {
                    what: "addresses".to_string(),
                    reason: e.to_string(),
                })
            })
            .transpose()
    }

    /// The latest stored snapshot, if any.
    pub fn stored_snapshot(&self) -> Result<Option<Snapshot>, StoreError> {
        self.read_meta(KEY_SNAPSHOT)?
            .map(|v| decode("snapshot", &v))
            .transpose()
    }

    fn read_entries(
        &self,
        low: u64,
        high: u64,
        max_size: Option<u64>,
    ) -> Result<Vec<Entry>, StoreError> {
        let p = &*self.path;
        let txn = self.db.begin_read().map_err(|e| db_err(p, e))?;
        let log = txn.open_table(LOG).map_err(|e| db_err(p, e))?;
        let mut out = Vec::new();
        let mut size = 0u64;
        for item in log.range(low..high).map_err(|e| db_err(p, e))? {
            let (_, v) = item.map_err(|e| db_err(p, e))?;
            let bytes = v.value();
            size += bytes.len() as u64;
            if !out.is_empty() && max_size.is_some_and(|m| size > m) {
                break;
            }
            out.push(decode::<Entry>("entry", bytes)?);
        }
        Ok(out)
    }
}

impl raft::Storage for RaftStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let idx = self.read_index();
        Ok(RaftState::new(
            idx.hard_state.clone(),
            idx.conf_state.clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let (first, last) = {
            let idx = self.read_index();
            (idx.first(), idx.last)
        };
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > last + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let ents = self
            .read_entries(low, high, max_size.into())
            .map_err(to_raft)?;
        if ents.len() as u64 != high - low && ents.first().map(|e| e.index) != Some(low) {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let (snap_index, snap_term, last) = {
            let i = self.read_index();
            (i.snapshot_meta.index, i.snapshot_meta.term, i.last)
        };
        if idx == snap_index {
            return Ok(snap_term);
        }
        if idx < snap_index {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx > last {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let ents = self.read_entries(idx, idx + 1, None).map_err(to_raft)?;
        ents.first()
            .map(|e| e.term)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read_index().first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read_index().last)
    }

    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let stored = self.stored_snapshot().map_err(to_raft)?;
        // A snapshot is only useful to a replica its configuration names (a
        // replica added since would ignore it).
        let names_to = |s: &Snapshot| {
            let cs = s.get_metadata().get_conf_state();
            cs.voters.contains(&to)
                || cs.learners.contains(&to)
                || cs.voters_outgoing.contains(&to)
                || cs.learners_next.contains(&to)
        };
        match stored {
            Some(s) if s.get_metadata().index >= request_index && names_to(&s) => Ok(s),
            other => {
                // Ask the owner for a fresh one; raft-rs will ask again.
                let newer = other.map(|s| s.get_metadata().index + 1).unwrap_or(1);
                let want = request_index.max(newer);
                let _ = self
                    .wanted
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                        (w == 0 || want < w).then_some(want)
                    });
                Err(raft::Error::Store(
                    StorageError::SnapshotTemporarilyUnavailable,
                ))
            }
        }
    }
}

#[cfg(test)]
mod tests;
