//! The global allocator skitai's programs use: mimalloc, called the way
//! the standard library calls `malloc`.
//!
//! The `mimalloc` crate sends every allocation through `mi_malloc_aligned`,
//! whose alignment handling costs about 50 instructions more than
//! `mi_malloc`'s fast path; a request's header map makes two allocations.
//! Like `std`'s `System` allocator, [`Mimalloc`] asks for plain `mi_malloc`
//! whenever the layout's alignment is one `malloc` already guarantees.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as ffi;

/// The alignment of every `mi_malloc` block larger than a word (mimalloc's
/// `MI_MAX_ALIGN_SIZE`, C's `max_align_t` on 64-bit Linux: with it larger
/// than a word, mimalloc rounds block sizes to two words); one-word blocks
/// are word-aligned.
const MALLOC_ALIGN: usize = 16;

/// mimalloc as a Rust global allocator:
/// `#[global_allocator] static GLOBAL: skitai::Mimalloc = skitai::Mimalloc;`
#[derive(Debug, Clone, Copy, Default)]
pub struct Mimalloc;

/// Whether `mi_malloc(size)` already returns memory aligned for `layout`
/// (the standard library's rule for `malloc`).
#[inline(always)]
fn malloc_aligns(align: usize, size: usize) -> bool {
    align <= MALLOC_ALIGN && align <= size
}

// SAFETY: every method forwards to mimalloc, which returns blocks of at
// least the requested size (or null on failure) and frees any block it
// returned from any thread. Plain `mi_malloc`/`mi_zalloc`/`mi_realloc` are
// used only when `malloc_aligns` holds, for which mimalloc, like every
// conforming `malloc`, returns suitably aligned memory; otherwise the
// `_aligned` variants get the alignment explicitly.
unsafe impl GlobalAlloc for Mimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: see the impl's comment; `layout.size()` is non-zero by
        // `GlobalAlloc`'s contract.
        unsafe {
            if malloc_aligns(layout.align(), layout.size()) {
                ffi::mi_malloc(layout.size()).cast()
            } else {
                ffi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe {
            if malloc_aligns(layout.align(), layout.size()) {
                ffi::mi_zalloc(layout.size()).cast()
            } else {
                ffi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (the caller's contract),
        // so from mimalloc.
        unsafe { ffi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from mimalloc with `layout`; the block it
        // returns keeps `layout.align()` by the same rule as `alloc`.
        unsafe {
            if malloc_aligns(layout.align(), new_size) {
                ffi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                ffi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Allocates, checks alignment and contents survive a realloc, frees.
    fn round_trip(size: usize, align: usize, grown: usize) {
        let layout = Layout::from_size_align(size, align).expect("layout");
        // SAFETY: a non-zero-size layout; the pointer is used within it and freed once.
        unsafe {
            let p = Mimalloc.alloc(layout);
            assert!(!p.is_null());
            assert_eq!(p as usize % align, 0, "size {size} align {align}");
            p.write_bytes(0xA5, size);
            let q = Mimalloc.realloc(p, layout, grown);
            assert!(!q.is_null());
            assert_eq!(q as usize % align, 0, "realloc to {grown}, align {align}");
            assert!(std::slice::from_raw_parts(q, size.min(grown)).iter().all(|&b| b == 0xA5));
            Mimalloc.dealloc(q, Layout::from_size_align(grown, align).expect("layout"));
        }
    }

    #[test]
    fn blocks_are_aligned_for_every_layout() {
        for align in [1, 2, 4, 8, 16, 32, 64, 4096] {
            for size in [1, 3, 8, 15, 16, 24, 100, 4097, 1 << 20] {
                round_trip(size, align, size * 2 + 1);
                round_trip(size.max(2), align, size / 2 + 1);
            }
        }
    }

    #[test]
    fn zeroed_blocks_are_zero() {
        for (size, align) in [(24, 8), (64, 64), (1 << 16, 16)] {
            let layout = Layout::from_size_align(size, align).expect("layout");
            // SAFETY: a non-zero-size layout, read within bounds, freed once.
            unsafe {
                let p = Mimalloc.alloc_zeroed(layout);
                assert_eq!(p as usize % align, 0);
                assert!(std::slice::from_raw_parts(p, size).iter().all(|&b| b == 0));
                Mimalloc.dealloc(p, layout);
            }
        }
    }
}
