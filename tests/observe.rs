//! Observability and load shedding over loopback with real clients (curl,
//! raw HTTP/1.1 sockets, h2c by prior knowledge, a raw WebSocket client),
//! each case on both I/O drivers, against `examples/hello` (and
//! `examples/ws_lab` for the WebSocket counters).
//!
//! - The request log: Skitai's format field by field (HTTP/1.1 and h2),
//!   escaping, `log_off` rules, `combined` and `json`, `requests = false`,
//!   `--silent`, log files (`request.log`, `server.log`, `app.log`) and
//!   SIGUSR1 reopening them after a rename (logrotate).
//! - Transaction ids: kept from `X-Gtxn-Id`/`X-Ltxn-Id`, made otherwise
//!   (unique across requests and shards), in `/txn`, the request log and the
//!   app log.
//! - The admin endpoints: exact Prometheus counters after a known mix of
//!   requests, the JSON form, the status page, `/healthz`, `/readyz` (also
//!   while draining), the admin mount on the main port.
//! - Load shedding: the estimated wait (`/burn` under 40 clients), `max_inflight`
//!   and `max_connections`, each answered with a 503 and counted by reason,
//!   and the service recovering once the load stops.
//!
//! Every wait is bounded; no bound is a performance assertion.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::fs;
use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use support::*;

const HELLO: &str = "Hello, World!";
/// Upper bound for a log line to show up (request lines are flushed at least every 200 ms).
const LOG_WAIT: Duration = Duration::from_secs(10);
/// Upper bound for the metrics to reflect requests already answered.
const METRICS_WAIT: Duration = Duration::from_secs(10);
/// How long a negative check waits for lines that must not come (5 flush periods).
const QUIET_WAIT: Duration = Duration::from_secs(1);
/// Upper bound for a draining server to exit.
const DRAIN_BOUND: Duration = Duration::from_secs(20);
/// An admin listener (the request log stays on: draining must end with it too).
const DRAIN_CONFIG: &str = "[admin]\nport = 0\n";

// ---------------------------------------------------------------------------
// Helpers: curl, log lines
// ---------------------------------------------------------------------------

/// Runs curl with `args` (URL included); returns the status and the body.
fn curl_fetch(args: &[&str]) -> (u16, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let mut all: Vec<&str> = vec!["-o", body.to_str().unwrap(), "-w", "%{http_code}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let status = String::from_utf8_lossy(&out.stdout).trim().parse().expect("curl printed the status");
    (status, fs::read(&body).unwrap_or_default())
}

/// Waits until `read()` has exactly one line containing `needle`; returns it.
fn wait_line(what: &str, read: impl Fn() -> String, needle: &str) -> String {
    let deadline = Instant::now() + LOG_WAIT;
    loop {
        let text = read();
        let found: Vec<&str> = text.lines().filter(|l| l.contains(needle)).collect();
        match found.len() {
            0 => {}
            1 => return found[0].to_owned(),
            _ => panic!("{} lines of {what} contain {needle:?}:\n{text}", found.len()),
        }
        assert!(Instant::now() < deadline, "no line of {what} contains {needle:?} within {LOG_WAIT:?}:\n{text}");
        thread::sleep(Duration::from_millis(20));
    }
}

/// The request log line (on the server's standard output) containing `needle`.
fn log_line(server: &Server, needle: &str) -> String {
    wait_line("stdout", || server.stdout(), needle)
}

/// The line of file `path` containing `needle` (waits for the file and the line).
fn file_line(path: &Path, needle: &str) -> String {
    wait_line(&path.display().to_string(), || fs::read_to_string(path).unwrap_or_default(), needle)
}

/// Stands for a field that varies; [`assert_skitai_line`] checks its shape.
const DATE: &str = "<date>";
const TIME: &str = "<time>";
const MS: &str = "<ms>";
const GTXID: &str = "<gtxid>";
const CONNS: &str = "<connections>";

/// Checks a `YYYY.MM.DD` date.
fn is_skitai_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10 && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'.' } else { c.is_ascii_digit() })
}

/// Checks an `HH:MM:SS` time.
fn is_clock(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 8 && b.iter().enumerate().all(|(i, c)| if i == 2 || i == 5 { *c == b':' } else { c.is_ascii_digit() })
}

/// Splits a gtxid made by the server (`<start secs, hex>-<pid, hex>-<shard>-<sequence>`),
/// asserting its shape and that it names `pid`; returns (shard, sequence).
fn local_gtxid(gtxid: &str, pid: u32) -> (usize, u64) {
    let parts: Vec<&str> = gtxid.split('-').collect();
    assert_eq!(parts.len(), 4, "gtxid {gtxid:?} is not <secs>-<pid>-<shard>-<seq>");
    let secs = u64::from_str_radix(parts[0], 16).unwrap_or_else(|_| panic!("gtxid {gtxid:?}: time not hex"));
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(secs <= now && now - secs < 3600, "gtxid {gtxid:?}: start time {secs} is not the server's start ({now})");
    assert_eq!(parts[1], format!("{pid:x}"), "gtxid {gtxid:?} does not name the server's pid {pid}");
    let shard = parts[2].parse().unwrap_or_else(|_| panic!("gtxid {gtxid:?}: shard not a number"));
    let seq: u64 = parts[3].parse().unwrap_or_else(|_| panic!("gtxid {gtxid:?}: sequence not a number"));
    assert!(seq >= 1, "gtxid {gtxid:?}: sequences start at 1");
    (shard, seq)
}

/// Asserts a Skitai-format request log line field by field. `want` lists the
/// 21 fields; [`DATE`], [`TIME`], [`MS`], [`GTXID`] (made by server `pid`) and
/// [`CONNS`] stand for values that vary and are checked for their shape.
fn assert_skitai_line(line: &str, want: &[&str], pid: u32) -> Vec<String> {
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 21, "a Skitai line has 21 fields separated by single spaces: {line:?}");
    assert_eq!(want.len(), 21);
    for (i, (got, want)) in fields.iter().zip(want).enumerate() {
        let ok = match *want {
            DATE => is_skitai_date(got),
            TIME => is_clock(got),
            MS => got.parse::<u64>().is_ok_and(|ms| ms < 60_000),
            GTXID => {
                local_gtxid(got, pid);
                true
            }
            // This test's own connection, perhaps the previous one not yet
            // seen closed, and little else: nothing else talks to the server.
            CONNS => got.parse::<u64>().is_ok_and(|n| (1..=4).contains(&n)),
            exact => *got == exact,
        };
        assert!(ok, "field {i} is {got:?}, expected {want:?}\nline: {line:?}");
    }
    fields.iter().map(|f| f.to_string()).collect()
}

/// A port that was free a moment ago (for servers whose `listening on` line is hidden).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Waits until `addr` accepts connections (the server is up).
fn wait_accepting(server: &mut Server, addr: SocketAddr) {
    let deadline = Instant::now() + START_TIMEOUT;
    while TcpStream::connect(addr).is_err() {
        assert!(server.is_running(), "the server exited:\n{}", server.stderr());
        assert!(Instant::now() < deadline, "the server never listened on {addr}");
        thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------
// Helpers: the admin endpoints
// ---------------------------------------------------------------------------

/// The admin listener's address, from the `admin on http://ADDR (...)` line.
fn admin_addr(server: &Server) -> SocketAddr {
    admin_addr_of(&wait_line("stderr", || server.stderr(), "admin on http://"))
}

/// The address in an `admin on http://ADDR (...)` line.
fn admin_addr_of(line: &str) -> SocketAddr {
    let rest = &line[line.find("admin on http://").unwrap() + "admin on http://".len()..];
    let addr: String = rest.chars().take_while(|c| !c.is_whitespace()).collect();
    addr.parse().unwrap_or_else(|_| panic!("no address in {line:?}"))
}

/// `GET path` on a new connection to `addr`.
fn get_on(addr: SocketAddr, path: &str) -> Response {
    let mut c = Conn::connect(addr);
    c.send(get(path));
    c.read_response()
}

/// `GET path` on `addr`, asserting 200 and a JSON body.
fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = get_on(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    assert!(r.header("content-type").unwrap_or_default().starts_with("application/json"), "GET {path}: {r:?}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {}", r.body_str()))
}

/// One sample of the Prometheus text exposition.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

/// A parsed `/metrics` answer.
#[derive(Debug, Clone)]
struct Prom {
    text: String,
    samples: Vec<Sample>,
}

impl Prom {
    fn parse(text: String) -> Prom {
        let samples = text.lines().filter(|l| !l.is_empty() && !l.starts_with('#')).map(Prom::sample).collect();
        Prom { text, samples }
    }

    /// One `name{k="v",...} value` line.
    fn sample(line: &str) -> Sample {
        let bad = || -> ! { panic!("not a Prometheus sample line: {line:?}") };
        let name_end = line.find(['{', ' ']).unwrap_or_else(|| bad());
        let mut labels = Vec::new();
        let mut rest = &line[name_end..];
        if let Some(inner) = rest.strip_prefix('{') {
            let mut chars = inner.char_indices();
            let mut key = String::new();
            let end = loop {
                let Some((i, c)) = chars.next() else { bad() };
                match c {
                    '}' => break i,
                    ',' => {}
                    '=' => {
                        assert_eq!(chars.next().map(|x| x.1), Some('"'), "{line:?}");
                        let mut value = String::new();
                        loop {
                            match chars.next().unwrap_or_else(|| bad()).1 {
                                '"' => break,
                                '\\' => match chars.next().unwrap_or_else(|| bad()).1 {
                                    'n' => value.push('\n'),
                                    other => value.push(other),
                                },
                                other => value.push(other),
                            }
                        }
                        labels.push((std::mem::take(&mut key), value));
                    }
                    other => key.push(other),
                }
            };
            rest = &inner[end + 1..];
        }
        let value = rest.trim().parse().unwrap_or_else(|_| bad());
        Sample { name: line[..name_end].to_owned(), labels, value }
    }

    /// The samples of `name` that carry every label of `want`.
    fn matching<'a>(&'a self, name: &'a str, want: &'a [(&str, &str)]) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples.iter().filter(move |s| {
            s.name == name && want.iter().all(|(k, v)| s.labels.iter().any(|(lk, lv)| lk == k && lv == v))
        })
    }

    /// The sum of the samples of `name` that carry every label of `want` (over shards).
    fn sum(&self, name: &str, want: &[(&str, &str)]) -> f64 {
        self.matching(name, want).map(|s| s.value).sum()
    }

    /// Asserts that [`Prom::sum`] is `expected`.
    fn expect(&self, name: &str, want: &[(&str, &str)], expected: f64) {
        let got = self.sum(name, want);
        assert_eq!(got, expected, "{name}{want:?} is {got}, expected {expected}\n{}", self.text);
    }

    /// The samples of the counter families (what admin requests must not change).
    fn counters(&self) -> Vec<Sample> {
        const COUNTED: [&str; 5] = [
            "skitai_requests_total",
            "skitai_request_body_bytes_total",
            "skitai_response_body_bytes_total",
            "skitai_request_duration_seconds_count",
            "skitai_request_duration_seconds_sum",
        ];
        self.samples.iter().filter(|s| COUNTED.contains(&s.name.as_str())).cloned().collect()
    }
}

/// `GET /metrics` on the admin listener, parsed.
fn scrape(admin: SocketAddr) -> Prom {
    let r = get_on(admin, "/metrics");
    assert_eq!(r.status, 200, "{r:?}");
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "metrics content-type {ct:?}");
    Prom::parse(r.body_str())
}

/// Scrapes until `done` holds (or [`METRICS_WAIT`] passes: then it panics, saying `what`).
fn wait_metrics(admin: SocketAddr, what: &str, done: impl Fn(&Prom) -> bool) -> Prom {
    let deadline = Instant::now() + METRICS_WAIT;
    loop {
        let m = scrape(admin);
        if done(&m) {
            return m;
        }
        assert!(Instant::now() < deadline, "the metrics never showed {what}:\n{}", m.text);
        thread::sleep(Duration::from_millis(50));
    }
}

/// Connects until connections to `addr` are refused (its listener closed).
fn wait_refused(addr: SocketAddr, bound: Duration) {
    let deadline = Instant::now() + bound;
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return,
            Err(e) => panic!("connecting to {addr} failed oddly: {e}"),
            Ok(s) => drop(s),
        }
        assert!(Instant::now() < deadline, "{addr} still accepts connections {bound:?} after SIGTERM");
        thread::sleep(Duration::from_millis(20));
    }
}

/// Asserts a 503 refusal: `Retry-After` of 1..=60 seconds and the JSON error body.
fn assert_shed(r: &Response, message: &str) {
    let retry = r.header("retry-after").unwrap_or_else(|| panic!("503 without Retry-After: {r:?}"));
    let secs: u64 = retry.parse().unwrap_or_else(|_| panic!("Retry-After {retry:?} is not whole seconds"));
    assert!((1..=60).contains(&secs), "Retry-After {secs}");
    r.assert_json_error(503, message);
}

// ===========================================================================
// The request log
// ===========================================================================

both_drivers! {
    /// Skitai's request log format, field by field: over HTTP/1.1 (user agent,
    /// referer, the first X-Forwarded-For, a Basic user, a Bearer token's first
    /// 8 characters, a 5-byte POST echoed, a 404 with its query) and over h2c
    /// (version 2.0); quotes, spaces and control bytes escaped as `\xHH`; the
    /// `log_off` prefix and `*suffix` rules leave those requests out.
    fn skitai_format(io) {
        let server = hello(io).config("[log]\noff = [\"/delay\", \"*.css\"]\n").start();
        let host = server.addr().to_string();
        let pid = server.serving_pid();

        let (status, body) = curl_fetch(&[
            "-A", "observe-get/1",
            "-e", "http://ref.example/page?x=1",
            "-H", "X-Forwarded-For: 10.1.2.3, 10.0.0.1",
            "-u", "alice:secret",
            &server.url("/"),
        ]);
        assert_eq!((status, body.as_slice()), (200, HELLO.as_bytes()));
        let line = log_line(&server, "\"observe-get/1\"");
        let fields = assert_skitai_line(&line, &[
            DATE, TIME, "127.0.0.1", "GET", "/", "1.1", "0", "200", "13", "W0", MS,
            "\"observe-get/1\"", &host, "\"http://ref.example/page?x=1\"", "10.1.2.3", GTXID, "1000",
            "alice", "-", CONNS, MS,
        ], pid);
        assert_eq!(local_gtxid(&fields[15], pid).0, 0, "the gtxid names the shard: {line}");

        let (status, body) = curl_fetch(&[
            "-A", "observe-post", "-H", "Content-Type: text/plain", "--data-binary", "hello", &server.url("/echo"),
        ]);
        assert_eq!((status, body.as_slice()), (200, &b"hello"[..]));
        let line = log_line(&server, "\"observe-post\"");
        assert_skitai_line(&line, &[
            DATE, TIME, "127.0.0.1", "POST", "/echo", "1.1", "5", "200", "5", "W0", MS,
            "\"observe-post\"", &host, "-", "-", GTXID, "1000", "-", "-", CONNS, MS,
        ], pid);

        let (status, body) = curl_fetch(&["-A", "observe-404", &server.url("/nope?q=1")]);
        assert_eq!(status, 404);
        let line = log_line(&server, "\"observe-404\"");
        assert_skitai_line(&line, &[
            DATE, TIME, "127.0.0.1", "GET", "/nope?q=1", "1.1", "0", "404", &body.len().to_string(), "W0", MS,
            "\"observe-404\"", &host, "-", "-", GTXID, "1000", "-", "-", CONNS, MS,
        ], pid);

        let (status, _) = curl_fetch(&[
            "-A", "observe-bearer", "-H", "Authorization: Bearer abcdefghijklmnop", &server.url("/"),
        ]);
        assert_eq!(status, 200);
        let line = log_line(&server, "\"observe-bearer\"");
        assert_skitai_line(&line, &[
            DATE, TIME, "127.0.0.1", "GET", "/", "1.1", "0", "200", "13", "W0", MS,
            "\"observe-bearer\"", &host, "-", "-", GTXID, "1000", "-", "abcdefgh", CONNS, MS,
        ], pid);

        let (status, body) = curl_fetch(&["--http2-prior-knowledge", "-A", "observe-h2", &server.url("/v1/x")]);
        assert_eq!(status, 200);
        let line = log_line(&server, "\"observe-h2\"");
        assert_skitai_line(&line, &[
            DATE, TIME, "127.0.0.1", "GET", "/v1/x", "2.0", "0", "200", &body.len().to_string(), "W0", MS,
            "\"observe-h2\"", &host, "-", "-", GTXID, "1000", "-", "-", CONNS, MS,
        ], pid);

        // A quote and spaces in the user agent, a space in X-Forwarded-For, a
        // tab: escaped, so the line keeps its fields.
        let mut c = server.connect();
        c.send(
            "GET /v1/esc HTTP/1.1\r\nHost: localhost\r\nUser-Agent: odd \"agent\"\tx\r\n\
             X-Forwarded-For: evil host\r\n\r\n",
        );
        assert_eq!(c.read_response().status, 200);
        let line = log_line(&server, "/v1/esc");
        assert!(line.contains(" \"odd \\x22agent\\x22\\x09x\" localhost - evil\\x20host "), "{line:?}");
        let fields = line.split(' ').count();
        assert_eq!(fields, 22, "the quoted user agent holds the only space: {line:?}");

        // log_off: a prefix and a *suffix; a near miss is logged.
        for (path, agent) in [
            ("/delay?ms=1", "observe-off-prefix"),
            ("/v1/site.css", "observe-off-suffix"),
            ("/v1/site.css.map", "observe-on-map"),
            ("/", "observe-sentinel"),
        ] {
            let (status, _) = curl_fetch(&["-A", agent, &server.url(path)]);
            assert_eq!(status, 200, "{path}");
        }
        // One shard writes its lines in order: once the last is out, so are the others.
        log_line(&server, "\"observe-sentinel\"");
        let line = log_line(&server, "\"observe-on-map\"");
        assert!(line.contains(" GET /v1/site.css.map 1.1 "), "{line:?}");
        let out = server.stdout();
        assert!(!out.contains("observe-off"), "log_off requests were logged:\n{out}");
    }
}

/// Checks a `combined` time: `24/Nov/2026:15:40:14 +0100`.
fn is_combined_time(s: &str) -> bool {
    let Some((clock, zone)) = s.split_once(' ') else { return false };
    let parts: Vec<&str> = clock.splitn(2, ':').collect();
    let date: Vec<&str> = parts[0].split('/').collect();
    parts.len() == 2
        && is_clock(parts[1])
        && date.len() == 3
        && date[0].len() == 2
        && date[1].len() == 3
        && date[2].len() == 4
        && zone.len() == 5
        && (zone.starts_with('+') || zone.starts_with('-'))
}

both_drivers! {
    /// `format = "combined"`: Apache's combined line, with the Basic user, the
    /// URI with its query, referer and user agent (a double quote escaped as
    /// `\x22`), `"-"` for absent ones, and `HTTP/2.0` over h2c.
    fn combined_format(io) {
        let server = hello(io).config("[log]\nformat = \"combined\"\n").start();
        let (status, body) = curl_fetch(&[
            "-A", "ua \"quoted\" here", "-e", "http://ref.example/", "-u", "bob:pw", &server.url("/v1/q?a=1&b=2"),
        ]);
        assert_eq!(status, 200);
        let line = log_line(&server, "/v1/q?a=1&b=2");
        let rest = line.strip_prefix("127.0.0.1 - bob [").unwrap_or_else(|| panic!("{line:?}"));
        let (time, tail) = rest.split_once("] ").unwrap_or_else(|| panic!("{line:?}"));
        assert!(is_combined_time(time), "time {time:?} in {line:?}");
        let want = format!(
            "\"GET /v1/q?a=1&b=2 HTTP/1.1\" 200 {} \"http://ref.example/\" \"ua \\x22quoted\\x22 here\"",
            body.len()
        );
        assert_eq!(tail, want, "{line:?}");

        let mut c = server.connect();
        c.send(get("/nope"));
        let r = c.read_response();
        assert_eq!(r.status, 404);
        let line = log_line(&server, "/nope");
        assert!(line.starts_with("127.0.0.1 - - ["), "{line:?}");
        assert!(line.ends_with(&format!("] \"GET /nope HTTP/1.1\" 404 {} \"-\" \"-\"", r.body.len())), "{line:?}");

        let (status, body) = curl_fetch(&["--http2-prior-knowledge", "-A", "h2-agent", &server.url("/v1/h2")]);
        assert_eq!(status, 200);
        let line = log_line(&server, "/v1/h2");
        let want = format!("] \"GET /v1/h2 HTTP/2.0\" 200 {} \"-\" \"h2-agent\"", body.len());
        assert!(line.ends_with(&want), "{line:?}");
    }
}

/// The keys of a `json` request log line.
const JSON_KEYS: [&str; 20] = [
    "time",
    "peer",
    "method",
    "uri",
    "version",
    "request_bytes",
    "status",
    "response_bytes",
    "shard",
    "handling_ms",
    "delivery_ms",
    "user_agent",
    "host",
    "referer",
    "forwarded_for",
    "user",
    "token",
    "gtxid",
    "ltxid",
    "connections",
];

/// Parses a `json` log line and checks its keys and the fields that vary.
fn json_line(line: &str) -> Value {
    let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line:?}"));
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {line:?}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = JSON_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "{line:?}");
    let time = v["time"].as_str().unwrap();
    // 2026-11-24T15:40:14+01:00
    assert!(time.len() == 25 && &time[10..11] == "T" && is_clock(&time[11..19]), "time {time:?}");
    for key in ["handling_ms", "delivery_ms"] {
        assert!(v[key].as_f64().is_some_and(|ms| (0.0..60_000.0).contains(&ms)), "{key} in {line:?}");
    }
    assert!(v["connections"].as_u64().is_some_and(|n| (1..=4).contains(&n)), "{line:?}");
    assert_eq!(v["peer"], "127.0.0.1", "{line:?}");
    v
}

both_drivers! {
    /// `format = "json"`: one object per line with every key; the user agent's
    /// quote and backslash come back intact through a JSON parser; incoming
    /// transaction ids, the first X-Forwarded-For, the Bearer token's start,
    /// a POST's byte counts and Basic user, h2's version.
    fn json_format(io) {
        let server = hello(io).config("[log]\nformat = \"json\"\n").start();
        let agent = "ua \"quoted\" \\ back";
        let (status, body) = curl_fetch(&[
            "-A", agent,
            "-H", "X-Forwarded-For: 10.9.8.7, 10.0.0.1",
            "-H", "Authorization: Bearer abcdefghijklmnop",
            "-H", "X-Gtxn-Id: json-gtx-1",
            "-H", "X-Ltxn-Id: 5",
            &server.url("/v1/j?a=1&b=%22"),
        ]);
        assert_eq!(status, 200);
        let v = json_line(&log_line(&server, "/v1/j?a=1"));
        assert_eq!(v["method"], "GET");
        assert_eq!(v["uri"], "/v1/j?a=1&b=%22");
        assert_eq!(v["version"], "1.1");
        assert_eq!(v["request_bytes"], 0);
        assert_eq!(v["status"], 200);
        assert_eq!(v["response_bytes"], body.len());
        assert_eq!(v["shard"], 0);
        assert_eq!(v["user_agent"], agent);
        assert_eq!(v["host"], server.addr().to_string());
        assert_eq!(v["referer"], Value::Null);
        assert_eq!(v["forwarded_for"], "10.9.8.7");
        assert_eq!(v["user"], Value::Null);
        assert_eq!(v["token"], "abcdefgh");
        assert_eq!(v["gtxid"], "json-gtx-1");
        assert_eq!(v["ltxid"], 1005);

        let (status, body) = curl_fetch(&[
            "-u", "carol:pw", "-e", "http://r.example/", "--data-binary", "0123456789", &server.url("/echo"),
        ]);
        assert_eq!((status, body.as_slice()), (200, &b"0123456789"[..]));
        let v = json_line(&log_line(&server, "\"/echo\""));
        assert_eq!(v["method"], "POST");
        assert_eq!((v["request_bytes"].as_u64(), v["response_bytes"].as_u64()), (Some(10), Some(10)));
        assert_eq!(v["user"], "carol");
        assert_eq!(v["token"], Value::Null);
        assert_eq!(v["referer"], "http://r.example/");
        assert_eq!(v["ltxid"], 1000);
        local_gtxid(v["gtxid"].as_str().unwrap(), server.serving_pid());

        let (status, _) = curl_fetch(&["--http2-prior-knowledge", &server.url("/v1/over-h2")]);
        assert_eq!(status, 200);
        let v = json_line(&log_line(&server, "/v1/over-h2"));
        assert_eq!(v["version"], "2.0");
        assert!(v["user_agent"].as_str().unwrap_or_default().starts_with("curl/"), "{v}");
    }
}

// ===========================================================================
// Transaction ids
// ===========================================================================

/// `GET /txn` with `headers` by curl (user agent `agent`); asserts 200 and returns the JSON.
fn txn(server: &Server, agent: &str, headers: &[&str]) -> Value {
    let mut args = vec!["-A", agent];
    for h in headers {
        args.extend(["-H", h]);
    }
    let url = server.url("/txn");
    args.push(&url);
    let (status, body) = curl_fetch(&args);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).unwrap_or_else(|e| panic!("/txn is not JSON ({e})"))
}

both_drivers! {
    /// An incoming gtxid is kept and the ltxid moves on by 1000, in `/txn`'s
    /// JSON (with the ids for an upstream call), the request log and the app
    /// log on stderr; a lone gtxid and a non-numeric ltxid get ltxid 1000; an
    /// over-long gtxid is replaced; without one, each request gets a new gtxid
    /// naming the pid and the shard, unique across many requests and 2 shards.
    fn transaction_ids(io) {
        let server = hello(io).shards(2).start();
        let pid = server.serving_pid();

        let v = txn(&server, "observe-txn-kept", &["X-Gtxn-Id: upstream-abc-1", "X-Ltxn-Id: 2001"]);
        assert_eq!(v["gtxid"], "upstream-abc-1", "{v}");
        assert_eq!(v["ltxid"], 3001, "{v}");
        assert_eq!(v["upstream_gtxid"], "upstream-abc-1", "{v}");
        assert_eq!(v["upstream_ltxid"], 3002, "{v}");
        let fields: Vec<String> = log_line(&server, "\"observe-txn-kept\"").split(' ').map(str::to_owned).collect();
        assert_eq!((fields[15].as_str(), fields[16].as_str()), ("upstream-abc-1", "3001"), "{fields:?}");
        let app = wait_line("stderr", || server.stderr(), "gtxid=upstream-abc-1");
        assert!(app.contains("transaction asked on shard ") && app.contains("ltxid=3001"), "app log line {app:?}");
        assert!(app.contains(&format!("shard {}", &fields[9][1..])), "app log line {app:?} vs log {fields:?}");

        let v = txn(&server, "observe-txn-lone", &["X-Gtxn-Id: lone-gtx"]);
        assert_eq!((v["gtxid"].as_str(), v["ltxid"].as_u64()), (Some("lone-gtx"), Some(1000)), "{v}");
        assert_eq!(v["upstream_ltxid"], 1001, "{v}");
        let line = log_line(&server, "\"observe-txn-lone\"");
        assert!(line.contains(" lone-gtx 1000 "), "{line:?}");

        let v = txn(&server, "observe-txn-badltx", &["X-Gtxn-Id: bad-ltx", "X-Ltxn-Id: x"]);
        assert_eq!((v["gtxid"].as_str(), v["ltxid"].as_u64()), (Some("bad-ltx"), Some(1000)), "{v}");

        let long = format!("X-Gtxn-Id: {}", "g".repeat(200));
        let v = txn(&server, "observe-txn-long", &[&long]);
        local_gtxid(v["gtxid"].as_str().unwrap(), pid);
        assert_eq!(v["ltxid"], 1000, "{v}");

        // Fresh ids: each request on a connection of its own, so both shards take some.
        let mut seen = HashSet::new();
        let mut shards = HashSet::new();
        for i in 0..40 {
            let mut c = server.connect();
            c.send(get("/txn"));
            let r = c.read_response();
            assert_eq!(r.status, 200, "request {i}: {r:?}");
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            let gtxid = v["gtxid"].as_str().unwrap().to_owned();
            let (shard, _) = local_gtxid(&gtxid, pid);
            assert!(shard < 2, "{gtxid}");
            assert_eq!(v["ltxid"], 1000, "{v}");
            assert_eq!(v["upstream_gtxid"], gtxid.as_str(), "{v}");
            assert_eq!(v["upstream_ltxid"], 1001, "{v}");
            assert!(seen.insert(gtxid.clone()), "gtxid {gtxid} given twice");
            shards.insert(shard);
        }
        assert_eq!(shards.len(), 2, "40 connections all went to one shard: {seen:?}");
        // The request log has each, naming the same shard as the gtxid.
        for gtxid in &seen {
            let line = log_line(&server, &format!(" {gtxid} "));
            let shard = local_gtxid(gtxid, pid).0;
            assert_eq!(line.split(' ').nth(9), Some(format!("W{shard}").as_str()), "{line:?}");
        }
        let any = seen.iter().next().unwrap();
        let app = wait_line("stderr", || server.stderr(), &format!("gtxid={any} "));
        assert!(app.contains("ltxid=1000"), "{app:?}");
    }
}

// ===========================================================================
// Log files, off switches
// ===========================================================================

both_drivers! {
    /// `[log] path`: request lines go to request.log (not stdout), the
    /// worker's `listening on` line and the master's lines to server.log,
    /// `cx.log` lines to app.log; after request.log is renamed and SIGUSR1
    /// sent, new lines go to a new request.log and the old ones stay in the
    /// renamed file.
    fn log_files_and_sigusr1(io) {
        let logs = tempfile::tempdir().unwrap();
        let dir = logs.path();
        let server = hello(io).config(&format!("[log]\npath = {:?}\n", dir.to_str().unwrap())).start();
        let (request_log, server_log, app_log) = (dir.join("request.log"), dir.join("server.log"), dir.join("app.log"));

        file_line(&server_log, "listening on http://");
        file_line(&server_log, &format!("master pid {}", server.pid()));
        assert_eq!(txn(&server, "observe-file-1", &["X-Gtxn-Id: file-gtx"])["gtxid"], "file-gtx");
        assert_eq!(curl_fetch(&["-A", "observe-file-2", &server.url("/")]).0, 200);
        let line = file_line(&request_log, "\"observe-file-1\"");
        assert!(line.contains(" GET /txn 1.1 0 200 ") && line.contains(" file-gtx 1000 "), "{line:?}");
        file_line(&request_log, "\"observe-file-2\"");
        let app = file_line(&app_log, "transaction asked on shard 0");
        assert!(app.contains("gtxid=file-gtx") && app.contains("ltxid=1000"), "{app:?}");
        assert!(!server.stdout().contains("observe-file"), "request lines on stdout too:\n{}", server.stdout());

        let rotated = dir.join("request.log.1");
        fs::rename(&request_log, &rotated).unwrap();
        server.signal(libc::SIGUSR1);
        wait_line("stderr", || server.stderr(), "SIGUSR1: 3 log file(s) reopened");
        // The master's own: server.log and app.log.
        wait_line("stderr", || server.stderr(), "SIGUSR1: 2 log file(s) of the master reopened");
        file_line(&server_log, "SIGUSR1: 3 log file(s) reopened");
        file_line(&server_log, "of the master reopened");

        assert_eq!(curl_fetch(&["-A", "observe-file-3", &server.url("/")]).0, 200);
        file_line(&request_log, "\"observe-file-3\"");
        let old = fs::read_to_string(&rotated).unwrap();
        let new = fs::read_to_string(&request_log).unwrap();
        assert!(old.contains("observe-file-1") && old.contains("observe-file-2"), "rotated file:\n{old}");
        assert!(!old.contains("observe-file-3"), "a line after SIGUSR1 went to the renamed file:\n{old}");
        assert!(!new.contains("observe-file-1") && !new.contains("observe-file-2"), "new file:\n{new}");
    }
}

/// Makes a few requests (HTTP/1.1 and h2c) that would each have a log line.
fn some_requests(addr: SocketAddr) {
    for path in ["/", "/nope", "/v1/x"] {
        assert!(get_on(addr, path).status < 500);
    }
    let (status, _) = curl_fetch(&["--http2-prior-knowledge", &format!("http://{addr}/")]);
    assert_eq!(status, 200);
}

both_drivers! {
    /// `[log] requests = false`: no request lines at all.
    fn requests_off(io) {
        let server = hello(io).config("[log]\nrequests = false\n").start();
        some_requests(server.addr());
        thread::sleep(QUIET_WAIT);
        assert_eq!(server.stdout(), "", "request lines with requests = false");
    }
}

/// `hello --silent` on 127.0.0.1:`port` (its `listening on` line is hidden).
fn silent_hello(io: Io, port: u16) -> ServerBuilder {
    hello(io).no_listen_flags().arg("--address").arg("127.0.0.1").arg("--port").arg(port.to_string()).arg("--silent")
}

both_drivers! {
    /// `--silent`: no request lines on stdout; with a log path the request log
    /// still goes to request.log.
    fn silent_keeps_stdout_clean(io) {
        let port = free_port();
        let mut server = silent_hello(io, port).spawn();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_accepting(&mut server, addr);
        some_requests(addr);
        thread::sleep(QUIET_WAIT);
        assert_eq!(server.stdout(), "", "request lines on stdout with --silent");

        let logs = tempfile::tempdir().unwrap();
        let port = free_port();
        let mut server = silent_hello(io, port)
            .config(&format!("[log]\npath = {:?}\n", logs.path().to_str().unwrap()))
            .spawn();
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        wait_accepting(&mut server, addr);
        some_requests(addr);
        file_line(&logs.path().join("request.log"), " GET /v1/x 1.1 ");
        file_line(&logs.path().join("request.log"), " GET / 2.0 ");
        assert_eq!(server.stdout(), "", "request lines on stdout with --silent");
    }
}

// ===========================================================================
// Metrics and the admin endpoints
// ===========================================================================

/// The classes and protocols requests are counted by.
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const PROTOCOLS: [&str; 3] = ["http/1.1", "h2", "h3"];

both_drivers! {
    /// After a known mix on 2 shards (5 GET /, 3 404s, 2 POSTs of 10 bytes,
    /// a 308 from the engine, an h2 GET): exact request counts by protocol and
    /// class, body byte totals and handling-time counts per mount, summed over
    /// shards; the JSON form agrees; the status page, /healthz and /readyz
    /// answer; admin requests change no counter.
    fn metrics_after_a_known_mix(io) {
        let server = hello(io).shards(2).config("[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let idle = scrape(admin);
        assert_eq!(idle.sum("skitai_requests_total", &[]), 0.0, "{}", idle.text);

        let mut sent = 0;
        let mut c = server.connect();
        for _ in 0..5 {
            c.send(get("/"));
            let r = c.read_response();
            assert_eq!((r.status, r.body_str().as_str()), (200, HELLO));
            sent += r.body.len();
        }
        for i in 0..3 {
            c.send(get(&format!("/nope{i}")));
            let r = c.read_response();
            assert_eq!(r.status, 404);
            sent += r.body.len();
        }
        for _ in 0..2 {
            c.send(post("/echo", b"0123456789"));
            let r = c.read_response();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"0123456789"[..]));
            sent += r.body.len();
        }
        c.send(get("/v1"));
        let r = c.read_response();
        assert_eq!(r.status, 308, "{r:?}");
        sent += r.body.len();
        let (status, body) = curl_fetch(&["--http2-prior-knowledge", &server.url("/v1/x")]);
        assert_eq!(status, 200);
        sent += body.len();

        let m = wait_metrics(admin, "12 requests", |m| m.sum("skitai_requests_total", &[]) >= 12.0);
        for protocol in PROTOCOLS {
            for class in CLASSES {
                let want = match (protocol, class) {
                    ("http/1.1", "2xx") => 7.0,
                    ("http/1.1", "3xx") => 1.0,
                    ("http/1.1", "4xx") => 3.0,
                    ("h2", "2xx") => 1.0,
                    _ => 0.0,
                };
                m.expect("skitai_requests_total", &[("protocol", protocol), ("class", class)], want);
            }
        }
        for shard in ["0", "1"] {
            assert_eq!(m.matching("skitai_requests_total", &[("shard", shard)]).count(), 15, "{}", m.text);
        }
        m.expect("skitai_request_body_bytes_total", &[], 20.0);
        m.expect("skitai_response_body_bytes_total", &[], sent as f64);
        let per_mount = [("/", 8.0), ("/echo", 2.0), ("/v1/", 1.0), ("(engine)", 1.0), ("/txn", 0.0), ("/burn", 0.0)];
        for (mount, want) in per_mount {
            m.expect("skitai_request_duration_seconds_count", &[("mount", mount)], want);
            for q in ["0.5", "0.9", "0.99", "0.999"] {
                let n = m.matching("skitai_request_duration_seconds", &[("mount", mount), ("quantile", q)]).count();
                assert_eq!(n, 2, "a {q} quantile of {mount} per shard:\n{}", m.text);
            }
        }
        m.expect("skitai_request_duration_seconds_count", &[], 12.0);
        assert!(m.sum("skitai_request_duration_seconds_sum", &[("mount", "/")]) > 0.0, "{}", m.text);
        let slowest_root = m
            .matching("skitai_request_duration_seconds", &[("mount", "/"), ("quantile", "0.999")])
            .map(|s| s.value)
            .fold(0.0, f64::max);
        assert!(slowest_root > 0.0 && slowest_root < 60.0, "{}", m.text);
        for name in [
            "skitai_shed_total",
            "skitai_accept_errors_total",
            "skitai_websocket_opened_total",
            "skitai_websocket_messages_received_total",
            "skitai_websocket_messages_sent_total",
            "skitai_log_dropped_lines_total",
            "skitai_websocket_open",
        ] {
            m.expect(name, &[], 0.0);
        }
        for reason in ["estimate", "inflight", "connections"] {
            assert_eq!(m.matching("skitai_shed_total", &[("reason", reason)]).count(), 2, "{}", m.text);
        }
        for (name, kind) in [
            ("skitai_requests_total", "counter"),
            ("skitai_shed_total", "counter"),
            ("skitai_open_connections", "gauge"),
            ("skitai_requests_in_flight", "gauge"),
            ("skitai_estimated_wait_seconds", "gauge"),
            ("skitai_request_duration_seconds", "summary"),
        ] {
            assert!(m.text.contains(&format!("# TYPE {name} {kind}\n")), "no TYPE line for {name}:\n{}", m.text);
        }
        // The raw connection is still open; so is this scrape's.
        assert!(m.sum("skitai_open_connections", &[]) >= 1.0, "{}", m.text);

        let j = get_json(admin, "/metrics.json");
        assert_eq!(j["name"], "hello");
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"));
        assert_eq!(j["pid"], server.serving_pid());
        assert!(j["uptime_secs"].as_u64().is_some_and(|s| s < 3600), "{j}");
        assert_eq!(j["requests"], 12, "{j}");
        assert_eq!(j["shed"], 0, "{j}");
        for (mount, want) in [("/", 8), ("/echo", 2), ("/v1/", 1), ("(engine)", 1)] {
            let s = &j["mounts"][mount];
            assert_eq!(s["count"], want, "{mount}: {j}");
            let q: Vec<f64> =
                ["p50_ms", "p90_ms", "p99_ms", "p999_ms", "max_ms"].iter().map(|k| s[k].as_f64().unwrap()).collect();
            assert!(q[0] > 0.0 && q.windows(2).all(|w| w[0] <= w[1]), "{mount} quantiles out of order: {s}");
            assert!(s["mean_ms"].as_f64().is_some_and(|m| m > 0.0 && m <= q[4]), "{mount}: {s}");
        }
        let shards = j["shards"].as_array().unwrap();
        assert_eq!(shards.len(), 2, "{j}");
        let total = |f: &dyn Fn(&Value) -> u64| shards.iter().map(f).sum::<u64>();
        assert_eq!(total(&|s| s["requests"]["http/1.1"]["2xx"].as_u64().unwrap()), 7, "{j}");
        assert_eq!(total(&|s| s["requests"]["http/1.1"]["4xx"].as_u64().unwrap()), 3, "{j}");
        assert_eq!(total(&|s| s["requests"]["h2"]["2xx"].as_u64().unwrap()), 1, "{j}");
        assert_eq!(total(&|s| s["request_body_bytes"].as_u64().unwrap()), 20, "{j}");
        assert_eq!(total(&|s| s["response_body_bytes"].as_u64().unwrap()), sent as u64, "{j}");
        assert_eq!(total(&|s| s["mounts"]["/"]["count"].as_u64().unwrap()), 8, "{j}");
        let mut ids: Vec<u64> = shards.iter().map(|s| s["shard"].as_u64().unwrap()).collect();
        ids.sort_unstable();
        assert_eq!(ids, [0, 1], "{j}");
        for s in shards {
            assert_eq!(s["driver"], io.driver(), "{s}");
            assert_eq!(s["draining"], false, "{s}");
            for reason in ["estimate", "inflight", "connections"] {
                assert_eq!(s["shed"][reason], 0, "{s}");
            }
            assert_eq!(s["websocket"]["opened"], 0, "{s}");
        }

        let r = get_on(admin, "/healthz");
        assert_eq!((r.status, r.body_str().trim()), (200, "ok"), "{r:?}");
        let r = get_on(admin, "/readyz");
        assert_eq!((r.status, r.body_str().trim()), (200, "ready"), "{r:?}");
        for path in ["/status", "/"] {
            let r = get_on(admin, path);
            assert_eq!(r.status, 200, "{path}: {r:?}");
            assert!(r.header("content-type").unwrap_or_default().starts_with("text/html"), "{path}: {r:?}");
            let page = r.body_str();
            assert!(page.contains("http-equiv=\"refresh\""), "{path} does not refresh itself:\n{page}");
            let mounts = ["<td>/</td>", "<td>/echo</td>", "<td>/v1/</td>", "<td>(engine)</td>"];
            for needle in ["p50", "p90", "p99", "p999"].into_iter().chain(mounts) {
                assert!(page.contains(needle), "{path} lacks {needle:?}:\n{page}");
            }
        }
        assert_eq!(get_on(admin, "/nope").status, 404);

        // None of those admin requests (nor the scrapes) counted.
        let after = scrape(admin);
        assert_eq!(after.counters(), m.counters(), "admin requests changed the counters:\n{}", after.text);
    }
}

both_drivers! {
    /// `[admin] mount = "/_admin"`: the same endpoints on the main port (no
    /// admin listener), next to the site.
    fn admin_mount_on_main_port(io) {
        let server = hello(io).config("[admin]\nmount = \"/_admin\"\n").start();
        assert!(!server.stderr().contains("admin on http"), "an admin listener without a port:\n{}", server.stderr());
        let addr = server.addr();
        assert_eq!(get_on(addr, "/").status, 200);
        let r = get_on(addr, "/_admin/healthz");
        assert_eq!((r.status, r.body_str().trim()), (200, "ok"), "{r:?}");
        let r = get_on(addr, "/_admin/readyz");
        assert_eq!((r.status, r.body_str().trim()), (200, "ready"), "{r:?}");
        let r = get_on(addr, "/_admin/metrics");
        assert_eq!(r.status, 200, "{r:?}");
        assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain; version=0.0.4"), "{r:?}");
        let m = Prom::parse(r.body_str());
        assert!(m.sum("skitai_requests_total", &[("protocol", "http/1.1"), ("class", "2xx")]) >= 1.0, "{}", m.text);
        m.expect("skitai_request_duration_seconds_count", &[("mount", "/")], 1.0);
        let r = get_on(addr, "/_admin/status");
        assert!(r.status == 200 && r.body_str().contains("http-equiv=\"refresh\""), "{r:?}");
        let j = get_json(addr, "/_admin/metrics.json");
        assert_eq!(j["name"], "hello");
        // The site still answers everything else.
        assert_eq!(get_on(addr, "/v1/x").status, 200);
        assert_eq!(get_on(addr, "/_adminx").status, 404);
    }
}

both_drivers! {
    /// Requests to the admin mount on the main port are not counted either
    /// (README: "Admin requests are not counted in the metrics").
    fn admin_mount_requests_not_counted(io) {
        let server = hello(io).config("[admin]\nmount = \"/_admin\"\n").start();
        let addr = server.addr();
        assert_eq!(get_on(addr, "/").status, 200);
        let scrape_mounted = || Prom::parse(get_on(addr, "/_admin/metrics").body_str());
        let first = scrape_mounted();
        for path in ["/_admin/healthz", "/_admin/status", "/_admin/metrics.json"] {
            assert_eq!(get_on(addr, path).status, 200);
        }
        let second = scrape_mounted();
        second.expect("skitai_requests_total", &[], 1.0);
        assert_eq!(second.counters(), first.counters(), "admin requests were counted:\n{}", second.text);
    }
}

both_drivers! {
    /// An admin request with a body (a POST, answered 405) is not counted.
    fn admin_requests_with_a_body_not_counted(io) {
        let server = hello(io).config("[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let mut c = Conn::connect(admin);
        c.send(post("/metrics", b"x=1"));
        assert_eq!(c.read_response().status, 405);
        let m = scrape(admin);
        m.expect("skitai_requests_total", &[], 0.0);
        m.expect("skitai_request_body_bytes_total", &[], 0.0);
    }
}

both_drivers! {
    /// On an idle server the in-flight gauge and the estimated wait are 0
    /// (the scrape itself is an admin request, which is not counted).
    fn idle_server_has_nothing_in_flight(io) {
        let server = hello(io).config("[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        assert_eq!(get_on(server.addr(), "/").status, 200);
        let m = scrape(admin);
        m.expect("skitai_requests_in_flight", &[], 0.0);
        m.expect("skitai_estimated_wait_seconds", &[], 0.0);
        let j = get_json(admin, "/metrics.json");
        assert_eq!(j["shards"][0]["in_flight"], 0, "{j}");
    }
}

// ===========================================================================
// Draining
// ===========================================================================

both_drivers! {
    /// While the server drains (SIGTERM with a slow request in flight), the
    /// admin listener stays open and `/readyz` answers 503 `draining` (here on
    /// an admin connection that was busy sending its head when the drain
    /// began); the slow request completes and the process exits 0.
    fn readyz_fails_while_draining(io) {
        let mut server = hello(io).config(DRAIN_CONFIG).start();
        let admin = admin_addr(&server);
        let r = get_on(admin, "/readyz");
        assert_eq!((r.status, r.body_str().trim()), (200, "ready"), "{r:?}");

        // A /readyz whose head is not complete: the connection is busy, not
        // idle, so the drain does not close it.
        let mut probe = Conn::connect(admin);
        probe.send("GET /readyz HTTP/1.1\r\nHost: localhost\r\n");
        let mut slow = server.connect();
        slow.set_read_timeout(DRAIN_BOUND);
        slow.send(get("/delay?ms=4000"));
        let slow = thread::spawn(move || slow.try_read_response(false).map_err(|e| describe(&e)));
        // Time for both to reach the server (ordering, not a measurement).
        thread::sleep(Duration::from_millis(500));

        server.signal(libc::SIGTERM);
        wait_refused(server.addr(), Duration::from_secs(10));
        probe.send("\r\n");
        let r = probe.read_response();
        assert_eq!((r.status, r.body_str().trim()), (503, "draining"), "{r:?}");
        assert!(r.connection_has("close"), "{r:?}");

        let r = slow.join().unwrap().expect("the in-flight request completes");
        assert_eq!((r.status, r.body_str().as_str()), (200, "done"), "{r:?}");
        let status = server.wait_exit(DRAIN_BOUND).expect("the server exits after draining");
        assert_eq!(status.code(), Some(0), "{}", server.stderr());
    }
}

both_drivers! {
    /// SIGTERM on an idle server with the request log on (the default in the
    /// foreground: to stdout; and to request.log) exits 0 promptly, as it
    /// does with `requests = false` or `--silent`.
    fn sigterm_exits_with_the_request_log_on(io) {
        let logs = tempfile::tempdir().unwrap();
        let file = format!("[log]\npath = {:?}\n", logs.path().to_str().unwrap());
        for config in ["", file.as_str()] {
            let mut server = hello(io).config(config).start();
            assert_eq!(get_on(server.addr(), "/").status, 200);
            server.signal(libc::SIGTERM);
            let status = server.wait_exit(DRAIN_BOUND);
            assert_eq!(
                status.and_then(|s| s.code()),
                Some(0),
                "config {config:?}: no exit 0 within {DRAIN_BOUND:?} of SIGTERM\n{}",
                server.stderr()
            );
        }
    }
}

both_drivers! {
    /// While draining, a new connection to the admin listener (which stays
    /// open for this) gets `/readyz` → 503 `draining`, as a load balancer's
    /// health check would ask it.
    fn readyz_on_a_new_connection_while_draining(io) {
        let mut server = hello(io).config(DRAIN_CONFIG).start();
        let admin = admin_addr(&server);
        let mut slow = server.connect();
        slow.set_read_timeout(DRAIN_BOUND);
        slow.send(get("/delay?ms=4000"));
        let slow = thread::spawn(move || slow.try_read_response(false).map_err(|e| describe(&e)));
        thread::sleep(Duration::from_millis(500));
        server.signal(libc::SIGTERM);
        wait_refused(server.addr(), Duration::from_secs(10));

        let mut c = Conn::connect(admin);
        c.send(get("/readyz"));
        let answer = c.try_read_response(false).map_err(|e| describe(&e));
        let _ = slow.join();
        let r = answer.unwrap_or_else(|e| panic!("/readyz while draining: {e}"));
        assert_eq!((r.status, r.body_str().trim()), (503, "draining"), "{r:?}");
        server.wait_exit(DRAIN_BOUND).expect("the server exits after draining");
    }
}

// ===========================================================================
// Load shedding
// ===========================================================================

/// Concurrent clients of the shedding test.
const CLIENTS: usize = 40;
/// A client waits this long for any answer; reaching it means a request hung.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// What the load clients saw.
#[derive(Debug, Default, Clone)]
struct Tally {
    ok: u64,
    shed: u64,
    /// Requests sent after the first 503 and served (the shard keeps working while it sheds).
    ok_while_shedding: u64,
    /// Anything else: wrong answers, hangs, connections lost without an answer.
    problems: Vec<String>,
}

/// One client: `/burn?ms=50` on a keep-alive connection until `stop`.
fn load_client(addr: SocketAddr, stop: Arc<AtomicBool>, tally: Arc<Mutex<Tally>>) {
    let mut conn: Option<Conn> = None;
    while !stop.load(Ordering::SeqCst) {
        let c = conn.get_or_insert_with(|| {
            let c = Conn::connect(addr);
            c.set_read_timeout(CLIENT_TIMEOUT);
            c
        });
        let shedding = tally.lock().unwrap().shed > 0;
        let outcome = c
            .try_send(get("/burn?ms=50"))
            .map_err(|e| format!("send: {e}"))
            .and_then(|()| c.try_read_response(false).map_err(|e| describe(&e)));
        let mut t = tally.lock().unwrap();
        if outcome.as_ref().is_ok_and(|r| r.connection_has("close")) {
            conn = None;
        }
        match outcome {
            Ok(r) if r.status == 200 && r.body_str() == "burned 50 ms" => {
                t.ok += 1;
                if shedding {
                    t.ok_while_shedding += 1;
                }
            }
            Ok(r) if r.status == 503 => {
                let retry = r.header("retry-after").and_then(|v| v.parse::<u64>().ok());
                match (retry, r.json_error_problem(503, "service unavailable")) {
                    (Some(1..=60), None) => t.shed += 1,
                    (retry, problem) => t.problems.push(format!("bad 503 (Retry-After {retry:?}, {problem:?}): {r:?}")),
                }
            }
            Ok(r) => t.problems.push(format!("unexpected answer {r:?}")),
            Err(e) => {
                t.problems.push(e);
                return;
            }
        }
        if t.problems.len() > 20 {
            return;
        }
    }
}

both_drivers! {
    /// `max_estimated_wait = 1` on one shard, 40 clients on `/burn?ms=50`:
    /// once the shard knows how long a request keeps it busy, new requests get
    /// an immediate 503 with `Retry-After` and the JSON error, counted as
    /// `estimate`, while the requests it admits are still served; every
    /// request gets an answer (none hangs); as soon as the load stops (the
    /// admitted requests still finishing) the shard admits again.
    fn shed_on_estimated_wait(io) {
        let server = hello(io).config("[server]\nmax_estimated_wait = 1\n[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let addr = server.addr();
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(Mutex::new(Tally::default()));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (stop, tally) = (stop.clone(), tally.clone());
                thread::spawn(move || load_client(addr, stop, tally))
            })
            .collect();
        // Load until the shard has shed a fair number and served some more
        // meanwhile (bounded).
        let enough = |t: &Tally| t.shed >= 100 && t.ok_while_shedding >= 5;
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let t = tally.lock().unwrap().clone();
            if enough(&t) || !t.problems.is_empty() || Instant::now() >= deadline {
                break;
            }
            thread::sleep(Duration::from_millis(50));
        }
        stop.store(true, Ordering::SeqCst);

        // The load stops (each client's last request may still be in hand):
        // the shard admits again.
        let (mut ok, mut shed) = (0, 0);
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let r = get_on(addr, "/");
            match r.status {
                200 => {
                    ok += 1;
                    break;
                }
                503 => {
                    assert_shed(&r, "service unavailable");
                    shed += 1;
                }
                _ => panic!("{r:?}"),
            }
            assert!(Instant::now() < deadline, "still 503 15 s after the load stopped");
            thread::sleep(Duration::from_millis(100));
        }
        for c in clients {
            c.join().expect("load client thread");
        }
        let t = tally.lock().unwrap().clone();
        let first = &t.problems[..t.problems.len().min(5)];
        assert!(t.problems.is_empty(), "{} problems, first ones: {first:#?}", t.problems.len());
        assert!(enough(&t), "not enough shedding and serving within 40 s: {t:?}");
        eprintln!("load: {} served ({} while shedding), {} shed; then {shed} shed before a 200", t.ok, t.ok_while_shedding, t.shed);
        let (ok, shed) = (ok + t.ok, shed + t.shed);

        let m = wait_metrics(admin, "every answer", |m| m.sum("skitai_requests_total", &[]) >= (ok + shed) as f64);
        m.expect("skitai_shed_total", &[("reason", "estimate")], shed as f64);
        m.expect("skitai_shed_total", &[("reason", "inflight")], 0.0);
        m.expect("skitai_shed_total", &[("reason", "connections")], 0.0);
        m.expect("skitai_requests_total", &[("class", "5xx")], shed as f64);
        m.expect("skitai_requests_total", &[("class", "2xx")], ok as f64);
        m.expect("skitai_request_duration_seconds_count", &[("mount", "/burn")], t.ok as f64);
        assert_eq!(get_json(admin, "/metrics.json")["shed"], shed, "{}", m.text);
    }
}

both_drivers! {
    /// `max_inflight = 2`: with two slow requests in hand, further requests
    /// get an immediate 503 (`Retry-After`, JSON), counted as `inflight`; the
    /// slow ones complete and the shard serves again.
    fn shed_on_max_inflight(io) {
        let server = hello(io).config("[server]\nmax_inflight = 2\n[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let slow: Vec<_> = (0..2)
            .map(|_| {
                let mut c = server.connect();
                c.send(get("/delay?ms=3000"));
                thread::spawn(move || c.try_read_response(false).map_err(|e| describe(&e)))
            })
            .collect();
        // Time for both to reach their handler (ordering, not a measurement).
        thread::sleep(Duration::from_millis(500));
        for i in 0..3 {
            let r = get_on(server.addr(), "/");
            assert_eq!(r.status, 503, "request {i} over max_inflight: {r:?}");
            assert_shed(&r, "service unavailable");
        }
        for s in slow {
            let r = s.join().unwrap().expect("a slow request completes");
            assert_eq!((r.status, r.body_str().as_str()), (200, "done"), "{r:?}");
        }
        assert_eq!(get_on(server.addr(), "/").status, 200);

        let m = wait_metrics(admin, "6 requests", |m| m.sum("skitai_requests_total", &[]) >= 6.0);
        m.expect("skitai_shed_total", &[("reason", "inflight")], 3.0);
        m.expect("skitai_shed_total", &[("reason", "estimate")], 0.0);
        m.expect("skitai_shed_total", &[("reason", "connections")], 0.0);
        m.expect("skitai_requests_total", &[("class", "5xx")], 3.0);
        m.expect("skitai_requests_total", &[("class", "2xx")], 3.0);
    }
}

/// Reads the canned refusal of a connection over `max_connections`, then the close.
fn assert_refused_connection(mut c: Conn) {
    let r = c.read_response();
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("retry-after"), Some("1"), "{r:?}");
    assert!(r.connection_has("close"), "{r:?}");
    r.assert_json_error(503, "too many connections");
    c.expect_closed();
}

both_drivers! {
    /// `max_connections = 2`: with two connections open, the next ones read a
    /// canned 503 `too many connections` and are closed, counted as
    /// `connections`; the two open ones keep working, and once they close new
    /// connections are served again.
    fn shed_on_max_connections(io) {
        let server = hello(io).config("[server]\nmax_connections = 2\n[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let mut held: Vec<Conn> = (0..2)
            .map(|_| {
                let mut c = server.connect();
                c.send(get("/"));
                assert_eq!(c.read_response().status, 200);
                c
            })
            .collect();
        // Two more, idle (nothing sent): each is refused at once.
        for _ in 0..2 {
            assert_refused_connection(server.connect());
        }
        for c in &mut held {
            c.send(get("/"));
            assert_eq!(c.read_response().status, 200, "a connection under the limit stopped working");
        }
        drop(held);

        // Once the server has seen them close, a new connection is served.
        let mut refused = 2;
        let deadline = Instant::now() + Duration::from_secs(10);
        let c = loop {
            let mut c = server.connect();
            c.send(get("/"));
            let r = c.try_read_response(false).unwrap_or_else(|e| panic!("{}", describe(&e)));
            if r.status == 200 {
                break c;
            }
            assert_eq!(r.body_str(), "{\"code\": 50300, \"message\": \"too many connections\"}");
            refused += 1;
            assert!(Instant::now() < deadline, "connections still refused after the others closed");
            thread::sleep(Duration::from_millis(50));
        };
        drop(c);
        // The admin listener's connections count too: a scrape may be refused
        // until the last connection's close is seen (and that refusal counts).
        let m = loop {
            let r = get_on(admin, "/metrics");
            if r.status == 200 {
                let m = Prom::parse(r.body_str());
                if m.sum("skitai_requests_total", &[]) >= 5.0 {
                    break m;
                }
            } else {
                assert_eq!(r.body_str(), "{\"code\": 50300, \"message\": \"too many connections\"}");
                refused += 1;
            }
            assert!(Instant::now() < deadline, "the metrics never showed 5 requests");
            thread::sleep(Duration::from_millis(50));
        };
        m.expect("skitai_shed_total", &[("reason", "connections")], refused as f64);
        m.expect("skitai_shed_total", &[("reason", "inflight")], 0.0);
        m.expect("skitai_shed_total", &[("reason", "estimate")], 0.0);
        m.expect("skitai_requests_total", &[("class", "2xx")], 5.0);
        m.expect("skitai_requests_total", &[("class", "5xx")], 0.0);
    }
}

both_drivers! {
    /// With the site at `max_connections`, the admin listener still answers
    /// (README: admin requests "are never shed").
    fn admin_answers_at_max_connections(io) {
        let server = hello(io).config("[server]\nmax_connections = 2\n[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let _held: Vec<Conn> = (0..2)
            .map(|_| {
                let mut c = server.connect();
                c.send(get("/"));
                assert_eq!(c.read_response().status, 200);
                c
            })
            .collect();
        let r = get_on(admin, "/healthz");
        assert_eq!((r.status, r.body_str().trim()), (200, "ok"), "{r:?}");
    }
}

// ===========================================================================
// WebSocket counters
// ===========================================================================

/// A masked client text frame.
fn ws_text(text: &str) -> Vec<u8> {
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
    let mut out = vec![0x81, 0x80 | text.len() as u8];
    out.extend(MASK);
    out.extend(text.bytes().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// Reads one unmasked server frame with a payload under 126 bytes: (opcode, payload).
fn ws_read(stream: &mut TcpStream, pending: &mut Vec<u8>) -> (u8, Vec<u8>) {
    loop {
        if pending.len() >= 2 {
            let len = usize::from(pending[1] & 0x7f);
            assert!(len < 126 && pending[1] & 0x80 == 0, "unexpected frame header {:02x?}", &pending[..2]);
            if pending.len() >= 2 + len {
                let frame: Vec<u8> = pending.drain(..2 + len).collect();
                return (frame[0] & 0x0f, frame[2..].to_vec());
            }
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).expect("a frame from the server");
        assert!(n > 0, "the server closed the WebSocket early");
        pending.extend_from_slice(&chunk[..n]);
    }
}

both_drivers! {
    /// A WebSocket on ws_lab's `/echo`: counted as opened and open while it
    /// lives (its 101 as a 1xx request), then its messages received and sent
    /// once it closed, and open back to 0.
    fn websocket_counters(io) {
        let server = ServerBuilder::new(example_bin("ws_lab")).io(io).shards(1).config("[admin]\nport = 0\n").start();
        let admin = admin_addr(&server);
        let mut c = server.connect();
        c.send(
            "GET /echo HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
        );
        let r = c.read_response();
        assert_eq!(r.status, 101, "{r:?}");
        let mut pending = c.leftover().to_vec();
        let mut stream = c.stream.try_clone().unwrap();

        let m = wait_metrics(admin, "an open WebSocket", |m| m.sum("skitai_websocket_open", &[]) == 1.0);
        m.expect("skitai_websocket_opened_total", &[], 1.0);
        m.expect("skitai_requests_total", &[("protocol", "http/1.1"), ("class", "1xx")], 1.0);

        for text in ["one", "two", "three"] {
            stream.write_all(&ws_text(text)).unwrap();
            assert_eq!(ws_read(&mut stream, &mut pending), (0x1, text.as_bytes().to_vec()));
        }
        // Close 1000, masked with a zero mask.
        stream.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8]).unwrap();
        let (opcode, payload) = ws_read(&mut stream, &mut pending);
        assert_eq!((opcode, payload.get(..2)), (0x8, Some(&[0x03, 0xe8][..])), "close frame");
        c.expect_closed();

        let m = wait_metrics(admin, "the WebSocket closed", |m| m.sum("skitai_websocket_open", &[]) == 0.0);
        m.expect("skitai_websocket_opened_total", &[], 1.0);
        m.expect("skitai_websocket_messages_received_total", &[], 3.0);
        m.expect("skitai_websocket_messages_sent_total", &[], 3.0);
        let j = get_json(admin, "/metrics.json");
        let ws = &j["shards"][0]["websocket"];
        assert_eq!((ws["opened"].as_u64(), ws["open"].as_u64()), (Some(1), Some(0)), "{j}");
        assert_eq!((ws["messages_received"].as_u64(), ws["messages_sent"].as_u64()), (Some(3), Some(3)), "{j}");
    }
}

/// With two worker processes, a scrape sees the whole instance whichever
/// worker answers it: each worker publishes its shards' metrics each
/// second and adds the other's to its own.
#[test]
fn metrics_cover_every_worker() {
    let server = hello(Io::Uring).arg("--workers").arg("2").config("[admin]\nport = 0\n").start();
    // Each worker says where the (one, shared) admin listener is.
    assert!(
        eventually(Duration::from_secs(10), || server.stderr().matches("admin on http://").count() == 2),
        "{}",
        server.stderr()
    );
    let stderr = server.stderr();
    let lines: Vec<&str> = stderr.lines().filter(|l| l.contains("admin on http://")).collect();
    let admin = admin_addr_of(lines[0]);
    assert_eq!(admin_addr_of(lines[1]), admin);
    // New connections spread over both workers' listeners.
    for _ in 0..40 {
        assert_eq!(get_on(server.addr(), "/").status, 200);
    }
    let m = wait_metrics(admin, "40 requests", |m| m.sum("skitai_requests_total", &[]) >= 40.0);
    m.expect("skitai_requests_total", &[("protocol", "http/1.1"), ("class", "2xx")], 40.0);
    let shards: std::collections::BTreeSet<&str> = m
        .matching("skitai_requests_total", &[])
        .flat_map(|s| s.labels.iter().filter(|(k, _)| k == "shard").map(|(_, v)| v.as_str()))
        .collect();
    assert_eq!(shards.into_iter().collect::<Vec<_>>(), ["0", "1"], "one shard per worker, numbered across workers");
    let per_shard: Vec<f64> =
        ["0", "1"].iter().map(|shard| m.sum("skitai_requests_total", &[("shard", shard)])).collect();
    assert!(per_shard.iter().all(|&n| n > 0.0), "both workers served some: {per_shard:?}");
    // Once both have published since the last request (each second), every
    // scrape (fresh connections: either worker may answer) sees all of it.
    thread::sleep(Duration::from_millis(1500));
    for _ in 0..10 {
        scrape(admin).expect("skitai_requests_total", &[("protocol", "http/1.1"), ("class", "2xx")], 40.0);
    }
    let j = get_json(admin, "/metrics.json");
    assert_eq!(j["shards"].as_array().map(Vec::len), Some(2), "{j}");
}
