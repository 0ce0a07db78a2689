//! A small per-shard pool of cleared response header maps.
//!
//! A fresh `HeaderMap` allocates twice on its first insert and frees twice
//! when dropped. Responses built with [`ResponseExt`](super::ResponseExt) take
//! a map from this pool, and the connection gives it back (cleared, capacity
//! kept) once the head is encoded.

use std::cell::RefCell;

use http::HeaderMap;

/// Most maps kept per shard; enough for a pipelined batch.
const POOL_SIZE: usize = 64;
/// Maps that grew larger than this are dropped instead of pooled.
const MAX_POOLED_CAPACITY: usize = 32;

thread_local! {
    static POOL: RefCell<Vec<HeaderMap>> = const { RefCell::new(Vec::new()) };
}

/// An empty map, reused when one is available.
#[inline]
pub(crate) fn take() -> HeaderMap {
    POOL.with(|pool| pool.borrow_mut().pop()).unwrap_or_default()
}

/// Puts `map` in place of `fresh`, the empty map of a response just made
/// with `Response::new` (how pooled maps get into responses).
#[inline]
pub(crate) fn install(fresh: &mut HeaderMap, map: HeaderMap) {
    let replaced = std::mem::replace(fresh, map);
    if replaced.capacity() == 0 && replaced.is_empty() {
        // `HeaderMap::new` allocates nothing, so there is nothing to free:
        // skipping the drop glue of its (empty) parts saves about 60
        // instructions a response.
        std::mem::forget(replaced);
    }
}

/// Returns a map to the pool (cleared; its allocation kept).
pub(crate) fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    map.clear();
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.len() < POOL_SIZE {
            pool.push(map);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{CONTENT_TYPE, HeaderValue};

    /// Gives back a map that held one field; returns its capacity.
    fn give_back_a_used_map() -> usize {
        let mut used = take();
        used.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let capacity = used.capacity();
        give_back(used);
        capacity
    }

    #[test]
    fn install_swaps_a_pooled_map_in() {
        let capacity = give_back_a_used_map();
        let mut response = http::Response::new(());
        install(response.headers_mut(), take());
        assert!(response.headers().is_empty());
        assert_eq!(response.headers().capacity(), capacity, "the pooled allocation");
    }

    #[test]
    fn maps_come_back_empty_with_their_allocation() {
        let capacity = give_back_a_used_map();
        let again = take();
        assert!(again.is_empty());
        assert_eq!(again.capacity(), capacity);
    }
}
