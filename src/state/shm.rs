//! The memory-mapped state file: created and locked by the running
//! instance, read by `skitai status` from outside.
//!
//! The instance holds an exclusive `flock` on the file for as long as it
//! runs; the kernel drops it when the process dies, however it dies. So a
//! file nobody holds locked is stale (a crashed run) and is replaced, and a
//! file somebody holds is a running instance of the same name.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, Ordering};

use memmap2::{MmapOptions, MmapRaw};

use super::layout::{self, Layout, header};

/// Attempts at creating the file before giving up (another process may
/// replace it between our open and our lock).
const CREATE_ATTEMPTS: usize = 5;
/// Attempts at the exclusive lock, [`LOCK_RETRY`] apart.
const LOCK_ATTEMPTS: usize = 10;
/// Pause between lock attempts.
const LOCK_RETRY: std::time::Duration = std::time::Duration::from_millis(5);

/// Why a state file could not be created.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CreateError {
    /// Another process holds the file: an instance of the same name runs.
    #[error("an instance of this name is already running (pid {pid}, state file {path})")]
    Running { pid: u32, path: PathBuf },
    /// The file system refused.
    #[error("cannot create the state file {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// Why a state file could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum OpenError {
    /// No file: the instance is not running (or never ran).
    #[error("no state file at {0}")]
    Missing(PathBuf),
    /// The file exists but is not a complete version-1 state file.
    #[error("{path} is not a skitai state file: {why}")]
    Invalid { path: PathBuf, why: &'static str },
    /// The file system refused.
    #[error("cannot read {path}: {source}")]
    Io { path: PathBuf, source: io::Error },
}

/// A mapped state file. Every field is accessed through atomics, so any
/// number of threads and processes may use it at once.
pub(crate) struct StateFile {
    /// A raw mapping: all access goes through atomics and raw pointers,
    /// never through a `&[u8]` that others write behind.
    mapping: MmapRaw,
    layout: Layout,
    path: PathBuf,
    /// Holds the lock of a file we created.
    file: File,
    /// True in the process that removes the file when it ends.
    owner: AtomicBool,
    removed: AtomicBool,
}

impl std::fmt::Debug for StateFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateFile").field("path", &self.path).field("layout", &self.layout).finish()
    }
}

/// What goes into a new file's header and name tables.
pub(crate) struct NewFile<'a> {
    pub(crate) instance: &'a str,
    pub(crate) layout: Layout,
    pub(crate) states: &'a [Box<str>],
    pub(crate) cache_keys: &'a [Box<str>],
    pub(crate) started_micros: i64,
}

impl StateFile {
    /// Creates (or replaces a stale) file at `path`, locks it for the life
    /// of the process, and writes the header and names.
    pub(crate) fn create(path: &Path, new: &NewFile<'_>) -> Result<StateFile, CreateError> {
        let io_error = |source| CreateError::Io { path: path.to_owned(), source };
        for _ in 0..CREATE_ATTEMPTS {
            let file = open_own_file(path, true).map_err(io_error)?;
            if !lock_exclusive(&file).map_err(io_error)? {
                return Err(CreateError::Running { pid: recorded_pid(&file).unwrap_or(0), path: path.to_owned() });
            }
            // The previous owner may have unlinked the path between our open
            // and our lock: then we hold a lock on a file nobody can find.
            let ours = file.metadata().map_err(io_error)?;
            match std::fs::symlink_metadata(path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
                _ => continue,
            }
            if ours.len() == 0 {
                // New: nobody has it mapped, so it can be sized in place.
                return StateFile::initialize(file, path, new).map_err(io_error);
            }
            if let Some(pid) = recorded_pid(&file) {
                tracing::warn!(
                    "replacing the stale state file {} of pid {pid}, which is not running (it did not exit cleanly)",
                    path.display()
                );
            }
            // A stale file may be mapped by a `status` reader: never truncate
            // it under them. Build the new one aside and rename it over the
            // old, holding the old one's lock until then, so a concurrent
            // start sees either a locked old file or a locked new one.
            let aside = path.with_extension(format!("state.new{}", std::process::id()));
            let _ = std::fs::remove_file(&aside);
            let fresh = OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                .open(&aside)
                .map_err(io_error)?;
            if !try_lock(&fresh, libc::LOCK_EX).map_err(io_error)? {
                return Err(io_error(io::Error::other("cannot lock the replacement state file")));
            }
            let state = StateFile::initialize(fresh, path, new);
            let renamed = state.as_ref().map_err(|_| ()).and_then(|_| std::fs::rename(&aside, path).map_err(|_| ()));
            if renamed.is_err() {
                let _ = std::fs::remove_file(&aside);
            }
            return state.map_err(io_error);
        }
        Err(io_error(io::Error::other("the file kept being replaced by another process")))
    }

    /// Sizes a locked, empty `file`, maps it and writes the header; `path`
    /// is where it lives (or will, once renamed).
    fn initialize(file: File, path: &Path, new: &NewFile<'_>) -> io::Result<StateFile> {
        let size = new.layout.file_size();
        file.set_len(size as u64)?;
        let mapping = MmapRaw::map_raw(&file)?;
        let state = StateFile {
            mapping,
            layout: new.layout,
            path: path.to_owned(),
            file,
            owner: AtomicBool::new(true),
            removed: AtomicBool::new(false),
        };
        state.write_initial(new);
        // Published last: a reader that sees the magic sees the rest.
        state.u64_at(header::MAGIC).store(layout::MAGIC, Ordering::Release);
        Ok(state)
    }

    /// Maps an existing file read-only, checking its header (`skitai status`).
    pub(crate) fn open_read_only(path: &Path) -> Result<StateFile, OpenError> {
        let file = match open_own_file(path, false) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(OpenError::Missing(path.to_owned())),
            Err(source) => return Err(OpenError::Io { path: path.to_owned(), source }),
        };
        let invalid = |why| OpenError::Invalid { path: path.to_owned(), why };
        let len = file.metadata().map_err(|source| OpenError::Io { path: path.to_owned(), source })?.len();
        if len < layout::HEADER_SIZE as u64 {
            return Err(invalid("shorter than a header"));
        }
        let map = MmapOptions::new()
            .map_raw_read_only(&file)
            .map_err(|source| OpenError::Io { path: path.to_owned(), source })?;
        let mut state = StateFile {
            mapping: map,
            layout: Layout { shards: 0, slots: 0 },
            path: path.to_owned(),
            file,
            owner: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        };
        // Relaxed loads plus a fence: the only atomic loads Rust promises on read-only memory.
        if state.u64_at(header::MAGIC).load(Ordering::Relaxed) != layout::MAGIC {
            return Err(invalid("no skitai magic (being created, or another file)"));
        }
        std::sync::atomic::fence(Ordering::Acquire);
        if state.u32_at(header::VERSION).load(Ordering::Relaxed) != layout::VERSION {
            return Err(invalid("written by another skitai version"));
        }
        let shape = Layout {
            shards: state.u32_at(header::SHARDS).load(Ordering::Relaxed) as usize,
            slots: state.u32_at(header::SLOTS).load(Ordering::Relaxed) as usize,
        };
        if shape.file_size() as u64 != len || state.u64_at(header::FILE_SIZE).load(Ordering::Relaxed) != len {
            return Err(invalid("its size does not match its header"));
        }
        state.layout = shape;
        Ok(state)
    }

    /// Maps the file of the running instance read-write without owning it
    /// (a worker process attaching to its master's file): the header must
    /// be valid and the file locked by its creator.
    pub(crate) fn attach(path: &Path) -> Result<StateFile, OpenError> {
        let reader = StateFile::open_read_only(path)?;
        if !reader.is_locked() {
            return Err(OpenError::Invalid { path: path.to_owned(), why: "no running instance holds it" });
        }
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY)
            .open(path)
            .map_err(|source| OpenError::Io { path: path.to_owned(), source })?;
        StateFile::map_checked(path, file, &reader, "it changed size while being attached")
    }

    /// Maps `file` (the file at `path`) read-write, not owned, with the
    /// layout `reader` checked; `resized` says what a size change means.
    fn map_checked(path: &Path, file: File, reader: &StateFile, resized: &'static str) -> Result<StateFile, OpenError> {
        let mapping = MmapRaw::map_raw(&file).map_err(|source| OpenError::Io { path: path.to_owned(), source })?;
        if mapping.len() != reader.len() {
            return Err(OpenError::Invalid { path: path.to_owned(), why: resized });
        }
        Ok(StateFile {
            mapping,
            layout: reader.layout,
            path: path.to_owned(),
            file,
            owner: AtomicBool::new(false),
            removed: AtomicBool::new(false),
        })
    }

    /// Maps the file at `path` through `file`, a descriptor of it inherited
    /// from the process that created it (it shares that process's lock),
    /// after checking the header; [`StateFile::take_over`] makes it ours.
    pub(crate) fn adopt(path: &Path, file: File) -> Result<StateFile, OpenError> {
        let io = |source| OpenError::Io { path: path.to_owned(), source };
        let reader = StateFile::open_read_only(path)?;
        let (ours, there) = (file.metadata().map_err(io)?, reader.file.metadata().map_err(io)?);
        if ours.ino() != there.ino() || ours.dev() != there.dev() {
            return Err(OpenError::Invalid { path: path.to_owned(), why: "it is not the file the old master passed" });
        }
        StateFile::map_checked(path, file, &reader, "it changed size while being adopted")
    }

    /// Makes an adopted file this process's: it records this process's pid
    /// and skitai version in the header and removes the file when it ends.
    pub(crate) fn take_over(&self) {
        self.u32_at(header::PID).store(std::process::id(), Ordering::Release);
        // Others read the header meanwhile: written by whole atomic words.
        let mut version = [0u8; layout::MAX_VERSION_LEN + 1];
        put_string(&mut version, 0, layout::MAX_VERSION_LEN, env!("CARGO_PKG_VERSION"));
        for (i, word) in version.chunks_exact(8).enumerate() {
            let word = u64::from_ne_bytes(word.try_into().expect("8-byte chunk"));
            self.u64_at(header::SKITAI_VERSION + 8 * i).store(word, Ordering::Release);
        }
        self.owner.store(true, Ordering::Release);
    }

    /// The descriptor of the file (it carries the instance's lock), for a
    /// new master to inherit.
    pub(crate) fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.as_raw_fd()
    }

    /// Leaves the file in place when this process ends: another process owns it now.
    pub(crate) fn disown(&self) {
        self.owner.store(false, Ordering::Release);
    }

    /// The layout of this file.
    pub(crate) fn layout(&self) -> Layout {
        self.layout
    }

    /// Where the file lives.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// True while some process holds the file's lock, i.e. the instance that
    /// created it is still running. Used by readers; briefly takes a shared
    /// lock, which never blocks the instance (it locked once, at start).
    pub(crate) fn is_locked(&self) -> bool {
        match try_lock(&self.file, libc::LOCK_SH) {
            Ok(true) => {
                // SAFETY: unlocking our own descriptor's lock.
                unsafe { libc::flock(self.file.as_raw_fd(), libc::LOCK_UN) };
                false
            }
            Ok(false) => true,
            Err(_) => false,
        }
    }

    /// Removes the file if this process created it and it is still the one
    /// at the path; later calls do nothing.
    pub(crate) fn remove(&self) {
        if !self.owner.load(Ordering::Acquire) || self.removed.swap(true, Ordering::AcqRel) {
            return;
        }
        let ours = self.file.metadata().ok();
        let current = std::fs::metadata(&self.path).ok();
        if let (Some(a), Some(b)) = (ours, current) {
            if a.ino() == b.ino() && a.dev() == b.dev() {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }

    fn base(&self) -> *const u8 {
        self.mapping.as_ptr()
    }

    fn len(&self) -> usize {
        self.mapping.len()
    }

    /// Gives the file to `uid`/`gid` (before the server drops root), by descriptor.
    pub(crate) fn hand_over(&self, uid: libc::uid_t, gid: libc::gid_t) -> io::Result<()> {
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))
    }

    /// The `u32` at `offset`.
    pub(crate) fn u32_at(&self, offset: usize) -> &AtomicU32 {
        assert!(offset.is_multiple_of(4) && offset + 4 <= self.len(), "state file offset {offset} out of bounds");
        // SAFETY: in bounds and 4-aligned (the mapping is page-aligned); the
        // memory lives as long as `self`, and is only accessed atomically.
        unsafe { &*(self.base().add(offset) as *const AtomicU32) }
    }

    /// The `u64` at `offset`.
    pub(crate) fn u64_at(&self, offset: usize) -> &AtomicU64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len(), "state file offset {offset} out of bounds");
        // SAFETY: as in `u32_at`, 8-aligned.
        unsafe { &*(self.base().add(offset) as *const AtomicU64) }
    }

    /// The `i64` at `offset`.
    pub(crate) fn i64_at(&self, offset: usize) -> &AtomicI64 {
        assert!(offset.is_multiple_of(8) && offset + 8 <= self.len(), "state file offset {offset} out of bounds");
        // SAFETY: as in `u32_at`, 8-aligned.
        unsafe { &*(self.base().add(offset) as *const AtomicI64) }
    }

    /// The length-prefixed string in the line at `offset` (lossy UTF-8).
    pub(crate) fn string_at(&self, offset: usize, max_len: usize) -> String {
        assert!(offset + 1 + max_len <= self.len(), "state file offset {offset} out of bounds");
        // SAFETY: in bounds (checked above); these bytes are written once,
        // before the magic is published, and never change afterwards.
        let bytes = unsafe { std::slice::from_raw_parts(self.base().add(offset), 1 + max_len) };
        let len = (bytes[0] as usize).min(max_len);
        String::from_utf8_lossy(&bytes[1..1 + len]).into_owned()
    }
}

impl Drop for StateFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Takes the exclusive lock; `Ok(false)` when another process keeps holding
/// it. A `status` reader holds a shared lock for a few microseconds, so a
/// refusal is retried briefly before it counts as a running instance.
fn lock_exclusive(file: &File) -> io::Result<bool> {
    for _ in 0..LOCK_ATTEMPTS {
        if try_lock(file, libc::LOCK_EX)? {
            return Ok(true);
        }
        std::thread::sleep(LOCK_RETRY);
    }
    Ok(false)
}

/// Tries `flock(op | LOCK_NB)`: `Ok(false)` when another process holds it.
fn try_lock(file: &File, op: libc::c_int) -> io::Result<bool> {
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) { Ok(false) } else { Err(e) }
}

/// The pid in a complete header of `file`, if it has one.
fn recorded_pid(file: &File) -> Option<u32> {
    use std::os::unix::fs::FileExt;
    let mut head = [0u8; layout::HEADER_SIZE];
    file.read_exact_at(&mut head, 0).ok()?;
    let magic = u64::from_ne_bytes(head[header::MAGIC..header::MAGIC + 8].try_into().ok()?);
    (magic == layout::MAGIC).then(|| u32::from_ne_bytes(head[header::PID..header::PID + 4].try_into().unwrap()))
}

impl StateFile {
    /// Writes everything but the magic into a fresh (zeroed) mapping.
    fn write_initial(&self, new: &NewFile<'_>) {
        // SAFETY: the mapping is ours alone (locked, not yet published: no
        // reader accepts it before the magic is stored), `len` bytes long,
        // and no reference into it exists while this slice lives.
        let map = unsafe { std::slice::from_raw_parts_mut(self.mapping.as_mut_ptr(), self.mapping.len()) };
        let l = new.layout;
        let put_u32 = |map: &mut [u8], at: usize, v: u32| map[at..at + 4].copy_from_slice(&v.to_ne_bytes());
        let put_u64 = |map: &mut [u8], at: usize, v: u64| map[at..at + 8].copy_from_slice(&v.to_ne_bytes());
        put_u32(map, header::VERSION, layout::VERSION);
        put_u32(map, header::SHARDS, l.shards as u32);
        put_u32(map, header::SLOTS, l.slots as u32);
        put_u32(map, header::STATES, new.states.len() as u32);
        put_u32(map, header::CACHE_KEYS, new.cache_keys.len() as u32);
        put_u32(map, header::PID, std::process::id());
        put_u64(map, header::STARTED, new.started_micros as u64);
        put_u64(map, header::FILE_SIZE, l.file_size() as u64);
        put_string(map, header::NAME, layout::MAX_INSTANCE_NAME_LEN, new.instance);
        put_string(map, header::SKITAI_VERSION, layout::MAX_VERSION_LEN, env!("CARGO_PKG_VERSION"));
        for (i, name) in new.states.iter().enumerate() {
            put_string(map, l.state_name(i), layout::MAX_NAME_LEN, name);
        }
        for (i, name) in new.cache_keys.iter().enumerate() {
            put_string(map, l.cache_key_name(i), layout::MAX_NAME_LEN, name);
        }
    }
}

/// Opens `path` without following a symlink, and only if it is a regular
/// file owned by this process's user: `/dev/shm` is shared by everyone, and
/// a file planted there must not be truncated by root or mapped by us.
/// `create` makes it when missing (read-write), else it opens it read-only.
fn open_own_file(path: &Path, create: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.read(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NOCTTY);
    if create {
        options.write(true).create(true).truncate(false).mode(0o644);
    }
    let file = options.open(path)?;
    let meta = file.metadata()?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !meta.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    if create && meta.uid() != me {
        return Err(io::Error::other(format!("owned by uid {}, not by this user (uid {me})", meta.uid())));
    }
    Ok(file)
}

/// A length byte and at most `max_len` bytes of `s` (cut at a char boundary).
fn put_string(map: &mut [u8], at: usize, max_len: usize, s: &str) {
    let mut len = s.len().min(max_len);
    while !s.is_char_boundary(len) {
        len -= 1;
    }
    map[at] = len as u8;
    map[at + 1..at + 1 + len].copy_from_slice(&s.as_bytes()[..len]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_file<'a>(states: &'a [Box<str>], keys: &'a [Box<str>]) -> NewFile<'a> {
        NewFile {
            instance: "unit",
            layout: Layout { shards: 2, slots: 8 },
            states,
            cache_keys: keys,
            started_micros: 1_700_000_000_000_000,
        }
    }

    #[test]
    fn create_then_read_from_another_mapping() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let states: Vec<Box<str>> = vec!["hits".into(), "é-naïve".into()];
        let keys: Vec<Box<str>> = vec!["users".into()];
        let file = StateFile::create(&path, &new_file(&states, &keys)).unwrap();
        let l = file.layout();
        file.i64_at(l.state_value(1)).fetch_add(41, Ordering::Relaxed);
        file.i64_at(l.state_value(1)).fetch_add(1, Ordering::Relaxed);

        let reader = StateFile::open_read_only(&path).unwrap();
        assert_eq!(reader.layout(), l);
        assert!(reader.is_locked(), "the creator holds the lock");
        assert_eq!(reader.i64_at(l.state_value(1)).load(Ordering::Relaxed), 42, "writes are visible to other mappings");
        assert_eq!(reader.string_at(l.state_name(1), layout::MAX_NAME_LEN), "é-naïve");
        assert_eq!(reader.string_at(l.cache_key_name(0), layout::MAX_NAME_LEN), "users");
        assert_eq!(reader.string_at(header::NAME, layout::MAX_INSTANCE_NAME_LEN), "unit");
        assert_eq!(reader.u32_at(header::STATES).load(Ordering::Relaxed), 2);
        assert_eq!(reader.u32_at(header::PID).load(Ordering::Relaxed), std::process::id());

        drop(file);
        assert!(!path.exists(), "the owner removes the file when it goes");
        assert!(!reader.is_locked());
    }

    #[test]
    fn second_owner_is_refused_while_the_first_holds_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let first = StateFile::create(&path, &new_file(&[], &[])).unwrap();
        match StateFile::create(&path, &new_file(&[], &[])) {
            Err(CreateError::Running { pid, .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Running, got {other:?}"),
        }
        drop(first);
        StateFile::create(&path, &new_file(&[], &[])).expect("free again once the first is gone");
    }

    #[test]
    fn stale_file_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.state");
        let states: Vec<Box<str>> = vec!["a".into()];
        // A crash leaves a complete file that nobody holds locked: a copy of a live one.
        let live = dir.path().join("live.state");
        let first = StateFile::create(&live, &new_file(&states, &[])).unwrap();
        first.i64_at(first.layout().state_value(0)).store(7, Ordering::Relaxed);
        std::fs::copy(&live, &path).unwrap();
        drop(first);
        assert_eq!(
            StateFile::open_read_only(&path)
                .unwrap()
                .i64_at(Layout { shards: 2, slots: 8 }.state_value(0))
                .load(Ordering::Relaxed),
            7
        );
        assert!(!StateFile::open_read_only(&path).unwrap().is_locked(), "nobody holds a crashed run's file");
        let again = StateFile::create(&path, &new_file(&states, &[])).unwrap();
        assert_eq!(again.i64_at(again.layout().state_value(0)).load(Ordering::Relaxed), 0, "values start fresh");
    }

    #[test]
    fn readers_refuse_what_is_not_a_state_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.state");
        assert!(matches!(StateFile::open_read_only(&path), Err(OpenError::Missing(_))));
        std::fs::write(&path, b"short").unwrap();
        assert!(matches!(StateFile::open_read_only(&path), Err(OpenError::Invalid { .. })));
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        assert!(matches!(StateFile::open_read_only(&path), Err(OpenError::Invalid { .. })));
        // A real file, truncated: the size check catches it.
        let path2 = dir.path().join("y.state");
        let file = StateFile::create(&path2, &new_file(&[], &[])).unwrap();
        let bytes = std::fs::read(&path2).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 64]).unwrap();
        assert!(matches!(StateFile::open_read_only(&path), Err(OpenError::Invalid { .. })));
        drop(file);
    }

    #[test]
    fn planted_symlinks_and_foreign_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let path = dir.path().join("s.state");
        std::os::unix::fs::symlink(&victim, &path).unwrap();
        assert!(StateFile::create(&path, &new_file(&[], &[])).is_err(), "a symlink is not followed");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious", "the link's target is untouched");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let foreign = dir.path().join("f.state");
            std::fs::write(&foreign, b"").unwrap();
            std::os::unix::fs::chown(&foreign, Some(65534), Some(65534)).unwrap();
            let e = StateFile::create(&foreign, &new_file(&[], &[])).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
        }
    }

    #[test]
    fn long_names_are_cut_at_a_char_boundary() {
        let mut buf = vec![0u8; 64];
        put_string(&mut buf, 0, 5, "ab\u{e9}\u{e9}");
        assert_eq!(buf[0], 4, "the second é would cross the limit");
        assert_eq!(&buf[1..5], "ab\u{e9}".as_bytes());
    }
}
