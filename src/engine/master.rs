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

use signal_hook::consts::{SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2};
use signal_hook::iterator::Signals;

use super::cpu_watch::CpuWatch;
use super::file_watch::FileWatch;
use super::listeners::{Bound, LISTEN_ENV};
use super::upgrade::Upgrade;
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
/// `args` are the program's arguments, without its name.
pub(crate) fn set_title(config: &Config, args: &[OsString]) {
    if std::env::var_os(TITLED_ENV).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else { return };
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
    /// Told to stop (drain); killed if still there at `kill_at`.
    Stopping { kill_at: Instant },
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
    /// The critical point's CPU watch, when one is set.
    cpu: Option<CpuWatch>,
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
    /// Devel mode: the program and configuration files whose change reloads.
    watch: Option<FileWatch>,
    /// The state file (this process created or adopted it).
    state: SharedState,
    /// A binary upgrade in progress: the new master, not yet serving.
    upgrade: Option<Upgrade>,
    /// Set once a new master took the instance over (binary upgrade).
    handed_over: bool,
}

/// How the program was started, for the processes the master starts.
pub(crate) struct Invocation {
    /// The program's arguments (without its name): workers, reloads and
    /// upgrades get them.
    pub(crate) args: Vec<OsString>,
    /// Devel mode: a change of these files reloads like SIGHUP.
    pub(crate) watch: Option<FileWatch>,
    /// Whether log lines also go to the console (see [`super::server::route_server_logs`]).
    pub(crate) console: bool,
}

/// Runs the master in this process until the instance stops; the result is
/// the exit status. `registrations` name the shared states the state file holds.
pub(crate) fn run(config: Config, registrations: Registrations, invocation: Invocation) -> Result<i32> {
    let shards = config.shard_count();
    let workers = config.server.workers;
    let signals = Signals::new([SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2])
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot install signal handlers").with_source(e))?;
    super::server::route_server_logs(&config, invocation.console)?;
    let inherited = super::upgrade::inherited()?;
    let upgraded = inherited.is_some();
    let (state, bound) = match inherited {
        Some(from) => {
            tracing::info!("binary upgrade: taking over from master pid {}", from.from);
            let state = SharedState::adopt(&config, &registrations, shards * workers, from.state)?;
            (state, Bound::inherited(&from.listen, shards * workers)?)
        }
        None => {
            // The state file first: a second instance of the same name stops here.
            let state = SharedState::create(&config, &registrations, shards * workers)?;
            (state, Bound::bind(&config, shards * workers)?)
        }
    };
    // After an upgrade, the pid file names this master once it took over.
    let mut pid_file = if upgraded { None } else { Some(PidFile::write(&config)?) };
    let exe = std::env::current_exe()
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot find this program").with_source(e))?;
    let mut master = Master {
        config,
        exe,
        args: invocation.args,
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
        watch: invocation.watch,
        state,
        upgrade: None,
        handed_over: false,
    };
    tracing::info!("{} master pid {}: {workers} worker(s) × {shards} shard(s)", master.config.name, std::process::id());
    if let Err(code) = master.start_first() {
        drop(pid_file);
        return Ok(code);
    }
    // Every worker said it serves (its shards accept): from here on a
    // worker that dies is restarted. Tools and tests wait for this line.
    tracing::info!("{} master: {workers} worker(s) serving", master.config.name);
    if upgraded {
        // The workers serve: the instance is ours now.
        master.state.take_over();
        match PidFile::write(&master.config) {
            Ok(file) => pid_file = Some(file),
            Err(e) => tracing::error!("{e}"),
        }
    }
    // systemd first: it must know the new main pid before the old master
    // (told by the ready byte) exits.
    if let Some(n) = &master.notifier {
        n.ready();
    }
    notify_ready_from_env();
    let code = master.supervise(signals);
    if !master.handed_over {
        crate::observe::peers::Peers::remove_all(&master.config, shards * workers);
    }
    drop(pid_file);
    Ok(code)
}

impl Master {
    /// Starts every worker and waits until they listen; on a failure the
    /// others are stopped and the failed worker's exit status is returned.
    fn start_first(&mut self) -> std::result::Result<(), i32> {
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
            self.state.file().hand_over(uid, gid)
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
            .env_remove(super::upgrade::UPGRADE_FROM_ENV)
            .env_remove(super::upgrade::UPGRADE_STATE_FD_ENV)
            .process_group(0);
        pass_descriptors(&mut command, fds, true);
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
            cpu: self.config.server.critical_point.and_then(|p| CpuWatch::new(p, Instant::now())),
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
            self.follow_upgrade();
            self.run_restarts();
            self.check_critical_points();
            self.check_files();
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
                let n = crate::observe::output::reopen_files();
                tracing::info!("SIGUSR1: {n} log file(s) of the master reopened; the workers reopen theirs");
                self.signal_all(SIGUSR1);
            }
            SIGUSR2 if self.stopping.is_none() => self.start_upgrade(),
            SIGUSR2 => {}
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
                if let Some(upgrade) = self.upgrade.take() {
                    tracing::warn!("the binary upgrade in progress is abandoned");
                    send(&upgrade.child, SIGTERM);
                }
                self.stop(signal);
            }
        }
    }

    /// Stops the instance: every worker gets `signal` and drains (within
    /// `quit_timeout` for SIGQUIT, else `shutdown_timeout`).
    fn stop(&mut self, signal: i32) {
        self.stopping = Some(Instant::now());
        // Closing our copies of the listening sockets: once the workers
        // close theirs, new connections are refused (unless a new master
        // of an upgrade holds them).
        self.bound = None;
        self.restarts.clear();
        self.reloading = None;
        let s = &self.config.server;
        let deadline = if signal == SIGQUIT { s.quit_timeout } else { s.shutdown_timeout };
        let kill_at = Instant::now() + Duration::from_secs(deadline) + KILL_GRACE;
        for worker in &mut self.workers {
            send(&worker.child, signal);
            worker.phase = Phase::Stopping { kill_at };
        }
    }

    /// SIGUSR2: starts the program's executable (a new version, if it was
    /// replaced) as a new master on the same listening sockets and state file.
    fn start_upgrade(&mut self) {
        if self.upgrade.is_some() || self.reloading.is_some() {
            tracing::warn!("SIGUSR2: not upgraded, a reload or upgrade is already in progress");
            return;
        }
        let Some(bound) = &self.bound else { return };
        let count = self.shards * self.config.server.workers;
        let state_fd = self.state.file().raw_fd();
        match Upgrade::spawn(&self.exe, &self.config.name, &self.args, bound, count, state_fd) {
            Ok(upgrade) => {
                tracing::info!(
                    "SIGUSR2: binary upgrade: started {} as the new master (pid {})",
                    self.exe.display(),
                    upgrade.child.id()
                );
                self.upgrade = Some(upgrade);
            }
            Err(e) => tracing::error!("SIGUSR2: not upgraded, cannot start {}: {e}", self.exe.display()),
        }
    }

    /// Once the new master of an upgrade serves, this master hands the
    /// instance over and drains; if it fails to, this one goes on serving.
    fn follow_upgrade(&mut self) {
        let Some(upgrade) = &mut self.upgrade else { return };
        if upgrade.is_ready() {
            let pid = upgrade.child.id();
            self.upgrade = None;
            tracing::info!("SIGUSR2: upgraded: the new master (pid {pid}) serves; this one and its workers drain");
            self.state.disown();
            self.handed_over = true;
            if let Some(n) = &self.notifier {
                n.send(&format!("MAINPID={pid}\nREADY=1\nSTATUS=serving (upgraded)"));
            }
            self.stop(SIGTERM);
            return;
        }
        let failed = match upgrade.child.try_wait() {
            Ok(Some(status)) => Some(format!("the new program exited ({})", describe(status))),
            Ok(None) if upgrade.started.elapsed() > START_TIMEOUT => {
                let _ = upgrade.child.kill();
                let _ = upgrade.child.wait();
                Some(format!("the new program did not serve within {START_TIMEOUT:?}"))
            }
            Ok(None) => None,
            Err(e) => Some(format!("cannot follow the new program: {e}")),
        };
        if let Some(why) = failed {
            self.upgrade = None;
            tracing::error!("SIGUSR2: not upgraded: {why}; this master and its workers keep serving");
        }
    }

    /// SIGHUP: reads the configuration again and, if it is valid, starts a
    /// new generation of workers on the same listeners; once they all
    /// listen, the old ones drain. No connection is refused meanwhile: the
    /// listening sockets stay open in the master the whole time.
    fn reload(&mut self) {
        if self.reloading.is_some() || self.upgrade.is_some() {
            tracing::warn!("SIGHUP: not reloaded, a reload or upgrade is already in progress");
            return;
        }
        let fresh = match reload_config(&self.config, &self.args) {
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
        // The master follows the new settings too (deadlines, critical
        // point); the processes and sockets keep their shape.
        let mut fresh = fresh;
        fresh.server.workers = self.config.server.workers;
        fresh.server.shards = self.config.server.shards;
        fresh.server.port = self.config.server.port;
        fresh.server.address = self.config.server.address.clone();
        self.config = fresh;
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
            let kill_at = self.drain_deadline();
            for worker in self.workers.iter_mut().filter(|w| w.generation < generation) {
                if !matches!(worker.phase, Phase::Stopping { .. }) {
                    send(&worker.child, SIGTERM);
                    worker.phase = Phase::Stopping { kill_at };
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
        let kill_at = self.drain_deadline();
        for worker in self.workers.iter_mut().filter(|w| w.generation == generation) {
            send(&worker.child, SIGTERM);
            worker.phase = Phase::Stopping { kill_at };
        }
        self.reloading = None;
        // An old worker that died meanwhile was left to the new generation:
        // now it needs its own restart.
        let now = Instant::now();
        for index in 0..self.config.server.workers {
            if !self.covered(index) && !self.restarts.iter().any(|r| r.index == index) {
                self.restarts.push(Restart { index, at: now });
            }
        }
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
            if matches!(worker.phase, Phase::Stopping { .. }) {
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
            if self.covered(index) {
                // A worker of a reload in progress took this index over.
                continue;
            }
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

    /// True when a live worker, not draining, serves (or is starting for) `index`.
    fn covered(&self, index: usize) -> bool {
        self.workers.iter().any(|w| w.index == index && !matches!(w.phase, Phase::Stopping { .. }))
    }

    /// When a worker told now to drain by SIGTERM is killed if still there:
    /// its own shutdown deadline, and a grace.
    fn drain_deadline(&self) -> Instant {
        Instant::now() + Duration::from_secs(self.config.server.shutdown_timeout) + KILL_GRACE
    }

    /// Kills workers that drain past their own deadline (and a grace).
    fn kill_stragglers(&mut self) {
        let now = Instant::now();
        for worker in &mut self.workers {
            if let Phase::Stopping { kill_at } = worker.phase {
                if now > kill_at {
                    tracing::warn!("worker #{} did not stop in time; killing it", worker.index);
                    let _ = worker.child.kill();
                }
            }
        }
    }

    /// Devel mode: reloads when the program or its configuration changed
    /// (looked at again once a reload in progress is done).
    fn check_files(&mut self) {
        if self.reloading.is_some() || self.upgrade.is_some() || self.stopping.is_some() {
            return;
        }
        let Some(watch) = &mut self.watch else { return };
        if let Some(path) = watch.changed(Instant::now()) {
            tracing::info!("devel: {} changed; starting new workers", path.display());
            self.reload();
        }
    }

    /// The critical point: a serving worker whose busiest shard stayed over
    /// the CPU threshold drains (and is killed at its deadline if it is
    /// stuck) while a new one takes its place at once; the listening sockets
    /// stay open in the master meanwhile, so no connection is refused.
    fn check_critical_points(&mut self) {
        if self.reloading.is_some() || self.stopping.is_some() {
            return;
        }
        let now = Instant::now();
        let mut hot = Vec::new();
        for (i, worker) in self.workers.iter_mut().enumerate() {
            if worker.phase != Phase::Serving {
                continue;
            }
            if let Some(percent) = worker.cpu.as_mut().and_then(|w| w.check(worker.child.id(), now)) {
                hot.push((i, percent));
            }
        }
        let Some(point) = self.config.server.critical_point else { return };
        for (i, percent) in hot {
            let (index, pid) = (self.workers[i].index, self.workers[i].child.id());
            tracing::warn!(
                "worker #{index} (pid {pid}) is over its critical point: a shard at {percent:.0}% CPU for {} checks {} s apart (limit {}%); replacing it",
                point.continuous,
                point.interval,
                point.cpu_percent
            );
            let kill_at = self.drain_deadline();
            send(&self.workers[i].child, SIGTERM);
            self.workers[i].phase = Phase::Stopping { kill_at };
            self.restarts.push(Restart { index, at: now });
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

/// Reads the configuration again the way the program started (same file,
/// same flags `args`).
fn reload_config(current: &Config, args: &[OsString]) -> Result<Config> {
    let program = std::iter::once(OsString::from("skitai"));
    let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(program.chain(args.iter().cloned()))
        .map_err(|e| Error::config("arguments", e.to_string().trim()))?;
    // The program's own settings are not known here; the running ones stand in for them.
    let mut config = match super::config_file(&cli) {
        Some(path) => current.overlay_file(&path)?,
        None => current.clone(),
    };
    cli.apply(&mut config)?;
    config.validate()?;
    Ok(config)
}

/// Makes `command`'s process inherit exactly `fds` (besides standard input,
/// output and error); with `die_with_parent` it also gets SIGTERM when this
/// process dies (`PR_SET_PDEATHSIG`).
pub(crate) fn pass_descriptors(command: &mut Command, fds: Vec<RawFd>, die_with_parent: bool) {
    // SAFETY: the closure runs between fork and exec and makes only
    // async-signal-safe calls (close_range, fcntl, prctl) on descriptors
    // that are open in the child; `fds` was allocated before the fork.
    unsafe {
        command.pre_exec(move || {
            // Descriptors this process inherited from whoever started it
            // stay out of the child; only ours go in.
            libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, libc::CLOSE_RANGE_CLOEXEC);
            for &fd in &fds {
                if libc::fcntl(fd, libc::F_SETFD, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if die_with_parent {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            }
            Ok(())
        });
    }
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
