//! A running server: its shards, their listeners, and the shutdown protocol.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, unbounded};
use monoio::blocking::DefaultThreadPool;

use super::listeners::Bound;
use crate::config::Config;
use crate::error::{Error, ErrorKind, Result};
use crate::mount::{MountSpec, ShardInfo};
use crate::net::tls::{self, TlsCerts};
use crate::observe::RequestLog;
use crate::observe::access_log::LogOff;
use crate::observe::admin::AdminFactory;
use crate::observe::output::{self, Output, RequestSink};
use crate::observe::peers::Peers;
use crate::proto::ListenerRole;
use crate::shard::bus::Bus;
use crate::shard::services::GlobalSubscriber;
use crate::shard::{self, Control, Protocols, ShardHandle, ShardPlan};
use crate::state::{Registrations, SharedState};

/// How often [`Server::wait`] looks for a shutdown started elsewhere.
const SHUTDOWN_POLL: Duration = Duration::from_millis(100);
/// How long shards get to exit after the shutdown deadline sent them `Stop`.
const STOP_GRACE: Duration = Duration::from_secs(1);

/// How a server starts: where its listeners come from, and where its request log may go.
#[derive(Debug, Default)]
pub(crate) struct Launch {
    /// Listeners bound already (by a master); `None` binds them here.
    pub(crate) listeners: Option<Bound>,
    /// This process is worker number N of a master (attach to its state file).
    pub(crate) worker: Option<usize>,
    /// The request log may go to standard output (a foreground server).
    pub(crate) console: bool,
}

/// What the program adds to the configuration: mounts, shared-state names,
/// broadcast subscribers.
pub(crate) struct Program {
    pub(crate) mounts: Vec<(String, MountSpec)>,
    pub(crate) registrations: Registrations,
    pub(crate) subscribers: Vec<GlobalSubscriber>,
}

/// A server whose shards are running.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    shards: Vec<ShardHandle>,
    exits: Receiver<(usize, Option<String>)>,
    shutdown: ShutdownHandle,
    shutdown_timeout: Duration,
    tls_certs: Option<Arc<TlsCerts>>,
    state: SharedState,
    admin_addr: Option<SocketAddr>,
    /// The request log's writer thread; closed once the shards are gone.
    log_thread: Option<LogThread>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server").field("local_addrs", &self.local_addrs).field("shards", &self.shards.len()).finish()
    }
}

/// A `Send` handle that reloads the TLS certificates from another thread.
#[derive(Clone, Debug)]
pub struct ReloadHandle {
    certs: Option<Arc<TlsCerts>>,
}

impl ReloadHandle {
    /// See [`Server::reload_tls`].
    pub fn reload_tls(&self) -> Result<()> {
        match &self.certs {
            Some(certs) => certs.reload(),
            None => Ok(()),
        }
    }
}

/// The protocols every shard speaks, from the configuration: TLS (with the
/// loaded certificates, kept for reloads), HTTP/2 settings, https redirects.
fn build_protocols(config: &Config, port: u16) -> Result<(Protocols, Option<Arc<TlsCerts>>)> {
    let (acceptor, certs, handshake_timeout) = match &config.tls {
        Some(tls_config) => {
            let certs = TlsCerts::load(tls_config)?;
            let server_config = tls::server_config(certs.clone(), config.http2.enabled)?;
            let acceptor = monoio_rustls::TlsAcceptor::from(server_config);
            (Some(acceptor), Some(certs), Duration::from_secs(tls_config.handshake_timeout))
        }
        None => (None, None, Duration::from_secs(crate::config::DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS)),
    };
    let domain = config.tls.as_ref().and_then(|t| t.forward_domain.clone());
    let protocols =
        Protocols { tls: acceptor, handshake_timeout, http2: config.http2.clone(), https_redirect: (domain, port) };
    Ok((protocols, certs))
}

/// A `Send` handle that starts a graceful shutdown of every shard.
#[derive(Clone, Debug)]
pub struct ShutdownHandle {
    bus: Arc<Bus>,
    /// When the shutdown started, and its deadline if not the configured one.
    started: Arc<OnceLock<(Instant, Option<Duration>)>>,
}

impl ShutdownHandle {
    /// Stops accepting, lets in-flight requests finish, closes idle connections.
    /// Calling it again does nothing.
    pub fn shutdown(&self) {
        self.start(None);
    }

    /// Like [`ShutdownHandle::shutdown`], with `deadline` in place of
    /// `shutdown_timeout` (SIGQUIT's long deadline).
    pub fn shutdown_within(&self, deadline: Duration) {
        self.start(Some(deadline));
    }

    fn start(&self, deadline: Option<Duration>) {
        if self.started.set((Instant::now(), deadline)).is_ok() {
            self.send_all(Control::Drain);
        }
    }

    fn send_all(&self, control: Control) {
        for shard in 0..self.bus.shards() {
            self.bus.control(shard, control);
        }
    }

    /// True once [`ShutdownHandle::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.started.get().is_some()
    }

    fn started_at(&self) -> Option<(Instant, Option<Duration>)> {
        self.started.get().copied()
    }
}

/// Raises the soft limit on open files to the hard limit: every connection
/// and every file served with `sendfile` holds a descriptor, and the usual
/// soft limit (1024) is far below what one shard handles.
fn raise_nofile_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit with a pointer to a live rlimit struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max {
            let wanted = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) != 0 {
                tracing::debug!("could not raise the open file limit from {}", limit.rlim_cur);
            }
        }
    }
}

impl Server {
    /// Binds the listeners (or takes the ones a master passed, as worker
    /// `launch.worker`) and starts one shard thread per configured shard;
    /// returns once every shard accepts. If one cannot start (no runtime
    /// for its I/O driver, a panic while its handlers are built), the
    /// others are stopped and that shard's error is returned.
    pub(crate) fn start(config: &Config, program: Program, devel: bool, launch: Launch) -> Result<Server> {
        raise_nofile_limit();
        let (request_log, log_thread) = start_logs(config, launch.console)?;
        let count = config.shard_count();
        let s = &config.server;
        // First, so a second instance of the same name stops here, before
        // its SO_REUSEPORT listeners could take connections from the first.
        // A worker attaches to the file its master created.
        let state = match launch.worker {
            Some(worker) => SharedState::attach(config, &program.registrations, count, worker)?,
            None => SharedState::create(config, &program.registrations, count)?,
        };
        // Every shard gets its own listener on every address (and redirect port).
        let bound = match launch.listeners {
            Some(bound) => bound,
            None => Bound::bind(config, count)?,
        };
        let local_addrs = bound.addrs(ListenerRole::Main);
        let redirect_addrs = bound.addrs(ListenerRole::RedirectToHttps);
        let admin_addr = bound.addrs(ListenerRole::Admin).first().copied();
        let mut per_address: Vec<_> = bound
            .groups
            .into_iter()
            .map(|(role, listeners)| listeners.into_iter().map(|l| (l, role)).collect::<Vec<_>>().into_iter())
            .collect();
        let port = local_addrs[0].port();
        let (protocols, tls_certs) = build_protocols(config, port)?;
        let started = std::time::SystemTime::now();
        let admin_factory: Arc<dyn crate::mount::HandlerFactory> =
            Arc::new(AdminFactory { name: config.name.clone(), started });
        let mut program = program;
        if let Some(point) = &config.admin.mount {
            program.mounts.push((point.clone(), MountSpec::Handler(admin_factory.clone())));
        }
        // Ports are bound and keys read: root is no longer needed.
        super::privileges::drop_privileges(s.user.as_deref(), s.group.as_deref(), |uid, gid| {
            state.file().hand_over(uid, gid)
        })?;
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let pool = DefaultThreadPool::new(s.threads);
        let mounts = Arc::new(program.mounts);
        let subscribers = Arc::new(program.subscribers);
        let limits = config.limits();
        let (exit_tx, exits) = unbounded();
        let (report_tx, shard_reports) = unbounded();
        let peers = launch.worker.and_then(|worker| Peers::new(config, worker, count)).map(Arc::new);
        let mut shards = Vec::with_capacity(count);
        let mut spawn_failure = None;
        for id in 0..count {
            let plan = ShardPlan {
                info: ShardInfo { id, count },
                core: (!cores.is_empty()).then(|| cores[id % cores.len()]),
                io: s.io,
                limits,
                devel,
                listeners: per_address.iter_mut().filter_map(Iterator::next).collect(),
                protocols: protocols.clone(),
                mounts: mounts.clone(),
                pool: pool.clone(),
                state: state.clone(),
                subscribers: subscribers.clone(),
                request_log: request_log.clone(),
                admin: admin_addr.is_some().then(|| admin_factory.clone()),
                admin_mount: config.admin.mount.clone(),
                peers: peers.clone(),
                started: report_tx.clone(),
            };
            let exit_tx = exit_tx.clone();
            match shard::spawn(plan, move |id, error| {
                let _ = exit_tx.send((id, error));
            }) {
                Ok(handle) => shards.push(handle),
                Err(e) => {
                    // The shards already running are stopped below.
                    spawn_failure = Some(format!("cannot start shard {id}: {e}"));
                    break;
                }
            }
        }
        drop(report_tx);
        let shutdown = ShutdownHandle { bus: state.bus().clone(), started: Arc::new(OnceLock::new()) };
        // The shards hold the request log now; once they are gone its thread ends.
        drop(request_log);
        let server = Server {
            local_addrs,
            shards,
            exits,
            shutdown,
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout),
            tls_certs,
            state,
            admin_addr,
            log_thread,
        };
        // Serving means every shard serves: a shard that cannot get its
        // runtime (`io = "uring"` where io_uring is refused) fails the start,
        // so a master reports it instead of restarting the worker forever.
        let running = server.shards.len();
        let outcome = spawn_failure.map_or_else(|| await_shards(&shard_reports, running), Err);
        if let Err(error) = outcome {
            server.shutdown.shutdown();
            return Err(server.wait().err().unwrap_or_else(|| Error::new(ErrorKind::Internal, error)));
        }
        let scheme = if server.tls_certs.is_some() { "https" } else { "http" };
        for addr in &server.local_addrs {
            tracing::info!("{} listening on {scheme}://{addr} ({count} shard(s))", config.name);
        }
        for addr in &redirect_addrs {
            tracing::info!("{} redirecting http://{addr} to https", config.name);
        }
        if let Some(addr) = server.admin_addr {
            tracing::info!("{} admin on http://{addr} (/status, /metrics, /healthz, /readyz)", config.name);
        }
        Ok(server)
    }

    /// The address of the admin listener, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// Reads the TLS certificate and key files again and uses them for new
    /// handshakes (open connections keep theirs). Does nothing without TLS;
    /// on error the certificates in use stay.
    pub fn reload_tls(&self) -> Result<()> {
        match &self.tls_certs {
            Some(certs) => certs.reload(),
            None => Ok(()),
        }
    }

    /// A `Send` handle that reloads the TLS certificates (see [`Server::reload_tls`]).
    pub fn reload_handle(&self) -> ReloadHandle {
        ReloadHandle { certs: self.tls_certs.clone() }
    }

    /// The instance's shared state: read and write states and cache keys,
    /// and broadcast, from any thread.
    pub fn state(&self) -> SharedState {
        self.state.clone()
    }

    /// The first address the shards listen on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addrs[0]
    }

    /// Every address the shards listen on.
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// A handle that can stop this server from another thread or a signal handler.
    pub fn shutdown_handle(&self) -> ShutdownHandle {
        self.shutdown.clone()
    }

    /// Starts a graceful shutdown and waits for it (bounded by `shutdown_timeout`).
    pub fn shutdown(self) -> Result<()> {
        self.shutdown.shutdown();
        self.wait()
    }

    /// Blocks until every shard has exited; after a shutdown starts, waits at
    /// most `shutdown_timeout` before giving up on stragglers.
    pub fn wait(self) -> Result<()> {
        let mut running = self.shards.len();
        let mut failure: Option<String> = None;
        while running > 0 {
            let event = match self.shutdown.started_at() {
                // Poll so that a shutdown started from another thread arms the deadline.
                None => match self.exits.recv_timeout(SHUTDOWN_POLL) {
                    Err(RecvTimeoutError::Timeout) => continue,
                    other => other,
                },
                Some((started, deadline)) => {
                    self.exits.recv_deadline(started + deadline.unwrap_or(self.shutdown_timeout))
                }
            };
            match event {
                Ok((id, error)) => {
                    running -= 1;
                    if let Some(error) = error {
                        tracing::error!("{error}");
                        failure.get_or_insert(error);
                        // One shard failing brings the others down with it.
                        self.shutdown.shutdown();
                    } else if !self.shutdown.is_shutting_down() {
                        tracing::error!("shard {id} stopped unexpectedly");
                        failure.get_or_insert(format!("shard {id} stopped unexpectedly"));
                        self.shutdown.shutdown();
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    let deadline = self.shutdown.started_at().and_then(|(_, d)| d).unwrap_or(self.shutdown_timeout);
                    tracing::warn!(
                        "shutdown deadline of {deadline:?} passed with {running} shard(s) still busy; stopping them"
                    );
                    self.shutdown.send_all(Control::Stop);
                    let grace = Instant::now() + STOP_GRACE;
                    while running > 0 && self.exits.recv_deadline(grace).is_ok() {
                        running -= 1;
                    }
                    break;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
        }
        if running == 0 {
            for shard in self.shards {
                let _ = shard.thread.join();
            }
            // Every line the shards handed over is written before we return.
            if let Some(log) = self.log_thread {
                log.sink.close();
                let _ = log.thread.join();
            }
        }
        self.state.remove_file();
        match failure {
            Some(error) => Err(Error::new(ErrorKind::Internal, error)),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// The request log's writer thread and what ends it.
struct LogThread {
    sink: Arc<RequestSink>,
    thread: std::thread::JoinHandle<()>,
}

/// The request log as the shards get it, and its writer thread.
type StartedLogs = (Option<Arc<RequestLog>>, Option<LogThread>);

/// Sets up the logs for `config`: the server and app logs go to their files
/// (and the console) from now on, and the request log gets its writer
/// thread, unless it is off or has nowhere to go (no files, no console).
/// The configuration key that puts the logs in files.
fn log_dir_key(config: &Config) -> &'static str {
    if config.log.path.is_some() { "log.path" } else { "log.file_logging" }
}

/// Sends the server and app logs to `server.log` and `app.log` in the log
/// directory, when the logs go to files (and to standard error as well
/// when `console`), else to standard error; returns the directory. The
/// master calls it too, so its lines (starts, restarts, reloads) are in
/// `server.log` with the workers'.
pub(crate) fn route_server_logs(config: &Config, console: bool) -> Result<Option<std::path::PathBuf>> {
    let Some(dir) = config.log.directory(&config.data_dir()) else {
        output::route_logs(Output::stderr(), Output::stderr());
        return Ok(None);
    };
    let key = log_dir_key(config);
    std::fs::create_dir_all(&dir).map_err(|e| Error::config(key, format!("cannot create {}: {e}", dir.display())))?;
    let open = |file: &str| -> Result<Arc<Output>> {
        Output::file(dir.join(file), console)
            .map_err(|e| Error::config(key, format!("cannot open {}: {e}", dir.join(file).display())))
    };
    output::route_logs(open("server.log")?, open("app.log")?);
    Ok(Some(dir))
}

fn start_logs(config: &Config, console: bool) -> Result<StartedLogs> {
    let log = &config.log;
    let requests_to = match route_server_logs(config, console)? {
        Some(dir) if log.requests => {
            let path = dir.join("request.log");
            let file = Output::file(path.clone(), false)
                .map_err(|e| Error::config(log_dir_key(config), format!("cannot open {}: {e}", path.display())))?;
            Some(file)
        }
        Some(_) => None,
        None => (log.requests && console).then(Output::stdout),
    };
    let Some(to) = requests_to else { return Ok((None, None)) };
    let (sink, thread) = RequestSink::start(to)
        .map_err(|e| Error::new(ErrorKind::Internal, "cannot start the request log thread").with_source(e))?;
    let shared = RequestLog { format: log.format, off: LogOff::new(&log.off), sink: sink.clone() };
    Ok((Some(Arc::new(shared)), Some(LogThread { sink, thread })))
}

/// Waits until each of the `count` shards says it accepts, or one says why
/// it could not start (its first word counts: a shard that failed after
/// starting reports again).
fn await_shards(started: &Receiver<(usize, Result<(), String>)>, count: usize) -> std::result::Result<(), String> {
    let mut up = vec![false; count];
    let mut waiting = count;
    while waiting > 0 {
        match started.recv() {
            Ok((id, Ok(()))) if !up[id] => {
                up[id] = true;
                waiting -= 1;
            }
            Ok((id, Err(error))) if !up[id] => return Err(error),
            Ok(_) => {}
            Err(_) => return Err("the shards ended while starting".into()),
        }
    }
    Ok(())
}
