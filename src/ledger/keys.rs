//! The idempotency key store: every keyed request's record, in the order
//! recorded, with an index from key to record.
//!
//! Why this shape: the store is the largest and coldest structure the hot
//! path touches (one record per request for the whole retention window,
//! tens of millions at national scale), and it is a sliding window: keys
//! are added at the back and expire from the front. So records live in a
//! deque of shared blocks in arrival order (`blocks.rs`: appends are
//! sequential writes, expiry pops the front, iteration for checkpoints is
//! in order for free, and a checkpoint's copy shares the blocks), and the
//! index ([`ProbeTable`]) maps a 64-bit seeded digest of the key to the
//! record's sequence number in 16-byte slots, so a lookup costs one cache
//! line instead of the four a map holding 184-byte records costs.
//! The full key is kept in the record and compared on every hit; the rare
//! keys whose digest collides with another live key go to a small overflow
//! map keyed by the full key, so a collision can never confuse two requests.
//!
//! Disbursement credits outlive the window (their key must never be
//! forgotten, DESIGN §4): when one reaches the front it moves to `kept`, and
//! its index slot is repointed there rather than moved to a second map, so a
//! lookup is still one probe (a second map would cost every new key a second,
//! unprefetched miss to prove it is not a kept credit).

use std::hash::BuildHasher;

use super::blocks::Blocks;
use super::hash::{FastMap, FastState};
use super::state::{KeyOp, KeyRecord};
use super::table::{ProbeTable, Slot};
use super::types::RequestKey;

/// Marks a place in `kept` (sequence numbers stay far below it).
const KEPT: u64 = 1 << 63;

/// Where a key's record is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Place {
    /// `records[i]`.
    Live(usize),
    /// `kept[i]`.
    Kept(usize),
}

/// A copy of a key store's records taken by [`KeyStore::frozen`].
#[derive(Clone, Debug)]
pub(crate) struct FrozenKeys {
    kept: Blocks<(RequestKey, KeyRecord)>,
    records: Blocks<(RequestKey, KeyRecord)>,
}

impl FrozenKeys {
    /// Records in arrival order, as [`KeyStore::iter`] gave them.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &(RequestKey, KeyRecord)> + '_ {
        self.kept.iter().chain(self.records.iter())
    }

    pub(crate) fn len(&self) -> usize {
        self.kept.len() + self.records.len()
    }
}

/// See the module header.
#[derive(Clone, Debug)]
pub(crate) struct KeyStore {
    digest: FastState,
    /// Slots `(digest, place)`; digests are never 0. A place is a record's
    /// sequence number, or [`KEPT`] plus an index into `kept`.
    index: ProbeTable,
    /// Full key → place, for keys whose digest was taken.
    overflow: FastMap<RequestKey, u64>,
    /// Records in arrival order; `records[i]` has sequence `first + i`.
    /// Shared blocks, so a checkpoint's copy of the store is cheap.
    records: Blocks<(RequestKey, KeyRecord)>,
    first: u64,
    /// Disbursement credits past the retention window, oldest first: a
    /// credit's key is its (program, period, family) and must never be
    /// forgotten, or a re-run payment file would pay twice (DESIGN §4).
    kept: Blocks<(RequestKey, KeyRecord)>,
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
            records: Blocks::new(),
            first: 0,
            kept: Blocks::new(),
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

    fn place(&self, tagged: u64) -> Place {
        if tagged & KEPT != 0 {
            Place::Kept((tagged & !KEPT) as usize)
        } else {
            Place::Live((tagged - self.first) as usize)
        }
    }

    fn entry(&self, place: Place) -> Option<&(RequestKey, KeyRecord)> {
        match place {
            Place::Live(at) => self.records.get(at),
            Place::Kept(at) => self.kept.get(at),
        }
    }

    #[inline]
    fn position(&self, key: &RequestKey) -> Option<Place> {
        let digest = self.digest_of(key);
        if let Some(Slot { b: tagged, .. }) = self.index.find(digest, |s| s.a == digest) {
            let place = self.place(tagged);
            if self.entry(place).is_some_and(|(k, _)| k == key) {
                return Some(place);
            }
        }
        if self.overflow.is_empty() {
            return None;
        }
        self.overflow.get(key).map(|&tagged| self.place(tagged))
    }

    /// The record for `key`.
    #[inline]
    pub(crate) fn get(&self, key: &RequestKey) -> Option<&KeyRecord> {
        self.position(key)
            .and_then(|place| self.entry(place))
            .map(|(_, r)| r)
    }

    /// The record for `key`, to update in place.
    pub(crate) fn get_mut(&mut self, key: &RequestKey) -> Option<&mut KeyRecord> {
        match self.position(key)? {
            Place::Live(at) => self.records.get_mut(at).map(|(_, r)| r),
            Place::Kept(at) => self.kept.get_mut(at).map(|(_, r)| r),
        }
    }

    /// Appends a record for a key that is not stored.
    ///
    /// The caller has looked the key up and found nothing (checked in debug
    /// builds and by `check_invariants`; a second lookup here would cost the
    /// hot path a digest and a probe).
    #[inline]
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
        let seq = self.first;
        self.first += 1;
        let digest = self.digest_of(&key);
        let is = |s: &Slot| s.a == digest && s.b == seq;
        if record.op == KeyOp::Credit {
            let kept = KEPT | self.kept.len() as u64;
            self.kept.push_back((key, record));
            if !self.index.replace(digest, is, Slot { a: digest, b: kept }) {
                let moved = self.overflow.insert(key, kept);
                assert_eq!(moved, Some(seq), "key store index lost a key");
            }
            return;
        }
        if !self.index.remove(digest, is, |s| s.a) {
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

    /// The records in arrival order, as of now, sharing memory with the
    /// store (see `blocks.rs`): kept credits, then live records.
    pub(crate) fn frozen(&self) -> FrozenKeys {
        FrozenKeys {
            kept: self.kept.clone(),
            records: self.records.clone(),
        }
    }

    /// Starts loading the memory the next `count` appended records will be
    /// written to: the newest block's free slots after the newest record,
    /// never in cache. (If the block fills first, the hint is wasted,
    /// nothing more.)
    pub(crate) fn prefetch_appends(&self, count: usize) {
        let Some(next) = self.records.next_slot() else {
            return;
        };
        let size = std::mem::size_of::<(RequestKey, KeyRecord)>();
        let next = next.cast::<u8>();
        for offset in (0..size * count).step_by(64) {
            super::table::prefetch_address(next.wrapping_add(offset));
        }
    }

    /// Starts loading the index line `key`'s lookup reads first; returns
    /// the digest for [`KeyStore::prefetch_record`].
    pub(crate) fn prefetch_slot(&self, key: &RequestKey) -> u64 {
        let digest = self.digest_of(key);
        self.index.prefetch(digest);
        digest
    }

    /// If the index (already in cache, see [`KeyStore::prefetch_slot`])
    /// points `digest` at a record, starts loading that record's line.
    pub(crate) fn prefetch_record(&self, digest: u64) {
        if let Some(Slot { b: tagged, .. }) = self.index.find(digest, |s| s.a == digest) {
            if let Some(entry) = self.entry(self.place(tagged)) {
                super::table::prefetch(entry);
            }
        }
    }

    /// The index covers exactly the records (for `check_invariants`).
    pub(crate) fn index_is_consistent(&self) -> bool {
        self.index.len() + self.overflow.len() == self.records.len() + self.kept.len()
            && self
                .records
                .iter()
                .enumerate()
                .all(|(i, (key, _))| self.position(key) == Some(Place::Live(i)))
            && self
                .kept
                .iter()
                .enumerate()
                .all(|(i, (key, _))| self.position(key) == Some(Place::Kept(i)))
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

    /// Every 7th key is a disbursement credit, which outlives expiry.
    fn op(n: u64) -> KeyOp {
        if n.is_multiple_of(7) {
            KeyOp::Credit
        } else {
            KeyOp::Inquiry
        }
    }

    fn exercise(mut store: KeyStore) {
        for n in 0..100 {
            store.insert(
                key(n),
                KeyRecord {
                    op: op(n),
                    ..record(n)
                },
            );
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
        // Credits 0, 7, …, 56 are kept; the other expired keys are gone.
        let kept: Vec<u64> = (0..60u64).filter(|n| n.is_multiple_of(7)).collect();
        for n in 0..60 {
            let found = store.get(&key(n)).map(|r| r.at);
            assert_eq!(found, kept.contains(&n).then_some(n), "key {n}");
        }
        if let Some(r) = store.get_mut(&key(14)) {
            r.reversed = true;
        }
        assert_eq!(store.get(&key(14)).map(|r| r.reversed), Some(true));
        assert_eq!(store.get(&key(70)).map(|r| r.at), Some(70));
        assert_eq!(store.front().map(|(k, _)| *k), Some(key(60)));
        store.insert(key(10), record(200));
        assert_eq!(store.get(&key(10)).map(|r| r.at), Some(200));
        let order: Vec<u64> = store.iter().map(|(_, r)| r.at).collect();
        assert_eq!(order.len(), kept.len() + 41);
        assert_eq!(order[..kept.len()], kept[..]);
        assert_eq!(order.last(), Some(&200));
        assert!(store.index_is_consistent());
        // Expiring everything leaves exactly the credits.
        for _ in 0..41 {
            store.pop_front();
        }
        assert!(store.index_is_consistent());
        assert_eq!(
            store.len(),
            kept.len() + (60..100u64).filter(|n| n.is_multiple_of(7)).count()
        );
        assert!(store.get(&key(98)).is_some());
        assert!(store.get(&key(99)).is_none());
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
