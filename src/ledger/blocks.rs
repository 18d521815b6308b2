//! A double-ended queue of `Copy` records kept in shared fixed-size blocks,
//! for the key store's records.
//!
//! Why: a checkpoint must capture the key store as of one batch, and the
//! store holds millions of records (184 bytes each). Copying them on the
//! shard's task stalled the bank, and faulting in the fresh copy's pages
//! cost as much again (memmove and page faults led the shard's profile in
//! the bulk drill while a checkpoint was taken). Here a
//! clone shares the blocks (one reference count per 4096 records); a block
//! is copied only when it is written while a clone still holds it
//! (copy-on-write), which after a checkpoint happens to the newest block
//! (appends) and to the rare old block a reversal marks.

use std::collections::VecDeque;
use std::sync::Arc;

/// Records per block: 4096 × 184 bytes ≈ 736 KiB.
const BLOCK: usize = 4096;

/// See the module header.
#[derive(Clone, Debug)]
pub(crate) struct Blocks<T: Copy> {
    blocks: VecDeque<Arc<Vec<T>>>,
    /// Records already popped from the front block.
    head: usize,
    len: usize,
}

impl<T: Copy> Blocks<T> {
    pub(crate) fn new() -> Blocks<T> {
        Blocks {
            blocks: VecDeque::new(),
            head: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    fn place(&self, i: usize) -> (usize, usize) {
        let at = self.head + i;
        (at / BLOCK, at % BLOCK)
    }

    pub(crate) fn get(&self, i: usize) -> Option<&T> {
        if i >= self.len {
            return None;
        }
        let (b, o) = self.place(i);
        self.blocks.get(b).and_then(|block| block.get(o))
    }

    /// The record at `i`, to change in place; its block is copied first if
    /// a clone still shares it.
    pub(crate) fn get_mut(&mut self, i: usize) -> Option<&mut T> {
        if i >= self.len {
            return None;
        }
        let (b, o) = self.place(i);
        self.blocks
            .get_mut(b)
            .and_then(|block| Arc::make_mut(block).get_mut(o))
    }

    pub(crate) fn front(&self) -> Option<&T> {
        self.get(0)
    }

    #[cfg(test)]
    pub(crate) fn back(&self) -> Option<&T> {
        self.len.checked_sub(1).and_then(|i| self.get(i))
    }

    pub(crate) fn push_back(&mut self, item: T) {
        let full = self.blocks.back().is_none_or(|b| b.len() == BLOCK);
        if full {
            self.blocks.push_back(Arc::new(Vec::with_capacity(BLOCK)));
        }
        let last = self.blocks.back_mut().expect("a block with room");
        if Arc::get_mut(last).is_none() {
            // Shared with a clone: copy it, keeping room for a full block.
            let mut copy = Vec::with_capacity(BLOCK);
            copy.extend_from_slice(last);
            *last = Arc::new(copy);
        }
        Arc::get_mut(last).expect("unshared").push(item);
        self.len += 1;
    }

    pub(crate) fn pop_front(&mut self) -> Option<T> {
        let item = *self.front()?;
        self.head += 1;
        self.len -= 1;
        if self.len == 0 {
            self.blocks.clear();
            self.head = 0;
        } else if self.head == BLOCK {
            // The front block is used up.
            self.blocks.pop_front();
            self.head = 0;
        }
        Some(item)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.blocks
            .iter()
            .enumerate()
            .flat_map(move |(b, block)| {
                let from = if b == 0 { self.head } else { 0 };
                block.get(from..).unwrap_or(&[]).iter()
            })
            .take(self.len)
    }

    /// Where the next `push_back` will write, if the newest block has room
    /// (for prefetching; never dereferenced here).
    pub(crate) fn next_slot(&self) -> Option<*const T> {
        let last = self.blocks.back()?;
        (last.len() < BLOCK).then(|| last.as_ptr().wrapping_add(last.len()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_blocks_behave_like_a_deque_and_clones_stay_frozen() {
        let mut blocks = Blocks::new();
        let mut model = VecDeque::new();
        let mut frozen: Vec<(Blocks<u64>, Vec<u64>)> = Vec::new();
        let mut x = 1u64;
        for step in 0..40_000u64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match x % 10 {
                0..=5 => {
                    blocks.push_back(step);
                    model.push_back(step);
                }
                6 | 7 => assert_eq!(blocks.pop_front(), model.pop_front()),
                8 => {
                    if !model.is_empty() {
                        let i = (x / 10) as usize % model.len();
                        *blocks.get_mut(i).expect("in range") += 1_000_000;
                        model[i] += 1_000_000;
                    }
                }
                _ => {
                    if frozen.len() < 8 {
                        frozen.push((blocks.clone(), model.iter().copied().collect()));
                    }
                }
            }
            assert_eq!(blocks.len(), model.len());
            assert_eq!(blocks.front(), model.front());
            assert_eq!(blocks.back(), model.back());
        }
        assert!(blocks.iter().copied().eq(model.iter().copied()));
        for i in 0..model.len() {
            assert_eq!(blocks.get(i), model.get(i));
        }
        assert_eq!(blocks.get(model.len()), None);
        // Clones kept what they held, whatever the original did since.
        assert!(!frozen.is_empty());
        for (clone, was) in &frozen {
            assert!(clone.iter().copied().eq(was.iter().copied()));
        }
        while let Some(v) = blocks.pop_front() {
            assert_eq!(Some(v), model.pop_front());
        }
        assert!(model.is_empty());
        assert_eq!(blocks.iter().count(), 0);
    }
}
