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
//! meaning empty (and `(0, 1)` reserved), and the caller passes the hash to
//! probe from, a predicate that recognises its slot, and (for growth and
//! removal) how to recompute any slot's hash.
//!
//! Growth is incremental. Doubling a bank's key table at once meant copying
//! hundreds of thousands of slots into tens of megabytes of fresh memory
//! inside one request, a stall for every request queued behind it (and a
//! bank gains a key per request, so under load its table doubles every few
//! seconds to minutes). Now the doubled table takes new slots at
//! once, and each insert copies the next [`MOVE_PER_INSERT`] slots of the
//! old one, so the old table is gone long before the new one is half full.
//! Until then a lookup that misses the new table probes the old one, where
//! a slot below the copy cursor counts as copied (the new table holds it,
//! or held it and it was removed) and a removed slot not yet copied becomes
//! a tombstone (`(0, 1)`) so the old table's probe runs stay whole.

use std::hash::BuildHasher;

use super::hash::FastState;
use super::state::CardState;
use super::types::{CardId, FamilyId, Pan};

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

/// Slots of the old table copied by each insert while the table grows: the
/// copy of an `n`-slot table ends after `n / 16` inserts, when the doubled
/// table is at most `1/4 + 1/32` full.
pub(crate) const MOVE_PER_INSERT: usize = 16;

/// A removed slot of the old table not yet copied (see the module header).
const TOMBSTONE: Slot = Slot { a: 0, b: 1 };

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
    /// Entries stored, in either table.
    len: usize,
    /// While growing, the previous table (else empty): its slots below
    /// `moved` have been copied into `slots`.
    old: Vec<Slot>,
    moved: usize,
}

impl ProbeTable {
    pub(crate) fn new() -> ProbeTable {
        ProbeTable {
            slots: empty_slots(SLOTS_MIN),
            len: 0,
            old: Vec::new(),
            moved: 0,
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
        if !self.old.is_empty() {
            prefetch(&self.old[(hash as usize) & (self.old.len() - 1)]);
        }
    }

    /// While growing: the index in the old table of the slot `is`
    /// recognises, if it has not been copied yet.
    fn locate_old(&self, hash: u64, is: impl Fn(&Slot) -> bool) -> Option<usize> {
        if self.old.is_empty() {
            return None;
        }
        let mask = self.old.len() - 1;
        let mut i = (hash as usize) & mask;
        loop {
            let slot = &self.old[i];
            if slot.is_empty() {
                return None;
            }
            if *slot != TOMBSTONE && is(slot) {
                // Below the cursor it was copied: the new table has the
                // say (it missed, so it was removed since).
                return (i >= self.moved).then_some(i);
            }
            i = (i + 1) & mask;
        }
    }

    /// Copies up to `count` more slots of the old table.
    fn move_some(&mut self, count: usize, hash_of: &impl Fn(&Slot) -> u64) {
        let end = self.moved.saturating_add(count).min(self.old.len());
        let mask = self.mask();
        for at in self.moved..end {
            let slot = self.old[at];
            if slot.is_empty() || slot == TOMBSTONE {
                continue;
            }
            // No duplicate check: a key is inserted into the new table only
            // when the old one does not hold it.
            let mut i = self.home(hash_of(&slot));
            while !self.slots[i].is_empty() {
                i = (i + 1) & mask;
            }
            self.slots[i] = slot;
        }
        self.moved = end;
        if self.moved == self.old.len() {
            self.old = Vec::new();
            self.moved = 0;
        }
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
        match self.locate(hash, &is) {
            Ok(i) => Some(self.slots[i]),
            Err(_) => self.locate_old(hash, is).map(|i| self.old[i]),
        }
    }

    /// Puts `new` in the first empty slot from `hash`'s home, unless a slot
    /// there is recognised by `is` (then nothing changes and `false`).
    /// `hash_of` recomputes any slot's hash (for growing).
    ///
    /// # Panics
    ///
    /// If `new` is the empty slot `(0, 0)` or the reserved `(0, 1)`.
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        new: Slot,
        is: impl Fn(&Slot) -> bool,
        hash_of: impl Fn(&Slot) -> u64,
    ) -> bool {
        assert!(
            !new.is_empty() && new != TOMBSTONE,
            "the empty slot cannot be stored"
        );
        if (self.len + 1) * 2 > self.slots.len() {
            // Not reached while a copy is under way (it ends first), but if
            // it were, the copy would be finished here.
            self.move_some(usize::MAX, &hash_of);
            let doubled = empty_slots(self.slots.len() * 2);
            self.old = std::mem::replace(&mut self.slots, doubled);
            self.moved = 0;
        }
        if !self.old.is_empty() {
            self.move_some(MOVE_PER_INSERT, &hash_of);
        }
        match self.locate(hash, &is) {
            Ok(_) => false,
            Err(_) if self.locate_old(hash, &is).is_some() => false,
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
        assert!(
            !new.is_empty() && new != TOMBSTONE,
            "the empty slot cannot be stored"
        );
        match self.locate(hash, &is) {
            Ok(i) => {
                self.slots[i] = new;
                true
            }
            Err(_) => match self.locate_old(hash, is) {
                Some(i) => {
                    self.old[i] = new;
                    true
                }
                None => false,
            },
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
        let i = match self.locate(hash, &is) {
            Ok(i) => i,
            Err(_) => {
                // Not copied yet: a tombstone keeps the old probe runs whole.
                let Some(i) = self.locate_old(hash, is) else {
                    return false;
                };
                self.old[i] = TOMBSTONE;
                self.len -= 1;
                return true;
            }
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
}

/// `n` empty slots, their memory advised for huge pages when those are on
/// (see `huge.rs`).
fn empty_slots(n: usize) -> Vec<Slot> {
    let slots = vec![Slot::default(); n];
    super::huge::advise_vec(&slots);
    slots
}

/// Key → card, for keys a card holds itself (its PAN, its family): a slot
/// is 4 bytes, the card id plus a few bits of the key's hash, and a lookup
/// confirms a match against the card. Linear probing, at most 3/4 full.
///
/// Why not slots holding the whole key (as [`ProbeTable`] does for the
/// idempotency keys): a bank holds millions of cards, and a 16-byte slot at
/// most half full cost 32–64 bytes per card per index, as much as a third of
/// the card itself. The card is read anyway by whoever looks it up (and
/// `Ledger::warm` prefetches it), and the hash bits above the card id make a
/// probe that lands on another card's slot almost never read that card.
#[derive(Clone, Debug)]
pub(crate) struct CardIndex {
    /// 0 is empty; else `tag << bits | (card + 1)`. Any length (not a
    /// power of two): the home slot is the hash scaled to the length, so a
    /// table built for a known count (a restore) is sized to it exactly.
    slots: Vec<u32>,
    len: usize,
    /// The card id's bits in a slot: `card + 1 < 2^bits`.
    bits: u32,
}

/// Bits needed to write `n`: `n < 2^width(n)`.
fn width(n: usize) -> u32 {
    usize::BITS - n.leading_zeros()
}

impl CardIndex {
    /// An index that holds `n` entries for cards below `n` without growing.
    pub(crate) fn with_capacity(n: usize) -> CardIndex {
        let slots = (n + n / 3 + 1).max(SLOTS_MIN);
        CardIndex::sized(slots, n)
    }

    /// An empty index of `slots` slots for card ids below `cards`.
    fn sized(slots: usize, cards: usize) -> CardIndex {
        let slots = vec![0u32; slots];
        super::huge::advise_vec(&slots);
        CardIndex {
            bits: width(slots.len().max(cards)).min(32),
            slots,
            len: 0,
        }
    }

    /// Whether this index holds `len` entries (at most 3/4 full) and card
    /// ids below `cards` (`card + 1` fits in `bits` bits).
    fn fits(&self, len: usize, cards: usize) -> bool {
        len * 4 <= self.slots.len() * 3 && (self.bits >= 32 || cards < (1usize << self.bits))
    }

    /// Entries stored.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The low word scaled to the length (Lemire's multiply-shift); the
        // tag comes from the high word.
        ((u64::from(hash as u32) * self.slots.len() as u64) >> 32) as usize
    }

    #[inline]
    fn next(&self, i: usize) -> usize {
        if i + 1 == self.slots.len() {
            0
        } else {
            i + 1
        }
    }

    /// The tag bits of a slot for `hash` (the hash's high word, which the
    /// home index does not use).
    fn tag(&self, hash: u64) -> u32 {
        if self.bits >= 32 {
            0
        } else {
            ((hash >> 32) as u32) << self.bits
        }
    }

    fn tag_mask(&self) -> u32 {
        if self.bits >= 32 {
            0
        } else {
            u32::MAX << self.bits
        }
    }

    fn card_of(&self, slot: u32) -> CardId {
        CardId((slot & !self.tag_mask()) - 1)
    }

    fn slot(&self, hash: u64, card: CardId) -> u32 {
        self.tag(hash) | (card.0 + 1)
    }

    /// Starts loading the home slot of `hash` (see [`prefetch`]).
    pub(crate) fn prefetch(&self, hash: u64) {
        prefetch(&self.slots[self.home(hash)]);
    }

    /// Probes from `hash`'s home: `Ok(i)` for the slot whose card `is`
    /// recognises, `Err(i)` for the first empty slot.
    fn locate(&self, hash: u64, is: impl Fn(CardId) -> bool) -> Result<usize, usize> {
        let tag = self.tag(hash);
        let tag_mask = self.tag_mask();
        let mut i = self.home(hash);
        loop {
            let slot = self.slots[i];
            if slot == 0 {
                return Err(i);
            }
            if slot & tag_mask == tag && is(self.card_of(slot)) {
                return Ok(i);
            }
            i = self.next(i);
        }
    }

    /// The first card filed under `hash`'s tag, unconfirmed (the card is
    /// not read): what `Ledger::warm` prefetches, so that reading the card
    /// to confirm it does not stall the warm-up on a cache miss per command.
    #[inline]
    pub(crate) fn candidate(&self, hash: u64) -> Option<CardId> {
        self.locate(hash, |_| true)
            .ok()
            .map(|i| self.card_of(self.slots[i]))
    }

    /// The card `is` recognises among those filed under `hash`.
    #[inline]
    pub(crate) fn find(&self, hash: u64, is: impl Fn(CardId) -> bool) -> Option<CardId> {
        self.locate(hash, is)
            .ok()
            .map(|i| self.card_of(self.slots[i]))
    }

    /// Files `card` under `hash`. If a card `is` recognises is there
    /// already: with `replace`, `card` takes its slot; else nothing changes
    /// and `false`. `hash_of` gives any filed card's hash (for growing).
    pub(crate) fn insert(
        &mut self,
        hash: u64,
        card: CardId,
        replace: bool,
        is: impl Fn(CardId) -> bool,
        hash_of: impl Fn(CardId) -> u64,
    ) -> bool {
        let cards = card.0 as usize + 1;
        if !self.fits(self.len + 1, cards) {
            let mut slots = self.slots.len();
            while (self.len + 1) * 4 > slots * 3 {
                slots *= 2;
            }
            self.grow(slots, cards, &hash_of);
        }
        match self.locate(hash, is) {
            Ok(i) => {
                if replace {
                    self.slots[i] = self.slot(hash, card);
                }
                replace
            }
            Err(i) => {
                self.slots[i] = self.slot(hash, card);
                self.len += 1;
                true
            }
        }
    }

    /// Rebuilds the index with `slots` slots for card ids below `cards`.
    fn grow(&mut self, slots: usize, cards: usize, hash_of: &impl Fn(CardId) -> u64) {
        let cards = cards.max(self.slots.len()).max(slots);
        let old = std::mem::replace(self, CardIndex::sized(slots, cards));
        for slot in old.slots.iter().copied().filter(|&s| s != 0) {
            let card = old.card_of(slot);
            let hash = hash_of(card);
            let mut i = self.home(hash);
            while self.slots[i] != 0 {
                i = self.next(i);
            }
            self.slots[i] = self.slot(hash, card);
        }
        self.len = old.len;
    }

    /// Every filed card, in slot order.
    pub(crate) fn cards(&self) -> impl Iterator<Item = CardId> + '_ {
        self.slots
            .iter()
            .filter(|&&s| s != 0)
            .map(|&s| self.card_of(s))
    }
}

/// PAN → card, on a [`CardIndex`] (the PAN is compared on the card).
#[derive(Clone, Debug)]
pub(crate) struct PanIndex {
    index: CardIndex,
    hasher: FastState,
}

impl PanIndex {
    pub(crate) fn new() -> PanIndex {
        PanIndex::with_capacity(0)
    }

    pub(crate) fn with_capacity(n: usize) -> PanIndex {
        PanIndex {
            index: CardIndex::with_capacity(n),
            hasher: FastState::new(),
        }
    }

    #[inline]
    fn hash(&self, pan: &Pan) -> u64 {
        self.hasher.hash_one(pan)
    }

    /// Starts loading the line `get(pan)` will read first.
    pub(crate) fn prefetch(&self, pan: &Pan) {
        self.index.prefetch(self.hash(pan));
    }

    /// The card most likely to have this PAN, unconfirmed (see
    /// [`CardIndex::candidate`]).
    #[inline]
    pub(crate) fn candidate(&self, pan: &Pan) -> Option<CardId> {
        self.index.candidate(self.hash(pan))
    }

    /// The card with this PAN.
    #[inline]
    pub(crate) fn get(&self, pan: &Pan, cards: &[CardState]) -> Option<CardId> {
        self.index
            .find(self.hash(pan), |c| cards[c.0 as usize].has_pan(pan))
    }

    /// Maps `pan` to `card` (already in `cards`); `false` (and no change)
    /// if another card has the PAN.
    pub(crate) fn insert(&mut self, pan: Pan, card: CardId, cards: &[CardState]) -> bool {
        let hasher = self.hasher;
        self.index.insert(
            self.hash(&pan),
            card,
            false,
            |c| c != card && cards[c.0 as usize].has_pan(&pan),
            |c| hasher.hash_one(cards[c.0 as usize].pan()),
        )
    }

    /// PANs stored.
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }
}

/// Family → its latest card, on a [`CardIndex`].
#[derive(Clone, Debug)]
pub(crate) struct FamilyIndex {
    index: CardIndex,
    hasher: FastState,
}

impl FamilyIndex {
    pub(crate) fn new() -> FamilyIndex {
        FamilyIndex::with_capacity(0)
    }

    pub(crate) fn with_capacity(n: usize) -> FamilyIndex {
        FamilyIndex {
            index: CardIndex::with_capacity(n),
            hasher: FastState::new(),
        }
    }

    #[inline]
    fn hash(&self, family: FamilyId) -> u64 {
        self.hasher.hash_one(family)
    }

    /// Starts loading the line `get(family)` will read first.
    pub(crate) fn prefetch(&self, family: FamilyId) {
        self.index.prefetch(self.hash(family));
    }

    /// The card most likely to be the family's latest, unconfirmed (see
    /// [`CardIndex::candidate`]).
    #[inline]
    pub(crate) fn candidate(&self, family: FamilyId) -> Option<CardId> {
        self.index.candidate(self.hash(family))
    }

    /// The family's latest card.
    #[inline]
    pub(crate) fn get(&self, family: FamilyId, cards: &[CardState]) -> Option<CardId> {
        self.index
            .find(self.hash(family), |c| cards[c.0 as usize].family == family)
    }

    /// Makes `card` (already in `cards`) the family's latest card.
    pub(crate) fn set(&mut self, family: FamilyId, card: CardId, cards: &[CardState]) {
        let hasher = self.hasher;
        self.index.insert(
            self.hash(family),
            card,
            true,
            |c| cards[c.0 as usize].family == family,
            |c| hasher.hash_one(cards[c.0 as usize].family),
        );
    }

    /// Families stored.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.index.len()
    }

    /// Every family's latest card.
    pub(crate) fn cards(&self) -> impl Iterator<Item = CardId> + '_ {
        self.index.cards()
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
        fn ledger_probe_table_matches_a_map(ops in proptest::collection::vec((0u8..5, 1u64..4_000), 1..5_000)) {
            let mut table = ProbeTable::new();
            let mut model = std::collections::HashMap::new();
            for (i, (op, k)) in ops.into_iter().enumerate() {
                let key = (k % 40) * 1024 + 990 + k / 40;
                let value = i as u64;
                match op {
                    0 | 1 => {
                        let fresh = !model.contains_key(&key);
                        let slot = Slot { a: key, b: value };
                        proptest::prop_assert_eq!(table.insert(key, slot, is(key), hash_of), fresh);
                        model.entry(key).or_insert(value);
                    }
                    2 => {
                        let present = model.remove(&key).is_some();
                        proptest::prop_assert_eq!(table.remove(key, is(key), hash_of), present);
                    }
                    3 => {
                        let present = model.contains_key(&key);
                        let slot = Slot { a: key, b: value };
                        proptest::prop_assert_eq!(table.replace(key, is(key), slot), present);
                        if present {
                            model.insert(key, value);
                        }
                    }
                    _ => {
                        proptest::prop_assert_eq!(table.find(key, is(key)).map(|s| s.b), model.get(&key).copied());
                    }
                }
                proptest::prop_assert_eq!(table.len(), model.len());
            }
            for (k, v) in &model {
                proptest::prop_assert_eq!(table.find(*k, is(*k)).map(|s| s.b), Some(*v));
            }
            proptest::prop_assert_eq!(table.find(999_999_999, is(999_999_999)), None);
        }
    }

    /// Growth is spread over later inserts: while the old table is being
    /// copied, every entry stays reachable, removed ones stay removed, and
    /// the copy ends well before the new table needs to grow again.
    #[test]
    fn ledger_probe_table_grows_in_steps() {
        let mut table = ProbeTable::new();
        let mut n = 0u64;
        // Fill to the first growth.
        while table.old.is_empty() {
            n += 1;
            assert!(table.insert(n, Slot { a: n, b: n }, is(n), hash_of));
        }
        let old_len = table.old.len();
        let first = n;
        assert_eq!(table.slots.len(), 2 * old_len);
        assert!(table.moved <= MOVE_PER_INSERT);
        // Remove some entries before they are copied, and replace others.
        for k in (1..=first).step_by(3) {
            assert!(table.remove(k, is(k), hash_of));
        }
        for k in (2..=first).step_by(3) {
            assert!(table.replace(
                k,
                is(k),
                Slot {
                    a: k,
                    b: k + 1_000_000
                }
            ));
        }
        let mut steps = 0;
        while !table.old.is_empty() {
            n += 1;
            steps += 1;
            assert!(table.insert(n, Slot { a: n, b: n }, is(n), hash_of));
            for k in 1..=n {
                let want = match k % 3 {
                    1 if k <= first => None,
                    2 if k <= first => Some(k + 1_000_000),
                    _ => Some(k),
                };
                assert_eq!(
                    table.find(k, is(k)).map(|s| s.b),
                    want,
                    "key {k} after {steps} steps"
                );
            }
        }
        assert_eq!(steps, old_len / MOVE_PER_INSERT - 1);
        assert!(table.len() * 4 < table.slots.len() + table.slots.len() / 8);
    }

    #[test]
    fn ledger_pan_index_is_exact() {
        use crate::ledger::{CardStatus, Pvv};
        let mut cards: Vec<CardState> = Vec::new();
        let mut index = PanIndex::new();
        let add = |cards: &mut Vec<CardState>, index: &mut PanIndex, p: Pan| {
            let id = CardId(cards.len() as u32);
            cards.push(CardState::new(
                p,
                FamilyId(1),
                Pvv([0; 32]),
                CardStatus::Active,
                crate::ledger::AccountId(2 + 2 * id.0),
                0,
            ));
            let fresh = index.insert(p, id, cards);
            if !fresh {
                cards.pop();
            }
            fresh
        };
        let a = Pan::from_digits(b"6000020000000016").expect("pan");
        let short = Pan::from_digits(b"0006000020000000016").expect("pan");
        assert!(add(&mut cards, &mut index, a));
        assert!(!add(&mut cards, &mut index, a));
        assert_eq!(index.get(&a, &cards), Some(CardId(0)));
        assert_eq!(index.get(&short, &cards), None, "same value, more digits");
        assert!(add(&mut cards, &mut index, short));
        for n in 0..5_000u64 {
            let p = Pan::from_digits(format!("600009{n:010}").as_bytes()).expect("pan");
            assert!(add(&mut cards, &mut index, p));
        }
        assert_eq!(index.len(), 5_002);
        assert_eq!(index.get(&short, &cards), Some(CardId(1)));
        let p = Pan::from_digits(b"6000090000004321").expect("pan");
        assert_eq!(index.get(&p, &cards), Some(CardId(4_323)));
    }

    #[test]
    fn ledger_family_index_keeps_the_latest_card() {
        use crate::ledger::{CardStatus, Pvv};
        let mut cards: Vec<CardState> = Vec::new();
        let mut index = FamilyIndex::new();
        for n in 0..20_000u64 {
            let id = CardId(cards.len() as u32);
            let pan = Pan::from_digits(format!("600009{n:010}").as_bytes()).expect("pan");
            cards.push(CardState::new(
                pan,
                FamilyId(n % 7_000),
                Pvv([0; 32]),
                CardStatus::Active,
                crate::ledger::AccountId(2 + 2 * id.0),
                0,
            ));
            index.set(FamilyId(n % 7_000), id, &cards);
        }
        assert_eq!(index.len(), 7_000);
        for f in 0..7_000u64 {
            let latest = if f + 14_000 < 20_000 {
                f + 14_000
            } else {
                f + 7_000
            };
            assert_eq!(index.get(FamilyId(f), &cards), Some(CardId(latest as u32)));
        }
        assert_eq!(index.get(FamilyId(7_000), &cards), None);
        assert_eq!(index.cards().count(), 7_000);
    }
}
