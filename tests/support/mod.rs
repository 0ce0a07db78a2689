//! Shared helpers for the integration tests: start a server process, talk raw
//! HTTP/1.1 to it over loopback, run curl, and run every case on both I/O drivers.
//!
//! Every wait here is bounded, so a misbehaving server fails a test instead of
//! hanging it; none of the bounds is a performance assertion.

#![allow(dead_code)] // each test crate uses a different subset

use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Upper bound for any single socket read or write in a test.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound for a server to print its `listening on` line (debug build, busy machine).
pub const START_TIMEOUT: Duration = Duration::from_secs(30);
/// Upper bound for a one-shot command (`check`, a bad flag) to exit.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// The I/O driver a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Io {
    Uring,
    Epoll,
}

impl Io {
    /// The value of `--io`.
    pub fn flag(self) -> &'static str {
        match self {
            Io::Uring => "uring",
            Io::Epoll => "epoll",
        }
    }

    /// What the per-shard start-up line says (`driver=<this>`).
    pub fn driver(self) -> &'static str {
        match self {
            Io::Uring => "io_uring",
            Io::Epoll => "epoll",
        }
    }
}

/// Defines a test module `$name` with two tests, `uring` and `epoll`, each
/// running `$body` with `$io` bound to that driver.
#[macro_export]
macro_rules! both_drivers {
    ($(#[$meta:meta])* fn $name:ident($io:ident) $body:block) => {
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[test]
            fn uring() {
                let $io = $crate::support::Io::Uring;
                $body
            }

            #[test]
            fn epoll() {
                let $io = $crate::support::Io::Epoll;
                $body
            }
        }
    };
}

/// The `skitai` binary built for this test run.
pub fn skitai_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_skitai"))
}

/// The `hello` example, from the same target directory and profile as `skitai`.
pub fn hello_bin() -> PathBuf {
    example_bin("hello")
}

/// An example program, from the same target directory and profile as `skitai`.
pub fn example_bin(name: &str) -> PathBuf {
    let path = skitai_bin().parent().expect("binary has a parent directory").join("examples").join(name);
    if !path.exists() {
        let fallback = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debug/examples").join(name);
        if fallback.exists() {
            return fallback;
        }
        panic!("{} is missing: run `cargo build --examples` before the integration tests", path.display());
    }
    path
}

/// Removes ANSI colour escapes, so log lines can be matched whatever the logger does.
pub fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        out.push(c);
    }
    out
}

/// Text collected from a child's pipe by a background thread.
#[derive(Default)]
struct Captured {
    text: Mutex<String>,
    grew: Condvar,
}

impl Captured {
    fn spawn(pipe: impl Read + Send + 'static) -> Arc<Captured> {
        let captured = Arc::new(Captured::default());
        let sink = Arc::clone(&captured);
        thread::spawn(move || {
            let mut reader = BufReader::new(pipe);
            let mut line = Vec::new();
            loop {
                line.clear();
                match reader.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        let text = strip_ansi(&String::from_utf8_lossy(&line));
                        sink.text.lock().unwrap().push_str(&text);
                        sink.grew.notify_all();
                    }
                }
            }
        });
        captured
    }

    fn get(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for the captured text, or `timeout` passes.
    fn wait_for(&self, timeout: Duration, mut pred: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut text = self.text.lock().unwrap();
        loop {
            if pred(&text) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            // Short waits so a caller also notices a child that exited.
            let wait = (deadline - now).min(Duration::from_millis(100));
            text = self.grew.wait_timeout(text, wait).unwrap().0;
        }
    }
}

/// Extracts the address from the first `listening on http://ADDR:PORT` (or
/// `https://`, when the server speaks TLS) in `text`.
pub fn parse_listening(text: &str) -> Option<SocketAddr> {
    let start = text.find("listening on http")? + "listening on http".len();
    let rest = text[start..].strip_prefix("s://").or_else(|| text[start..].strip_prefix("://"))?;
    let addr: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || ".:[]".contains(*c)).collect();
    addr.parse().ok()
}

/// How to start a server process; see [`hello`] and [`skitai`].
pub struct ServerBuilder {
    bin: PathBuf,
    args: Vec<OsString>,
    config: Option<String>,
    dir: Option<PathBuf>,
    io: Option<Io>,
    shards: Option<usize>,
    envs: Vec<(OsString, OsString)>,
    deny_io_uring: bool,
}

/// The `hello` example on `io`, one shard, a free loopback port.
pub fn hello(io: Io) -> ServerBuilder {
    ServerBuilder::new(hello_bin()).io(io).shards(1)
}

/// The `skitai` binary on `io`, one shard, a free loopback port.
pub fn skitai(io: Io) -> ServerBuilder {
    ServerBuilder::new(skitai_bin()).io(io).shards(1)
}

impl ServerBuilder {
    /// A server from `bin` listening on a free port on 127.0.0.1.
    pub fn new(bin: PathBuf) -> Self {
        ServerBuilder {
            bin,
            args: vec!["--port".into(), "0".into(), "--address".into(), "127.0.0.1".into()],
            config: None,
            dir: None,
            io: None,
            shards: None,
            envs: Vec::new(),
            deny_io_uring: false,
        }
    }

    /// Passes `--io`, and makes [`ServerBuilder::start`] check the driver lines.
    pub fn io(mut self, io: Io) -> Self {
        self.io = Some(io);
        self
    }

    /// Passes `--shards n` (replacing an earlier choice: a flag given twice is an error).
    pub fn shards(mut self, n: usize) -> Self {
        self.shards = Some(n);
        self
    }

    /// Leaves `--shards` out, so the configuration decides.
    pub fn default_shards(mut self) -> Self {
        self.shards = None;
        self
    }

    /// Removes the `--port 0 --address 127.0.0.1` defaults (the config must then set them).
    pub fn no_listen_flags(mut self) -> Self {
        self.args.drain(..4);
        self
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Sets an environment variable for the server process.
    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Runs the server under a seccomp filter that refuses `io_uring_setup`
    /// with EPERM, as Docker's default seccomp profile does.
    pub fn deny_io_uring(mut self) -> Self {
        self.deny_io_uring = true;
        self
    }

    /// Writes `toml` to a temporary file and passes it with `-c`.
    pub fn config(mut self, toml: &str) -> Self {
        self.config = Some(toml.to_owned());
        self
    }

    /// Runs the server in `dir` (for `./skitai.toml` and relative mount targets).
    pub fn current_dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_owned());
        self
    }

    /// Spawns the process without waiting for it to listen.
    pub fn spawn(mut self) -> Server {
        if let Some(io) = self.io {
            self.args.push("--io".into());
            self.args.push(io.flag().into());
        }
        if let Some(n) = self.shards {
            self.args.push("--shards".into());
            self.args.push(n.to_string().into());
        }
        let mut cmd = Command::new(&self.bin);
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        let config_file = self.config.map(|toml| {
            let mut f = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp config file");
            f.write_all(toml.as_bytes()).expect("write temp config");
            f.flush().unwrap();
            f
        });
        if let Some(f) = &config_file {
            cmd.arg("-c").arg(f.path());
        }
        cmd.args(&self.args);
        if self.deny_io_uring {
            use std::os::unix::process::CommandExt;
            // SAFETY: the hook runs in the child between fork and exec and
            // makes only two `prctl` calls on a filter that is a static.
            unsafe { cmd.pre_exec(deny_io_uring_setup) };
        }
        if let Some(dir) = &self.dir {
            cmd.current_dir(dir);
        }
        // A state directory of its own: servers of the same instance name
        // (most tests use the default) run side by side without conflict.
        let state_dir = tempfile::tempdir().expect("temp state dir");
        cmd.env("NO_COLOR", "1")
            .env(STATE_DIR_ENV, state_dir.path())
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", self.bin.display()));
        let stdout = Captured::spawn(child.stdout.take().unwrap());
        let stderr = Captured::spawn(child.stderr.take().unwrap());
        let command = format!("{} {}", self.bin.display(), {
            let mut a: Vec<String> = Vec::new();
            if let Some(f) = &config_file {
                a.push(format!("-c {}", f.path().display()));
            }
            a.extend(self.args.iter().map(|s| s.to_string_lossy().into_owned()));
            a.join(" ")
        });
        Server {
            child,
            stdout,
            stderr,
            addr: None,
            io: self.io,
            command,
            _config: config_file,
            state_dir,
            exited: None,
        }
    }

    /// Spawns the process and waits for its `listening on` line.
    pub fn start(self) -> Server {
        let mut server = self.spawn();
        server.wait_listening();
        server
    }
}

/// Installs a seccomp filter on the calling process that fails
/// `io_uring_setup` with EPERM and allows every other system call
/// (x86-64 and AArch64, where the tests using it run).
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn deny_io_uring_setup() -> io::Result<()> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xC000_003E;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xC000_00B7;
    /// Offsets in `struct seccomp_data`.
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    const fn op(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter { code: code as u16, jt, jf, k }
    }
    static FILTER: [libc::sock_filter; 7] = [
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, ARCH, 0, 0),
        // Calls of another architecture's ABI (i386 compat, where 425 is
        // io_uring_setup too): allowed, not refused by number.
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, AUDIT_ARCH, 1, 0),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
        op(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NR, 0, 0),
        op(libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K, libc::SYS_io_uring_setup as u32, 0, 1),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32, 0, 0),
        op(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW, 0, 0),
    ];
    let program = libc::sock_fprog { len: FILTER.len() as u16, filter: FILTER.as_ptr().cast_mut() };
    // SAFETY: plain prctl calls; the kernel copies the filter program, which
    // `program` describes correctly (pointer and length of a static array).
    unsafe {
        // (The variadic prctl gets its arguments as unsigned longs.)
        let zero: libc::c_ulong = 0;
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, zero, zero, zero) != 0
            || libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::c_ulong::from(libc::SECCOMP_MODE_FILTER),
                &program as *const libc::sock_fprog,
                zero,
                zero,
            ) != 0
        {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Elsewhere the filter is not written: the tests asking for it fail to start.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn deny_io_uring_setup() -> io::Result<()> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "deny_io_uring: no seccomp filter for this architecture"))
}

/// Resident memory of process `pid`, KiB (`VmRSS`).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    line.split_whitespace().nth(1).and_then(|n| n.parse().ok()).expect("VmRSS in kB")
}

/// A running server process; killed (SIGKILL) on drop if still alive.
pub struct Server {
    child: Child,
    stdout: Arc<Captured>,
    stderr: Arc<Captured>,
    addr: Option<SocketAddr>,
    io: Option<Io>,
    command: String,
    _config: Option<tempfile::NamedTempFile>,
    state_dir: tempfile::TempDir,
    exited: Option<ExitStatus>,
}

/// The variable that points a server (and `status`) at its state directory.
pub const STATE_DIR_ENV: &str = "SKITAI_STATE_DIR";

impl Server {
    /// The directory holding this server's shared-state file (`SKITAI_STATE_DIR`).
    pub fn state_dir(&self) -> &Path {
        self.state_dir.path()
    }

    fn wait_listening(&mut self) {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.stderr.wait_for(Duration::from_millis(200), |t| parse_listening(t).is_some()) {
                break;
            }
            if let Some(status) = self.try_exit() {
                panic!(
                    "server exited ({status}) before listening\ncommand: {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.command,
                    self.stderr(),
                    self.stdout()
                );
            }
            if Instant::now() >= deadline {
                panic!(
                    "no `listening on http://ADDR:PORT` line on stderr within {START_TIMEOUT:?}\ncommand: {}\n--- stderr ---\n{}\n--- stdout ---\n{}",
                    self.command,
                    self.stderr(),
                    self.stdout()
                );
            }
        }
        // The worker listens; the master counts it as serving (and restarts
        // it if it dies) once it has read the worker's ready byte.
        let serving = |t: &str| t.contains(" worker(s) serving");
        if !self.stderr.wait_for(START_TIMEOUT, serving) {
            panic!(
                "the master never said its workers serve within {START_TIMEOUT:?}\ncommand: {}\n--- stderr ---\n{}",
                self.command,
                self.stderr()
            );
        }
        self.addr = parse_listening(&self.stderr());
        if let Some(io) = self.io {
            self.assert_driver(io);
        }
    }

    /// Asserts that every driver line names `io`'s driver and at least one does.
    pub fn assert_driver(&self, io: Io) {
        let ok = self.stderr.wait_for(Duration::from_secs(5), |t| t.contains("driver="));
        let text = self.stderr();
        assert!(ok, "no `driver=` line on stderr after asking for --io {}\n{text}", io.flag());
        for line in text.lines().filter(|l| l.contains("driver=")) {
            assert!(
                line.contains(&format!("driver={}", io.driver())),
                "asked for --io {} but a shard reports: {line}\n{text}",
                io.flag()
            );
        }
    }

    /// The number of stderr lines reporting a shard's driver (waits up to 5 s for `n`).
    pub fn driver_lines(&self, n: usize) -> usize {
        self.stderr.wait_for(Duration::from_secs(5), |t| t.lines().filter(|l| l.contains("driver=")).count() >= n);
        self.stderr().lines().filter(|l| l.contains("driver=")).count()
    }

    /// The address from the `listening on` line.
    pub fn addr(&self) -> SocketAddr {
        self.addr.expect("server not started with start()")
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr())
    }

    /// The `https://` URL of `path` (for a server with `[tls]`).
    pub fn https_url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr())
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The pids of the master's worker processes (its children).
    pub fn worker_pids(&self) -> Vec<u32> {
        children_of(self.pid())
    }

    /// The pid of the one worker process, which serves (gtxids and metrics name it).
    pub fn serving_pid(&self) -> u32 {
        let workers = self.worker_pids();
        assert_eq!(workers.len(), 1, "expected one worker process under master {}: {workers:?}", self.pid());
        workers[0]
    }

    pub fn stderr(&self) -> String {
        self.stderr.get()
    }

    pub fn stdout(&self) -> String {
        self.stdout.get()
    }

    /// A new raw connection to the server.
    pub fn connect(&self) -> Conn {
        Conn::connect(self.addr())
    }

    /// Sends `sig` (e.g. `libc::SIGTERM`) to the server process.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) with a pid we spawned and still own (not yet reaped).
        let rc = unsafe { libc::kill(self.child.id() as libc::pid_t, sig) };
        assert_eq!(rc, 0, "kill({}, {sig}) failed: {}", self.child.id(), io::Error::last_os_error());
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().expect("try_wait");
        }
        self.exited
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none()
    }

    /// Waits up to `timeout` for the process to exit; `None` if it is still running.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                // Let the reader threads collect the last lines.
                self.stderr.wait_for(Duration::from_millis(200), |_| false);
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if thread::panicking() {
            eprintln!("--- server command ---\n{}\n--- server stderr ---\n{}", self.command, self.stderr());
            let out = self.stdout();
            if !out.is_empty() {
                eprintln!("--- server stdout ---\n{out}");
            }
        }
    }
}

/// A parsed HTTP/1.x response.
#[derive(Debug, Clone)]
pub struct Response {
    pub version: String,
    pub status: u16,
    pub reason: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Whether the body came with `Transfer-Encoding: chunked`.
    pub chunked: bool,
    /// Trailer fields of a chunked body.
    pub trailers: Vec<(String, String)>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// How many times header `name` appears.
    pub fn header_count(&self, name: &str) -> usize {
        self.headers.iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).count()
    }

    pub fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Whether `Connection` lists `token`.
    pub fn connection_has(&self, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("connection"))
            .any(|(_, v)| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }

    /// Asserts `Server: skitai/<version>` and a valid IMF-fixdate `Date`.
    pub fn assert_server_and_date(&self) {
        let server = self.header("server").unwrap_or_else(|| panic!("no Server header: {self:?}"));
        assert!(server.starts_with("skitai/") && server.len() > "skitai/".len(), "Server header {server:?}");
        let date = self.header("date").unwrap_or_else(|| panic!("no Date header: {self:?}"));
        assert!(httpdate::parse_http_date(date).is_ok(), "Date header {date:?} is not an HTTP date");
        assert_eq!(self.header_count("date"), 1, "Date header repeated: {self:?}");
        assert_eq!(self.header_count("server"), 1, "Server header repeated: {self:?}");
    }

    /// Asserts a JSON error body `{"code": status*100, "message": "<lowercase reason>"}`.
    pub fn assert_json_error(&self, status: u16, message: &str) {
        if let Some(problem) = self.json_error_problem(status, message) {
            panic!("{problem}");
        }
    }

    /// What is wrong with this response as a JSON error of `status`, if anything.
    pub fn json_error_problem(&self, status: u16, message: &str) -> Option<String> {
        let body = self.body_str();
        if self.status != status {
            return Some(format!("status {} instead of {status} (body {body:?})", self.status));
        }
        let ct = self.header("content-type").unwrap_or_default();
        if !ct.starts_with("application/json") {
            return Some(format!("error Content-Type {ct:?} instead of application/json (body {body:?})"));
        }
        let compact: String = body.chars().filter(|c| !c.is_whitespace()).collect();
        let code = format!("\"code\":{}", u32::from(status) * 100);
        if !compact.contains(&code) {
            return Some(format!("error body {body:?} lacks {code}"));
        }
        let with_space = format!("\"message\": \"{message}\"");
        let without = format!("\"message\":\"{message}\"");
        if !body.contains(&with_space) && !body.contains(&without) {
            return Some(format!("error body {body:?} lacks \"message\": \"{message}\""));
        }
        None
    }
}

/// Why a response could not be read.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed (FIN or RST) after `partial` bytes of a response.
    Closed { partial: Vec<u8>, reset: bool },
    /// Nothing complete arrived within the read timeout.
    Timeout { partial: Vec<u8> },
    /// The bytes are not an HTTP response.
    Malformed { reason: String, partial: Vec<u8> },
}

/// A raw HTTP/1.1 client connection with a read buffer.
pub struct Conn {
    pub stream: TcpStream,
    buf: Vec<u8>,
}

/// `Some(n)` where the head ends (after CRLFCRLF).
fn find_head_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4)
}

impl Conn {
    pub fn connect(addr: SocketAddr) -> Conn {
        let stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
        Conn::from_stream(stream)
    }

    pub fn from_stream(stream: TcpStream) -> Conn {
        stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
        stream.set_nodelay(true).unwrap();
        Conn { stream, buf: Vec::new() }
    }

    pub fn set_read_timeout(&self, t: Duration) {
        self.stream.set_read_timeout(Some(t)).unwrap();
    }

    /// Writes all of `bytes` in one call.
    pub fn send(&mut self, bytes: impl AsRef<[u8]>) {
        self.stream.write_all(bytes.as_ref()).unwrap_or_else(|e| panic!("write to server: {e}"));
    }

    /// Writes, returning the error instead of panicking (the server may have closed).
    pub fn try_send(&mut self, bytes: impl AsRef<[u8]>) -> io::Result<()> {
        self.stream.write_all(bytes.as_ref())
    }

    /// Writes `bytes` from another thread, so a large upload cannot deadlock
    /// against a server that answers while it reads.
    pub fn send_in_background(&self, bytes: Vec<u8>) -> JoinHandle<io::Result<()>> {
        let mut s = self.stream.try_clone().unwrap();
        thread::spawn(move || s.write_all(&bytes))
    }

    /// Half-closes the write side.
    pub fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }

    /// Reads more bytes into the buffer; `Ok(0)` on EOF.
    fn fill(&mut self) -> io::Result<usize> {
        let mut chunk = [0u8; 64 * 1024];
        let n = self.stream.read(&mut chunk)?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n)
    }

    fn fill_or(&mut self) -> Result<(), ReadError> {
        match self.fill() {
            Ok(0) => Err(ReadError::Closed { partial: self.buf.clone(), reset: false }),
            Ok(_) => Ok(()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                Err(ReadError::Timeout { partial: self.buf.clone() })
            }
            Err(_) => Err(ReadError::Closed { partial: self.buf.clone(), reset: true }),
        }
    }

    /// Reads one response to a request that was not HEAD.
    pub fn read_response(&mut self) -> Response {
        self.try_read_response(false).unwrap_or_else(|e| panic!("reading a response: {}", describe(&e)))
    }

    /// Reads one response to a HEAD request (no body whatever the headers say).
    pub fn read_head_response(&mut self) -> Response {
        self.try_read_response(true).unwrap_or_else(|e| panic!("reading a HEAD response: {}", describe(&e)))
    }

    /// Reads one response; `head` tells that the request was HEAD.
    pub fn try_read_response(&mut self, head: bool) -> Result<Response, ReadError> {
        let head_end = loop {
            if let Some(end) = find_head_end(&self.buf) {
                break end;
            }
            self.fill_or()?;
        };
        let head_text = String::from_utf8_lossy(&self.buf[..head_end - 4]).into_owned();
        let malformed =
            |reason: &str, buf: &[u8]| ReadError::Malformed { reason: reason.to_owned(), partial: buf.to_vec() };
        let mut lines = head_text.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default().to_owned();
        if !version.starts_with("HTTP/1.") {
            return Err(malformed("bad status line", &self.buf));
        }
        let status: u16 = match parts.next().and_then(|s| s.parse().ok()) {
            Some(s) => s,
            None => return Err(malformed("bad status code", &self.buf)),
        };
        let reason = parts.next().unwrap_or_default().to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let Some((n, v)) = line.split_once(':') else {
                return Err(malformed("header line without colon", &self.buf));
            };
            headers.push((n.to_owned(), v.trim().to_owned()));
        }
        self.buf.drain(..head_end);
        let mut resp =
            Response { version, status, reason, headers, body: Vec::new(), chunked: false, trailers: Vec::new() };

        if head || (100..200).contains(&status) || status == 204 || status == 304 {
            return Ok(resp);
        }
        let te = resp.header("transfer-encoding").map(str::to_ascii_lowercase);
        if te.as_deref().is_some_and(|t| t.trim().ends_with("chunked")) {
            resp.chunked = true;
            self.read_chunked(&mut resp)?;
        } else if let Some(cl) = resp.header("content-length") {
            let n: usize = cl.parse().map_err(|_| malformed("bad Content-Length in response", &self.buf))?;
            while self.buf.len() < n {
                self.fill_or()?;
            }
            resp.body = self.buf.drain(..n).collect();
        } else {
            // Delimited by close.
            loop {
                match self.fill() {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                        return Err(ReadError::Timeout { partial: self.buf.clone() });
                    }
                    Err(_) => break,
                }
            }
            resp.body = std::mem::take(&mut self.buf);
        }
        Ok(resp)
    }

    fn read_line(&mut self) -> Result<String, ReadError> {
        loop {
            if let Some(p) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..p]).into_owned();
                self.buf.drain(..p + 2);
                return Ok(line);
            }
            self.fill_or()?;
        }
    }

    fn read_chunked(&mut self, resp: &mut Response) -> Result<(), ReadError> {
        loop {
            let line = self.read_line()?;
            let size_text = line.split(';').next().unwrap_or_default().trim();
            let size = usize::from_str_radix(size_text, 16).map_err(|_| ReadError::Malformed {
                reason: format!("bad chunk size line {line:?}"),
                partial: self.buf.clone(),
            })?;
            if size == 0 {
                loop {
                    let t = self.read_line()?;
                    if t.is_empty() {
                        return Ok(());
                    }
                    if let Some((n, v)) = t.split_once(':') {
                        resp.trailers.push((n.to_owned(), v.trim().to_owned()));
                    }
                }
            }
            while self.buf.len() < size + 2 {
                self.fill_or()?;
            }
            if &self.buf[size..size + 2] != b"\r\n" {
                return Err(ReadError::Malformed {
                    reason: "chunk not followed by CRLF".into(),
                    partial: self.buf.clone(),
                });
            }
            resp.body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Bytes received but not yet consumed as a response.
    pub fn leftover(&self) -> &[u8] {
        &self.buf
    }

    /// Waits for the server to close the connection and asserts it sent nothing
    /// more (no second response) before doing so.
    pub fn expect_closed(&mut self) {
        loop {
            match self.fill() {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                    panic!(
                        "the server did not close the connection within {IO_TIMEOUT:?} (unread: {:?})",
                        String::from_utf8_lossy(&self.buf)
                    );
                }
                Err(_) => break, // reset counts as closed
            }
        }
        assert!(
            self.buf.is_empty(),
            "the server sent more bytes before closing: {:?}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    /// Whether the server closed the connection (EOF or reset) within `timeout`;
    /// `Err` with the bytes if it sent something instead.
    pub fn closed_within(&mut self, timeout: Duration) -> Result<bool, Vec<u8>> {
        self.set_read_timeout(timeout);
        let r = match self.fill() {
            Ok(0) => Ok(true),
            Ok(_) => Err(self.buf.clone()),
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => Ok(false),
            Err(_) => Ok(true),
        };
        self.set_read_timeout(IO_TIMEOUT);
        r
    }
}

/// A readable account of a [`ReadError`] for panic messages.
pub fn describe(e: &ReadError) -> String {
    match e {
        ReadError::Closed { partial, reset } => format!(
            "connection {} after {} bytes: {:?}",
            if *reset { "reset" } else { "closed" },
            partial.len(),
            String::from_utf8_lossy(partial)
        ),
        ReadError::Timeout { partial } => {
            format!(
                "timed out after {IO_TIMEOUT:?} with {} bytes: {:?}",
                partial.len(),
                String::from_utf8_lossy(partial)
            )
        }
        ReadError::Malformed { reason, partial } => {
            format!("{reason}: {:?}", String::from_utf8_lossy(partial))
        }
    }
}

/// A `GET` request for `path` with a Host header.
pub fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n")
}

/// A `POST` request for `path` with a Content-Length body.
pub fn post(path: &str, body: &[u8]) -> Vec<u8> {
    let mut r =
        format!("POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
    r.extend_from_slice(body);
    r
}

/// `body` encoded as chunks of at most `chunk` bytes, with the last-chunk.
pub fn chunked(body: &[u8], chunk: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for c in body.chunks(chunk.max(1)) {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// Deterministic pseudo-random bytes (xorshift), so failures reproduce.
pub fn test_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs a command to completion, killing it after [`EXIT_TIMEOUT`].
pub fn run_bounded(cmd: &mut Command) -> Output {
    run_bounded_for(cmd, EXIT_TIMEOUT)
}

/// Runs a command to completion, killing it after `timeout`.
pub fn run_bounded_for(cmd: &mut Command, timeout: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).env("NO_COLOR", "1");
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let out = Captured::spawn(child.stdout.take().unwrap());
    let err = Captured::spawn(child.stderr.take().unwrap());
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not exit within {timeout:?}\nstderr: {}\nstdout: {}", err.get(), out.get());
        }
        thread::sleep(Duration::from_millis(20));
    };
    // The pipes close at exit; wait briefly for the readers to drain them.
    err.wait_for(Duration::from_millis(300), |_| false);
    Output { status, stdout: out.get().into_bytes(), stderr: err.get().into_bytes() }
}

/// Runs curl with a time bound and `-sS`; returns its output.
pub fn curl(args: &[&str]) -> Output {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20"]).args(args);
    run_bounded(&mut cmd)
}

/// The header blocks curl wrote with `-D FILE`: the last one (final response) parsed.
pub fn last_header_block(dump: &str) -> (u16, Vec<(String, String)>) {
    let blocks: Vec<&str> = dump.split("\r\n\r\n").filter(|b| b.starts_with("HTTP/")).collect();
    let last = blocks.last().unwrap_or_else(|| panic!("no header block in {dump:?}"));
    let mut lines = last.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers)
}

/// Writes a temporary TOML file and returns it (deleted on drop).
pub fn temp_toml(text: &str) -> tempfile::NamedTempFile {
    let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
    f.write_all(text.as_bytes()).unwrap();
    f.flush().unwrap();
    f
}

// ---------------------------------------------------------------------------
// Python probes (tests/py/)
// ---------------------------------------------------------------------------

/// A Python 3 that can import `modules` (e.g. `"h2, hpack"`): apt's packages
/// (`python3-h2`, `python3-websockets`) go to /usr/bin/python3, which a pyenv
/// or venv `python3` on PATH would not see.
pub fn python_with(modules: &str) -> String {
    static FOUND: Mutex<Vec<(String, String)>> = Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, python)) = found.iter().find(|(m, _)| m == modules) {
        return python.clone();
    }
    for candidate in ["/usr/bin/python3", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", &format!("import {modules}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            found.push((modules.to_owned(), candidate.to_owned()));
            return candidate.to_owned();
        }
    }
    panic!("no python3 that imports {modules}: run scripts/setup (installs python3-h2, python3-websockets)");
}

/// A script in `tests/py/`.
pub fn py_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/py").join(name)
}

/// `[host, port]` of `addr`, as a probe's first two arguments.
pub fn addr_args(addr: SocketAddr) -> [String; 2] {
    [addr.ip().to_string(), addr.port().to_string()]
}

/// The `key=value` lines a probe printed.
pub struct Findings {
    pub text: String,
    pub map: std::collections::HashMap<String, String>,
}

impl Findings {
    pub fn parse(text: String) -> Findings {
        let map = text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        Findings { text, map }
    }

    pub fn get(&self, key: &str) -> &str {
        self.map.get(key).map(String::as_str).unwrap_or_else(|| panic!("probe did not report {key}:\n{}", self.text))
    }

    pub fn num(&self, key: &str) -> u64 {
        self.get(key).parse().unwrap_or_else(|_| panic!("{key} is not a number:\n{}", self.text))
    }

    /// Asserts `key` is `want`, showing everything the probe said if not.
    pub fn expect(&self, key: &str, want: &str) {
        assert_eq!(self.get(key), want, "{key}; the probe reported:\n{}", self.text);
    }
}

/// Runs `python script args...` to completion (killed after `timeout`),
/// asserts it succeeded, and parses what it found.
pub fn py_probe(python: &str, script: &str, args: &[String], timeout: Duration) -> Findings {
    let out = run_bounded_for(Command::new(python).arg(py_script(script)).args(args), timeout);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} {args:?} failed ({}):\nstderr: {}\nstdout: {stdout}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Findings::parse(format!("# {script} {}\n{stdout}", args.join(" ").replace('=', ":")))
}

/// The pids of the processes whose parent is `parent` (from /proc).
pub fn children_of(parent: u32) -> Vec<u32> {
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        // Fields after the parenthesised command: state, ppid, ...
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let mut fields = rest.split_whitespace();
        let state = fields.next().unwrap_or("");
        if fields.next().and_then(|p| p.parse::<u32>().ok()) == Some(parent) && state != "Z" {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    pids
}

/// `/proc/PID/cmdline` as text (arguments joined by spaces).
pub fn cmdline(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect::<Vec<_>>().join(" ")
}

/// Waits up to `limit` for `f` to hold (checking every 50 ms); its last answer.
pub fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// True while process `pid` exists and is not a zombie.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(')').map(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// True when a fresh connection to `server` gets a 200 for `GET /`.
pub fn hello_answers(server: &Server) -> bool {
    let mut c = server.connect();
    c.send(get("/"));
    c.read_response().status == 200
}
