//! [`KeyedLocks`]: one async mutex per key, made on first use, in a single
//! table. Holding a key's lock serializes work on that key (one pull of a
//! blob, one push into a partial upload) without holding up other keys.
//!
//! Invariants: the table's own (synchronous) lock is only ever held for a
//! map operation, never across an `.await`; a key's async lock is held for
//! as long as the work on that key lasts. An entry outlives its users only
//! until it is removed ([`KeyedLocks::remove`], [`KeyedLocks::release`]).
//!
//! Must not depend on: anything in this crate (it is a plain container).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, MutexGuard};

/// The lock of one key, guarding that key's value.
pub type KeyedLock<V> = Arc<tokio::sync::Mutex<V>>;

/// One async mutex per key (see the module docs).
#[derive(Debug)]
pub struct KeyedLocks<K, V = ()> {
    table: Mutex<HashMap<K, KeyedLock<V>>>,
}

impl<K, V> Default for KeyedLocks<K, V> {
    fn default() -> Self {
        KeyedLocks {
            table: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Eq + Hash + Clone, V> KeyedLocks<K, V> {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    fn table(&self) -> MutexGuard<'_, HashMap<K, KeyedLock<V>>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The lock of `key`, when it has one.
    pub fn get(&self, key: &K) -> Option<KeyedLock<V>> {
        self.table().get(key).cloned()
    }

    /// The lock of `key`, made (around `V::default()`) when it has none.
    pub fn get_or_insert(&self, key: &K) -> KeyedLock<V>
    where
        V: Default,
    {
        self.table().entry(key.clone()).or_default().clone()
    }

    /// Every key with a lock.
    pub fn keys(&self) -> Vec<K> {
        self.table().keys().cloned().collect()
    }

    /// Every key with its lock.
    pub fn entries(&self) -> Vec<(K, KeyedLock<V>)> {
        self.table()
            .iter()
            .map(|(k, l)| (k.clone(), l.clone()))
            .collect()
    }

    /// Forget `key`'s lock (whoever still holds a handle keeps it).
    pub fn remove(&self, key: &K) {
        self.table().remove(key);
    }

    /// Give back a handle from [`KeyedLocks::get_or_insert`]: the entry is
    /// removed when nobody else holds or waits for that lock.
    pub fn release(&self, key: &K, lock: KeyedLock<V>) {
        let mut table = self.table();
        // Only the table and `lock` hold it: nobody waits on it.
        if Arc::strong_count(&lock) <= 2 {
            table.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn release_keeps_a_lock_someone_else_holds() {
        let locks: KeyedLocks<u32> = KeyedLocks::new();
        let a = locks.get_or_insert(&1);
        let b = locks.get_or_insert(&1);
        assert!(Arc::ptr_eq(&a, &b), "one lock per key");
        locks.release(&1, a);
        assert_eq!(locks.keys(), vec![1], "b still holds it");
        locks.release(&1, b);
        assert!(locks.get(&1).is_none(), "last handle gone: entry removed");
    }

    #[tokio::test]
    async fn keys_lock_independently() {
        let locks: KeyedLocks<u32, u64> = KeyedLocks::new();
        let one = locks.get_or_insert(&1);
        let _held = one.try_lock().ok();
        assert!(locks.get_or_insert(&2).try_lock().is_ok());
        assert!(locks.get_or_insert(&1).try_lock().is_err());
        locks.remove(&1);
        assert_eq!(locks.entries().len(), 1);
    }
}
