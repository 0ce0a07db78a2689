//! Small per-shard pools of response header maps (at most 64 in each of four).
//!
//! A fresh `HeaderMap` allocates twice on its first insert and frees twice
//! when dropped. Responses built with [`ResponseExt`](super::ResponseExt) take
//! a map from this pool, and the connection gives it back (cleared, capacity
//! kept) once the head is encoded. A map that holds nothing but one of the
//! content types `ResponseExt` sets goes back with it, for the next response
//! of that type.

use std::cell::RefCell;

use http::HeaderMap;
use http::header::{CONTENT_TYPE, HeaderValue};

/// Most maps kept per shard in each pool (four pools: empty maps and one per
/// [`Typed`] content type); enough for a pipelined batch.
const POOL_SIZE: usize = 64;
/// Maps that grew larger than this are dropped instead of pooled.
const MAX_POOLED_CAPACITY: usize = 32;

/// The `Content-Type` values [`ResponseExt`](super::ResponseExt) sets. A map
/// given back holding nothing but one of them keeps it, in that type's pool:
/// the next response of the type takes it as it is, where clearing it and
/// inserting the field again cost about 200 instructions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Typed {
    /// `text/plain; charset=utf-8`.
    TextPlain,
    /// `text/html; charset=utf-8`.
    TextHtml,
    /// `application/json`.
    Json,
}

// Statics, not constants: each is one value at one address, so a map's
// field can be recognised as ours by where its bytes are (a constant is
// copied at every use, and its bytes may be too). `HeaderValue::from_static`
// validates every byte when called at run time; here the check happens once,
// at compile time.
static TEXT_PLAIN_UTF8: HeaderValue = HeaderValue::from_static("text/plain; charset=utf-8");
static TEXT_HTML_UTF8: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");
static APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");

impl Typed {
    /// The field's value.
    pub(crate) fn value(self) -> &'static HeaderValue {
        match self {
            Typed::TextPlain => &TEXT_PLAIN_UTF8,
            Typed::TextHtml => &TEXT_HTML_UTF8,
            Typed::Json => &APPLICATION_JSON,
        }
    }

    /// The type `value` is, if it is one of our own statics: the same
    /// bytes made elsewhere (a request's field echoed, say) are not kept,
    /// since they may hold a much larger buffer alive while the map waits in
    /// the pool; nor is a value marked sensitive.
    #[inline]
    fn of(value: &HeaderValue) -> Option<Typed> {
        let bytes = value.as_bytes();
        // The lengths differ: one address comparison at most.
        let kind = match bytes.len() {
            n if n == Typed::TextPlain.value().len() => Typed::TextPlain,
            n if n == Typed::TextHtml.value().len() => Typed::TextHtml,
            n if n == Typed::Json.value().len() => Typed::Json,
            _ => return None,
        };
        (std::ptr::eq(bytes, kind.value().as_bytes()) && !value.is_sensitive()).then_some(kind)
    }
}

/// Empty maps, and maps holding only a [`Typed`] content type.
struct Pools {
    empty: Vec<HeaderMap>,
    typed: [Vec<HeaderMap>; 3],
}

thread_local! {
    static POOLS: RefCell<Pools> =
        const { RefCell::new(Pools { empty: Vec::new(), typed: [Vec::new(), Vec::new(), Vec::new()] }) };
}

/// An empty map, reused when one is available.
#[inline]
pub(crate) fn take() -> HeaderMap {
    POOLS.with(|pools| pools.borrow_mut().empty.pop()).unwrap_or_default()
}

/// A map holding exactly `Content-Type: <kind>`, reused when one is available.
#[inline]
pub(crate) fn take_typed(kind: Typed) -> HeaderMap {
    match POOLS.with(|pools| pools.borrow_mut().typed[kind as usize].pop()) {
        Some(map) => map,
        None => {
            let mut map = take();
            map.insert(CONTENT_TYPE, kind.value().clone());
            map
        }
    }
}

/// Puts `map` in place of `fresh`, the empty map of a response just made
/// with `Response::new` (how pooled maps get into responses).
#[inline]
pub(crate) fn install(fresh: &mut HeaderMap, map: HeaderMap) {
    let replaced = std::mem::replace(fresh, map);
    if replaced.capacity() == 0 && replaced.is_empty() {
        // An empty map of no capacity is what `HeaderMap::new` makes, which
        // its documentation promises does not allocate: there is nothing to
        // free, and skipping the drop glue of its (empty) parts saves about
        // 60 instructions a response. (A map that ever held a field has
        // capacity and is dropped as usual.)
        std::mem::forget(replaced);
    }
}

/// Returns a map to a pool: kept as it is when it holds only one of the
/// [`Typed`] content types, cleared (its allocation kept) otherwise.
pub(crate) fn give_back(mut map: HeaderMap) {
    if map.capacity() == 0 || map.capacity() > MAX_POOLED_CAPACITY {
        return;
    }
    // `len` counts values: 1 is one field with one value. (Looked at by
    // iterating: a lookup by name hashes and probes, over 100 instructions.)
    let typed = match map.iter().next() {
        Some((name, value)) if map.len() == 1 && name == CONTENT_TYPE => Typed::of(value),
        _ => None,
    };
    if typed.is_none() {
        map.clear();
    }
    POOLS.with(|pools| {
        let mut pools = pools.borrow_mut();
        let pool = match typed {
            Some(kind) => &mut pools.typed[kind as usize],
            None => &mut pools.empty,
        };
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

    #[test]
    fn a_typed_map_comes_back_with_its_field_for_the_same_type_only() {
        let map = take_typed(Typed::Json);
        assert_eq!(map.len(), 1);
        assert_eq!(map.get(CONTENT_TYPE), Some(&APPLICATION_JSON));
        let capacity = map.capacity();
        give_back(map);
        let again = take_typed(Typed::Json);
        assert_eq!(again.get(CONTENT_TYPE), Some(&APPLICATION_JSON));
        assert_eq!(again.len(), 1);
        assert_eq!(again.capacity(), capacity, "the pooled map, as it was");
        give_back(again);
        // Another type never gets it, and neither does a plain `take`.
        let html = take_typed(Typed::TextHtml);
        assert_eq!(html.get(CONTENT_TYPE), Some(&TEXT_HTML_UTF8));
        assert_eq!(html.len(), 1);
        assert!(take().is_empty());
    }

    #[test]
    fn only_our_own_values_are_kept() {
        // The same bytes made elsewhere (a request's field echoed back, a
        // slice of a bigger buffer), a sensitive one, and a value of the
        // same length that is not ours: each map comes back emptied.
        let echoed = bytes::Bytes::from(b"application/json and the rest of a request".to_vec()).slice(..16);
        let mut sensitive = APPLICATION_JSON.clone();
        sensitive.set_sensitive(true);
        let others = [
            HeaderValue::from_maybe_shared(echoed).unwrap(),
            sensitive,
            HeaderValue::from_static("text/plain; charset=UTF-8"),
        ];
        let typed_kept = || POOLS.with(|p| p.borrow().typed.iter().map(Vec::len).sum::<usize>());
        for value in others {
            assert_eq!(Typed::of(&value), None, "{value:?}");
            let before = typed_kept();
            let mut map = take();
            map.insert(CONTENT_TYPE, value.clone());
            give_back(map);
            assert_eq!(typed_kept(), before, "{value:?} went to no typed pool");
            assert!(take().is_empty(), "{value:?} came back cleared");
        }
        assert_eq!(Typed::of(&APPLICATION_JSON.clone()), Some(Typed::Json));
        assert_eq!(Typed::of(&TEXT_PLAIN_UTF8.clone()), Some(Typed::TextPlain));
        assert_eq!(Typed::of(&TEXT_HTML_UTF8.clone()), Some(Typed::TextHtml));
    }

    #[test]
    fn a_typed_map_that_was_changed_comes_back_empty() {
        // Drain what earlier tests on this thread left.
        while POOLS.with(|p| p.borrow().typed[Typed::TextPlain as usize].len()) > 0 {
            drop(take_typed(Typed::TextPlain));
        }
        let mut map = take_typed(Typed::TextPlain);
        map.insert(CONTENT_TYPE, HeaderValue::from_static("text/csv"));
        give_back(map);
        let mut map = take_typed(Typed::TextPlain);
        map.insert("x-extra", HeaderValue::from_static("1"));
        give_back(map);
        assert_eq!(POOLS.with(|p| p.borrow().typed[Typed::TextPlain as usize].len()), 0, "neither kept its fields");
        let plain = take_typed(Typed::TextPlain);
        assert_eq!(plain.len(), 1, "made afresh from an emptied map");
        assert_eq!(plain.get(CONTENT_TYPE), Some(&TEXT_PLAIN_UTF8));
    }
}
