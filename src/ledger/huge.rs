//! Transparent huge pages for the ledger's big tables.
//!
//! Why: the cards, the accounts, the two indexes and the key records are
//! read at random, and at national scale they are gigabytes. With 4 KiB
//! pages nearly every random read also misses the TLB and waits for a page
//! walk, and the CPU walks only a couple of pages at a time, which caps how
//! many of `Ledger::warm`'s prefetches are really in flight. Backed by
//! 2 MiB pages the same tables need 512 times fewer TLB entries
//! (`cargo bench --bench ledger`, see README's Speed table for the figures
//! with and without; `KKS_HUGE_PAGES=off` turns the advice off).
//!
//! Linux backs memory with huge pages only where a program asks for it
//! (`transparent_hugepage/enabled` is `madvise` on most distributions), so
//! whenever one of the big vectors grows (or is restored from a
//! checkpoint) these helpers advise its memory with `MADV_HUGEPAGE`: the
//! part not written yet gets huge pages as it is first touched, the part
//! already written when the kernel's background scan reaches it. Growth
//! itself stays `realloc`'s: growing by copying into fresh advised memory
//! measured slower, and asking for an immediate rebuild (`MADV_COLLAPSE`)
//! copies the whole table at every doubling (a tenth of the bulk drill's
//! CPU in a profile) for no gain in the ledger bench. Elsewhere, and where
//! the kernel declines, these are plain vectors: the advice is a hint and
//! failure is harmless.

use std::collections::VecDeque;

/// The huge page size on x86_64 and aarch64 Linux.
const HUGE_PAGE: usize = 2 << 20;

/// Advises `v`'s memory (best before it is first written: a zeroed vector
/// from `vec![zero; n]` is not touched until used).
pub(crate) fn advise_vec<T>(v: &Vec<T>) {
    advise(v.as_ptr(), v.capacity());
}

/// Pushes `item`, and advises the vector's memory whenever the push grew
/// it. Growth stays `realloc`'s (which moves a large block by remapping,
/// not copying).
pub(crate) fn push<T>(v: &mut Vec<T>, item: T) {
    let capacity = v.capacity();
    v.push(item);
    if v.capacity() != capacity {
        advise_vec(v);
    }
}

/// [`push`] for a queue.
pub(crate) fn push_back<T>(q: &mut VecDeque<T>, item: T) {
    let capacity = q.capacity();
    q.push_back(item);
    if q.capacity() != capacity {
        // Only the occupied part is known to lie inside the buffer.
        let (front, back) = q.as_slices();
        advise(front.as_ptr(), front.len());
        advise(back.as_ptr(), back.len());
    }
}

/// Off when the environment says `KKS_HUGE_PAGES=off` (to measure what the
/// advice is worth, or on a kernel where it misbehaves).
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("KKS_HUGE_PAGES").is_none_or(|v| v != "off"))
}

/// Asks the kernel to back the whole 2 MiB pages inside `capacity` items
/// from `start` with huge pages.
fn advise<T>(start: *const T, capacity: usize) {
    let bytes = capacity.saturating_mul(std::mem::size_of::<T>());
    if bytes < 2 * HUGE_PAGE || !enabled() {
        return;
    }
    let first = (start as usize).next_multiple_of(HUGE_PAGE);
    let end = (start as usize + bytes) / HUGE_PAGE * HUGE_PAGE;
    if end <= first {
        return;
    }
    #[cfg(target_os = "linux")]
    // SAFETY: `[first, end)` lies inside the allocation behind `start`,
    // which this process owns, and is page aligned. MADV_HUGEPAGE changes
    // only how the kernel backs those pages, never their contents or
    // mapping, so no Rust reference can observe it. The result is ignored:
    // a refusal leaves ordinary pages, which are correct, only slower.
    unsafe {
        libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (first, end);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_huge_vectors_keep_their_items_in_order() {
        let mut v: Vec<u64> = Vec::new();
        let mut q: VecDeque<u64> = VecDeque::new();
        let mut model: VecDeque<u64> = VecDeque::new();
        for n in 0..1_000_000u64 {
            push(&mut v, n);
            push_back(&mut q, n);
            model.push_back(n);
            if n % 3 == 0 {
                assert_eq!(q.pop_front(), model.pop_front());
            }
        }
        assert!(v.iter().copied().eq(0..1_000_000));
        assert_eq!(q, model);
    }
}
