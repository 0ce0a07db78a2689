//! Each shard's memory of what lies below a static mount: open files, their
//! metadata and validators, small files' contents, precompressed siblings,
//! gzip-compressed copies, directories and misses.
//!
//! An entry is trusted for `[static] revalidate` seconds, then checked again
//! on the blocking pool (a changed file is reloaded, an unchanged one keeps
//! its contents). The cache is bounded in entries and bytes; when full, the
//! least recently used eighth goes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::HeaderValue;

use super::conditional::Validators;
use super::encoding::{Coding, compressible};
use super::fs::{Meta, Root};

/// One representation of a file: the file itself, a precompressed sibling,
/// or a gzip copy made here.
#[derive(Debug)]
pub(crate) struct Repr {
    /// The open file; `None` for a copy made in memory.
    pub(crate) file: Option<Arc<File>>,
    pub(crate) len: u64,
    pub(crate) validators: Validators,
    pub(crate) etag: HeaderValue,
    pub(crate) last_modified: HeaderValue,
    /// The whole representation, when it is small enough to keep.
    pub(crate) contents: Option<Bytes>,
    /// `None` for identity.
    pub(crate) coding: Option<Coding>,
    /// What the file looked like when loaded (to tell whether it changed); `None` for copies.
    pub(crate) meta: Option<Meta>,
}

impl Repr {
    fn new(
        file: Option<Arc<File>>,
        meta: Option<Meta>,
        len: u64,
        validators: Validators,
        contents: Option<Bytes>,
        coding: Option<Coding>,
    ) -> Repr {
        let etag = HeaderValue::from_str(&validators.etag).expect("entity tags are ASCII");
        let last_modified = HeaderValue::from_str(&validators.last_modified()).expect("HTTP dates are ASCII");
        Repr { file, len, validators, etag, last_modified, contents, coding, meta }
    }

    /// A gzip copy of this representation's contents.
    pub(crate) fn gzipped(&self, packed: Bytes) -> Repr {
        let validators = self.validators.with_suffix("gzip");
        Repr::new(None, None, packed.len() as u64, validators, Some(packed), Some(Coding::Gzip))
    }

    fn weight(&self) -> u64 {
        self.contents.as_ref().map_or(0, |c| c.len() as u64)
    }
}

/// A regular file and everything known about it.
#[derive(Debug)]
pub(crate) struct FileEntry {
    pub(crate) identity: Rc<Repr>,
    /// Precompressed siblings (`.br`, `.zst`, `.gz`) found next to it.
    pub(crate) variants: Vec<Rc<Repr>>,
    pub(crate) content_type: HeaderValue,
    pub(crate) compressible: bool,
    /// The gzip copy made on the fly, once asked for.
    pub(crate) gzipped: RefCell<Option<Rc<Repr>>>,
}

impl FileEntry {
    /// The precompressed sibling in `coding`, if there is one.
    pub(crate) fn variant(&self, coding: Coding) -> Option<&Rc<Repr>> {
        self.variants.iter().find(|v| v.coding == Some(coding))
    }

    fn weight(&self) -> u64 {
        self.identity.weight()
            + self.variants.iter().map(|v| v.weight()).sum::<u64>()
            + self.gzipped.borrow().as_ref().map_or(0, |g| g.weight())
    }
}

/// What a path names.
#[derive(Debug, Clone)]
pub(crate) enum Found {
    /// Nothing that may be served.
    Missing,
    /// A directory.
    Dir,
    /// A regular file.
    File(Rc<FileEntry>),
}

/// Limits of one cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CacheLimits {
    pub(crate) revalidate: Duration,
    pub(crate) entries: usize,
    pub(crate) bytes: u64,
    pub(crate) max_file: u64,
}

struct Slot {
    found: Found,
    /// When the path was last opened and stated.
    checked: Instant,
    last_used: Cell<u64>,
    /// A request is reloading this entry; others keep using it meanwhile.
    refreshing: Cell<bool>,
}

/// What an old entry offers a reload: the contents of each representation,
/// kept if the file turns out unchanged. Crosses to the blocking pool.
#[derive(Debug, Default)]
pub(crate) struct Reusable {
    identity: Option<(Meta, Bytes)>,
    variants: Vec<(Coding, Meta, Bytes)>,
}

impl Reusable {
    fn of(found: &Found) -> Reusable {
        let Found::File(entry) = found else { return Reusable::default() };
        let keep = |r: &Repr| r.meta.zip(r.contents.clone());
        Reusable {
            identity: keep(&entry.identity),
            variants: entry.variants.iter().filter_map(|v| Some((v.coding?, v.meta?, v.contents.clone()?))).collect(),
        }
    }

    fn identity(&self, meta: &Meta) -> Option<Bytes> {
        self.identity.as_ref().filter(|(m, _)| m == meta).map(|(_, b)| b.clone())
    }

    fn variant(&self, coding: Coding, meta: &Meta) -> Option<Bytes> {
        self.variants.iter().find(|(c, m, _)| *c == coding && m == meta).map(|(_, _, b)| b.clone())
    }
}

/// The result of a cache probe.
pub(crate) enum Probe {
    /// Fresh enough to use (or being reloaded by another request right now).
    Fresh(Found),
    /// Must be loaded (again). The caller owns the reload and must end it
    /// with [`Cache::insert`] or [`Cache::abandon`].
    Load { old: Option<Found>, reusable: Reusable },
}

/// One shard's cache for one mount.
pub(crate) struct Cache {
    slots: HashMap<String, Slot>,
    limits: CacheLimits,
    tick: u64,
    bytes: u64,
}

impl Cache {
    pub(crate) fn new(limits: CacheLimits) -> Cache {
        Cache { slots: HashMap::new(), limits, tick: 0, bytes: 0 }
    }

    /// Looks `rel` up. A stale entry is handed to one caller to reload; while
    /// that runs, everyone else keeps getting the old entry (no stampede on
    /// the blocking pool).
    pub(crate) fn probe(&mut self, rel: &str, now: Instant) -> Probe {
        self.tick += 1;
        let Some(slot) = self.slots.get(rel) else { return Probe::Load { old: None, reusable: Reusable::default() } };
        slot.last_used.set(self.tick);
        if now.saturating_duration_since(slot.checked) < self.limits.revalidate || slot.refreshing.get() {
            return Probe::Fresh(slot.found.clone());
        }
        slot.refreshing.set(true);
        Probe::Load { old: Some(slot.found.clone()), reusable: Reusable::of(&slot.found) }
    }

    /// Stores what `rel` names (stated at `checked`). An unchanged file keeps
    /// its old entry, gzip copy included. Evicts when over budget.
    pub(crate) fn insert(&mut self, rel: &str, found: Found, old: Option<Found>, checked: Instant) -> Found {
        let found = match old {
            Some(old) if unchanged(&old, &found) => old,
            _ => found,
        };
        let weight = weight_of(&found);
        let slot =
            Slot { found: found.clone(), checked, last_used: Cell::new(self.tick), refreshing: Cell::new(false) };
        if let Some(old) = self.slots.insert(rel.to_owned(), slot) {
            self.bytes = self.bytes.saturating_sub(weight_of(&old.found));
        }
        self.bytes += weight + rel.len() as u64;
        self.evict_if_needed();
        found
    }

    /// Gives up a reload handed out by [`Cache::probe`] (it failed or was cancelled).
    pub(crate) fn abandon(&mut self, rel: &str) {
        if let Some(slot) = self.slots.get(rel) {
            slot.refreshing.set(false);
        }
    }

    /// Accounts for a gzip copy of `entry` made after it was stored, if the
    /// cache still holds that entry under `rel`.
    pub(crate) fn grew(&mut self, rel: &str, entry: &Rc<FileEntry>, bytes: u64) {
        let current = matches!(self.slots.get(rel), Some(Slot { found: Found::File(e), .. }) if Rc::ptr_eq(e, entry));
        if current {
            self.bytes += bytes;
            self.evict_if_needed();
        }
    }

    fn evict_if_needed(&mut self) {
        if self.slots.len() <= self.limits.entries && self.bytes <= self.limits.bytes {
            return;
        }
        let mut by_age: Vec<(u64, String)> = self.slots.iter().map(|(k, s)| (s.last_used.get(), k.clone())).collect();
        by_age.sort_unstable();
        let keep_entries = self.limits.entries - self.limits.entries / 8;
        let keep_bytes = self.limits.bytes - self.limits.bytes / 8;
        for (_, key) in by_age {
            if self.slots.len() <= keep_entries && self.bytes <= keep_bytes {
                break;
            }
            if let Some(old) = self.slots.remove(&key) {
                self.bytes = self.bytes.saturating_sub(weight_of(&old.found) + key.len() as u64);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.slots.len()
    }
}

/// True when a reload found exactly the same files as before.
fn unchanged(old: &Found, new: &Found) -> bool {
    match (old, new) {
        (Found::Missing, Found::Missing) | (Found::Dir, Found::Dir) => true,
        (Found::File(a), Found::File(b)) => {
            a.identity.meta == b.identity.meta
                && a.variants.len() == b.variants.len()
                && a.variants.iter().zip(&b.variants).all(|(x, y)| x.coding == y.coding && x.meta == y.meta)
        }
        _ => false,
    }
}

fn weight_of(found: &Found) -> u64 {
    match found {
        Found::File(entry) => entry.weight(),
        _ => 0,
    }
}

/// A file representation as loaded on the blocking pool.
#[derive(Debug)]
pub(crate) struct LoadedRepr {
    file: File,
    meta: Meta,
    contents: Option<Bytes>,
}

/// What a path names, as loaded on the blocking pool.
#[derive(Debug)]
pub(crate) enum Loaded {
    Missing,
    Dir,
    File { identity: LoadedRepr, variants: Vec<(Coding, LoadedRepr)> },
}

/// Opens `rel` below `root` and reads what the cache keeps (contents an
/// unchanged file already had are reused, not read again). Blocking.
pub(crate) fn load(root: &Root, rel: &str, max_file: u64, reusable: &Reusable) -> io::Result<Loaded> {
    let Some((file, meta)) = root.open_rel(rel)? else { return Ok(Loaded::Missing) };
    if meta.is_dir {
        return Ok(Loaded::Dir);
    }
    let identity = read_repr(file, meta, max_file, reusable.identity(&meta))?;
    let mut variants = Vec::new();
    let already_compressed = Coding::ALL.iter().any(|c| rel.ends_with(c.suffix()));
    if !already_compressed {
        for coding in Coding::ALL {
            if let Some((file, meta)) = root.open_rel(&format!("{rel}{}", coding.suffix()))? {
                if meta.is_file {
                    variants.push((coding, read_repr(file, meta, max_file, reusable.variant(coding, &meta))?));
                }
            }
        }
    }
    Ok(Loaded::File { identity, variants })
}

fn read_repr(file: File, meta: Meta, max_file: u64, reuse: Option<Bytes>) -> io::Result<LoadedRepr> {
    let contents = match reuse {
        Some(bytes) => Some(bytes),
        None if meta.len <= max_file => {
            let mut buf = vec![0; meta.len as usize];
            file.read_exact_at(&mut buf, 0)?;
            Some(Bytes::from(buf))
        }
        None => {
            // Sent later with sendfile on the shard: ask the kernel to start
            // reading it into the page cache now, so sendfile rarely waits on disk.
            // SAFETY: fadvise on an fd we own; it only hints the page cache.
            unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_WILLNEED) };
            None
        }
    };
    Ok(LoadedRepr { file, meta, contents })
}

/// Turns what was loaded into a cache entry (on the shard: `Rc`s and header values).
pub(crate) fn materialize(rel: &str, loaded: Loaded) -> Found {
    match loaded {
        Loaded::Missing => Found::Missing,
        Loaded::Dir => Found::Dir,
        Loaded::File { identity, variants } => {
            let mime = mime_guess::from_path(rel).first_or_octet_stream();
            let compressible = compressible(&mime);
            let content_type = content_type_value(&mime, compressible);
            let variants = variants.into_iter().map(|(coding, r)| Rc::new(repr_of(r, Some(coding)))).collect();
            Found::File(Rc::new(FileEntry {
                identity: Rc::new(repr_of(identity, None)),
                variants,
                content_type,
                compressible,
                gzipped: RefCell::new(None),
            }))
        }
    }
}

fn repr_of(r: LoadedRepr, coding: Option<Coding>) -> Repr {
    let validators = Validators::new(r.meta.ino, r.meta.len, r.meta.modified);
    let validators = match coding {
        Some(c) => validators.with_suffix(c.token()),
        None => validators,
    };
    // A file held in memory needs no descriptor: only sendfile-served files keep one open.
    let file = if r.contents.is_some() { None } else { Some(Arc::new(r.file)) };
    Repr::new(file, Some(r.meta), r.meta.len, validators, r.contents, coding)
}

/// `Content-Type` for a file: text types get `charset=utf-8`.
fn content_type_value(mime: &mime_guess::Mime, compressible: bool) -> HeaderValue {
    let essence = mime.essence_str();
    let text_like =
        compressible && mime.get_param(mime_guess::mime::CHARSET).is_none() && essence != "application/wasm";
    let value = if text_like { format!("{essence}; charset=utf-8") } else { mime.to_string() };
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(entries: usize, bytes: u64) -> CacheLimits {
        CacheLimits { revalidate: Duration::from_secs(1), entries, bytes, max_file: 1024 }
    }

    fn none() -> Reusable {
        Reusable::default()
    }

    fn file_found(dir: &std::path::Path, name: &str, size: usize) -> Found {
        std::fs::write(dir.join(name), vec![b'x'; size]).unwrap();
        let root = Root::open(dir, false).unwrap();
        materialize(name, load(&root, name, 1024, &none()).unwrap())
    }

    #[test]
    fn loads_files_siblings_and_types() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("app.js"), b"console.log(1)").unwrap();
        std::fs::write(dir.path().join("app.js.gz"), b"GZ").unwrap();
        std::fs::write(dir.path().join("app.js.br"), b"BR").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let root = Root::open(dir.path(), false).unwrap();
        let Found::File(entry) = materialize("app.js", load(&root, "app.js", 1024, &none()).unwrap()) else {
            panic!("a file")
        };
        assert_eq!(entry.content_type, "text/javascript; charset=utf-8");
        assert!(entry.compressible);
        assert_eq!(entry.identity.contents.as_deref(), Some(&b"console.log(1)"[..]));
        assert!(entry.identity.file.is_none(), "a file held in memory keeps no descriptor");
        assert_eq!(entry.variant(Coding::Gzip).unwrap().contents.as_deref(), Some(&b"GZ"[..]));
        assert_eq!(entry.variant(Coding::Brotli).unwrap().contents.as_deref(), Some(&b"BR"[..]));
        assert!(entry.variant(Coding::Zstd).is_none());
        assert_ne!(entry.variant(Coding::Gzip).unwrap().etag, entry.identity.etag);
        assert!(matches!(materialize("sub", load(&root, "sub", 1024, &none()).unwrap()), Found::Dir));
        assert!(matches!(materialize("nope", load(&root, "nope", 1024, &none()).unwrap()), Found::Missing));
        // A sibling requested directly is just a file of its own type.
        let Found::File(gz) = materialize("app.js.gz", load(&root, "app.js.gz", 1024, &none()).unwrap()) else {
            panic!("a file")
        };
        assert!(gz.variants.is_empty());
        assert_eq!(gz.content_type, "application/gzip");
    }

    #[test]
    fn large_files_are_not_kept_in_memory() {
        let dir = tempfile::tempdir().unwrap();
        let Found::File(entry) = file_found(dir.path(), "big.bin", 4096) else { panic!("a file") };
        assert!(entry.identity.contents.is_none());
        assert!(entry.identity.file.is_some(), "sent with sendfile from its descriptor");
        assert_eq!(entry.identity.len, 4096);
        assert_eq!(entry.content_type, "application/octet-stream");
    }

    #[test]
    fn stale_entries_reload_once_and_unchanged_ones_survive() {
        let dir = tempfile::tempdir().unwrap();
        let found = file_found(dir.path(), "a.txt", 10);
        let Found::File(first) = &found else { panic!("a file") };
        let first = first.clone();
        let mut cache = Cache::new(limits(16, 1 << 20));
        let t0 = Instant::now();
        assert!(matches!(cache.probe("a.txt", t0), Probe::Load { old: None, .. }));
        cache.insert("a.txt", found, None, t0);
        assert!(matches!(cache.probe("a.txt", t0), Probe::Fresh(Found::File(_))));

        let later = t0 + Duration::from_secs(2);
        let Probe::Load { old: Some(old), reusable } = cache.probe("a.txt", later) else {
            panic!("stale after the revalidation period")
        };
        // While one request reloads, the others keep the old entry.
        assert!(matches!(cache.probe("a.txt", later), Probe::Fresh(Found::File(_))));

        // Unchanged on disk: contents are reused, not read again, and the old entry (with
        // any gzip copy it made) stays.
        let root = Root::open(dir.path(), false).unwrap();
        let loaded = load(&root, "a.txt", 1024, &reusable).unwrap();
        let Loaded::File { identity, .. } = &loaded else { panic!("a file") };
        assert_eq!(identity.contents, first.identity.contents);
        let kept = cache.insert("a.txt", materialize("a.txt", loaded), Some(old), later);
        let Found::File(kept) = kept else { panic!("a file") };
        assert!(Rc::ptr_eq(&kept, &first));
        assert!(matches!(cache.probe("a.txt", later), Probe::Fresh(Found::File(_))), "fresh again");

        // Changed on disk: a new entry.
        std::fs::write(dir.path().join("a.txt"), b"longer than before").unwrap();
        let much_later = later + Duration::from_secs(2);
        let Probe::Load { old, reusable } = cache.probe("a.txt", much_later) else { panic!("stale") };
        let fresh = materialize("a.txt", load(&root, "a.txt", 1024, &reusable).unwrap());
        let Found::File(fresh) = cache.insert("a.txt", fresh, old, much_later) else { panic!("a file") };
        assert_eq!(fresh.identity.contents.as_deref(), Some(&b"longer than before"[..]));

        // A reload that is given up lets the next request try again.
        let Probe::Load { .. } = cache.probe("a.txt", much_later + Duration::from_secs(2)) else { panic!("stale") };
        cache.abandon("a.txt");
        assert!(matches!(cache.probe("a.txt", much_later + Duration::from_secs(2)), Probe::Load { .. }));
    }

    #[test]
    fn gzip_copies_count_only_while_their_entry_is_cached() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::new(limits(16, 1 << 20));
        let now = Instant::now();
        let Found::File(entry) = cache.insert("a.txt", file_found(dir.path(), "a.txt", 100), None, now) else {
            panic!("a file")
        };
        let before = cache.bytes;
        cache.grew("a.txt", &entry, 40);
        assert_eq!(cache.bytes, before + 40);
        // Replaced meanwhile (the file changed): a late gzip copy of the old entry is not counted.
        cache.insert("a.txt", file_found(dir.path(), "a.txt", 50), None, now);
        let replaced = cache.bytes;
        cache.grew("a.txt", &entry, 40);
        assert_eq!(cache.bytes, replaced);
    }

    #[test]
    fn evicts_least_recently_used_within_bounds() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = Cache::new(limits(8, 1 << 20));
        let now = Instant::now();
        for i in 0..8 {
            cache.insert(&format!("f{i}"), Found::Missing, None, now);
        }
        // Touch f0 so it is the most recently used.
        assert!(matches!(cache.probe("f0", now), Probe::Fresh(_)));
        cache.insert("f8", Found::Missing, None, now);
        assert!(cache.len() <= 7);
        assert!(matches!(cache.probe("f0", now), Probe::Fresh(_)), "recently used entries stay");
        assert!(matches!(cache.probe("f1", now), Probe::Load { old: None, .. }), "the oldest went");

        let mut small = Cache::new(limits(100, 1000));
        for i in 0..5 {
            small.insert(&format!("b{i}"), file_found(dir.path(), &format!("b{i}"), 300), None, now);
        }
        assert!(small.bytes <= 1000, "byte budget kept: {}", small.bytes);
    }
}
