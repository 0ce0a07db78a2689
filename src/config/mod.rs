//! The configuration: TOML file → [`Config`] → [`Config::validate`] → CLI merge.
//!
//! Every field has a default, so an empty file (or none) is a working
//! configuration. Unknown keys are errors, and every error names its key.

mod size;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use size::ByteSize;

use crate::error::{Error, Result};

/// Default TCP port, as in Skitai.
pub const DEFAULT_PORT: u16 = 5000;
/// Default listen backlog per shard listener, as in Skitai.
pub const DEFAULT_BACKLOG: u32 = 2048;
/// Most worker processes accepted.
pub const MAX_WORKERS: usize = 64;
/// Default size of the blocking thread pool.
pub const DEFAULT_THREADS: usize = 4;
/// Idle keep-alive timeout in seconds (Skitai's `set_keep_alive`).
pub const DEFAULT_KEEP_ALIVE_SECS: u64 = 30;
/// Inactivity timeout while a request is being received or answered.
pub const DEFAULT_REQUEST_TIMEOUT_SECS: u64 = 30;
/// Time allowed to receive a whole request head; defends against slowloris.
pub const DEFAULT_HEADER_TIMEOUT_SECS: u64 = 10;
/// Hard deadline for a graceful shutdown before stragglers are cut off.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// Default deadline of a graceful stop by SIGQUIT, seconds: the long one,
/// for downloads and WebSocket sessions that should rather end by themselves.
pub const DEFAULT_QUIT_TIMEOUT_SECS: u64 = 300;
/// Largest request body accepted (413 above it), as in Skitai.
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 256 << 20;
/// Largest request head (request line + fields) accepted (431 above it).
pub const DEFAULT_MAX_HEADER_SIZE: u64 = 16 << 10;
/// Most header fields accepted in one request (431 above it).
pub const DEFAULT_MAX_HEADERS: usize = 100;
/// Upper bound of `max_headers`: the parser keeps that many field slots on the stack.
pub const MAX_HEADERS_LIMIT: usize = 256;
/// Longest request target accepted (414 above it).
pub const DEFAULT_MAX_URI_SIZE: u64 = 8 << 10;

/// Estimated wait above which a new request gets 503, seconds (Skitai's default).
pub const DEFAULT_MAX_ESTIMATED_WAIT_SECS: u64 = 10;
/// Open connections per shard before new ones are refused.
pub const DEFAULT_MAX_CONNECTIONS: usize = 16_384;
/// Requests handled at once per shard before new ones are refused.
pub const DEFAULT_MAX_INFLIGHT: usize = 4096;

/// The whole configuration of one skitai instance.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Instance name: names the data directory, pid file and shared memory.
    pub name: String,
    /// Listener, shards and protocol limits.
    pub server: ServerConfig,
    /// Mount points, in the order given; lookup is by longest prefix.
    #[serde(rename = "mount")]
    pub mounts: Vec<MountConfig>,
    /// Static file serving: the per-shard cache and compression.
    #[serde(rename = "static")]
    pub static_files: StaticConfig,
    /// `Cache-Control: max-age` (and `Expires`) for static files, by URL
    /// prefix; the longest matching prefix wins. Empty by default.
    pub max_age: BTreeMap<String, u64>,
    /// TLS on the main port; absent means plain TCP.
    pub tls: Option<TlsConfig>,
    /// HTTP/2 settings (h2 by ALPN over TLS, h2c by prior knowledge on plain ports).
    pub http2: Http2Config,
    /// Shared state (states, cache keys) and the cross-shard bus.
    pub state: StateConfig,
    /// The request, server and app logs.
    pub log: LogConfig,
    /// The admin listener: metrics, status page, health checks.
    pub admin: AdminConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            name: "skitai".to_owned(),
            server: ServerConfig::default(),
            mounts: Vec::new(),
            static_files: StaticConfig::default(),
            max_age: BTreeMap::new(),
            tls: None,
            http2: Http2Config::default(),
            state: StateConfig::default(),
            log: LogConfig::default(),
            admin: AdminConfig::default(),
        }
    }
}

/// How request log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Skitai's field order: time, peer, method, URI, version, request bytes,
    /// status, response bytes, shard, handling ms, user agent, host, referer,
    /// forwarded-for, gtxid, ltxid, user, token, connections, delivery ms.
    #[default]
    Skitai,
    /// Apache/nginx `combined`.
    Combined,
    /// One JSON object per line.
    Json,
}

/// The `[log]` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Write the request log (one line per request).
    pub requests: bool,
    /// Format of the request log.
    pub format: LogFormat,
    /// Directory of the log files `request.log`, `server.log` and `app.log`.
    /// Unset (and `file_logging` off): the console, when in the foreground.
    pub path: Option<PathBuf>,
    /// Skitai's `enable_file_logging`: log files in `log/` under the data
    /// directory (`~/.skitai/<name>/log/`; when `path` is unset).
    pub file_logging: bool,
    /// Level of the server and app logs: `error`, `warn`, `info`, `debug`,
    /// `trace`, or a `RUST_LOG`-style filter. `RUST_LOG` wins; `--devel` is
    /// `debug`, `--silent` is `warn`.
    pub level: String,
    /// Requests not logged (Skitai's `log_off`): `"/static/"` is a path
    /// prefix, `"*.css"` (a leading `*`) a suffix.
    pub off: Vec<String>,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            requests: true,
            format: LogFormat::Skitai,
            path: None,
            file_logging: false,
            level: "info".to_owned(),
            off: Vec::new(),
        }
    }
}

impl LogConfig {
    /// The directory the log files go to, if they go to files (`data_dir`:
    /// the instance's data directory, for `file_logging`).
    pub fn directory(&self, data_dir: &Path) -> Option<PathBuf> {
        if let Some(path) = &self.path {
            return Some(path.clone());
        }
        self.file_logging.then(|| data_dir.join("log"))
    }
}

/// The `[admin]` section: metrics, the status page and health checks.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Port of the admin listener (0 picks a free one); unset: no admin listener.
    pub port: Option<u16>,
    /// Address of the admin listener; loopback unless you open it on purpose.
    pub address: IpAddr,
    /// Also serve the admin endpoints under this mount point on the main
    /// listeners (e.g. `"/_admin"`); unset: not. Anyone who can reach the
    /// site can then read them.
    pub mount: Option<String>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { port: None, address: IpAddr::from([127, 0, 0, 1]), mount: None }
    }
}

/// Default number of slots of each shared-state array (states, cache keys).
pub const DEFAULT_STATE_SLOTS: usize = 256;
/// Most slots accepted per array.
pub const MAX_STATE_SLOTS: usize = 65_536;
/// Default capacity of each shard's bus queue (broadcasts and fan-out work).
pub const DEFAULT_BUS_CAPACITY: usize = 1024;
/// Most messages accepted per shard's bus queue.
pub const MAX_BUS_CAPACITY: usize = 1 << 20;

/// The `[state]` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Names of integer states (`getgs`/`setgs`/`incgs`), besides those the program registers.
    pub states: Vec<String>,
    /// Names of cache keys (`setlu`/`getlu`), besides those the program registers.
    pub cache_keys: Vec<String>,
    /// Capacity of each array; names beyond it are a configuration error.
    pub slots: usize,
    /// Messages each shard's bus queue holds; when full, new broadcasts to
    /// that shard are dropped and counted.
    pub bus_capacity: usize,
    /// Directory of the state file (default: `$SKITAI_STATE_DIR`, else
    /// `/dev/shm`, else `~/.skitai/<name>/`).
    pub dir: Option<PathBuf>,
}

impl Default for StateConfig {
    fn default() -> Self {
        StateConfig {
            states: Vec::new(),
            cache_keys: Vec::new(),
            slots: DEFAULT_STATE_SLOTS,
            bus_capacity: DEFAULT_BUS_CAPACITY,
            dir: None,
        }
    }
}

/// Default seconds a cached file's metadata is trusted before it is checked again.
pub const DEFAULT_STATIC_REVALIDATE_SECS: u64 = 1;
/// Default number of paths each shard's static file cache remembers.
pub const DEFAULT_STATIC_CACHE_ENTRIES: usize = 4096;
/// Default bytes of file contents each shard keeps in memory.
pub const DEFAULT_STATIC_CACHE_SIZE: u64 = 32 << 20;
/// Default size up to which a file's contents are kept in memory (larger files go by `sendfile`).
pub const DEFAULT_STATIC_CACHE_MAX_FILE: u64 = 256 << 10;

/// Default seconds a client has to complete a TLS handshake.
pub const DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS: u64 = 10;

/// The `[tls]` section: the main port speaks TLS.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (leaf first) of the default certificate.
    pub cert: Option<PathBuf>,
    /// PEM private key of the default certificate (PKCS#8, PKCS#1, SEC1, or encrypted PKCS#8).
    pub key: Option<PathBuf>,
    /// Passphrase of an encrypted key.
    pub passphrase: Option<String>,
    /// More certificates, chosen by the SNI server name (`[[tls.sni]]`).
    pub sni: Vec<TlsCertConfig>,
    /// Seconds a client has to complete the handshake.
    pub handshake_timeout: u64,
    /// A plain listener on this port answers every request with 301 to https.
    pub forward_port: Option<u16>,
    /// The host name used in those redirects (default: the request's `Host`).
    pub forward_domain: Option<String>,
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: None,
            key: None,
            passphrase: None,
            sni: Vec::new(),
            handshake_timeout: DEFAULT_TLS_HANDSHAKE_TIMEOUT_SECS,
            forward_port: None,
            forward_domain: None,
        }
    }
}

/// One `[[tls.sni]]` certificate.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TlsCertConfig {
    /// The SNI name it answers (exact, case-insensitive).
    pub server_name: String,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Passphrase of an encrypted key.
    #[serde(default)]
    pub passphrase: Option<String>,
}

/// The `[http2]` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Http2Config {
    /// Offer h2 by ALPN and accept h2c by prior knowledge.
    pub enabled: bool,
    /// Streams a client may have open at once.
    pub max_concurrent_streams: u32,
    /// Flow-control window of each stream, bytes.
    pub initial_window_size: u32,
    /// Flow-control window of the connection, bytes.
    pub initial_connection_window_size: u32,
    /// Largest frame payload we accept, bytes (16384..=16777215).
    pub max_frame_size: u32,
    /// Largest header list (decoded) we accept, bytes.
    pub max_header_list_size: u32,
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            enabled: true,
            max_concurrent_streams: 128,
            initial_window_size: 1 << 20,
            initial_connection_window_size: 4 << 20,
            max_frame_size: 16_384,
            max_header_list_size: 16 << 10,
        }
    }
}

/// Longest `max_age` accepted: ten years.
pub const MAX_MAX_AGE_SECS: u64 = 10 * 365 * 24 * 3600;

/// The `[static]` section.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct StaticConfig {
    /// Seconds a cached file's metadata is trusted; 0 checks on every request.
    pub revalidate: u64,
    /// Paths remembered per shard (found, missing or directories).
    pub cache_entries: usize,
    /// Bytes of file contents (and gzip-compressed copies) kept per shard.
    pub cache_size: ByteSize,
    /// Files up to this size are kept in memory; larger ones are sent with `sendfile`.
    pub cache_max_file: ByteSize,
    /// Compress text and JSON files over 2 KiB with gzip when the client accepts it
    /// and no precompressed `.gz` sibling exists.
    pub gzip: bool,
    /// Send large files with `sendfile(2)`; `false` reads them through memory
    /// (io_uring reads on the io_uring driver), for filesystems or setups where
    /// that is faster.
    pub sendfile: bool,
}

impl Default for StaticConfig {
    fn default() -> Self {
        StaticConfig {
            revalidate: DEFAULT_STATIC_REVALIDATE_SECS,
            cache_entries: DEFAULT_STATIC_CACHE_ENTRIES,
            cache_size: ByteSize(DEFAULT_STATIC_CACHE_SIZE),
            cache_max_file: ByteSize(DEFAULT_STATIC_CACHE_MAX_FILE),
            gzip: true,
            sendfile: true,
        }
    }
}

/// Which I/O driver the shards run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum IoMode {
    /// io_uring when the kernel allows it, else epoll.
    #[default]
    Auto,
    /// io_uring only; start-up fails if it is unavailable.
    Uring,
    /// epoll only.
    Epoll,
}

/// The `[server]` section.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on: one (`"0.0.0.0"`, `"::"`) or a list
    /// (`["0.0.0.0", "::"]` for IPv4 and IPv6); every shard listens on each.
    #[serde(with = "one_or_many")]
    pub address: Vec<IpAddr>,
    /// TCP port; 0 picks a free one (all shards share it).
    pub port: u16,
    /// Number of shards per worker process; 0 means one per available core.
    pub shards: usize,
    /// Worker processes the master runs (each runs the shards).
    pub workers: usize,
    /// Where the pid file, the daemon's stderr file and the default log
    /// directory live (default `~/.skitai/<name>/`).
    pub data_dir: Option<PathBuf>,
    /// Threads in the blocking pool.
    pub threads: usize,
    /// I/O driver choice.
    pub io: IoMode,
    /// Listen backlog of each shard's listener.
    pub backlog: u32,
    /// Idle keep-alive timeout, seconds.
    pub keep_alive: u64,
    /// Inactivity timeout during a request, seconds.
    pub request_timeout: u64,
    /// Time to receive a request head, seconds.
    pub header_timeout: u64,
    /// Deadline of a graceful shutdown (SIGTERM, SIGINT, the old workers
    /// of a reload), seconds.
    pub shutdown_timeout: u64,
    /// Deadline of a graceful stop by SIGQUIT, seconds (the long one).
    pub quit_timeout: u64,
    /// Restart a worker whose busiest shard stays over a CPU threshold
    /// (Skitai's `set_worker_critical_point`); off when absent.
    pub critical_point: Option<CriticalPoint>,
    /// Largest request body.
    pub max_upload_size: ByteSize,
    /// Largest request head.
    pub max_header_size: ByteSize,
    /// Most header fields in one request.
    pub max_headers: usize,
    /// Longest request target.
    pub max_uri_size: ByteSize,
    /// When started as root: switch to this user after binding ports and
    /// reading keys (default: `SUDO_USER`, when set).
    pub user: Option<String>,
    /// When started as root: switch to this group (default: the user's primary group).
    pub group: Option<String>,
    /// Answer 503 (with `Retry-After`) at once when the estimated wait of a
    /// new request on its shard exceeds this many seconds; 0 turns the
    /// estimate off (Skitai's `set_503_estimated_timeout`).
    pub max_estimated_wait: u64,
    /// Open connections per shard; past it new connections get a 503 and are closed.
    pub max_connections: usize,
    /// Requests being handled at once per shard; past it new requests get a 503.
    pub max_inflight: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            address: vec![IpAddr::from([0, 0, 0, 0])],
            port: DEFAULT_PORT,
            shards: 0,
            workers: 1,
            data_dir: None,
            threads: DEFAULT_THREADS,
            io: IoMode::Auto,
            backlog: DEFAULT_BACKLOG,
            keep_alive: DEFAULT_KEEP_ALIVE_SECS,
            request_timeout: DEFAULT_REQUEST_TIMEOUT_SECS,
            header_timeout: DEFAULT_HEADER_TIMEOUT_SECS,
            shutdown_timeout: DEFAULT_SHUTDOWN_TIMEOUT_SECS,
            quit_timeout: DEFAULT_QUIT_TIMEOUT_SECS,
            critical_point: None,
            max_upload_size: ByteSize(DEFAULT_MAX_UPLOAD_SIZE),
            max_header_size: ByteSize(DEFAULT_MAX_HEADER_SIZE),
            max_headers: DEFAULT_MAX_HEADERS,
            max_uri_size: ByteSize(DEFAULT_MAX_URI_SIZE),
            user: None,
            group: None,
            max_estimated_wait: DEFAULT_MAX_ESTIMATED_WAIT_SECS,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_inflight: DEFAULT_MAX_INFLIGHT,
        }
    }
}

/// `[server.critical_point]`: when a worker's busiest shard used more than
/// `cpu_percent` of its core over `continuous` checks in a row, `interval`
/// seconds apart, the master starts a new worker in its place and stops it.
/// An `interval` of 0 turns the check off, as in Skitai.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CriticalPoint {
    /// Threshold, percent of one core (1-100).
    pub cpu_percent: f64,
    /// Checks in a row over the threshold that trigger a restart.
    pub continuous: u32,
    /// Seconds between checks; 0 turns the check off.
    pub interval: u64,
}

impl Default for CriticalPoint {
    /// Skitai's defaults: 90 %, 3 checks, 20 s apart.
    fn default() -> Self {
        CriticalPoint { cpu_percent: 90.0, continuous: 3, interval: 20 }
    }
}

/// One `[[mount]]` entry.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MountConfig {
    /// URL prefix, starting with `/`.
    pub path: String,
    /// A directory, `@alias`, or the name of a handler the program registered.
    pub target: String,
    /// Directory mounts: list directories that have no index file.
    #[serde(default)]
    pub listing: bool,
    /// Directory mounts: follow symlinks that point outside the directory.
    #[serde(default)]
    pub follow_symlinks: bool,
    /// Directory mounts: serve dot-files (`.well-known/...`, `.env`).
    #[serde(default)]
    pub hidden: bool,
}

impl Config {
    /// Parses a TOML document; errors name the offending key (`server.port: ...`).
    pub fn from_toml(text: &str) -> Result<Config> {
        let de = toml::Deserializer::parse(text).map_err(|e| Error::config("config", e.message().trim()))?;
        serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let key = if path == "." { "config".to_owned() } else { path };
            Error::config(&key, e.inner().message().trim())
        })
    }

    /// Reads a TOML file and lays it over `self` (the program's settings):
    /// keys in the file win, keys it leaves out keep their current value.
    pub fn overlay_file(&self, path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config("config", format!("cannot read {}: {e}", path.display())))?;
        self.overlay_toml(&text).map_err(|e| Error::config(&path.display().to_string(), e))
    }

    /// Lays a TOML document over `self`; see [`Config::overlay_file`].
    pub fn overlay_toml(&self, text: &str) -> Result<Config> {
        let file: toml::Table =
            text.parse().map_err(|e: toml::de::Error| Error::config("config", e.message().trim()))?;
        let mut base = toml::Table::try_from(self).map_err(|e| Error::config("config", e))?;
        merge_tables(&mut base, file);
        Config::from_toml(&toml::to_string(&base).map_err(|e| Error::config("config", e))?)
    }

    /// Checks values that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<()> {
        let s = &self.server;
        if self.name.is_empty() || !self.name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)) {
            return Err(Error::config("name", "must be non-empty and use only letters, digits, '-', '_' and '.'"));
        }
        if s.address.is_empty() {
            return Err(Error::config("server.address", "needs at least one address"));
        }
        if let Some(dup) = s.address.iter().enumerate().find_map(|(i, a)| s.address[..i].contains(a).then_some(a)) {
            return Err(Error::config("server.address", format!("{dup} is listed twice")));
        }
        if !(1..=MAX_WORKERS).contains(&s.workers) {
            return Err(Error::config("server.workers", format!("must be between 1 and {MAX_WORKERS}")));
        }
        if s.threads == 0 {
            return Err(Error::config("server.threads", "must be at least 1"));
        }
        if s.shards > 1024 {
            return Err(Error::config("server.shards", "more than 1024 shards is surely a mistake"));
        }
        if s.backlog == 0 {
            return Err(Error::config("server.backlog", "must be at least 1"));
        }
        for (key, value) in [
            ("server.keep_alive", s.keep_alive),
            ("server.request_timeout", s.request_timeout),
            ("server.header_timeout", s.header_timeout),
            ("server.shutdown_timeout", s.shutdown_timeout),
            ("server.quit_timeout", s.quit_timeout),
        ] {
            if value == 0 {
                return Err(Error::config(key, "must be at least 1 second"));
            }
        }
        if s.max_header_size.bytes() < 256 {
            return Err(Error::config("server.max_header_size", "must be at least 256 bytes"));
        }
        if s.max_uri_size.bytes() < 16 || s.max_uri_size > s.max_header_size {
            return Err(Error::config("server.max_uri_size", "must be between 16 bytes and max_header_size"));
        }
        if s.max_headers == 0 || s.max_headers > MAX_HEADERS_LIMIT {
            return Err(Error::config("server.max_headers", format!("must be between 1 and {MAX_HEADERS_LIMIT}")));
        }
        if let Some(point) = &s.critical_point {
            if !(point.cpu_percent > 0.0 && point.cpu_percent <= 100.0) {
                return Err(Error::config("server.critical_point.cpu_percent", "must be above 0 and at most 100"));
            }
            if point.continuous == 0 {
                return Err(Error::config("server.critical_point.continuous", "must be at least 1"));
            }
        }
        if s.max_connections == 0 {
            return Err(Error::config("server.max_connections", "must be at least 1"));
        }
        if s.max_inflight == 0 {
            return Err(Error::config("server.max_inflight", "must be at least 1"));
        }
        let log = &self.log;
        for (i, rule) in log.off.iter().enumerate() {
            if rule.is_empty() || rule == "*" {
                return Err(Error::config(&format!("log.off[{i}]"), "must be a path prefix or *suffix"));
            }
            if !rule.starts_with('/') && !rule.starts_with('*') {
                return Err(Error::config(&format!("log.off[{i}]"), format!("{rule:?} must start with '/' or '*'")));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&log.level).is_err() {
            return Err(Error::config("log.level", format!("{:?} is not a level or filter", log.level)));
        }
        if let Some(mount) = &self.admin.mount {
            if !mount.starts_with('/') || mount == "/" {
                return Err(Error::config("admin.mount", format!("{mount:?} must start with '/' and not be '/'")));
            }
        }
        if self.admin.port.is_some_and(|p| p != 0 && p == s.port) {
            return Err(Error::config("admin.port", "must differ from server.port"));
        }
        let st = &self.static_files;
        if st.cache_entries == 0 {
            return Err(Error::config("static.cache_entries", "must be at least 1"));
        }
        if st.cache_max_file > st.cache_size {
            return Err(Error::config("static.cache_max_file", "must not exceed static.cache_size"));
        }
        for (prefix, secs) in &self.max_age {
            if !prefix.starts_with('/') {
                return Err(Error::config(&format!("max_age.{prefix:?}"), "a prefix must start with '/'"));
            }
            if *secs > MAX_MAX_AGE_SECS {
                return Err(Error::config(&format!("max_age.{prefix:?}"), "at most 10 years (315360000 seconds)"));
            }
        }
        if let Some(tls) = &self.tls {
            if tls.cert.is_none() {
                return Err(Error::config("tls.cert", "is required when [tls] is present"));
            }
            if tls.key.is_none() {
                return Err(Error::config("tls.key", "is required when [tls] is present"));
            }
            if tls.handshake_timeout == 0 {
                return Err(Error::config("tls.handshake_timeout", "must be at least 1 second"));
            }
            if tls.forward_port == Some(self.server.port) && self.server.port != 0 {
                return Err(Error::config("tls.forward_port", "must differ from server.port"));
            }
        }
        let h2 = &self.http2;
        if !(16_384..=16_777_215).contains(&h2.max_frame_size) {
            return Err(Error::config("http2.max_frame_size", "must be between 16384 and 16777215"));
        }
        if h2.max_concurrent_streams == 0 {
            return Err(Error::config("http2.max_concurrent_streams", "must be at least 1"));
        }
        if h2.initial_window_size > (1 << 31) - 1 || h2.initial_connection_window_size > (1 << 31) - 1 {
            return Err(Error::config("http2.initial_window_size", "must be below 2^31"));
        }
        let st = &self.state;
        if !(1..=MAX_STATE_SLOTS).contains(&st.slots) {
            return Err(Error::config("state.slots", format!("must be between 1 and {MAX_STATE_SLOTS}")));
        }
        if !(1..=MAX_BUS_CAPACITY).contains(&st.bus_capacity) {
            return Err(Error::config("state.bus_capacity", format!("must be between 1 and {MAX_BUS_CAPACITY}")));
        }
        for (key, names) in [("state.states", &st.states), ("state.cache_keys", &st.cache_keys)] {
            for name in names.iter() {
                crate::state::check_name(name).map_err(|why| Error::config(key, format!("{name:?} {why}")))?;
            }
        }
        for (i, m) in self.mounts.iter().enumerate() {
            if !m.path.starts_with('/') {
                return Err(Error::config(&format!("mount[{i}].path"), format!("{:?} must start with '/'", m.path)));
            }
            if m.target.is_empty() {
                return Err(Error::config(&format!("mount[{i}].target"), "must not be empty"));
            }
        }
        Ok(())
    }

    /// The instance's data directory: pid file, daemon stderr, default logs.
    pub fn data_dir(&self) -> PathBuf {
        match &self.server.data_dir {
            Some(dir) => dir.clone(),
            None => {
                let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
                home.join(".skitai").join(&self.name)
            }
        }
    }

    /// The pid file of the instance's master (Skitai's `.<name>.pid`).
    pub fn pid_file(&self) -> PathBuf {
        self.data_dir().join(format!(".{}.pid", self.name))
    }

    /// The number of shards to run: the configured one, or one per available core.
    pub fn shard_count(&self) -> usize {
        match self.server.shards {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The limits the HTTP codecs enforce, derived from this configuration.
    pub fn limits(&self) -> Limits {
        let s = &self.server;
        Limits {
            max_upload_size: s.max_upload_size.bytes(),
            max_header_size: s.max_header_size.bytes() as usize,
            max_headers: s.max_headers,
            max_uri_size: s.max_uri_size.bytes() as usize,
            keep_alive: Duration::from_secs(s.keep_alive),
            request_timeout: Duration::from_secs(s.request_timeout),
            header_timeout: Duration::from_secs(s.header_timeout),
            sendfile: self.static_files.sendfile,
            max_estimated_wait: Duration::from_secs(s.max_estimated_wait),
            max_connections: s.max_connections,
            max_inflight: s.max_inflight,
        }
    }
}

/// `address = "::"` or `address = ["0.0.0.0", "::"]`.
mod one_or_many {
    use std::net::IpAddr;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(IpAddr),
        Many(Vec<IpAddr>),
    }

    pub(super) fn serialize<S: Serializer>(addrs: &[IpAddr], s: S) -> Result<S::Ok, S::Error> {
        addrs.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpAddr>, D::Error> {
        match OneOrMany::deserialize(d) {
            Ok(OneOrMany::One(a)) => Ok(vec![a]),
            Ok(OneOrMany::Many(v)) => Ok(v),
            Err(_) => Err(serde::de::Error::custom("expected an IP address or a list of IP addresses")),
        }
    }
}

/// Recursively lays `top` over `base`; tables merge, everything else replaces.
fn merge_tables(base: &mut toml::Table, top: toml::Table) {
    for (key, value) in top {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge_tables(b, t),
            (_, value) => {
                base.insert(key, value);
            }
        }
    }
}

/// Protocol limits and timeouts, copied into every shard.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes.
    pub max_upload_size: u64,
    /// Largest request head in bytes.
    pub max_header_size: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request target in bytes.
    pub max_uri_size: usize,
    /// Idle keep-alive timeout.
    pub keep_alive: Duration,
    /// Inactivity timeout during a request.
    pub request_timeout: Duration,
    /// Time to receive a whole request head.
    pub header_timeout: Duration,
    /// Send file bodies with `sendfile(2)` where the connection allows it
    /// (else they are read into memory and written).
    pub sendfile: bool,
    /// Estimated wait past which new requests get 503 (zero: no estimate).
    pub max_estimated_wait: Duration,
    /// Open connections per shard.
    pub max_connections: usize,
    /// Requests handled at once per shard.
    pub max_inflight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Config::default().limits()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_default() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.server.port, DEFAULT_PORT);
        assert_eq!(c.server.max_upload_size.bytes(), DEFAULT_MAX_UPLOAD_SIZE);
        c.validate().unwrap();
    }

    #[test]
    fn full_example_parses() {
        let c = Config::from_toml(
            r#"
            name = "mysite"
            [server]
            address = "127.0.0.1"
            port = 8080
            shards = 2
            threads = 4
            io = "epoll"
            keep_alive = 5
            max_upload_size = "1MiB"
            [[mount]]
            path = "/"
            target = "./public"
            "#,
        )
        .unwrap();
        assert_eq!(c.name, "mysite");
        assert_eq!(c.server.io, IoMode::Epoll);
        assert_eq!(c.server.max_upload_size.bytes(), 1 << 20);
        assert_eq!(c.mounts, vec![MountConfig { path: "/".into(), target: "./public".into(), ..Default::default() }]);
    }

    #[test]
    fn one_or_many_addresses() {
        let c = Config::from_toml("[server]\naddress = \"::1\"\n").unwrap();
        assert_eq!(c.server.address, vec!["::1".parse::<IpAddr>().unwrap()]);
        let c = Config::from_toml("[server]\naddress = [\"127.0.0.1\", \"::1\"]\n").unwrap();
        assert_eq!(c.server.address.len(), 2);
        let e = Config::from_toml("[server]\naddress = \"nowhere\"\n").unwrap_err();
        assert!(e.to_string().starts_with("server.address:"), "{e}");
        let mut c = Config::default();
        c.server.address = vec![c.server.address[0], c.server.address[0]];
        assert!(c.validate().unwrap_err().to_string().starts_with("server.address:"));
    }

    #[test]
    fn type_error_names_the_key() {
        let e = Config::from_toml("[server]\nport = \"abc\"\n").unwrap_err();
        assert!(e.to_string().starts_with("server.port:"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_toml("[server]\nprot = 1\n").unwrap_err();
        assert!(e.to_string().contains("prot"), "{e}");
    }

    #[test]
    fn bad_size_is_named() {
        let e = Config::from_toml("[server]\nmax_upload_size = \"lots\"\n").unwrap_err();
        assert!(e.to_string().starts_with("server.max_upload_size:"), "{e}");
    }

    #[test]
    fn file_overlays_program_settings() {
        let mut program = Config::default();
        program.server.port = 9000;
        program.server.keep_alive = 7;
        let merged = program.overlay_toml("[server]\nport = 9100\n").unwrap();
        assert_eq!(merged.server.port, 9100, "the file wins");
        assert_eq!(merged.server.keep_alive, 7, "untouched keys keep the program's value");
        let e = program.overlay_toml("[server]\nport = \"x\"\n").unwrap_err();
        assert!(e.to_string().starts_with("server.port:"), "{e}");
    }

    #[test]
    fn validate_names_the_key() {
        let mut c = Config::default();
        c.server.keep_alive = 0;
        assert!(c.validate().unwrap_err().to_string().starts_with("server.keep_alive:"));
        let mut c = Config::default();
        c.mounts.push(MountConfig { path: "x".into(), target: "y".into(), ..Default::default() });
        assert!(c.validate().unwrap_err().to_string().starts_with("mount[0].path:"));
    }

    #[test]
    fn critical_point_parses_overlays_and_is_checked() {
        let c =
            Config::from_toml("[server.critical_point]\ncpu_percent = 80.0\ncontinuous = 2\ninterval = 5\n").unwrap();
        assert_eq!(c.server.critical_point, Some(CriticalPoint { cpu_percent: 80.0, continuous: 2, interval: 5 }));
        // From code, then a file that changes one key.
        let mut program = Config::default();
        program.server.critical_point = Some(CriticalPoint::default());
        let c = program.overlay_toml("[server.critical_point]\ncpu_percent = 50.0\n").unwrap();
        assert_eq!(c.server.critical_point, Some(CriticalPoint { cpu_percent: 50.0, ..CriticalPoint::default() }));
        let e = Config::from_toml("[server.critical_point]\ncpu_percent = 80.0\n").unwrap_err();
        assert!(e.to_string().starts_with("server.critical_point:"), "{e}");
        let mut c = Config::default();
        c.server.critical_point = Some(CriticalPoint { cpu_percent: 150.0, ..CriticalPoint::default() });
        assert!(c.validate().unwrap_err().to_string().starts_with("server.critical_point.cpu_percent:"));
        c.server.critical_point = Some(CriticalPoint { continuous: 0, ..CriticalPoint::default() });
        assert!(c.validate().unwrap_err().to_string().starts_with("server.critical_point.continuous:"));
        c.server.quit_timeout = 0;
        c.server.critical_point = None;
        assert!(c.validate().unwrap_err().to_string().starts_with("server.quit_timeout:"));
    }
}
