//! The idempotency key store: every keyed request's record, in the order
//! recorded, with an index from key to record.
//!
//! Why this shape: the store is the largest and coldest structure the hot
//! path touches (one record per request for the whole retention window,
//! tens of millions at national scale), and it is a sliding window: keys
//! are added at the back and expire from the front. So records live in a
//! `VecDeque` in arrival order (appends are sequential writes, expiry pops
//! the front, iteration for checkpoints is in order for free), and the
//! index ([`ProbeTable`]) maps a 64-bit seeded digest of the key to the
//! record's sequence number in 16-byte slots, so a lookup costs one cache
//! line instead of the four a map holding 184-byte records costs.
//! The full key is kept in the record and compared on every hit; the rare
//! keys whose digest collides with another live key go to a small overflow
//! map keyed by the full key, so a collision can never confuse two requests.

use std::collections::VecDeque;
use std::hash::BuildHasher;

use super::hash::{FastMap, FastState};
use super::state::{KeyOp, KeyRecord};
use super::table::{ProbeTable, Slot};
use super::types::RequestKey;

/// See the module header.
#[derive(Clone, Debug)]
pub(crate) struct KeyStore {
    digest: FastState,
    /// Slots `(digest, sequence number of the record)`; digests are never 0.
    index: ProbeTable,
    /// Full key → sequence number, for keys whose digest was taken.
    overflow: FastMap<RequestKey, u64>,
    /// Records in arrival order; `records[i]` has sequence `first + i`.
    records: VecDeque<(RequestKey, KeyRecord)>,
    first: u64,
    /// Disbursement credits past the retention window, oldest first: a
    /// credit's key is its (program, period, family) and must never be
    /// forgotten, or a re-run payment file would pay twice (DESIGN §4).
    kept: Vec<(RequestKey, KeyRecord)>,
    kept_index: FastMap<RequestKey, usize>,
    /// Tests only: every key gets the same digest, to exercise `overflow`.
    #[cfg(test)]
    collide_all: bool,
}

impl KeyStore {
    pub(crate) fn new() -> KeyStore {
        KeyStore {
            digest: FastState::new(),
            index: ProbeTable::new(),
            overflow: FastMap::default(),
            records: VecDeque::new(),
            first: 0,
            kept: Vec::new(),
            kept_index: FastMap::default(),
            #[cfg(test)]
            collide_all: false,
        }
    }

    #[cfg(test)]
    pub(crate) fn colliding() -> KeyStore {
        KeyStore {
            collide_all: true,
            ..KeyStore::new()
        }
    }

    fn digest_of(&self, key: &RequestKey) -> u64 {
        #[cfg(test)]
        if self.collide_all {
            return 7;
        }
        // 0 marks an empty index slot.
        self.digest.hash_one(key).max(1)
    }

    fn position(&self, key: &RequestKey) -> Option<usize> {
        let digest = self.digest_of(key);
        if let Some(Slot { b: seq, .. }) = self.index.find(digest, |s| s.a == digest) {
            let at = (seq - self.first) as usize;
            if self.records.get(at).is_some_and(|(k, _)| k == key) {
                return Some(at);
            }
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow
            .get(key)
            .map(|&seq| (seq - self.first) as usize)
    }

    /// The record for `key`.
    pub(crate) fn get(&self, key: &RequestKey) -> Option<&KeyRecord> {
        match self.position(key) {
            Some(at) => self.records.get(at).map(|(_, r)| r),
            None if self.kept.is_empty() => None,
            None => self.kept_index.get(key).map(|&i| &self.kept[i].1),
        }
    }

    /// The record for `key`, to update in place.
    pub(crate) fn get_mut(&mut self, key: &RequestKey) -> Option<&mut KeyRecord> {
        match self.position(key) {
            Some(at) => self.records.get_mut(at).map(|(_, r)| r),
            None if self.kept.is_empty() => None,
            None => match self.kept_index.get(key) {
                Some(&i) => Some(&mut self.kept[i].1),
                None => None,
            },
        }
    }

    /// Appends a record for a key that is not stored.
    ///
    /// The caller has looked the key up and found nothing (checked in debug
    /// builds and by `check_invariants`; a second lookup here would cost the
    /// hot path a digest and a probe).
    pub(crate) fn insert(&mut self, key: RequestKey, record: KeyRecord) {
        debug_assert!(self.position(&key).is_none(), "key recorded twice");
        let seq = self.first + self.records.len() as u64;
        let digest = self.digest_of(&key);
        let slot = Slot { a: digest, b: seq };
        if !self.index.insert(digest, slot, |s| s.a == digest, |s| s.a) {
            self.overflow.insert(key, seq);
        }
        self.records.push_back((key, record));
    }

    /// The oldest record.
    pub(crate) fn front(&self) -> Option<&(RequestKey, KeyRecord)> {
        self.records.front()
    }

    /// Drops the oldest record (a disbursement credit moves to `kept`).
    pub(crate) fn pop_front(&mut self) {
        let Some((key, record)) = self.records.pop_front() else {
            return;
        };
        if record.op == KeyOp::Credit {
            self.kept_index.insert(key, self.kept.len());
            self.kept.push((key, record));
        }
        let seq = self.first;
        self.first += 1;
        let digest = self.digest_of(&key);
        if !self
            .index
            .remove(digest, |s| s.a == digest && s.b == seq, |s| s.a)
        {
            let removed = self.overflow.remove(&key);
            assert_eq!(removed, Some(seq), "key store index lost a key");
        }
    }

    /// Records in arrival order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&RequestKey, &KeyRecord)> + '_ {
        self.kept
            .iter()
            .chain(self.records.iter())
            .map(|(k, r)| (k, r))
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.len() + self.records.len()
    }

    /// Brings the index line for `key` (and its record, if stored) into
    /// cache; see `Ledger::warm`.
    pub(crate) fn touch(&self, key: &RequestKey) -> u64 {
        let digest = self.digest_of(key);
        match self.index.touch(digest).a {
            d if d == digest => self.get(key).map_or(0, |r| r.at),
            d => d,
        }
    }

    /// The index covers exactly the records (for `check_invariants`).
    pub(crate) fn index_is_consistent(&self) -> bool {
        self.kept_index.len() == self.kept.len()
            && self.index.len() + self.overflow.len() == self.records.len()
            && self
                .records
                .iter()
                .enumerate()
                .all(|(i, (key, _))| self.position(key) == Some(i))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::{CardRef, Code, Fingerprint, KeyOp, Pan, Reply};

    fn record(at: u64) -> KeyRecord {
        KeyRecord {
            at,
            op: KeyOp::Inquiry,
            fingerprint: Fingerprint::ZERO,
            content: 0,
            target: CardRef::Pan(Pan::from_digits(b"6000020000000001").expect("pan")),
            amount: 0,
            reply: Reply::code(Code::Approved),
            posted: None,
            reversed: false,
        }
    }

    fn key(n: u64) -> RequestKey {
        RequestKey::new(format!("K{n}").as_bytes()).expect("short")
    }

    fn exercise(mut store: KeyStore) {
        for n in 0..100 {
            store.insert(key(n), record(n));
        }
        assert_eq!(store.len(), 100);
        assert!(store.index_is_consistent());
        for n in 0..100 {
            assert_eq!(store.get(&key(n)).map(|r| r.at), Some(n));
        }
        assert!(store.get(&key(100)).is_none());
        if let Some(r) = store.get_mut(&key(50)) {
            r.reversed = true;
        }
        for _ in 0..60 {
            store.pop_front();
        }
        assert!(store.index_is_consistent());
        assert!(store.get(&key(10)).is_none());
        assert_eq!(store.get(&key(70)).map(|r| r.at), Some(70));
        assert_eq!(store.front().map(|(k, _)| *k), Some(key(60)));
        store.insert(key(10), record(200));
        assert_eq!(store.get(&key(10)).map(|r| r.at), Some(200));
        let order: Vec<u64> = store.iter().map(|(_, r)| r.at).collect();
        assert_eq!(order.len(), 41);
        assert_eq!(order.last(), Some(&200));
        assert!(store.index_is_consistent());
    }

    #[test]
    fn ledger_key_store_in_order_with_expiry() {
        exercise(KeyStore::new());
    }

    #[test]
    fn ledger_key_store_survives_digest_collisions() {
        exercise(KeyStore::colliding());
    }
}
