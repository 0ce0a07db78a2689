//! The master process: binds the listeners and creates the state file, runs
//! the worker processes that serve (each runs the shards), restarts a worker
//! that dies, and turns signals into graceful stops and zero-downtime reloads.
//!
//! Workers are the same program started again (`current_exe`) with the
//! listening sockets inherited as descriptors and a few environment
//! variables naming them; each worker tells the master it listens by
//! writing a byte on a pipe. Workers run in their own process group (a
//! terminal's Ctrl-C reaches the master alone, which forwards it once) and
//! die with the master (`PR_SET_PDEATHSIG`).

use std::ffi::OsString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1};
use signal_hook::iterator::Signals;

use super::listeners::{Bound, LISTEN_ENV};
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::state::{Registrations, SharedState};

/// Names the worker a process is (its index): set for worker processes only.
pub(crate) const WORKER_ENV: &str = "SKITAI_WORKER";
/// The descriptor a worker (or a daemonized master) writes a byte to once it serves.
pub(crate) const READY_FD_ENV: &str = "SKITAI_READY_FD";
/// The master's pid, for a worker to check that its master lives.
pub(crate) const MASTER_PID_ENV: &str = "SKITAI_MASTER_PID";
/// Set once the master has given itself its process title (by exec).
pub(crate) const TITLED_ENV: &str = "SKITAI_TITLED";

/// How often the master looks at its signals and workers.
const TICK: Duration = Duration::from_millis(50);
/// How long a worker may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// First pause before restarting a worker that died; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest pause between restarts of a worker that keeps dying.
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// A worker that served this long resets its restart back-off.
const STABLE_AFTER: Duration = Duration::from_secs(30);
/// Exit status when a second signal cut a graceful stop short.
const FORCED_EXIT_STATUS: i32 = 1;
/// How long past its own deadline a draining worker gets before SIGKILL.
const KILL_GRACE: Duration = Duration::from_secs(5);

/// The process title of the master of `name`.
pub(crate) fn master_title(name: &str) -> String {
    format!("skitai:{name} master")
}

/// The process title of worker `index` of `name`.
pub(crate) fn worker_title(name: &str, index: usize) -> String {
    format!("skitai:{name} worker #{index}")
}

/// Gives the master its process title (`ps` shows `skitai:<name> master`) by
/// executing itself again with that `argv[0]`; returns only if that fails
/// or was done already.
pub(crate) fn set_title(config: &Config) {
    if std::env::var_os(TITLED_ENV).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let error = Command::new(exe).arg0(master_title(&config.name)).args(args).env(TITLED_ENV, "1").exec();
    tracing::debug!("cannot set the process title: {error}");
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Started, not yet listening.
    Starting,
    /// Listening.
    Serving,
    /// Told to stop (drain); when it went.
    Stopping(Instant),
}

/// A worker process.
struct Worker {
    index: usize,
    generation: u64,
    child: Child,
    /// Read end of the worker's ready pipe (non-blocking).
    ready: File,
    phase: Phase,
    started: Instant,
}

/// The master's plans for a worker index that has no process now.
struct Restart {
    index: usize,
    at: Instant,
}

/// The master of one instance.
struct Master {
    config: Config,
    exe: PathBuf,
    args: Vec<OsString>,
    /// The listening sockets; dropped (closed) when the instance stops.
    bound: Option<Bound>,
    shards: usize,
    workers: Vec<Worker>,
    generation: u64,
    /// A reload in progress: the generation that replaces the serving one.
    reloading: Option<u64>,
    restarts: Vec<Restart>,
    backoff: Vec<Duration>,
    /// Set by the first stop signal; a second one forces the exit.
    stopping: Option<Instant>,
    forced: bool,
    /// systemd's notification socket, when it started us.
    notifier: Option<super::systemd::Notifier>,
}

/// Runs the master in this process until the instance stops; the result is
/// the exit status. Workers are started with this process's arguments.
/// `registrations` name the shared states the state file holds.
pub(crate) fn run(config: Config, registrations: Registrations) -> Result<i32> {
    let shards = config.shard_count();
    let workers = config.server.workers;
    let signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1])
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot install signal handlers").with_source(e))?;
    // The state file first: a second instance of the same name stops here.
    let state = SharedState::create(&config, &registrations, shards * workers)?;
    let bound = Bound::bind(&config, shards * workers)?;
    let pid_file = PidFile::write(&config)?;
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot find this program").with_source(e))?;
    let mut master = Master {
        config,
        exe,
        args: std::env::args_os().skip(1).collect(),
        bound: Some(bound),
        shards,
        workers: Vec::new(),
        generation: 1,
        reloading: None,
        restarts: Vec::new(),
        backoff: vec![FIRST_BACKOFF; workers],
        stopping: None,
        forced: false,
        notifier: super::systemd::Notifier::from_env(),
    };
    tracing::info!("{} master pid {}: {workers} worker(s) × {shards} shard(s)", master.config.name, std::process::id());
    if let Err(code) = master.start_first(&state) {
        drop(pid_file);
        drop(state);
        return Ok(code);
    }
    notify_ready_from_env();
    if let Some(n) = &master.notifier {
        n.ready();
    }
    let code = master.supervise(signals);
    drop(pid_file);
    drop(state);
    Ok(code)
}

impl Master {
    /// Starts every worker and waits until they listen; on a failure the
    /// others are stopped and the failed worker's exit status is returned.
    fn start_first(&mut self, state: &SharedState) -> std::result::Result<(), i32> {
        for index in 0..self.config.server.workers {
            match self.spawn(index, self.generation) {
                Ok(worker) => self.workers.push(worker),
                Err(e) => {
                    tracing::error!("cannot start worker #{index}: {e}");
                    self.kill_all();
                    return Err(1);
                }
            }
        }
        // Ports are bound and the workers started (as root, if we are: they
        // read their keys, then drop on their own): root is no longer needed here.
        let s = &self.config.server;
        let dropped = super::privileges::drop_privileges(s.user.as_deref(), s.group.as_deref(), |uid, gid| {
            state.file().hand_over(uid, gid)
        });
        if let Err(e) = dropped {
            tracing::error!("{e}");
            self.kill_all();
            return Err(2);
        }
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            for worker in &mut self.workers {
                if worker.phase == Phase::Starting && worker.is_ready() {
                    worker.phase = Phase::Serving;
                }
            }
            if self.workers.iter().all(|w| w.phase == Phase::Serving) {
                return Ok(());
            }
            let failed = self.workers.iter_mut().find_map(|w| w.child.try_wait().ok().flatten().map(|s| (w.index, s)));
            if let Some((index, status)) = failed {
                tracing::error!("worker #{index} could not start ({})", describe(status));
                self.kill_all();
                return Err(status.code().filter(|&c| c != 0).unwrap_or(1));
            }
            if Instant::now() > deadline {
                tracing::error!("the workers did not start listening within {START_TIMEOUT:?}");
                self.kill_all();
                return Err(1);
            }
            std::thread::sleep(TICK);
        }
    }

    /// Starts worker `index` of `generation`.
    fn spawn(&self, index: usize, generation: u64) -> std::io::Result<Worker> {
        let bound = self.bound.as_ref().ok_or_else(|| std::io::Error::other("the listeners are closed"))?;
        let (ready_read, ready_write) = pipe()?;
        let (mut fds, listen) = bound.for_worker(index, self.shards);
        fds.push(ready_write.as_raw_fd());
        let mut command = Command::new(&self.exe);
        command
            .arg0(worker_title(&self.config.name, index))
            .args(&self.args)
            .env(WORKER_ENV, index.to_string())
            .env(MASTER_PID_ENV, std::process::id().to_string())
            .env(LISTEN_ENV, listen)
            .env(READY_FD_ENV, ready_write.as_raw_fd().to_string())
            .process_group(0);
        // SAFETY: the closure runs between fork and exec and makes only
        // async-signal-safe calls (close_range, fcntl, prctl) on descriptors
        // that are open in the child; `fds` was allocated before the fork.
        unsafe {
            command.pre_exec(move || {
                // Descriptors this process inherited from whoever started
                // it stay out of the worker; only ours go in.
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
                for &fd in &fds {
                    if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = command.spawn()?;
        drop(ready_write);
        tracing::debug!(pid = child.id(), "worker #{index} (generation {generation}) started");
        Ok(Worker {
            index,
            generation,
            child,
            ready: File::from(ready_read),
            phase: Phase::Starting,
            started: Instant::now(),
        })
    }

    /// The main loop: signals, dead workers, restarts, reloads. Returns the exit status.
    fn supervise(&mut self, mut signals: Signals) -> i32 {
        loop {
            for signal in signals.pending() {
                self.on_signal(signal);
            }
            if self.forced {
                self.wait_gone(Duration::from_secs(1));
                return FORCED_EXIT_STATUS;
            }
            self.reap();
            self.follow_reload();
            self.run_restarts();
            if self.stopping.is_some() && self.workers.is_empty() {
                tracing::info!("{}: stopped", self.config.name);
                return 0;
            }
            self.kill_stragglers();
            if let Some(n) = &mut self.notifier {
                n.tick();
            }
            std::thread::sleep(TICK);
        }
    }

    fn on_signal(&mut self, signal: i32) {
        match signal {
            SIGHUP if self.stopping.is_none() => self.reload(),
            SIGHUP => {}
            SIGUSR1 => {
                tracing::debug!("SIGUSR1: telling the workers to reopen their log files");
                self.signal_all(SIGUSR1);
            }
            _ => {
                if self.stopping.is_some() {
                    tracing::warn!(signal, "second signal: stopping the workers now");
                    self.signal_all(signal);
                    self.forced = true;
                    return;
                }
                tracing::info!(signal, "stopping: the workers drain their connections");
                if let Some(n) = &self.notifier {
                    n.stopping();
                }
                self.stopping = Some(Instant::now());
                // Closing our copies of the listening sockets: once the
                // workers close theirs, new connections are refused.
                self.bound = None;
                self.restarts.clear();
                self.reloading = None;
                let now = Instant::now();
                for worker in &mut self.workers {
                    send(&worker.child, signal);
                    worker.phase = Phase::Stopping(now);
                }
            }
        }
    }

    /// SIGHUP: reads the configuration again and, if it is valid, starts a
    /// new generation of workers on the same listeners; once they all
    /// listen, the old ones drain. No connection is refused meanwhile: the
    /// listening sockets stay open in the master the whole time.
    fn reload(&mut self) {
        if self.reloading.is_some() {
            tracing::warn!("SIGHUP: a reload is already in progress");
            return;
        }
        let fresh = match reload_config(&self.config) {
            Ok(config) => config,
            Err(e) => {
                tracing::error!("SIGHUP: not reloaded, the configuration is not valid: {e}");
                return;
            }
        };
        if fresh.shard_count() != self.shards || fresh.server.workers != self.config.server.workers {
            tracing::warn!("SIGHUP: workers and shards keep their numbers until a restart");
        }
        if fresh.server.port != self.config.server.port || fresh.server.address != self.config.server.address {
            tracing::warn!("SIGHUP: the listening addresses keep their values until a restart");
        }
        self.generation += 1;
        let generation = self.generation;
        tracing::info!("SIGHUP: reloading (generation {generation})");
        if let Some(n) = &self.notifier {
            n.reloading();
        }
        for index in 0..self.config.server.workers {
            match self.spawn(index, generation) {
                Ok(worker) => self.workers.push(worker),
                Err(e) => {
                    tracing::error!(
                        "SIGHUP: not reloaded, cannot start worker #{index}: {e}; the old workers keep serving"
                    );
                    self.abandon(generation);
                    return;
                }
            }
        }
        self.reloading = Some(generation);
    }

    /// Once every worker of the reloading generation listens, the older ones drain.
    fn follow_reload(&mut self) {
        let Some(generation) = self.reloading else { return };
        for worker in &mut self.workers {
            if worker.generation == generation && worker.phase == Phase::Starting && worker.is_ready() {
                worker.phase = Phase::Serving;
            }
        }
        let new: Vec<&Worker> = self.workers.iter().filter(|w| w.generation == generation).collect();
        if new.len() == self.config.server.workers && new.iter().all(|w| w.phase == Phase::Serving) {
            let now = Instant::now();
            for worker in self.workers.iter_mut().filter(|w| w.generation < generation) {
                if !matches!(worker.phase, Phase::Stopping(_)) {
                    send(&worker.child, SIGTERM);
                    worker.phase = Phase::Stopping(now);
                }
            }
            self.reloading = None;
            if let Some(n) = &self.notifier {
                n.ready();
            }
            tracing::info!(
                "SIGHUP: reload done (configuration and TLS certificates reloaded): generation {generation} serves, the previous one drains"
            );
        }
    }

    /// Stops the workers of a reload that failed.
    fn abandon(&mut self, generation: u64) {
        if let Some(n) = &self.notifier {
            n.ready();
        }
        let now = Instant::now();
        for worker in self.workers.iter_mut().filter(|w| w.generation == generation) {
            send(&worker.child, SIGTERM);
            worker.phase = Phase::Stopping(now);
        }
        self.reloading = None;
    }

    /// Collects workers that exited; schedules the restart of one that
    /// died unexpectedly.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            let status = match self.workers[i].child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => {
                    i += 1;
                    continue;
                }
                Err(_) => ExitStatus::from_raw(0),
            };
            let worker = self.workers.remove(i);
            let (index, pid) = (worker.index, worker.child.id());
            if matches!(worker.phase, Phase::Stopping(_)) {
                tracing::debug!("worker #{index} (pid {pid}) stopped ({})", describe(status));
                continue;
            }
            if Some(worker.generation) == self.reloading {
                tracing::error!(
                    "SIGHUP: not reloaded, new worker #{index} exited before it listened ({}); the old workers keep serving",
                    describe(status)
                );
                self.abandon(worker.generation);
                continue;
            }
            if worker.started.elapsed() >= STABLE_AFTER {
                self.backoff[index] = FIRST_BACKOFF;
            }
            let wait = self.backoff[index];
            self.backoff[index] = (wait * 2).min(MAX_BACKOFF);
            tracing::error!(
                "worker #{index} (pid {pid}) exited unexpectedly ({}); restarting it in {wait:?}",
                describe(status)
            );
            self.restarts.push(Restart { index, at: Instant::now() + wait });
        }
    }

    fn run_restarts(&mut self) {
        let now = Instant::now();
        let due: Vec<usize> = self.restarts.iter().filter(|r| r.at <= now).map(|r| r.index).collect();
        self.restarts.retain(|r| r.at > now);
        for index in due {
            match self.spawn(index, self.generation) {
                Ok(mut worker) => {
                    // Counted as serving at once: it is the only one of its index.
                    worker.phase = Phase::Serving;
                    tracing::info!("worker #{index} restarted (pid {})", worker.child.id());
                    self.workers.push(worker);
                }
                Err(e) => {
                    let wait = self.backoff[index];
                    self.backoff[index] = (wait * 2).min(MAX_BACKOFF);
                    tracing::error!("cannot restart worker #{index}: {e}; trying again in {wait:?}");
                    self.restarts.push(Restart { index, at: now + wait });
                }
            }
        }
    }

    /// Kills workers that drain past their own shutdown deadline (and a grace).
    fn kill_stragglers(&mut self) {
        let limit = Duration::from_secs(self.config.server.shutdown_timeout) + KILL_GRACE;
        for worker in &mut self.workers {
            if let Phase::Stopping(since) = worker.phase {
                if since.elapsed() > limit {
                    tracing::warn!("worker #{} did not stop in time; killing it", worker.index);
                    let _ = worker.child.kill();
                }
            }
        }
    }

    fn signal_all(&self, signal: i32) {
        for worker in &self.workers {
            send(&worker.child, signal);
        }
    }

    fn kill_all(&mut self) {
        for worker in &mut self.workers {
            let _ = worker.child.kill();
            let _ = worker.child.wait();
        }
        self.workers.clear();
    }

    /// Waits up to `limit` for every worker to exit.
    fn wait_gone(&mut self, limit: Duration) {
        let deadline = Instant::now() + limit;
        while !self.workers.is_empty() && Instant::now() < deadline {
            self.workers.retain_mut(|w| !matches!(w.child.try_wait(), Ok(Some(_)) | Err(_)));
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Worker {
    /// True once the worker wrote its ready byte.
    fn is_ready(&mut self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.ready.read(&mut byte), Ok(1))
    }
}

/// Reads the configuration again the way the program started (same file, same flags).
fn reload_config(current: &Config) -> Result<Config> {
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(std::env::args_os())
        .map_err(|e| Error::config("arguments", e.to_string().trim()))?;
    let file = cli.config.clone().or_else(|| Some(PathBuf::from(super::DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()));
    // The program's own settings are not known here; the running ones stand in for them.
    let mut config = match file {
        Some(path) => current.overlay_file(&path)?,
        None => current.clone(),
    };
    cli.apply(&mut config)?;
    config.validate()?;
    Ok(config)
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill(2) on the pid of a child we have not reaped yet.
    unsafe { libc::kill(child.id() as libc::pid_t, signal) };
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("killed by signal {signal}"),
        _ => "unknown status".to_owned(),
    }
}

/// A pipe whose ends close on exec; the read end does not block, the
/// write end does (a child writes its one ready byte to it).
pub(crate) fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: pipe2 fills the two-element array we pass.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: pipe2 just opened both descriptors; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    // The write end goes to the child and blocks as usual (its one-byte write never waits).
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(write.as_raw_fd(), libc::F_GETFL);
        libc::fcntl(write.as_raw_fd(), libc::F_SETFL, flags & !libc::O_NONBLOCK);
    }
    Ok((read, write))
}

/// Makes this worker get SIGTERM when its master dies, again: dropping
/// privileges (setuid) clears the setting the master made at its start. If
/// the master is already gone, returns false.
pub(crate) fn rearm_parent_death(master: u32) -> bool {
    // SAFETY: prctl and getppid have no memory arguments.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
        libc::getppid() as u32 == master
    }
}

/// Writes a byte to the descriptor named by [`READY_FD_ENV`], if there is
/// one: a worker telling its master, or a master telling the `start` command.
pub(crate) fn notify_ready_from_env() {
    let Some(fd) = std::env::var(READY_FD_ENV).ok().and_then(|v| v.parse::<RawFd>().ok()) else { return };
    // SAFETY: fcntl only checks that the descriptor is open.
    if fd < 3 || unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return;
    }
    // SAFETY: the descriptor was passed to us for this one byte; we own it now.
    let mut file = unsafe { File::from_raw_fd(fd) };
    let _ = std::io::Write::write_all(&mut file, b"1");
    // Workers get their own READY_FD_ENV, so the variable can stay.
}

/// The master's pid file, removed when dropped.
pub(crate) struct PidFile {
    path: PathBuf,
}

impl PidFile {
    /// Writes this process's pid to the instance's pid file.
    fn write(config: &Config) -> Result<PidFile> {
        let path = config.pid_file();
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .map_err(|e| Error::config("server.data_dir", format!("cannot create {}: {e}", dir.display())))?;
        }
        std::fs::write(&path, format!("{}\n", std::process::id()))
            .map_err(|e| Error::config("server.data_dir", format!("cannot write {}: {e}", path.display())))?;
        Ok(PidFile { path })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Only if it is still ours (a later instance may have written it).
        let ours = std::fs::read_to_string(&self.path)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .is_some_and(|pid| pid == std::process::id());
        if ours {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}
