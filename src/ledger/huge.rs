//! Transparent huge pages for the ledger's big tables: off unless the
//! environment says `KKS_HUGE_PAGES=on`.
//!
//! Why they can help: the cards, the accounts and the two indexes are read
//! at random (the key records live in blocks smaller than a huge page,
//! `blocks.rs`), and at national scale they are gigabytes.
//! With 4 KiB pages nearly every random read also misses the TLB and waits
//! for a page walk, and the CPU walks only a couple of pages at a time,
//! which caps how many of `Ledger::warm`'s prefetches are really in flight;
//! 2 MiB pages need 512 times fewer TLB entries. `cargo bench --bench
//! ledger` gains about a fifth with them (README's Speed table).
//!
//! Why they are off by default: Linux backs memory with huge pages only
//! where a program asks (`transparent_hugepage/enabled` is `madvise` on
//! most distributions), and with the usual `defrag` setting it then finds
//! each 2 MiB page at fault time, compacting memory if it must, on the
//! thread that touched it. The durable bulk drill, whose key store grows
//! all the time, lost 10–17% to that in back-to-back runs of README's
//! SQLite bulk drill with and without `KKS_HUGE_PAGES=on`. So this is for
//! deployments whose tables have reached their size, or whose kernel
//! defers defragmentation.
//!
//! When on, whenever one of the big vectors grows (or is restored from a
//! checkpoint) its memory is advised with `MADV_HUGEPAGE`, so the part not
//! written yet gets huge pages as it is first touched, and the part already
//! written is rebuilt as huge pages now (`MADV_COLLAPSE`; left to the
//! kernel's background scan it stayed on small pages for the whole ledger
//! bench). Growth itself stays `realloc`'s: growing by copying into fresh
//! advised memory measured slower. Elsewhere, and where the kernel
//! declines, these are plain vectors: the advice is a hint and failure is
//! harmless.

/// The huge page size on x86_64 and aarch64 Linux.
const HUGE_PAGE: usize = 2 << 20;

/// Advises `v`'s memory (best before it is first written: a zeroed vector
/// from `vec![zero; n]` is not touched until used).
pub(crate) fn advise_vec<T>(v: &Vec<T>) {
    advise(v.as_ptr(), v.capacity());
}

/// Pushes `item`, and advises the vector's memory whenever the push grew
/// it. Growth stays `realloc`'s (which moves a large block by remapping,
/// not copying); the collapse then rebuilds the moved part, once per
/// doubling.
pub(crate) fn push<T>(v: &mut Vec<T>, item: T) {
    let capacity = v.capacity();
    v.push(item);
    if v.capacity() != capacity {
        advise_vec(v);
    }
}

/// On when the environment says `KKS_HUGE_PAGES=on` (see the module
/// header for why not by default).
fn enabled() -> bool {
    static ENABLED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *ENABLED.get_or_init(|| std::env::var_os("KKS_HUGE_PAGES").is_some_and(|v| v == "on"))
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
        let range = (first as *mut libc::c_void, end - first);
        libc::madvise(range.0, range.1, libc::MADV_HUGEPAGE);
        // Linux ≥ 6.1; older kernels refuse, which is harmless.
        libc::madvise(range.0, range.1, libc::MADV_COLLAPSE);
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
        for n in 0..1_000_000u64 {
            push(&mut v, n);
        }
        assert!(v.iter().copied().eq(0..1_000_000));
    }
}
