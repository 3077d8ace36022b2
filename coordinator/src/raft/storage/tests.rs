//! Conformance tests for [`RaftStore`] against the `raft::Storage` contract.
#![allow(clippy::unwrap_used)]

use raft::Storage;
use std::collections::BTreeMap;

use raft::prelude::{ConfState, Entry, HardState};

use super::*;

fn ent(index: u64, term: u64) -> Entry {
    Entry {
        index,
        term,
        data: format!("e{index}t{term}").into_bytes().into(),
        ..Default::default()
    }
}

fn open(dir: &tempfile::TempDir) -> RaftStore {
    RaftStore::open(&dir.path().join("raft.redb")).unwrap()
}

#[test]
fn fresh_store_is_empty() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    assert!(s.is_empty());
    assert_eq!(s.first_index().unwrap(), 1);
    assert_eq!(s.last_index().unwrap(), 0);
    assert_eq!(s.term(0).unwrap(), 0);
}

#[test]
fn hard_state_and_entries_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = open(&dir);
        let hs = HardState {
            term: 7,
            vote: 3,
            commit: 2,
            ..Default::default()
        };
        s.persist(&[ent(1, 1), ent(2, 7)], Some(&hs)).unwrap();
    }
    let s = open(&dir);
    let st = s.initial_state().unwrap();
    assert_eq!(
        (st.hard_state.term, st.hard_state.vote, st.hard_state.commit),
        (7, 3, 2)
    );
    assert_eq!(s.last_index().unwrap(), 2);
    assert_eq!(s.term(2).unwrap(), 7);
    let got = s
        .entries(1, 3, None, GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(got, vec![ent(1, 1), ent(2, 7)]);
}

#[test]
fn conflicting_append_truncates_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.persist(&[ent(1, 1), ent(2, 1), ent(3, 1), ent(4, 1)], None)
        .unwrap();
    s.persist(&[ent(3, 2)], None).unwrap();
    assert_eq!(s.last_index().unwrap(), 3);
    assert_eq!(s.term(3).unwrap(), 2);
    assert!(matches!(
        s.term(4),
        Err(raft::Error::Store(StorageError::Unavailable))
    ));
    // A gap is refused.
    assert!(matches!(
        s.persist(&[ent(9, 2)], None),
        Err(StoreError::NonContiguous { .. })
    ));
}

#[test]
fn compaction_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    let ents: Vec<Entry> = (1..=10).map(|i| ent(i, 1 + i / 5)).collect();
    s.persist(&ents, None).unwrap();
    let cs = ConfState {
        voters: vec![1, 2],
        ..Default::default()
    };
    s.set_conf_state(&cs, &BTreeMap::new()).unwrap();
    s.compact_to_snapshot(5, b"state@5".to_vec()).unwrap();
    assert_eq!(s.first_index().unwrap(), 6);
    assert_eq!(s.last_index().unwrap(), 10);
    assert_eq!(s.term(5).unwrap(), 2, "snapshot index keeps its term");
    assert!(matches!(
        s.term(4),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert!(matches!(
        s.entries(4, 7, None, GetEntriesContext::empty(false)),
        Err(raft::Error::Store(StorageError::Compacted))
    ));
    assert_eq!(
        s.entries(6, 11, None, GetEntriesContext::empty(false))
            .unwrap()
            .len(),
        5
    );
    let snap = s.snapshot(5, 2).unwrap();
    assert_eq!(snap.get_metadata().index, 5);
    assert_eq!(snap.get_data(), b"state@5");
    assert_eq!(s.wanted_snapshot(), 0);
    assert!(s.snapshot(8, 2).is_err(), "stale snapshot is not offered");
    assert_eq!(s.wanted_snapshot(), 8, "a fresh snapshot is asked for");
    s.compact_to_snapshot(8, b"state@8".to_vec()).unwrap();
    assert_eq!(s.wanted_snapshot(), 0, "the wish is fulfilled");
    assert_eq!(s.hard_state().commit, 8, "commit never below a snapshot");
    drop(s);
    let s = open(&dir);
    assert_eq!(s.first_index().unwrap(), 9);
    assert_eq!(s.last_index().unwrap(), 10);
}

#[test]
fn snapshot_for_a_replica_it_does_not_name_is_redone() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.persist(&[ent(1, 1), ent(2, 1), ent(3, 1)], None).unwrap();
    let cs = ConfState {
        voters: vec![1, 2, 3],
        ..Default::default()
    };
    s.set_conf_state(&cs, &BTreeMap::new()).unwrap();
    s.compact_to_snapshot(2, b"old".to_vec()).unwrap();
    // Replica 4 was added later: the stored snapshot would be ignored there.
    assert!(matches!(
        s.snapshot(0, 4),
        Err(raft::Error::Store(
            StorageError::SnapshotTemporarilyUnavailable
        ))
    ));
    assert_eq!(s.wanted_snapshot(), 3);
    let cs = ConfState {
        voters: vec![1, 2, 3],
        learners: vec![4],
        ..Default::default()
    };
    s.set_conf_state(&cs, &BTreeMap::from([(4, "h:1".to_string())]))
        .unwrap();
    s.compact_to_snapshot(3, b"new".to_vec()).unwrap();
    assert_eq!(s.snapshot(0, 4).unwrap().get_data(), b"new");
    assert_eq!(
        s.addresses().unwrap(),
        Some(BTreeMap::from([(4, "h:1".to_string())]))
    );
}

#[test]
fn nothing_to_persist_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.persist(&[], None).unwrap();
    assert!(s.is_empty());
}

#[test]
fn size_limit_returns_at_least_one_entry() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.persist(&[ent(1, 1), ent(2, 1), ent(3, 1)], None).unwrap();
    let got = s
        .entries(1, 4, Some(1), GetEntriesContext::empty(false))
        .unwrap();
    assert_eq!(got.len(), 1);
}

#[test]
fn installing_a_snapshot_replaces_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let s = open(&dir);
    s.persist(&[ent(1, 1), ent(2, 1)], None).unwrap();
    let mut snap = Snapshot::default();
    snap.mut_metadata().index = 20;
    snap.mut_metadata().term = 4;
    snap.set_data(b"x".to_vec().into());
    s.apply_snapshot(&snap, &BTreeMap::new()).unwrap();
    assert_eq!(s.first_index().unwrap(), 21);
    assert_eq!(s.last_index().unwrap(), 20);
    assert_eq!(s.term(20).unwrap(), 4);
    assert_eq!(s.hard_state().commit, 20);
    s.persist(&[ent(21, 4)], None).unwrap();
    assert_eq!(s.last_index().unwrap(), 21);
}
