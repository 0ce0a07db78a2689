//! Shared state across shards and processes: named integer states
//! (`setgs`/`getgs`/`incgs`), "last updated" timestamps of cache keys
//! (`setlu`/`getlu`), and broadcast events.
//!
//! The values live in a memory-mapped file (see [`layout`]) that every
//! shard of the instance uses and `skitai status` reads from outside. Names
//! are registered at start-up and map to fixed slots, so a read or a write
//! is a hash lookup and one atomic operation: no locks, no allocation.

pub(crate) mod event;
pub(crate) mod layout;
pub(crate) mod shm;
pub(crate) mod status;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use event::{Event, Payload};
pub(crate) use layout::Driver;

use crate::config::Config;
use crate::error::{Error, Result};
use crate::shard::bus::{Bus, BusError};
use layout::Layout;
use shm::{CreateError, NewFile, StateFile};

/// Environment variable naming the directory of state files; `[state] dir` wins over it.
pub const STATE_DIR_ENV: &str = "SKITAI_STATE_DIR";

/// A name that is not registered, or a registry that cannot be changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// `getgs`/`setgs`/`incgs` with a name not given to `register_states`.
    #[error(
        "state {0:?} is not registered; states are registered at start-up with Engine::register_states or `[state] states`"
    )]
    UnknownState(String),
    /// `setlu`/`getlu` with a name not given to `register_cache_keys`.
    #[error(
        "cache key {0:?} is not registered; cache keys are registered at start-up with Engine::register_cache_keys or `[state] cache_keys`"
    )]
    UnknownCacheKey(String),
}

/// The registered names of one array, in slot order. The index uses
/// FxHash: the table is fixed at start-up, so lookups of hostile strings
/// cannot degrade it, and a lookup costs a few ns instead of SipHash's ~15.
#[derive(Debug, Default)]
struct Names {
    slots: Vec<Box<str>>,
    index: rustc_hash::FxHashMap<Box<str>, usize>,
}

impl Names {
    /// Names in order, duplicates removed; each checked, errors naming `key`.
    fn new(key: &str, names: impl IntoIterator<Item = String>, capacity: usize) -> Result<Names> {
        let mut out = Names::default();
        for name in names {
            check_name(&name).map_err(|why| Error::config(key, format!("{name:?} {why}")))?;
            if out.index.contains_key(name.as_str()) {
                continue;
            }
            if out.slots.len() == capacity {
                return Err(Error::config(key, format!("more than state.slots = {capacity} names; raise state.slots")));
            }
            out.index.insert(name.clone().into_boxed_str(), out.slots.len());
            out.slots.push(name.into_boxed_str());
        }
        Ok(out)
    }

    fn slot(&self, name: &str) -> Option<usize> {
        self.index.get(name).copied()
    }
}

/// A state or cache-key name: 1 to 63 bytes, no control characters.
pub(crate) fn check_name(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() || name.len() > layout::MAX_NAME_LEN {
        return Err("must be 1 to 63 bytes long");
    }
    if name.chars().any(char::is_control) {
        return Err("must not contain control characters");
    }
    Ok(())
}

/// The shared state of a running instance; cheap to clone, `Send + Sync`.
///
/// Handlers use it through [`Ctx`](crate::Ctx) (`cx.getgs(...)`); code
/// outside the shards gets one from [`Server::state`](crate::Server::state).
#[derive(Clone)]
pub struct SharedState {
    inner: Arc<Inner>,
}

struct Inner {
    file: Arc<StateFile>,
    states: Names,
    cache_keys: Names,
    bus: Arc<Bus>,
    /// The first shard line of this process (workers after the first start further on).
    first_line: usize,
}

impl std::fmt::Debug for SharedState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedState")
            .field("file", &self.inner.file.path())
            .field("states", &self.inner.states.slots)
            .field("cache_keys", &self.inner.cache_keys.slots)
            .finish()
    }
}

/// Names registered by the program (the config file's are added to them).
#[derive(Debug, Default, Clone)]
pub(crate) struct Registrations {
    pub(crate) states: Vec<String>,
    pub(crate) cache_keys: Vec<String>,
}

impl Registrations {
    /// The program's names followed by the configuration's, checked against
    /// `[state] slots` (errors name the key).
    fn names(&self, config: &Config) -> Result<(Names, Names)> {
        let st = &config.state;
        let states = Names::new("state.states", self.states.iter().chain(&st.states).cloned(), st.slots)?;
        let keys = Names::new("state.cache_keys", self.cache_keys.iter().chain(&st.cache_keys).cloned(), st.slots)?;
        Ok((states, keys))
    }

    /// Checks the names as [`SharedState::create`] will (for `skitai check`).
    pub(crate) fn check(&self, config: &Config) -> Result<()> {
        self.names(config).map(drop)
    }
}

/// Checks that `file` holds exactly the state names and slot count this
/// program would create (a change needs a restart).
fn check_names(file: &StateFile, config: &Config, states: &Names, cache_keys: &Names) -> Result<()> {
    let layout = file.layout();
    let same = |names: &Names, at: fn(&Layout, usize) -> usize| {
        names.slots.iter().enumerate().all(|(i, n)| file.string_at(at(&layout, i), layout::MAX_NAME_LEN) == **n)
    };
    if layout.slots != config.state.slots
        || !same(states, Layout::state_name)
        || !same(cache_keys, Layout::cache_key_name)
    {
        return Err(Error::config("state", "the state names or slots changed since start-up: restart to change them"));
    }
    Ok(())
}

impl SharedState {
    /// Creates the instance's state file (replacing a stale one) and its bus.
    /// Fails when an instance of the same name is running.
    pub(crate) fn create(config: &Config, program: &Registrations, shards: usize) -> Result<SharedState> {
        let st = &config.state;
        let (states, cache_keys) = program.names(config)?;
        let path = state_file_path(config);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::config("state.dir", format!("cannot create {}: {e}", dir.display())))?;
        }
        let started_micros = micros(SystemTime::now());
        let new = NewFile {
            instance: &config.name,
            layout: Layout { shards, slots: st.slots },
            states: &states.slots,
            cache_keys: &cache_keys.slots,
            started_micros,
        };
        let file = StateFile::create(&path, &new).map_err(|e| match e {
            CreateError::Running { pid, path } => Error::config(
                "name",
                format!(
                    "an instance named {:?} is already running (pid {pid}, state file {}); stop it, or give this one another name",
                    config.name,
                    path.display()
                ),
            ),
            e @ CreateError::Io { .. } => Error::config("state.dir", e),
        })?;
        let file = Arc::new(file);
        let bus = Arc::new(Bus::new(shards, st.bus_capacity, file.clone()));
        Ok(SharedState { inner: Arc::new(Inner { file, states, cache_keys, bus, first_line: 0 }) })
    }

    /// Attaches to the state file of this instance's master process, as
    /// worker `worker` of its `shards` shards each: its shards use the lines
    /// from `worker * shards` on. The names must be those the file holds
    /// (a changed `[state]` needs a restart, not a reload).
    pub(crate) fn attach(
        config: &Config,
        program: &Registrations,
        shards: usize,
        worker: usize,
    ) -> Result<SharedState> {
        let (states, cache_keys) = program.names(config)?;
        let path = state_file_path(config);
        let file = StateFile::attach(&path).map_err(|e| Error::config("state.dir", e))?;
        let layout = file.layout();
        let first_line = worker * shards;
        if first_line + shards > layout.shards {
            return Err(Error::config(
                "server.workers",
                format!(
                    "the state file has {} shard lines; worker {worker} needs {first_line}..{}",
                    layout.shards,
                    first_line + shards
                ),
            ));
        }
        check_names(&file, config, &states, &cache_keys)?;
        let file = Arc::new(file);
        let bus = Arc::new(Bus::new(shards, config.state.bus_capacity, file.clone()).with_first_line(first_line));
        Ok(SharedState { inner: Arc::new(Inner { file, states, cache_keys, bus, first_line }) })
    }

    /// Maps the state file of the master this process upgrades (binary
    /// upgrade): `file` is the master's own descriptor of it, inherited, so
    /// the lock that marks the instance running stays held without a gap
    /// and the values live on. The layout and names must be those the file
    /// holds. It becomes this process's at [`SharedState::take_over`].
    pub(crate) fn adopt(config: &Config, program: &Registrations, shards: usize, file: File) -> Result<SharedState> {
        let (states, cache_keys) = program.names(config)?;
        let path = state_file_path(config);
        let file = StateFile::adopt(&path, file).map_err(|e| Error::config("state.dir", e))?;
        if file.layout().shards != shards {
            return Err(Error::config(
                "server.workers",
                format!(
                    "the running instance has {} shard lines and this program would need {shards}: workers and shards keep their numbers across an upgrade (restart to change them)",
                    file.layout().shards
                ),
            ));
        }
        check_names(&file, config, &states, &cache_keys)?;
        let file = Arc::new(file);
        let bus = Arc::new(Bus::new(shards, config.state.bus_capacity, file.clone()));
        Ok(SharedState { inner: Arc::new(Inner { file, states, cache_keys, bus, first_line: 0 }) })
    }

    /// Makes an adopted state file this process's (once the upgrade succeeded).
    pub(crate) fn take_over(&self) {
        self.inner.file.take_over();
    }

    /// Leaves the state file in place when this process ends: another
    /// process (the new master of a binary upgrade) owns it now.
    pub(crate) fn disown(&self) {
        self.inner.file.disown();
    }

    /// The state-file line of this process's shard `shard`.
    pub(crate) fn shard_line(&self, shard: usize) -> usize {
        self.inner.file.layout().shard_line(self.instance_shard(shard))
    }

    /// This process's shard `shard` numbered across the instance's worker
    /// processes (worker N's shards follow worker N-1's).
    pub(crate) fn instance_shard(&self, shard: usize) -> usize {
        self.inner.first_line + shard
    }

    /// The bus this state's events travel on.
    pub(crate) fn bus(&self) -> &Arc<Bus> {
        &self.inner.bus
    }

    /// The state file (shard table, counters).
    pub(crate) fn file(&self) -> &StateFile {
        &self.inner.file
    }

    /// Removes the state file (at exit); later calls do nothing.
    pub(crate) fn remove_file(&self) {
        self.inner.file.remove();
    }

    /// Where the state file is.
    pub fn path(&self) -> &Path {
        self.inner.file.path()
    }

    fn state(&self, name: &str) -> std::result::Result<&std::sync::atomic::AtomicI64, StateError> {
        let slot = self.inner.states.slot(name).ok_or_else(|| StateError::UnknownState(name.to_owned()))?;
        Ok(self.inner.file.i64_at(self.inner.file.layout().state_value(slot)))
    }

    fn cache_key(&self, name: &str) -> std::result::Result<&std::sync::atomic::AtomicI64, StateError> {
        let slot = self.inner.cache_keys.slot(name).ok_or_else(|| StateError::UnknownCacheKey(name.to_owned()))?;
        Ok(self.inner.file.i64_at(self.inner.file.layout().cache_key_value(slot)))
    }

    /// The value of state `name` (0 until set).
    pub fn getgs(&self, name: &str) -> std::result::Result<i64, StateError> {
        Ok(self.state(name)?.load(Ordering::Acquire))
    }

    /// Sets state `name` to `value`.
    pub fn setgs(&self, name: &str, value: i64) -> std::result::Result<(), StateError> {
        self.state(name)?.store(value, Ordering::Release);
        Ok(())
    }

    /// Adds `delta` to state `name` atomically (wrapping) and returns the new value.
    pub fn incgs(&self, name: &str, delta: i64) -> std::result::Result<i64, StateError> {
        Ok(self.state(name)?.fetch_add(delta, Ordering::AcqRel).wrapping_add(delta))
    }

    /// Records that cache key `name` changed now, and broadcasts
    /// `model-changed:<name>` (payload: the stored time as a [`SystemTime`]
    /// value). The stored times of one key only ever increase, even if the
    /// clock steps back, so a change is never mistaken for an old state.
    /// The time is stored even if the event cannot be queued everywhere.
    pub fn setlu(&self, name: &str) -> std::result::Result<SystemTime, StateError> {
        let cell = self.cache_key(name)?;
        let now = micros(SystemTime::now());
        let mut current = cell.load(Ordering::Acquire);
        let stored = loop {
            let next = now.max(current.saturating_add(1));
            match cell.compare_exchange_weak(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break next,
                Err(seen) => current = seen,
            }
        };
        let time = from_micros(stored);
        if let Err(e) = self.broadcast(&format!("model-changed:{name}"), Payload::value(time)) {
            // Counted in the state file (`status`); a log line per call could flood.
            tracing::debug!("setlu({name:?}): model-changed event {e}");
        }
        Ok(time)
    }

    /// The latest update time of the cache keys `names`; keys never set
    /// count as the instance's start time (as does an empty list).
    pub fn getlu(&self, names: &[&str]) -> std::result::Result<SystemTime, StateError> {
        let mut latest = self.inner.file.u64_at(layout::header::STARTED).load(Ordering::Relaxed) as i64;
        for name in names {
            latest = latest.max(self.cache_key(name)?.load(Ordering::Acquire));
        }
        Ok(from_micros(latest))
    }

    /// Every registered state with its current value, in registration order.
    pub fn states(&self) -> Vec<(String, i64)> {
        let l = self.inner.file.layout();
        let values = self.inner.states.slots.iter().enumerate();
        values.map(|(i, n)| (n.to_string(), self.inner.file.i64_at(l.state_value(i)).load(Ordering::Acquire))).collect()
    }

    /// Sends `event` with `payload` to the `on_broadcast` subscribers of
    /// every shard, this one included, each exactly once. Returns at once;
    /// the error names the shards whose queue was full (the event was
    /// dropped there) or that have stopped.
    pub fn broadcast(&self, event: &str, payload: impl Into<Payload>) -> std::result::Result<(), BusError> {
        self.inner.bus.broadcast(Event::new(event, payload.into()))
    }
}

/// Microseconds since the Unix epoch (negative before it).
pub(crate) fn micros(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_micros() as i64,
        Err(e) => -(e.duration().as_micros() as i64),
    }
}

/// The inverse of [`micros`].
pub(crate) fn from_micros(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// Where the state file of `config`'s instance lives: `[state] dir`, else
/// `$SKITAI_STATE_DIR`, else `/dev/shm` (memory), else the data directory
/// `~/.skitai/<name>/`.
pub fn state_file_path(config: &Config) -> PathBuf {
    let file = format!("skitai-{}.state", config.name);
    if let Some(dir) = &config.state.dir {
        return dir.join(file);
    }
    if let Some(dir) = std::env::var_os(STATE_DIR_ENV).filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join(file);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.join(file);
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".skitai").join(&config.name).join(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> Config {
        let mut c = Config { name: "unit".into(), ..Config::default() };
        c.state.dir = Some(dir.to_owned());
        c.state.slots = 4;
        c
    }

    #[test]
    fn values_by_name_and_unknown_names_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.state.states = vec!["b".into(), "a".into()];
        c.state.cache_keys = vec!["k".into()];
        let program = Registrations { states: vec!["a".into()], cache_keys: vec![] };
        let s = SharedState::create(&c, &program, 2).unwrap();
        assert_eq!(s.states(), [("a".to_owned(), 0), ("b".to_owned(), 0)], "program first, duplicates dropped");
        s.setgs("a", 5).unwrap();
        assert_eq!(s.incgs("a", -7).unwrap(), -2);
        assert_eq!(s.getgs("a").unwrap(), -2);
        assert_eq!(s.getgs("b").unwrap(), 0);
        assert_eq!(s.getgs("zz"), Err(StateError::UnknownState("zz".into())));
        assert!(s.getgs("zz").unwrap_err().to_string().contains("register_states"));
        assert_eq!(s.setlu("a"), Err(StateError::UnknownCacheKey("a".into())));
        assert!(s.getlu(&["k", "nope"]).is_err(), "one unknown name fails the lookup");
    }

    #[test]
    fn setlu_is_strictly_increasing_and_getlu_defaults_to_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.state.cache_keys = vec!["k".into(), "j".into()];
        let s = SharedState::create(&c, &Registrations::default(), 1).unwrap();
        let start = s.getlu(&[]).unwrap();
        assert_eq!(s.getlu(&["k", "j"]).unwrap(), start, "unset keys read as the start time");
        let mut last = start;
        for _ in 0..1000 {
            let t = s.setlu("k").unwrap();
            assert!(t > last, "every setlu stores a later time");
            last = t;
        }
        assert_eq!(s.getlu(&["j", "k"]).unwrap(), last);
        // Each setlu queued a model-changed event for the shard.
        let first = s.bus().pop_message(0);
        assert!(matches!(first, Some(crate::shard::bus::Message::Broadcast(e)) if e.name() == "model-changed:k"));
    }

    #[test]
    fn registration_limits_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.state.states = (0..5).map(|i| format!("s{i}")).collect();
        let e = SharedState::create(&c, &Registrations::default(), 1).unwrap_err();
        assert!(e.to_string().starts_with("state.states:"), "{e}");
        let mut c = config(dir.path());
        c.state.cache_keys = vec!["x".repeat(64)];
        let e = SharedState::create(&c, &Registrations::default(), 1).unwrap_err();
        assert!(e.to_string().starts_with("state.cache_keys:"), "{e}");
        let mut c = config(dir.path());
        c.state.states = vec!["tab\there".into()];
        assert!(SharedState::create(&c, &Registrations::default(), 1).is_err());
    }

    #[test]
    fn same_name_twice_is_refused_with_the_name_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(dir.path());
        let first = SharedState::create(&c, &Registrations::default(), 1).unwrap();
        let e = SharedState::create(&c, &Registrations::default(), 1).unwrap_err();
        assert!(e.to_string().starts_with("name:") && e.to_string().contains("already running"), "{e}");
        let path = first.path().to_owned();
        first.remove_file();
        assert!(!path.exists());
    }

    #[test]
    fn hammered_from_many_threads_the_sum_is_exact() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = config(dir.path());
        c.state.states = vec!["n".into()];
        let s = SharedState::create(&c, &Registrations::default(), 1).unwrap();
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..100_000 {
                        s.incgs("n", 1).unwrap();
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        assert_eq!(s.getgs("n").unwrap(), 800_000);
    }

    #[test]
    fn micros_round_trip() {
        for us in [0, 1, -1, 1_764_022_860_123_456] {
            assert_eq!(micros(from_micros(us)), us);
        }
    }
}
