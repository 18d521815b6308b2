//! The hasher for the ledger's in-memory indexes (PANs, families, merchant
//! ids, idempotency keys).
//!
//! Why not std's default: SipHash-1-3 costs tens of nanoseconds per key, and a
//! purchase makes four or five lookups; that alone was a third of the time
//! budget for 5M postings/s. Why not a plain FxHash: idempotency keys come
//! from the network (DE11, DE7 are the terminal's choice), so a fixed,
//! public hash would let a hostile terminal pile keys into one probe chain.
//! This is the folded-multiply construction (as in foldhash / wyhash): each
//! 64-bit word is mixed by a 64×64→128-bit multiply whose halves are xored,
//! starting from a random per-ledger seed. It is not cryptographic, only
//! seeded and fast, which is the usual trade for hash tables.
//!
//! The hash never reaches outcomes, the journal or snapshots (iteration
//! order is never used for anything observable), so the random seed does not
//! break determinism.

use std::hash::{BuildHasher, Hasher};

const MULTIPLIER: u64 = 0x9e37_79b9_7f4a_7c15;
const FINISH: u64 = 0xa076_1d64_78bd_642f;

#[inline(always)]
fn folded_multiply(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

/// Builds [`FastHasher`]s from one random seed.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FastState {
    seed: u64,
}

impl FastState {
    /// A state with a fresh random seed (taken from std's `RandomState`,
    /// which the OS seeds).
    pub(crate) fn new() -> FastState {
        let seed =
            std::collections::hash_map::RandomState::new().hash_one(0x6b6b_735f_6c65_6467u64);
        FastState { seed }
    }
}

impl Default for FastState {
    fn default() -> FastState {
        FastState::new()
    }
}

impl BuildHasher for FastState {
    type Hasher = FastHasher;

    #[inline(always)]
    fn build_hasher(&self) -> FastHasher {
        FastHasher {
            state: self.seed,
            seed: self.seed,
        }
    }
}

/// See the module header.
pub(crate) struct FastHasher {
    state: u64,
    seed: u64,
}

impl Hasher for FastHasher {
    #[inline(always)]
    fn write_u64(&mut self, word: u64) {
        self.state = folded_multiply(self.state ^ word, MULTIPLIER);
    }

    #[inline(always)]
    fn write_u8(&mut self, v: u8) {
        self.write_u64(u64::from(v));
    }

    #[inline(always)]
    fn write_u16(&mut self, v: u16) {
        self.write_u64(u64::from(v));
    }

    #[inline(always)]
    fn write_u32(&mut self, v: u32) {
        self.write_u64(u64::from(v));
    }

    #[inline(always)]
    fn write_usize(&mut self, v: usize) {
        self.write_u64(v as u64);
    }

    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        let mut word = [0u8; 8];
        word[..rest.len()].copy_from_slice(rest);
        self.write_u64(u64::from_le_bytes(word) ^ ((bytes.len() as u64) << 56));
    }

    #[inline(always)]
    fn finish(&self) -> u64 {
        folded_multiply(self.state, self.seed ^ FINISH)
    }
}

impl FastHasher {
    /// A hasher with a fixed seed, for fingerprints that must agree across
    /// runs (never for a table a network peer can fill).
    pub(crate) fn fixed() -> FastHasher {
        FastHasher {
            state: MULTIPLIER,
            seed: MULTIPLIER,
        }
    }
}

/// A `HashMap` with the fast seeded hasher.
pub(crate) type FastMap<K, V> = std::collections::HashMap<K, V, FastState>;

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::Hash;

    fn hash_of<T: Hash>(state: &FastState, v: &T) -> u64 {
        state.hash_one(v)
    }

    #[test]
    fn ledger_hash_differs_per_seed_and_per_value() {
        let (a, b) = (FastState::new(), FastState::new());
        let k = crate::ledger::RequestKey::new(b"020|002|TERM0001|000001").expect("short");
        let j = crate::ledger::RequestKey::new(b"020|002|TERM0001|000002").expect("short");
        assert_eq!(hash_of(&a, &k), hash_of(&a, &k));
        assert_ne!(hash_of(&a, &k), hash_of(&a, &j));
        assert_ne!(hash_of(&a, &k), hash_of(&b, &k));
    }
}
