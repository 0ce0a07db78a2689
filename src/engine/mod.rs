//! The engine: the builder an embedding program uses, start-up, and shutdown.

mod cpu_watch;
mod daemon;
mod file_watch;
mod listeners;
mod master;
mod privileges;
mod server;
mod signals;
mod status;
mod systemd;
mod upgrade;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Parser;

use server::Program;
pub use server::{ReloadHandle, Server, ShutdownHandle};

use crate::apps::StaticDir;
use crate::apps::static_files::{MaxAge, StaticMount};
use crate::cli::{Cli, Command};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::mount::{HandlerFactory, MountSpec};
use crate::shard::services::GlobalSubscriber;
use crate::state::{Event, Registrations};

/// The name of the configuration file read from the working directory when `-c` is not given.
pub const DEFAULT_CONFIG_FILE: &str = "skitai.toml";

/// What a mount point serves.
#[derive(Clone)]
pub enum MountTarget {
    /// A handler built per shard.
    Handler(Arc<dyn HandlerFactory>),
    /// A directory of static files.
    Static(StaticDir),
    /// A directory, an `@alias`, or the name of a registered handler, resolved at start-up.
    Named(String),
}

impl std::fmt::Debug for MountTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MountTarget::Handler(_) => f.write_str("MountTarget::Handler"),
            MountTarget::Static(d) => write!(f, "MountTarget::Static({:?})", d.path()),
            MountTarget::Named(n) => write!(f, "MountTarget::Named({n:?})"),
        }
    }
}

/// Anything that can be mounted: a handler factory, or a string naming a target.
pub trait IntoMountTarget {
    /// Converts into a [`MountTarget`].
    fn into_mount_target(self) -> MountTarget;
}

impl<F: HandlerFactory> IntoMountTarget for F {
    fn into_mount_target(self) -> MountTarget {
        MountTarget::Handler(Arc::new(self))
    }
}

impl IntoMountTarget for StaticDir {
    fn into_mount_target(self) -> MountTarget {
        MountTarget::Static(self)
    }
}

impl IntoMountTarget for &str {
    fn into_mount_target(self) -> MountTarget {
        MountTarget::Named(self.to_owned())
    }
}

impl IntoMountTarget for String {
    fn into_mount_target(self) -> MountTarget {
        MountTarget::Named(self)
    }
}

/// Builds and runs a skitai server; the same engine drives the `skitai` binary.
///
/// ```no_run
/// use skitai::prelude::*;
/// fn main() -> skitai::Result<()> {
///     Engine::new()
///         .mount("/", handler_fn(|_req, _cx| async { Response::text("Hello, World!") }))
///         .run()
/// }
/// ```
pub struct Engine {
    config: Config,
    mounts: Vec<(String, MountTarget)>,
    named: HashMap<String, Arc<dyn HandlerFactory>>,
    registrations: Registrations,
    subscribers: Vec<GlobalSubscriber>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("config", &self.config)
            .field("mounts", &self.mounts)
            .field("registrations", &self.registrations)
            .finish_non_exhaustive()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl Engine {
    /// An engine with default settings and nothing mounted.
    pub fn new() -> Engine {
        Engine {
            config: Config::default(),
            mounts: Vec::new(),
            named: HashMap::new(),
            registrations: Registrations::default(),
            subscribers: Vec::new(),
        }
    }

    /// Registers named integer states shared by every shard and worker
    /// (`cx.getgs/setgs/incgs`); Skitai's `register_states`. Names from
    /// `[state] states` are added to these.
    pub fn register_states<I, S>(mut self, names: I) -> Engine
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.registrations.states.extend(names.into_iter().map(Into::into));
        self
    }

    /// Registers cache keys whose last update time is shared
    /// (`cx.setlu/getlu`); Skitai's `register_cache_keys`. Names from
    /// `[state] cache_keys` are added to these.
    pub fn register_cache_keys<I, S>(mut self, names: I) -> Engine
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.registrations.cache_keys.extend(names.into_iter().map(Into::into));
        self
    }

    /// Calls `f` on every shard for each broadcast of `event` (from
    /// `cx.broadcast`, `Server::state().broadcast`, or `setlu`, which sends
    /// `model-changed:<key>`). `f` runs on the receiving shard's thread;
    /// shard-local state (a `thread_local!`) is the natural place for it to write.
    pub fn on_broadcast(mut self, event: &str, f: impl Fn(&Event) + Send + Sync + 'static) -> Engine {
        self.subscribers.push((event.to_owned(), Arc::new(f)));
        self
    }

    /// Mounts `target` at `point` (a URL prefix starting with `/`; longest prefix wins).
    pub fn mount(mut self, point: &str, target: impl IntoMountTarget) -> Engine {
        self.mounts.push((point.to_owned(), target.into_mount_target()));
        self
    }

    /// Registers a handler under `name`, so a config file can mount it with `target = "name"`.
    pub fn handler(mut self, name: &str, factory: impl HandlerFactory) -> Engine {
        self.named.insert(name.to_owned(), Arc::new(factory));
        self
    }

    /// Changes the program's settings; a config file and flags still override them.
    pub fn configure(mut self, f: impl FnOnce(&mut Config)) -> Engine {
        f(&mut self.config);
        self
    }

    /// Sets the instance name.
    pub fn name(self, name: &str) -> Engine {
        self.configure(|c| c.name = name.to_owned())
    }

    /// Sends `Cache-Control: max-age=<seconds>` (and `Expires`) with static
    /// files whose URL starts with `prefix`; the longest matching prefix wins.
    pub fn set_max_age(self, prefix: &str, seconds: u64) -> Engine {
        self.configure(|c| {
            c.max_age.insert(prefix.to_owned(), seconds);
        })
    }

    /// Serves TLS on the main port with this PEM certificate chain and key
    /// (`passphrase` for an encrypted PKCS#8 key); Skitai's `enable_ssl`.
    pub fn enable_ssl(self, cert: &str, key: &str, passphrase: Option<&str>) -> Engine {
        self.configure(|c| {
            let tls = c.tls.get_or_insert_with(Default::default);
            tls.cert = Some(cert.into());
            tls.key = Some(key.into());
            tls.passphrase = passphrase.map(str::to_owned);
        })
    }

    /// Adds a plain listener on `port` that answers every request with a 301
    /// to the same URL over https (on `domain` if given, else the request's
    /// host); Skitai's `enable_forward`. Needs [`Engine::enable_ssl`].
    pub fn enable_forward(self, port: u16, domain: Option<&str>) -> Engine {
        self.configure(|c| {
            let tls = c.tls.get_or_insert_with(Default::default);
            tls.forward_port = Some(port);
            tls.forward_domain = domain.map(str::to_owned);
        })
    }

    /// Leaves requests for these paths out of the request log (Skitai's
    /// `log_off`): `"/static/"` is a prefix, `"*.css"` a suffix.
    pub fn log_off(self, rules: &[&str]) -> Engine {
        self.configure(|c| c.log.off.extend(rules.iter().map(|r| (*r).to_owned())))
    }

    /// Writes the request, server and app logs to files in
    /// `~/.skitai/<name>/log/` (Skitai's `enable_file_logging`), or in `dir`.
    pub fn enable_file_logging(self, dir: Option<&str>) -> Engine {
        self.configure(|c| {
            c.log.file_logging = true;
            c.log.path = dir.map(PathBuf::from);
        })
    }

    /// Answers 503 with `Retry-After` when a new request's estimated wait on
    /// its shard exceeds `seconds` (0 turns it off); Skitai's
    /// `set_503_estimated_timeout`.
    pub fn set_503_estimated_timeout(self, seconds: u64) -> Engine {
        self.configure(|c| c.server.max_estimated_wait = seconds)
    }

    /// Restarts a worker whose busiest shard stays over `cpu_percent` of its
    /// core for `continuous` checks in a row, `interval` seconds apart
    /// (Skitai's `set_worker_critical_point`; an `interval` of 0 turns it off).
    /// A replacement starts at once; the hot worker gets the usual drain.
    pub fn set_worker_critical_point(self, cpu_percent: f64, continuous: u32, interval: u64) -> Engine {
        self.configure(|c| {
            c.server.critical_point = Some(crate::config::CriticalPoint { cpu_percent, continuous, interval });
        })
    }

    /// Serves the admin endpoints (metrics, status page, health checks) on
    /// `address:port` (port 0 picks one).
    pub fn admin(self, address: std::net::IpAddr, port: u16) -> Engine {
        self.configure(|c| {
            c.admin.address = address;
            c.admin.port = Some(port);
        })
    }

    /// Sets the TCP port.
    pub fn port(self, port: u16) -> Engine {
        self.configure(|c| c.server.port = port)
    }

    /// Parses the process's command line and runs the command it names
    /// (by default: serve in the foreground until SIGTERM/SIGINT).
    pub fn run(self) -> Result<()> {
        let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
        let cli = Cli::parse_from(&args);
        self.run_cli(cli, args)
    }

    /// Like [`Engine::run`] with an explicit argument list (the first item is the program name).
    pub fn run_with_args<I, T>(self, args: I) -> Result<()>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
        let cli = Cli::try_parse_from(&args).map_err(|e| Error::config("arguments", e.to_string().trim()))?;
        self.run_cli(cli, args)
    }

    /// Runs the command `cli` names; `args` is the argument list it was
    /// parsed from (program name first), which the master passes on to the
    /// processes it starts.
    fn run_cli(self, cli: Cli, args: Vec<std::ffi::OsString>) -> Result<()> {
        let args: Vec<std::ffi::OsString> = args.into_iter().skip(1).collect();
        let config = self.load_config(&cli)?;
        // Colours only for a terminal, never into log files.
        let ansi =
            config.log.directory(&config.data_dir()).is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
        init_logging(&config.log.level, cli.devel, cli.silent, ansi);
        install_panic_hook();
        if let Some(index) = std::env::var(master::WORKER_ENV).ok().and_then(|v| v.parse::<usize>().ok()) {
            return self.run_worker(config, &cli, index);
        }
        let daemonized = std::env::var_os(daemon::DAEMON_ENV).is_some();
        match cli.command.unwrap_or(Command::Run) {
            Command::Check => {
                self.resolve_mounts(&config)?;
                self.registrations.check(&config)?;
                println!(
                    "ok: configuration is valid ({} mount(s), {} shard(s))",
                    config.mounts.len() + self.mounts.len(),
                    config.shard_count()
                );
                Ok(())
            }
            Command::Status { json } => {
                let code = status::print(&config, json);
                std::process::exit(code)
            }
            Command::Stop => exit_with(daemon::stop(&config)?),
            Command::Install { user_unit } => exit_with(systemd::install(&config, user_unit, &args)?),
            Command::Remove { user_unit } => exit_with(systemd::remove(&config, user_unit)?),
            Command::Reload => exit_with(daemon::reload(&config)?),
            Command::Upgrade => exit_with(daemon::upgrade(&config)?),
            Command::Restart if !daemonized => {
                let stopped = daemon::stop(&config)?;
                if stopped != 0 {
                    exit_with(stopped)?;
                }
                exit_with(daemon::start(&config, &args)?)
            }
            Command::Start if !daemonized => exit_with(daemon::start(&config, &args)?),
            Command::Run if cli.daemon && !daemonized => exit_with(daemon::start(&config, &args)?),
            Command::Run | Command::Start | Command::Restart => {
                master::set_title(&config, &args);
                self.resolve_mounts(&config)?;
                self.registrations.check(&config)?;
                // --devel: new workers when the program or its configuration changes.
                let watch = cli.devel.then(|| {
                    let program = std::env::current_exe().ok();
                    file_watch::FileWatch::new(program.into_iter().chain(config_file(&cli)))
                });
                let console = console(&cli);
                exit_with(master::run(config, self.registrations, master::Invocation { args, watch, console })?)
            }
        }
    }

    /// Runs as worker `index` of a master: the shards, on the listeners the
    /// master passed; tells the master once they listen.
    fn run_worker(self, config: Config, cli: &Cli, index: usize) -> Result<()> {
        let shards = config.shard_count();
        let text = std::env::var(listeners::LISTEN_ENV).unwrap_or_default();
        let bound = listeners::Bound::inherited(&text, shards)?;
        let console = console(cli);
        let caught = signals::register()?;
        let mounts = self.resolve_mounts(&config)?;
        let program = Program { mounts, registrations: self.registrations, subscribers: self.subscribers };
        let launch = server::Launch { listeners: Some(bound), worker: Some(index), console };
        let server = Server::start(&config, program, cli.devel, launch)?;
        let quit_timeout = std::time::Duration::from_secs(config.server.quit_timeout);
        signals::install(caught, server.shutdown_handle(), server.reload_handle(), server.state(), quit_timeout)?;
        let master = std::env::var(master::MASTER_PID_ENV).ok().and_then(|v| v.parse::<u32>().ok());
        if master.is_some_and(|pid| !master::rearm_parent_death(pid)) {
            tracing::warn!("worker #{index}: the master is gone; stopping");
            server.shutdown_handle().shutdown();
        }
        master::notify_ready_from_env();
        server.wait()
    }

    /// Resolves the configuration: the program's settings, then the file, then the flags.
    fn load_config(&self, cli: &Cli) -> Result<Config> {
        let mut config = match &config_file(cli) {
            Some(path) => self.config.overlay_file(path)?,
            None => self.config.clone(),
        };
        cli.apply(&mut config)?;
        config.validate()?;
        Ok(config)
    }

    /// Starts serving with `config` (no CLI, no signal handling): for tests and
    /// programs that manage their own lifecycle.
    pub fn serve(self, config: Config) -> Result<Server> {
        config.validate()?;
        let mounts = self.resolve_mounts(&config)?;
        let program = Program { mounts, registrations: self.registrations, subscribers: self.subscribers };
        Server::start(&config, program, false, server::Launch::default())
    }

    /// Every mount as a (prefix, what answers) pair; names, directories and
    /// duplicates are checked here, and static directories are opened.
    fn resolve_mounts(&self, config: &Config) -> Result<Vec<(String, MountSpec)>> {
        let max_age = Arc::new(MaxAge::new(config.max_age.iter().map(|(p, s)| (p.clone(), *s))));
        let mut resolved: Vec<(String, MountSpec)> = Vec::new();
        let from_code = self.mounts.iter().map(|(p, t)| (format!("mount {p:?}"), p.clone(), t.clone()));
        let from_config = config.mounts.iter().enumerate().map(|(i, m)| {
            let target = match self.named.get(&m.target) {
                Some(_) => MountTarget::Named(m.target.clone()),
                None if m.target.starts_with('@') => MountTarget::Named(m.target.clone()),
                None => MountTarget::Static(
                    StaticDir::new(&m.target).listing(m.listing).follow_symlinks(m.follow_symlinks).hidden(m.hidden),
                ),
            };
            (format!("mount[{i}].target"), m.path.clone(), target)
        });
        for (key, path, target) in from_code.chain(from_config) {
            if !path.starts_with('/') {
                return Err(Error::config(&key, format!("mount point {path:?} must start with '/'")));
            }
            let spec = match target {
                MountTarget::Handler(f) => MountSpec::Handler(f),
                MountTarget::Static(dir) => open_static(&key, &dir, config, &max_age)?,
                MountTarget::Named(name) => match self.named.get(&name) {
                    Some(f) => MountSpec::Handler(f.clone()),
                    None if name.starts_with('@') => {
                        return Err(Error::config(
                            &key,
                            format!("alias {name:?} is not defined (aliases and proxying are not available yet)"),
                        ));
                    }
                    None => open_static(&key, &StaticDir::new(&name), config, &max_age)?,
                },
            };
            let is_static = matches!(spec, MountSpec::Static(_));
            if resolved.iter().any(|(p, s)| *p == path && matches!(s, MountSpec::Static(_)) == is_static) {
                let what = if is_static { "a directory" } else { "a handler" };
                return Err(Error::config(&key, format!("{path:?} already has {what} mounted")));
            }
            resolved.push((path, spec));
        }
        Ok(resolved)
    }
}

/// True when logs also go to the console: not `--silent`, not a daemon.
fn console(cli: &Cli) -> bool {
    !cli.silent && std::env::var_os(daemon::DAEMON_ENV).is_none()
}

/// The configuration file `cli` names, or `./skitai.toml` if there is one.
fn config_file(cli: &Cli) -> Option<PathBuf> {
    match &cli.config {
        Some(path) => Some(path.clone()),
        None => Some(PathBuf::from(DEFAULT_CONFIG_FILE)).filter(|p| p.is_file()),
    }
}

/// Ends the process with `code` unless it is 0 (a command's exit status).
fn exit_with(code: i32) -> Result<()> {
    if code != 0 {
        std::process::exit(code);
    }
    Ok(())
}

/// Opens a static directory for mounting; the error names the mount's key.
fn open_static(key: &str, dir: &StaticDir, config: &Config, max_age: &Arc<MaxAge>) -> Result<MountSpec> {
    let mount = StaticMount::open(dir, &config.static_files, max_age.clone()).map_err(|e| {
        Error::config(
            key,
            format!("{:?} is not a registered handler or a usable directory: {e}", dir.path().display().to_string()),
        )
    })?;
    tracing::debug!(root = %mount.root_path().display(), "static mount");
    Ok(MountSpec::Static(Arc::new(mount)))
}

/// Logs panics as one error line (handler panics become 500s and are
/// expected to be rare, but they must be visible without a backtrace flood).
fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-string panic payload".to_owned());
        let location = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        let thread = std::thread::current();
        tracing::error!(thread = thread.name().unwrap_or("?"), %location, "panic: {message}");
    }));
}

/// Sets up the `tracing` subscriber once: `RUST_LOG` wins, then `--devel`
/// (debug) or `--silent` (warnings), else `[log] level`. Events go through
/// the log router: the app log (`cx.log`) and the server log, each to its
/// file or the console.
fn init_logging(level: &str, devel: bool, silent: bool, ansi: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if devel {
        "skitai=debug,app=debug,info"
    } else if silent {
        "warn"
    } else {
        level
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(crate::observe::output::LogRouter)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
}
