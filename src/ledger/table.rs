//! A small open-addressing hash table of 16-byte slots, for the two indexes
//! on the hot path: idempotency-key digest → record, PAN → card.
//!
//! Why not `std::collections::HashMap`: at 100 000 cards and hundreds of
//! thousands of live keys, a purchase is bound by cache misses, not by
//! instructions. A std map lookup is two dependent misses (control bytes,
//! then the bucket) and an insert lands in a bucket nobody could touch in
//! advance. Here a slot is 16 bytes with the whole key in it, the table is
//! at most half full and probed linearly, so a lookup or an insert almost
//! always touches only the home slot's cache line, which `Ledger::warm`
//! starts loading ahead of time ([`ProbeTable::prefetch`]). Removal shifts later
//! entries back (no tombstones), which suits the key store's sliding window.
//!
//! The caller supplies the slot's meaning: a slot is `(a, b)` with `(0, 0)`
//! meaning empty, and the caller passes the hash to probe from, a predicate
//! that recognises its slot, and (for growth and removal) how to recompute
//! any slot's hash.

use std::hash::BuildHasher;

use super::hash::FastState;
use super::types::{CardId, Pan};

/// Asks the CPU to start loading the cache line holding `value`, and goes
/// on at once.
///
/// Why an instruction rather than a plain read: a read that misses holds its
/// place in the CPU's reorder window until the line arrives, so a loop of
/// reads stalls once the window is full of them (about ten misses in flight
/// on the project machine); a prefetch retires at once and the miss is
/// tracked by the cache's own fill buffers, so `Ledger::warm` can put a whole
/// chunk's misses in flight and wait for them once.
#[inline(always)]
pub(crate) fn prefetch<T>(value: &T) {
    prefetch_address((value as *const T).cast::<u8>());
}

/// [`prefetch`] by address (never dereferenced, so any address will do).
#[inline(always)]
pub(crate) fn prefetch_address(address: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetch` is a hint with no architectural effect (it cannot
    // fault, even on a bad address, and changes no memory), and SSE, the
    // only feature it needs, is part of the x86_64 baseline.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(address.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Smallest table, in slots.
pub(crate) const SLOTS_MIN: usize = 1024;

/// A slot: two words whose meaning the caller defines; `(0, 0)` is empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Slot {
    pub(crate) a: u64,
    pub(crate) b: u64,
}

impl Slot {
    fn is_empty(&self) -> bool {
        self.a == 0 && self.b == 0
    }
}

/// See the module header.
#[derive(Clone, Debug)]
pub(crate) struct ProbeTable {
    slots: Vec<Slot>,
    len: usize,
}

impl ProbeTable {
    pub(crate) fn new() -> ProbeTable {
        ProbeTable {
            slots: empty_slots(SLOTS_MIN),
            len: 0,
        }
    }

    /// Occupied slots.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    fn home(&self, hash: u64) -> usize {
        // Hashes are folded multiplies: the low bits are as good as any.
        (hash as usize) & self.mask()
    }

    /// Starts loading the home slot's line of `hash` without waiting for it
    /// (see [`prefetch`]).
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(&self.slots[self.home(hash)]);
    }

    /// Probes from `hash`'s home: `Ok` with the index of the slot `is`
    /// recognises, or `Err` with the index of the first empty slot (where
    /// such a slot would go). The table is never full, so this ends.
    fn locate(&self, hash: u64, is: impl Fn(&Slot) -> bool) -> Result<usize, usize> {
        let mask = self.mask();
        let mut i = self.home(hash);
        loop {
            let slot = &self.slots[i];
            if slot.is_empty() {
                return Err(i);
            }
            if is(slot) {
                return Ok(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// The slot `is` recognises, probing from `hash`'s home.
    pub(crate) fn find(&self, hash: u64, is: impl Fn(&Slot) -> bool) -> Option<Slot> {
        self.locate(hash, is).ok().map(|i| self.slots[i])
    }

    /// Puts `new` in the first empty slot from `hash`'s home, unless a slot
    /// there is recognised by `is` (then nothing changes and `false`).
    /// `hash_of` recomputes any slot's hash (for growing).
    ///
    /// # Panics
    ///
    /// If `new` is the empty slot `(0, 0)`.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        new: Slot,
        is: impl Fn(&Slot) -> bool,
        hash_of: impl Fn(&Slot) -> u64,
    ) -> bool {
        assert!(!new.is_empty(), "the empty slot cannot be stored");
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow(&hash_of);
        }
        match self.locate(hash, is) {
            Ok(_) => false,
            Err(empty) => {
                self.slots[empty] = new;
                self.len += 1;
                true
            }
        }
    }

    /// Overwrites the slot `is` recognises (probing from `hash`'s home)
    /// with `new`, which must have the same hash; `false` if there is none.
    pub(crate) fn replace(&mut self, hash: u64, is: impl Fn(&Slot) -> bool, new: Slot) -> bool {
        assert!(!new.is_empty(), "the empty slot cannot be stored");
        match self.locate(hash, is) {
            Ok(i) => {
                self.slots[i] = new;
                true
            }
            Err(_) => false,
        }
    }

    /// Removes the slot `is` recognises, probing from `hash`'s home;
    /// `false` if there is none.
    pub(crate) fn remove(
        &mut self,
        hash: u64,
        is: impl Fn(&Slot) -> bool,
        hash_of: impl Fn(&Slot) -> u64,
    ) -> bool {
        let Ok(i) = self.locate(hash, is) else {
            return false;
        };
        let mask = self.mask();
        // Backward shift: pull later entries of the run into the hole when
        // the hole lies on their probe path (between their home and them).
        let mut hole = i;
        let mut j = i;
        loop {
            j = (j + 1) & mask;
            let slot = self.slots[j];
            if slot.is_empty() {
                break;
            }
            let home = self.home(hash_of(&slot));
            if (hole.wrapping_sub(home) & mask) < (j.wrapping_sub(home) & mask) {
                self.slots[hole] = slot;
                hole = j;
            }
        }
        self.slots[hole] = Slot::default();
        self.len -= 1;
        true
    }

    fn grow(&mut self, hash_of: &impl Fn(&Slot) -> u64) {
        let doubled = empty_slots(self.slots.len() * 2);
        let old = std::mem::replace(&mut self.slots, doubled);
        let mask = self.mask();
        for slot in old.into_iter().filter(|s| !s.is_empty()) {
            let mut i = self.home(hash_of(&slot));
            while !self.slots[i].is_empty() {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
    }
}

/// `n` empty slots, their memory advised for huge pages when those are on
/// (see `huge.rs`).
fn empty_slots(n: usize) -> Vec<Slot> {
    let slots = vec![Slot::default(); n];
    super::huge::advise_vec(&slots);
    slots
}

/// PAN → card, on a [`ProbeTable`]: slot `a` is the PAN's numeric value,
/// `b` its digit count (≥ 1, so `b` is never 0) above the card id.
#[derive(Clone, Debug)]
pub(crate) struct PanIndex {
    table: ProbeTable,
    hasher: FastState,
}

impl PanIndex {
    pub(crate) fn new() -> PanIndex {
        PanIndex {
            table: ProbeTable::new(),
            hasher: FastState::new(),
        }
    }

    fn hash(&self, pan: &Pan) -> u64 {
        self.hasher.hash_one(pan)
    }

    fn is(pan: Pan) -> impl Fn(&Slot) -> bool {
        move |s: &Slot| s.a == pan.value() && (s.b >> 32) == u64::from(pan.digits())
    }

    /// Starts loading the line `get(pan)` will read first.
    pub(crate) fn prefetch(&self, pan: &Pan) {
        self.table.prefetch(self.hash(pan));
    }

    /// The card with this PAN.
    pub(crate) fn get(&self, pan: &Pan) -> Option<CardId> {
        self.table
            .find(self.hash(pan), PanIndex::is(*pan))
            .map(|s| CardId(s.b as u32)) // the low 32 bits are the card id
    }

    /// Whether a card has this PAN.
    pub(crate) fn contains(&self, pan: &Pan) -> bool {
        self.get(pan).is_some()
    }

    /// Maps `pan` to `card`; `false` (and no change) if the PAN is taken.
    pub(crate) fn insert(&mut self, pan: Pan, card: CardId) -> bool {
        let slot = Slot {
            a: pan.value(),
            b: u64::from(pan.digits()) << 32 | u64::from(card.0),
        };
        let hasher = self.hasher;
        self.table
            .insert(self.hash(&pan), slot, PanIndex::is(pan), |s| {
                // Slots only ever hold valid PANs.
                Pan::from_parts(s.a, (s.b >> 32) as u8).map_or(0, |p| hasher.hash_one(p))
            })
    }

    /// PANs stored.
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Slots (key, value) with the key as its own hash.
    fn is(key: u64) -> impl Fn(&Slot) -> bool {
        move |s: &Slot| s.a == key
    }

    fn hash_of(s: &Slot) -> u64 {
        s.a
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config {
            failure_persistence: Some(Box::new(
                proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
            )),
            ..proptest::test_runner::Config::default()
        })]

        /// The table agrees with a `HashMap` through inserts and removals:
        /// keys cluster around the end of the table so runs are long and
        /// wrap, and there are enough of them to grow it.
        #[test]
        fn ledger_probe_table_matches_a_map(ops in proptest::collection::vec((0u8..3, 1u64..2_000), 1..3_000)) {
            let mut table = ProbeTable::new();
            let mut model = std::collections::HashMap::new();
            for (i, (op, k)) in ops.into_iter().enumerate() {
                let key = (k % 40) * 1024 + 990 + k / 40;
                let value = i as u64;
                if op < 2 {
                    let fresh = !model.contains_key(&key);
                    let slot = Slot { a: key, b: value };
                    proptest::prop_assert_eq!(table.insert(key, slot, is(key), hash_of), fresh);
                    model.entry(key).or_insert(value);
                } else {
                    let present = model.remove(&key).is_some();
                    proptest::prop_assert_eq!(table.remove(key, is(key), hash_of), present);
                }
                proptest::prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                proptest::prop_assert_eq!(table.find(*k, is(*k)).map(|s| s.b), Some(*v));
            }
            proptest::prop_assert_eq!(table.find(999_999_999, is(999_999_999)), None);
        }
    }

    #[test]
    fn ledger_pan_index_is_exact() {
        let mut index = PanIndex::new();
        let a = Pan::from_digits(b"6000020000000016").expect("pan");
        let short = Pan::from_digits(b"0006000020000000016").expect("pan");
        assert!(index.insert(a, CardId(7)));
        assert!(!index.insert(a, CardId(8)));
        assert_eq!(index.get(&a), Some(CardId(7)));
        assert_eq!(index.get(&short), None, "same value, more digits");
        assert!(index.insert(short, CardId(9)));
        for n in 0..5_000u64 {
            let p = Pan::from_digits(format!("600009{n:010}").as_bytes()).expect("pan");
            assert!(index.insert(p, CardId(100 + n as u32)));
        }
        assert_eq!(index.len(), 5_002);
        assert_eq!(index.get(&short), Some(CardId(9)));
        let p = Pan::from_digits(b"6000090000004321").expect("pan");
        assert_eq!(index.get(&p), Some(CardId(4_421)));
    }
}
