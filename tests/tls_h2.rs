//! TLS and HTTP/2 over loopback with real clients (curl, nghttp, h2load,
//! `openssl s_client`, Python `ssl`, and a raw-frame HTTP/2 client in
//! `tests/py/h2raw.py` built on the `hpack` package of `python3-h2`), each case
//! on both I/O drivers.
//!
//! TLS: HTTP/1.1 and h2 by ALPN, key formats (PKCS#8, PKCS#1, SEC1, encrypted
//! PKCS#8), configuration errors, SNI, protocol versions, SIGHUP reload (also
//! under load, and with broken files), the handshake timeout, garbage instead
//! of a ClientHello, and the https redirect listener (`forward_port`).
//!
//! HTTP/2: h2c by prior knowledge, the same handlers, static files, error pages
//! and limits as HTTP/1.1, `Upgrade: h2c` not honoured, flow-controlled bodies,
//! h2load, GOAWAY on SIGTERM and on idle connections, and frame-level
//! conformance (RFC 9113).
//!
//! Certificates are made per test with the `openssl` CLI in a temporary
//! directory. Every wait is bounded; no bound is a performance assertion.

#[macro_use]
mod support;

use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Upper bound for a Python probe (hundreds of handshakes on a busy machine).
const PY_TIMEOUT: Duration = Duration::from_secs(150);
/// Upper bound for an h2load run of 20000 requests against a debug build.
const H2LOAD_TIMEOUT: Duration = Duration::from_secs(240);

const HELLO: &str = "Hello, World!";

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A certificate and its key, as files.
#[derive(Clone)]
struct Cert {
    cert: PathBuf,
    key: PathBuf,
}

/// A temporary directory of certificates made with the `openssl` CLI.
struct Pki {
    dir: tempfile::TempDir,
}

fn openssl(args: &[&str]) {
    let out = run_bounded(Command::new("openssl").args(args));
    assert!(out.status.success(), "openssl {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr));
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

/// A path as a TOML string.
fn q(p: &Path) -> String {
    format!("{:?}", path_str(p))
}

impl Pki {
    fn new() -> Pki {
        Pki { dir: tempfile::Builder::new().prefix("skitai-tls-").tempdir().expect("temp dir") }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// For reload tests: an `old` and a `new` certificate, and the `live`
    /// files the server reads, holding a copy of `old`.
    fn reloadable(&self) -> (Cert, Cert, Cert) {
        let old = self.ec("old", "old.localhost");
        let new = self.ec("new", "new.localhost");
        let live = Cert { cert: self.path("live.crt"), key: self.path("live.key") };
        fs::copy(&old.cert, &live.cert).unwrap();
        fs::copy(&old.key, &live.key).unwrap();
        (old, new, live)
    }

    /// A self-signed certificate for `cn` (also valid for localhost and 127.0.0.1) over `key`.
    fn self_signed(&self, key: &Path, cert: &Path, cn: &str) {
        let san = format!("subjectAltName=DNS:{cn},DNS:localhost,IP:127.0.0.1");
        let subj = format!("/CN={cn}");
        openssl(&[
            "req",
            "-x509",
            "-key",
            path_str(key),
            "-out",
            path_str(cert),
            "-days",
            "30",
            "-subj",
            &subj,
            "-addext",
            &san,
        ]);
    }

    /// EC P-256 with a PKCS#8 key (`BEGIN PRIVATE KEY`).
    fn ec(&self, name: &str, cn: &str) -> Cert {
        let c = Cert { cert: self.path(&format!("{name}.crt")), key: self.path(&format!("{name}.key")) };
        openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", path_str(&c.key)]);
        self.self_signed(&c.key, &c.cert, cn);
        assert_pem(&c.key, "-----BEGIN PRIVATE KEY-----");
        c
    }

    /// RSA 2048 with a PKCS#1 key (`BEGIN RSA PRIVATE KEY`).
    fn rsa_pkcs1(&self, name: &str, cn: &str) -> Cert {
        let c = Cert { cert: self.path(&format!("{name}.crt")), key: self.path(&format!("{name}.key")) };
        openssl(&["genrsa", "-traditional", "-out", path_str(&c.key), "2048"]);
        self.self_signed(&c.key, &c.cert, cn);
        assert_pem(&c.key, "-----BEGIN RSA PRIVATE KEY-----");
        c
    }

    /// EC P-256 with a SEC1 key (`BEGIN EC PRIVATE KEY`).
    fn ec_sec1(&self, name: &str, cn: &str) -> Cert {
        let c = Cert { cert: self.path(&format!("{name}.crt")), key: self.path(&format!("{name}.key")) };
        openssl(&["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", path_str(&c.key)]);
        self.self_signed(&c.key, &c.cert, cn);
        assert_pem(&c.key, "-----BEGIN EC PRIVATE KEY-----");
        c
    }

    /// EC P-256 with an encrypted PKCS#8 key (`BEGIN ENCRYPTED PRIVATE KEY`, AES-256-CBC).
    fn encrypted(&self, name: &str, cn: &str, passphrase: &str) -> Cert {
        let plain = self.ec(&format!("{name}-plain"), cn);
        let c = Cert { cert: plain.cert.clone(), key: self.path(&format!("{name}.enc.key")) };
        let pass = format!("pass:{passphrase}");
        openssl(&[
            "pkcs8",
            "-topk8",
            "-v2",
            "aes-256-cbc",
            "-in",
            path_str(&plain.key),
            "-out",
            path_str(&c.key),
            "-passout",
            &pass,
        ]);
        fs::remove_file(&plain.key).unwrap();
        assert_pem(&c.key, "-----BEGIN ENCRYPTED PRIVATE KEY-----");
        c
    }
}

fn assert_pem(path: &Path, begin: &str) {
    let text = fs::read_to_string(path).unwrap();
    assert!(text.starts_with(begin), "{} should start with {begin}:\n{text}", path.display());
}

/// Replaces `to` with a copy of `from` by rename, so a reader never sees half a file.
fn replace_file(from: &Path, to: &Path) {
    let tmp = to.with_extension("swap");
    fs::copy(from, &tmp).unwrap();
    fs::rename(&tmp, to).unwrap();
}

/// A `[tls]` section for `c`, with `extra` lines inside it.
fn tls_toml(c: &Cert, extra: &str) -> String {
    format!("[tls]\ncert = {}\nkey = {}\n{extra}\n", q(&c.cert), q(&c.key))
}

/// A `[[tls.sni]]` entry.
fn sni_toml(name: &str, c: &Cert, extra: &str) -> String {
    format!("[[tls.sni]]\nserver_name = \"{name}\"\ncert = {}\nkey = {}\n{extra}\n", q(&c.cert), q(&c.key))
}

// ---------------------------------------------------------------------------
// openssl s_client
// ---------------------------------------------------------------------------

/// `openssl s_client -connect ADDR ARGS </dev/null`: success and all its output.
fn s_client(addr: SocketAddr, args: &[&str]) -> (bool, String) {
    let out = run_bounded(Command::new("openssl").arg("s_client").arg("-connect").arg(addr.to_string()).args(args));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// The subject CN of the certificate a handshake with SNI `name` (none if `None`) gets.
fn served_cn(addr: SocketAddr, name: Option<&str>) -> String {
    let args: Vec<&str> = match name {
        Some(n) => vec!["-servername", n],
        None => vec!["-noservername"],
    };
    let (ok, text) = s_client(addr, &args);
    assert!(ok, "handshake with SNI {name:?} failed:\n{text}");
    subject_cn(&text).unwrap_or_else(|| panic!("no subject CN in s_client output:\n{text}"))
}

/// The CN of the first `subject=` line of s_client output.
fn subject_cn(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("subject="))?;
    let at = line.find("CN")?;
    let rest = line[at + 2..].trim_start_matches([' ', '=']);
    Some(rest.split([',', '/']).next().unwrap_or_default().trim().to_owned())
}

// ---------------------------------------------------------------------------
// curl
// ---------------------------------------------------------------------------

/// One response fetched by curl.
#[derive(Debug)]
struct Fetched {
    status: u16,
    /// `%{http_version}`: "1.1" or "2".
    version: String,
    /// Lower-case names.
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Fetched {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// As a support [`Response`], for its header and error-page checks.
    fn response(&self) -> Response {
        Response {
            version: format!("HTTP/{}", self.version),
            status: self.status,
            reason: String::new(),
            headers: self.headers.clone(),
            body: self.body.clone(),
            chunked: false,
            trailers: Vec::new(),
        }
    }

    fn body_str(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// Asserts `Server`, `Date` and the absence of HTTP/1.1 connection-specific fields.
    fn assert_h2_headers(&self) {
        assert_eq!(self.version, "2", "{self:?}");
        self.response().assert_server_and_date();
        for name in ["connection", "keep-alive", "transfer-encoding", "upgrade", "proxy-connection"] {
            assert!(self.header(name).is_none(), "connection-specific field {name} in an h2 response: {self:?}");
        }
    }
}

/// Runs curl with `args` (URL included) and returns the final response.
fn fetch(args: &[&str]) -> Fetched {
    let dir = tempfile::tempdir().unwrap();
    let head = dir.path().join("head");
    let body = dir.path().join("body");
    let mut all: Vec<&str> = vec!["-D", path_str(&head), "-o", path_str(&body), "-w", "%{http_version}"];
    all.extend_from_slice(args);
    let out = curl(&all);
    assert!(out.status.success(), "curl {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    let dump = fs::read_to_string(&head).unwrap();
    let (status, headers) = last_header_block(&dump);
    Fetched {
        status,
        version: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        headers,
        body: fs::read(&body).unwrap_or_default(),
    }
}

// ---------------------------------------------------------------------------
// Python probes
// ---------------------------------------------------------------------------

/// A Python 3 that has the `h2` package.
fn python() -> String {
    python_with("h2, hpack")
}

/// Runs a probe to completion and parses what it found.
fn probe(script: &str, args: &[String]) -> Findings {
    py_probe(&python(), script, args, PY_TIMEOUT)
}

/// `h2raw.py [--tls] HOST PORT ARGS...`.
fn h2raw(addr: SocketAddr, tls: bool, args: &[&str]) -> Findings {
    let mut all: Vec<String> = Vec::new();
    if tls {
        all.push("--tls".into());
    }
    all.extend(addr_args(addr));
    all.extend(args.iter().map(|s| s.to_string()));
    probe("h2raw.py", &all)
}

/// A probe running in the background, whose stdout lines arrive as it prints them.
struct Background {
    child: Child,
    lines: Receiver<String>,
    stdout: Vec<String>,
    stderr: Arc<Mutex<String>>,
    what: String,
}

fn spawn_probe(script: &str, args: &[String]) -> Background {
    let mut child = Command::new(python())
        .arg(py_script(script))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {script}: {e}"));
    let (tx, lines) = mpsc::channel();
    let out = child.stdout.take().unwrap();
    thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let stderr = Arc::new(Mutex::new(String::new()));
    let sink = stderr.clone();
    let mut err = child.stderr.take().unwrap();
    thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        sink.lock().unwrap().push_str(&s);
    });
    Background { child, lines, stdout: Vec::new(), stderr, what: format!("{script} {args:?}") }
}

impl Background {
    /// Waits for a stdout line equal to `want`.
    fn wait_line(&mut self, want: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line == want;
                    self.stdout.push(line);
                    if found {
                        return;
                    }
                }
                Err(e) => panic!(
                    "{}: no {want:?} line ({e:?}); stdout so far:\n{}\nstderr:\n{}",
                    self.what,
                    self.stdout.join("\n"),
                    self.stderr.lock().unwrap()
                ),
            }
        }
    }

    /// Waits for the probe to end and parses everything it printed.
    fn finish(mut self, timeout: Duration) -> Findings {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => self.stdout.push(line),
                Err(RecvTimeoutError::Disconnected) => break,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{} did not finish within {timeout:?}; stdout:\n{}", self.what, self.stdout.join("\n"))
                }
            }
        }
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "{} did not exit within {timeout:?}", self.what);
            thread::sleep(Duration::from_millis(20));
        };
        thread::sleep(Duration::from_millis(100)); // let the stderr reader finish
        assert!(
            status.success(),
            "{} failed ({status}):\nstderr: {}\nstdout: {}",
            self.what,
            self.stderr.lock().unwrap(),
            self.stdout.join("\n")
        );
        Findings::parse(self.stdout.join("\n"))
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------------------
// Other helpers
// ---------------------------------------------------------------------------

/// Polls the server's stderr until `pred` holds or `timeout` passes.
fn wait_stderr(server: &Server, timeout: Duration, pred: impl Fn(&str) -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if pred(&server.stderr()) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP port that was free a moment ago.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server with TLS from `cert` (and `extra` lines in `[tls]`, `before` sections ahead of it).
fn tls_hello(io: Io, cert: &Cert, before: &str, extra: &str) -> Server {
    hello(io).config(&format!("{before}\n{}", tls_toml(cert, extra))).start()
}

/// The response to `GET /` over TLS with curl, by `--http1.1` or `--http2`.
fn https_get(server: &Server, path: &str, proto: &str) -> Fetched {
    fetch(&["-k", proto, &server.https_url(path)])
}

// ===========================================================================
// TLS
// ===========================================================================

both_drivers! {
    /// With `[tls]` the port speaks TLS: curl gets HTTP/1.1 and, with --http2, h2 (ALPN),
    /// from the same handlers; the `listening on` line says https.
    fn tls_http11_and_h2(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "", "");
        assert!(server.stderr().contains(&format!("listening on https://{}", server.addr())), "{}", server.stderr());

        let h1 = https_get(&server, "/", "--http1.1");
        assert_eq!((h1.status, h1.version.as_str(), h1.body_str().as_str()), (200, "1.1", HELLO), "{h1:?}");
        h1.response().assert_server_and_date();

        let h2 = https_get(&server, "/", "--http2");
        assert_eq!((h2.status, h2.version.as_str(), h2.body_str().as_str()), (200, "2", HELLO), "{h2:?}");
        assert_eq!(h2.header("content-length"), Some("13"), "{h2:?}");
        h2.assert_h2_headers();

        // The same JSON from a prefix mount over both protocols.
        let j1 = https_get(&server, "/v1/x?y=1", "--http1.1");
        let j2 = https_get(&server, "/v1/x?y=1", "--http2");
        assert_eq!(j2.version, "2");
        assert_eq!((j1.status, j2.status), (200, 200));
        assert_eq!(j1.body_str(), j2.body_str(), "the /v1/ JSON differs between HTTP/1.1 and h2");
        assert!(j2.body_str().starts_with(r#"{"mount": "/v1/", "path": "/x", "full": "/v1/x""#), "{}", j2.body_str());

        // Plain HTTP to the TLS port is not answered as HTTP.
        let plain = curl(&["-i", &server.url("/")]);
        assert!(!String::from_utf8_lossy(&plain.stdout).contains(" 200"), "plain HTTP answered on the TLS port");
    }
}

both_drivers! {
    /// ALPN: offering only http/1.1, or nothing, gives HTTP/1.1; offering h2 and
    /// http/1.1 selects h2 (and the server then speaks h2: SETTINGS on stream 0).
    fn alpn_selection(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "", "");
        let [host, port] = addr_args(server.addr());
        for offer in ["http/1.1", "none"] {
            let f = probe("tls_probe.py", &["alpn".into(), host.clone(), port.clone(), offer.into()]);
            f.expect("selected", if offer == "none" { "None" } else { "http/1.1" });
            f.expect("status_line", "HTTP/1.1 200 OK");
            f.expect("body", HELLO);
        }
        let f = probe("tls_probe.py", &["alpn".into(), host, port, "h2,http/1.1".into()]);
        f.expect("selected", "h2");
        f.expect("first_frame_type", "4");
        f.expect("first_frame_stream", "0");
    }
}

both_drivers! {
    /// `[http2] enabled = false`: ALPN offers only http/1.1.
    fn alpn_without_http2(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "[http2]\nenabled = false\n", "");
        let [host, port] = addr_args(server.addr());
        let f = probe("tls_probe.py", &["alpn".into(), host, port, "h2,http/1.1".into()]);
        f.expect("selected", "http/1.1");
        f.expect("status_line", "HTTP/1.1 200 OK");
        let r = https_get(&server, "/", "--http2");
        assert_eq!((r.status, r.version.as_str()), (200, "1.1"), "{r:?}");
    }
}

both_drivers! {
    /// Every supported key format serves: RSA PKCS#1, EC SEC1, EC PKCS#8 and an
    /// encrypted PKCS#8 key with its passphrase (each cert has its own CN, so the
    /// handshake shows which one was used).
    fn key_formats(io) {
        let pki = Pki::new();
        let cases = [
            (pki.rsa_pkcs1("rsa", "rsa-pkcs1.test"), ""),
            (pki.ec_sec1("sec1", "ec-sec1.test"), ""),
            (pki.ec("p8", "ec-pkcs8.test"), ""),
            (pki.encrypted("enc", "encrypted.test", "secret"), "passphrase = \"secret\""),
        ];
        for (cert, extra) in &cases {
            let server = tls_hello(io, cert, "", extra);
            let cn = served_cn(server.addr(), None);
            let want = fs::read_to_string(&cert.cert).unwrap();
            let (_, text) = s_client(server.addr(), &["-noservername", "-showcerts"]);
            let served_pem = text
                .find("-----BEGIN CERTIFICATE-----")
                .and_then(|s| text[s..].find("-----END CERTIFICATE-----").map(|e| &text[s..s + e + 25]))
                .unwrap_or_else(|| panic!("no certificate in s_client output:\n{text}"));
            assert_eq!(served_pem.trim(), want.trim(), "{}: served another certificate (CN {cn})", cert.key.display());
            for proto in ["--http1.1", "--http2"] {
                let r = https_get(&server, "/", proto);
                assert_eq!((r.status, r.body_str().as_str()), (200, HELLO), "{} {proto}: {r:?}", cert.key.display());
            }
        }
    }
}

/// Starts `hello` with `toml` and asserts it exits 2 with an error naming `key`.
fn assert_config_error(toml: &str, key: &str) {
    let mut server = hello(Io::Epoll).config(toml).spawn();
    let status = server.wait_exit(EXIT_TIMEOUT).unwrap_or_else(|| panic!("still running with a bad [tls]:\n{toml}"));
    let stderr = server.stderr();
    assert_eq!(status.code(), Some(2), "exit status for a TLS config error:\n{toml}\nstderr: {stderr}");
    assert!(!stderr.contains("panicked at") && !stderr.contains("listening on"), "{stderr}");
    // Errors are `error: KEY: detail`: the key must be named as it is written in the file.
    assert!(
        stderr.contains(&format!("error: {key}:")),
        "stderr should name the key {key:?} (as `error: {key}: ...`):\n{toml}\nstderr: {stderr}"
    );
}

#[test]
fn tls_config_errors() {
    let pki = Pki::new();
    let good = pki.ec("good", "localhost");
    let other = pki.ec("other", "other.test");
    let enc = pki.encrypted("enc", "localhost", "secret");
    let missing = pki.path("missing.pem");
    let cert_missing = Cert { cert: missing.clone(), key: good.key.clone() };
    let key_missing = Cert { cert: good.cert.clone(), key: missing };
    let mismatched = Cert { cert: good.cert.clone(), key: other.key.clone() };
    let cases = [
        (tls_toml(&cert_missing, ""), "tls.cert"),
        (tls_toml(&key_missing, ""), "tls.key"),
        (tls_toml(&mismatched, ""), "tls.key"),
        (tls_toml(&enc, ""), "tls.key"),
        (tls_toml(&enc, "passphrase = \"wrong\""), "tls.key"),
        (format!("[tls]\nkey = {}\n", q(&good.key)), "tls.cert"),
    ];
    let mut failures = Vec::new();
    for (toml, key) in &cases {
        if let Err(e) = std::panic::catch_unwind(|| assert_config_error(toml, key)) {
            let msg = e.downcast_ref::<String>().cloned().unwrap_or_default();
            failures.push(msg);
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n\n{}", failures.len(), cases.len(), failures.join("\n\n"));
}

both_drivers! {
    /// SNI picks `[[tls.sni]]` certificates by name; unknown or absent names get the default.
    fn sni_selects_certificate(io) {
        let pki = Pki::new();
        let default = pki.ec("default", "localhost");
        let a = pki.ec("a", "a.test");
        let b = pki.encrypted("b", "b.test", "bee");
        let toml = format!(
            "{}{}{}",
            tls_toml(&default, ""),
            sni_toml("a.test", &a, ""),
            sni_toml("b.test", &b, "passphrase = \"bee\"")
        );
        let server = hello(io).config(&toml).start();
        let addr = server.addr();
        assert_eq!(served_cn(addr, Some("a.test")), "a.test");
        assert_eq!(served_cn(addr, Some("b.test")), "b.test");
        assert_eq!(served_cn(addr, Some("c.test")), "localhost", "unknown name → default certificate");
        assert_eq!(served_cn(addr, None), "localhost", "no SNI → default certificate");
        // Requests under an SNI certificate are served normally, over both protocols.
        let resolve = format!("a.test:{}:127.0.0.1", addr.port());
        let url = format!("https://a.test:{}/", addr.port());
        for proto in ["--http1.1", "--http2"] {
            let r = fetch(&["-k", proto, "--resolve", &resolve, &url]);
            assert_eq!((r.status, r.body_str().as_str()), (200, HELLO), "{proto}: {r:?}");
        }
    }
}

both_drivers! {
    /// TLS 1.2 and 1.3 are accepted; 1.1 and 1.0 are refused by the server (an alert;
    /// the client is told to allow them with SECLEVEL=0 so the refusal is the server's).
    fn tls_versions(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "", "");
        for (flag, name) in [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")] {
            let (ok, text) = s_client(server.addr(), &[flag]);
            assert!(ok, "{flag} handshake failed:\n{text}");
            assert!(text.contains(&format!("Protocol  : {name}")) || text.contains(&format!("New, {name},")), "{text}");
        }
        for flag in ["-tls1_1", "-tls1"] {
            let (ok, text) = s_client(server.addr(), &[flag, "-cipher", "DEFAULT:@SECLEVEL=0"]);
            assert!(!ok, "{flag} handshake succeeded:\n{text}");
            assert!(text.contains("alert"), "{flag}: expected a TLS alert from the server:\n{text}");
            assert!(text.contains("Cipher is (NONE)"), "{flag}: a cipher was negotiated:\n{text}");
        }
        let r = https_get(&server, "/", "--http2");
        assert_eq!(r.status, 200, "the server serves after refused handshakes");
    }
}

both_drivers! {
    /// SIGHUP starts new workers, which read the certificate files again: new
    /// handshakes get the new certificate, a connection opened before is closed
    /// cleanly by its draining worker (or answered, if its request came first),
    /// and none of ~200 handshakes made while the reload happens fails.
    fn sighup_reload_under_load(io) {
        let pki = Pki::new();
        let (old, new, live) = pki.reloadable();
        let server = tls_hello(io, &live, "[server]\nkeep_alive = 300\n", "");
        assert_eq!(served_cn(server.addr(), None), "old.localhost");

        let [host, port] = addr_args(server.addr());
        let mut args = vec!["reload-loop".to_owned(), host, port];
        args.extend([path_str(&old.cert).to_owned(), path_str(&new.cert).to_owned(), "200".into(), "30".into()]);
        let mut probe = spawn_probe("tls_probe.py", &args);
        probe.wait_line("READY", PY_TIMEOUT);

        replace_file(&new.key, &live.key);
        replace_file(&new.cert, &live.cert);
        server.signal(libc::SIGHUP);
        assert!(
            wait_stderr(&server, Duration::from_secs(10), |t| t.contains("TLS certificates reloaded")),
            "no reload logged:\n{}",
            server.stderr()
        );

        let f = probe.finish(PY_TIMEOUT);
        f.expect("failure_count", "0");
        assert!(f.num("total") >= 200, "{}", f.text);
        assert!(f.num("old") >= 20, "handshakes before the reload got the old certificate:\n{}", f.text);
        assert!(f.num("new") >= 30, "handshakes after the reload got the new certificate:\n{}", f.text);
        f.expect("other", "0");
        // While both generations of workers accept (until the new ones all
        // listen), handshakes may alternate; it starts old and ends new.
        let sequence = f.get("sequence");
        assert!(sequence.starts_with("old,") && sequence.ends_with(",new"), "{}", f.text);
        f.expect("persistent_cert", "old");
        f.expect("persistent_before", "HTTP/1.1 200 OK");
        let after = f.get("persistent_after");
        assert!(
            after == "HTTP/1.1 200 OK" || after.contains("closed before the response head: b''"),
            "the connection opened before the reload was neither answered nor closed cleanly:\n{}",
            f.text
        );

        assert_eq!(served_cn(server.addr(), None), "new.localhost");
        let r = https_get(&server, "/", "--http2");
        assert_eq!((r.status, r.version.as_str()), (200, "2"));
        assert!(!server.stderr().contains("panicked at"), "{}", server.stderr());
    }
}

both_drivers! {
    /// A broken file on SIGHUP (garbage certificate, or a key not matching the new
    /// certificate) keeps the old certificate and is logged; a good one then loads.
    fn sighup_broken_files_keep_old(io) {
        let pki = Pki::new();
        let (_old, new, live) = pki.reloadable();
        let server = tls_hello(io, &live, "", "");
        let not_reloaded = |t: &str| t.matches("not reloaded").count();
        // (A handshake first: a SIGHUP right after start-up is `sighup_right_after_start`'s case.)
        assert_eq!(served_cn(server.addr(), None), "old.localhost");

        // 1. Garbage instead of the certificate.
        fs::write(&live.cert, "this is not a certificate\n").unwrap();
        server.signal(libc::SIGHUP);
        assert!(wait_stderr(&server, Duration::from_secs(10), |t| not_reloaded(t) >= 1), "{}", server.stderr());
        assert_eq!(served_cn(server.addr(), None), "old.localhost");
        assert_eq!(https_get(&server, "/", "--http2").status, 200);

        // 2. A valid new certificate, but the old key: they do not match.
        replace_file(&new.cert, &live.cert);
        server.signal(libc::SIGHUP);
        assert!(wait_stderr(&server, Duration::from_secs(10), |t| not_reloaded(t) >= 2), "{}", server.stderr());
        assert_eq!(served_cn(server.addr(), None), "old.localhost");
        assert_eq!(https_get(&server, "/", "--http1.1").status, 200);

        // 3. Both files good: the new certificate is used.
        replace_file(&new.key, &live.key);
        server.signal(libc::SIGHUP);
        assert!(
            wait_stderr(&server, Duration::from_secs(10), |t| t.contains("TLS certificates reloaded")),
            "{}",
            server.stderr()
        );
        assert_eq!(served_cn(server.addr(), None), "new.localhost");
        // The new worker names the file it could not use; the master says nothing changed.
        assert!(server.stderr().lines().any(|l| l.contains("live.crt") && l.contains("no certificate")), "{}", server.stderr());
        assert!(server.stderr().contains("not reloaded"), "{}", server.stderr());
    }
}

both_drivers! {
    /// A SIGHUP sent as soon as the server says it is listening reloads the certificates;
    /// it must not kill the process (SIGHUP's default action) because the handler is not
    /// installed yet. Ten starts, as the window is short.
    fn sighup_right_after_start(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        for attempt in 0..10 {
            let mut server = hello(io).config(&tls_toml(&cert, "")).spawn();
            // Polled tightly, so the signal follows the line as a supervisor's would.
            let deadline = Instant::now() + START_TIMEOUT;
            while !server.stderr().contains("listening on") && Instant::now() < deadline {
                thread::sleep(Duration::from_micros(200));
            }
            let listening = server.stderr().contains("listening on");
            assert!(listening, "attempt {attempt}: no listening line:\n{}", server.stderr());
            server.signal(libc::SIGHUP);
            let deadline = Instant::now() + Duration::from_secs(10);
            let reloaded = loop {
                let done = server.stderr().contains("TLS certificates reloaded");
                if done || !server.is_running() || Instant::now() >= deadline {
                    break done;
                }
                thread::sleep(Duration::from_millis(10));
            };
            let running = server.is_running();
            assert!(
                reloaded && running,
                "attempt {attempt}: SIGHUP right after the listening line: reloaded {reloaded}, still running \
                 {running}, exit {:?}\n{}",
                server.wait_exit(Duration::ZERO).map(|s| s.to_string()),
                server.stderr()
            );
        }
    }
}

both_drivers! {
    /// `handshake_timeout = 1`: a client that connects and sends nothing, or only part
    /// of a ClientHello, is closed (well before the 10 s default); the server keeps serving.
    fn handshake_timeout(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "", "handshake_timeout = 1");
        let mut silent = server.connect();
        let mut partial = server.connect();
        // A TLS handshake record header announcing 512 bytes, and 3 of them.
        partial.send([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]);
        assert_eq!(silent.closed_within(Duration::from_secs(8)), Ok(true), "silent client not closed");
        assert_eq!(partial.closed_within(Duration::from_secs(8)), Ok(true), "stalled handshake not closed");
        assert_eq!(https_get(&server, "/", "--http2").status, 200);
    }
}

both_drivers! {
    /// Garbage (a plain HTTP request and binary noise) instead of a ClientHello closes
    /// that connection only: an open TLS connection and new ones are served.
    fn garbage_instead_of_client_hello(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "", "");
        let [host, port] = addr_args(server.addr());
        let f = probe("tls_probe.py", &["garbage".into(), host, port]);
        f.expect("before", "HTTP/1.1 200 OK Hello, World!");
        f.expect("garbage_closed", "True");
        f.expect("garbage_reply_has_http", "False");
        f.expect("after", "HTTP/1.1 200 OK Hello, World!");
        f.expect("fresh", "HTTP/1.1 200 OK Hello, World!");
        assert!(!server.stderr().contains("panicked at"), "{}", server.stderr());
    }
}

both_drivers! {
    /// `forward_port`: a plain listener answering 301 to the same path and query on
    /// https, with the request's host (its port replaced) or `forward_domain`.
    fn forward_port_redirects(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let fwd = free_port();
        let server = tls_hello(io, &cert, "", &format!("forward_port = {fwd}"));
        let port = server.addr().port();
        assert!(server.stderr().contains(&format!("redirecting http://127.0.0.1:{fwd}")), "{}", server.stderr());

        let r = fetch(&[&format!("http://127.0.0.1:{fwd}/a?b=1")]);
        assert_eq!(r.status, 301, "{r:?}");
        assert_eq!(r.header("location"), Some(format!("https://127.0.0.1:{port}/a?b=1").as_str()), "{r:?}");

        let r = fetch(&["-H", "Host: www.example.org:8080", &format!("http://127.0.0.1:{fwd}/deep/path.html?x=%20y&z")]);
        assert_eq!(r.status, 301, "{r:?}");
        let want = format!("https://www.example.org:{port}/deep/path.html?x=%20y&z");
        assert_eq!(r.header("location"), Some(want.as_str()), "{r:?}");

        // Following the redirect ends at the TLS port.
        let r = fetch(&["-k", "-L", &format!("http://127.0.0.1:{fwd}/")]);
        assert_eq!((r.status, r.body_str().as_str()), (200, HELLO), "{r:?}");

        let fwd2 = free_port();
        let server2 = tls_hello(io, &cert, "", &format!("forward_port = {fwd2}\nforward_domain = \"example.com\""));
        let port2 = server2.addr().port();
        let r = fetch(&["-H", "Host: other.test:1234", &format!("http://127.0.0.1:{fwd2}/a?b=1")]);
        assert_eq!(r.status, 301, "{r:?}");
        let want = format!("https://example.com:{port2}/a?b=1");
        assert_eq!(r.header("location"), Some(want.as_str()), "{r:?}");
    }
}

/// With the TLS port on 443 the redirect has no port. Needs port 443 on 127.0.0.1
/// (root, nothing else on it); both drivers in turn, as they cannot share the port.
#[test]
fn forward_port_to_443_omits_port() {
    // Waits (bounded) for 443 to be free: a previous server's io_uring may release it late.
    let port_443_free = || {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpListener::bind("127.0.0.1:443").is_ok() {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(100));
        }
    };
    if TcpListener::bind("127.0.0.1:443").is_err() {
        eprintln!("SKIPPED: cannot bind 127.0.0.1:443 here (not root, or in use)");
        return;
    }
    let pki = Pki::new();
    let cert = pki.ec("server", "localhost");
    for io in [Io::Uring, Io::Epoll] {
        assert!(port_443_free(), "127.0.0.1:443 still taken 10 s after the previous server exited");
        let fwd = free_port();
        let toml = format!(
            "[server]\naddress = \"127.0.0.1\"\nport = 443\n{}",
            tls_toml(&cert, &format!("forward_port = {fwd}"))
        );
        let mut server = hello(io).no_listen_flags().config(&toml).start();
        assert_eq!(server.addr().port(), 443);
        let r = fetch(&[&format!("http://127.0.0.1:{fwd}/a?b=1")]);
        assert_eq!((r.status, r.header("location")), (301, Some("https://127.0.0.1/a?b=1")), "{io:?}: {r:?}");
        let r = fetch(&["-H", "Host: www.example.org:8080", &format!("http://127.0.0.1:{fwd}/x")]);
        assert_eq!((r.status, r.header("location")), (301, Some("https://www.example.org/x")), "{io:?}: {r:?}");
        server.signal(libc::SIGTERM);
        assert!(server.wait_exit(Duration::from_secs(20)).is_some(), "server did not exit after SIGTERM");
    }
}

// ===========================================================================
// HTTP/2
// ===========================================================================

both_drivers! {
    /// HTTP/2 requests are held to the same target and field-count limits
    /// as HTTP/1.1: a target over `max_uri_size` is 414 and more fields than
    /// `max_headers` is 431, on their own streams (the connection serves on).
    fn h2c_uri_and_header_count_limits(io) {
        let server = hello(io).config("[server]\nmax_uri_size = 1024\nmax_headers = 10\n").start();
        let long = server.url(&format!("/{}", "u".repeat(1500)));
        let r = fetch(&["--http2-prior-knowledge", &long]);
        assert_eq!(r.status, 414, "{r:?}");
        let mut args = vec!["--http2-prior-knowledge".to_owned()];
        for i in 0..12 {
            args.push("-H".to_owned());
            args.push(format!("x-field-{i}: v"));
        }
        args.push(server.url("/"));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = fetch(&refs);
        assert_eq!(r.status, 431, "{r:?}");
        let r = fetch(&["--http2-prior-knowledge", &server.url("/")]);
        assert_eq!((r.status, r.body_str().as_str()), (200, HELLO), "{r:?}");
    }
}

both_drivers! {
    /// An idle h2c connection whose client never answers (not the GOAWAY's
    /// PING, not anything) is dropped a grace after the GOAWAY: here
    /// `keep_alive = 1`, so about 2 s; it used to stay open for good.
    fn h2c_silent_client_is_dropped_after_goaway(io) {
        use std::io::{Read, Write};
        let server = hello(io).config("[server]\nkeep_alive = 1\n").start();
        let mut stream = std::net::TcpStream::connect(server.addr()).expect("connect");
        stream.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        // The preface and an empty SETTINGS frame; then silence.
        stream.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00").unwrap();
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break,
                Err(e) => panic!("the connection was not dropped within 20 s ({e}); {} bytes came", seen.len()),
            }
        }
        // Frame types seen: SETTINGS (4), and GOAWAY (7) before the close.
        let mut types = Vec::new();
        let mut at = 0;
        while at + 9 <= seen.len() {
            let len = (usize::from(seen[at]) << 16) | (usize::from(seen[at + 1]) << 8) | usize::from(seen[at + 2]);
            types.push(seen[at + 3]);
            at += 9 + len;
        }
        assert!(types.contains(&7), "no GOAWAY before the close; frame types {types:?}");
    }
}

both_drivers! {
    /// Over h2c, a response body whose stream panics before its first chunk
    /// is a 500 on its own stream; a request beside it on the same
    /// connection (nghttp multiplexes both) is answered, and so is the next
    /// connection.
    fn h2c_panicking_response_body_is_a_500(io) {
        let server = hello(io).start();
        let out = run_bounded(Command::new("nghttp").args(["-nv", &server.url("/panic?when=body"), &server.url("/")]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nghttp failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains(":status: 500") && text.contains(":status: 200"), "nghttp -nv:\n{text}");
        let r = fetch(&["--http2-prior-knowledge", &server.url("/")]);
        assert_eq!((r.status, r.body_str().as_str()), (200, HELLO), "{r:?}");
    }
}

both_drivers! {
    /// h2c by prior knowledge (curl, nghttp) on the plain port, which still speaks
    /// HTTP/1.1; the same handlers and JSON, `server`/`date`/`content-length`, no
    /// connection-specific fields.
    fn h2c_prior_knowledge(io) {
        let server = hello(io).start();
        let r = fetch(&["--http2-prior-knowledge", &server.url("/")]);
        assert_eq!((r.status, r.body_str().as_str()), (200, HELLO), "{r:?}");
        assert_eq!(r.header("content-length"), Some("13"), "{r:?}");
        assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain"), "{r:?}");
        r.assert_h2_headers();

        let j2 = fetch(&["--http2-prior-knowledge", &server.url("/v1/a/b?c=d")]);
        assert_eq!(j2.version, "2");
        let mut c = server.connect();
        c.send(get("/v1/a/b?c=d"));
        let j1 = c.read_response();
        assert_eq!((j1.status, j2.status), (200, 200));
        assert_eq!(j1.body_str(), j2.body_str(), "/v1/ JSON differs between HTTP/1.1 and h2c");
        assert_eq!(j1.header("content-type"), j2.header("content-type"));

        let out = run_bounded(Command::new("nghttp").arg(server.url("/")));
        assert!(out.status.success(), "nghttp failed: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), HELLO);
        let out = run_bounded(Command::new("nghttp").args(["-nv", &server.url("/v1/x")]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains(":status: 200"), "nghttp -nv:\n{text}");

        // Plain HTTP/1.1 still works on the same port.
        c.send(get("/"));
        assert_eq!(c.read_response().body_str(), HELLO);
    }
}

both_drivers! {
    /// `[http2] enabled = false`: no h2c; the preface is not answered with HTTP/2 frames.
    fn h2c_disabled(io) {
        let server = hello(io).config("[http2]\nenabled = false\n").start();
        let out = curl(&["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version}", &server.url("/")]);
        assert_ne!(String::from_utf8_lossy(&out.stdout).trim(), "2", "h2c answered with http2 disabled");
        let mut c = server.connect();
        c.send(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00");
        match c.try_read_response(false) {
            Ok(r) => assert!(r.status >= 400, "the preface got {r:?}"),
            Err(ReadError::Closed { partial, .. }) => assert!(partial.is_empty(), "sent {partial:?}"),
            Err(e) => panic!("{}", describe(&e)),
        }
        let out = run_bounded(Command::new("nghttp").args(["-u", "-v", &server.url("/")]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("HTTP/1.1 200 OK") && !text.contains(" 101 "), "nghttp -u with http2 disabled:\n{text}");
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}

/// A static site: a small text file, a 5 KiB HTML page (gzip-able), a 1 MiB
/// binary (beyond the in-memory cache: sendfile over plain HTTP/1.1).
struct Site {
    dir: tempfile::TempDir,
    files: Vec<(&'static str, Vec<u8>)>,
}

fn site() -> Site {
    let dir = tempfile::Builder::new().prefix("skitai-h2-static-").tempdir().unwrap();
    let html: Vec<u8> =
        format!("<!doctype html><title>t</title>{}", "<p>some text that compresses</p>\n".repeat(160)).into_bytes();
    let files = vec![
        ("small.txt", b"Hello, static world!\n".to_vec()),
        ("page.html", html),
        ("big.bin", test_bytes((1 << 20) + 123, 7)),
    ];
    for (name, bytes) in &files {
        fs::write(dir.path().join(name), bytes).unwrap();
    }
    Site { dir, files }
}

/// Headers a static response must carry identically over HTTP/1.1 and h2.
const STATIC_SAME: &[&str] =
    &["etag", "last-modified", "content-type", "content-length", "accept-ranges", "cache-control"];

/// Fetches every file of `site` over HTTP/1.1 and h2 from `base` with `flags`;
/// asserts byte-exact bodies and identical validators and metadata.
fn compare_static(site: &Site, base: &str, h1_flags: &[&str], h2_flags: &[&str]) {
    for (name, bytes) in &site.files {
        let url = format!("{base}/{name}");
        let mut a1 = h1_flags.to_vec();
        a1.push(&url);
        let mut a2 = h2_flags.to_vec();
        a2.push(&url);
        let h1 = fetch(&a1);
        let h2 = fetch(&a2);
        assert_eq!((h1.status, h1.version.as_str()), (200, "1.1"), "{url}: {:?}", h1.headers);
        assert_eq!((h2.status, h2.version.as_str()), (200, "2"), "{url}: {:?}", h2.headers);
        assert!(
            h1.body == *bytes,
            "{url}: HTTP/1.1 body differs from the file ({} vs {} bytes)",
            h1.body.len(),
            bytes.len()
        );
        assert!(h2.body == *bytes, "{url}: h2 body differs from the file ({} vs {} bytes)", h2.body.len(), bytes.len());
        assert!(h2.header("etag").is_some(), "{url}: no etag over h2: {:?}", h2.headers);
        assert_eq!(h2.header("content-length"), Some(bytes.len().to_string().as_str()), "{url}");
        for name in STATIC_SAME {
            assert_eq!(h1.header(name), h2.header(name), "{url}: {name} differs between HTTP/1.1 and h2");
        }
        h2.assert_h2_headers();
    }
}

both_drivers! {
    /// Static files over h2c and over h2 with TLS: byte-exact, the same etag and other
    /// headers as HTTP/1.1; conditional, range and gzip requests work over h2.
    fn static_files_over_h2(io) {
        let site = site();
        let mount = format!("/={}", path_str(site.dir.path()));
        let server = skitai(io).arg("--mount").arg(&mount).start();
        let base = server.url("");
        compare_static(&site, &base, &["--http1.1"], &["--http2-prior-knowledge"]);

        let pk = "--http2-prior-knowledge";
        let full = fetch(&[pk, &server.url("/small.txt")]);
        let etag = full.header("etag").unwrap().to_owned();
        let r = fetch(&[pk, "-H", &format!("If-None-Match: {etag}"), &server.url("/small.txt")]);
        assert_eq!((r.status, r.body.len()), (304, 0), "{r:?}");
        assert_eq!(r.header("etag"), Some(etag.as_str()));

        let r = fetch(&[pk, "-H", "Range: bytes=100-199", &server.url("/big.bin")]);
        assert_eq!(r.status, 206, "{r:?}");
        assert_eq!(r.header("content-range"), Some(format!("bytes 100-199/{}", (1 << 20) + 123).as_str()));
        assert!(r.body == site.files[2].1[100..200], "range body differs");

        let r = fetch(&[pk, "--compressed", &server.url("/page.html")]);
        assert_eq!(r.header("content-encoding"), Some("gzip"), "{r:?}");
        assert!(r.body == site.files[1].1, "decompressed page differs");

        let r = fetch(&[pk, &server.url("/missing.txt")]);
        r.response().assert_json_error(404, "not found");

        // The same over TLS (where sendfile cannot be used), HTTP/1.1 and h2.
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let tls = skitai(io).config(&tls_toml(&cert, "")).arg("--mount").arg(&mount).start();
        compare_static(&site, &tls.https_url(""), &["-k", "--http1.1"], &["-k", "--http2"]);
    }
}

both_drivers! {
    /// Error pages over h2: 404 JSON; a handler panic is a 500 and the next request
    /// on the same connection works (h2c with the raw client, h2 with curl over TLS;
    /// curl 7.88 cannot reuse an h2c prior-knowledge connection, curl/curl#10634).
    fn errors_over_h2(io) {
        let server = hello(io).start();
        let r = fetch(&["--http2-prior-knowledge", &server.url("/nope")]);
        assert_eq!(r.version, "2");
        r.response().assert_json_error(404, "not found");
        r.assert_h2_headers();
        let r = fetch(&["--http2-prior-knowledge", &server.url("/panic")]);
        r.response().assert_json_error(500, "internal server error");

        let f = h2raw(server.addr(), false, &["sequence", "/panic", "/", "/nope", "/"]);
        f.expect("s1_status", "500");
        f.expect("s3_status", "200");
        f.expect("s3_body", HELLO);
        f.expect("s5_status", "404");
        f.expect("s7_status", "200");
        f.expect("goaway", "none");

        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let tls = tls_hello(io, &cert, "", "");
        let out = curl(&[
            "-k",
            "--http2",
            "-o",
            "/dev/null",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{num_connects} %{http_version}\\n",
            &tls.https_url("/panic"),
            &tls.https_url("/"),
        ]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(String::from_utf8_lossy(&out.stdout), "500 1 2\n200 0 2\n", "panic, then a request on the same connection");
    }
}

both_drivers! {
    /// `Upgrade: h2c` (as the README documents since 4ecd8b6; the spec's earlier "not
    /// honoured" was superseded): a bodiless request gets 101 and its answer over h2 on
    /// stream 1 (nghttp -u, curl --http2 http://); a request with a body, and any
    /// request over TLS, is answered over HTTP/1.1.
    fn upgrade_h2c(io) {
        let server = hello(io).start();
        let out = run_bounded(Command::new("nghttp").args(["-u", "-v", &server.url("/")]));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "nghttp -u failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
        assert!(text.contains("HTTP/1.1 101 Switching Protocols"), "nghttp -u:\n{text}");
        assert!(text.contains("recv (stream_id=1) :status: 200") && text.contains(HELLO), "nghttp -u:\n{text}");

        let r = fetch(&["--http2", &server.url("/v1/up")]);
        assert_eq!((r.status, r.version.as_str()), (200, "2"), "{r:?}");
        let mut c = server.connect();
        c.send(get("/v1/up"));
        assert_eq!(c.read_response().body_str(), r.body_str(), "the upgraded answer differs from HTTP/1.1's");

        // With a body: HTTP/1.1, and the connection stays HTTP/1.1.
        let r = fetch(&["--http2", "--data-binary", "some body", &server.url("/echo")]);
        assert_eq!((r.status, r.version.as_str(), r.body_str().as_str()), (200, "1.1", "some body"), "{r:?}");
        let mut c = server.connect();
        let mut req = b"POST /echo HTTP/1.1\r\nHost: localhost\r\nConnection: Upgrade, HTTP2-Settings\r\n\
                        Upgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nContent-Length: 4\r\n\r\n"
            .to_vec();
        req.extend_from_slice(b"abcd");
        c.send(&req);
        let r = c.read_response();
        assert_eq!((r.version.as_str(), r.status, r.body_str().as_str()), ("HTTP/1.1", 200, "abcd"), "{r:?}");
        c.send(get("/"));
        assert_eq!(c.read_response().body_str(), HELLO, "the connection stays HTTP/1.1");

        // Over TLS the Upgrade header is ignored (h2 there is by ALPN only).
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let tls = tls_hello(io, &cert, "", "");
        let r = fetch(&[
            "-k",
            "--http1.1",
            "-H",
            "Connection: Upgrade, HTTP2-Settings",
            "-H",
            "Upgrade: h2c",
            "-H",
            "HTTP2-Settings: AAMAAABkAAQAAP__",
            &tls.https_url("/"),
        ]);
        assert_eq!((r.status, r.version.as_str(), r.body_str().as_str()), (200, "1.1", HELLO), "{r:?}");
    }
}

both_drivers! {
    /// A 5 MiB body streams through /echo with flow control, over h2c and over h2 with TLS.
    fn echo_5mib_over_h2(io) {
        let body = test_bytes(5 << 20, 99);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.bin");
        fs::write(&file, &body).unwrap();
        let data = format!("@{}", path_str(&file));

        let server = hello(io).start();
        let r = fetch(&["--http2-prior-knowledge", "--data-binary", &data, &server.url("/echo")]);
        assert_eq!((r.status, r.version.as_str()), (200, "2"), "{:?}", r.headers);
        assert!(r.body == body, "h2c echo differs: {} bytes back of {}", r.body.len(), body.len());

        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let tls = tls_hello(io, &cert, "", "");
        let r = fetch(&["-k", "--http2", "--data-binary", &data, &tls.https_url("/echo")]);
        assert_eq!((r.status, r.version.as_str()), (200, "2"), "{:?}", r.headers);
        assert!(r.body == body, "h2 echo differs: {} bytes back of {}", r.body.len(), body.len());
    }
}

both_drivers! {
    /// `max_upload_size` over h2: a bigger body is refused with 413 whether or not it
    /// declares a content-length; a body at the limit is echoed.
    fn upload_limit_over_h2(io) {
        let server = hello(io).config("[server]\nmax_upload_size = \"1KiB\"\n").start();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("body.bin");
        fs::write(&file, test_bytes(2000, 3)).unwrap();
        let r = fetch(&["--http2-prior-knowledge", "--data-binary", &format!("@{}", path_str(&file)), &server.url("/echo")]);
        assert_eq!(r.version, "2");
        r.response().assert_json_error(413, "payload too large");

        let at_limit = h2raw(server.addr(), false, &["upload", "1024", "no-length"]);
        at_limit.expect("status", "200");
        at_limit.expect("echo_matches", "True");

        let declared = h2raw(server.addr(), false, &["upload", "4000", "with-length"]);
        declared.expect("status", "413");
        declared.expect("ended", "True");
        assert!(declared.get("body").contains("payload too large"), "{}", declared.text);

        // A handler that reads the whole body first (/upload): always 413.
        let undeclared = h2raw(server.addr(), false, &["upload", "4000", "no-length", "/upload"]);
        undeclared.expect("status", "413");
        undeclared.expect("ended", "True");
        undeclared.expect("rst", "none");
        assert!(undeclared.get("body").contains("payload too large"), "{}", undeclared.text);
        undeclared.expect("goaway", "none");

        // A handler that streams the upload back (/echo): 413 when the excess has arrived
        // before its response starts; otherwise the response started with 200 and the
        // stream is reset once the body passes the limit, never echoing more than it.
        let echoed = h2raw(server.addr(), false, &["upload", "4000", "no-length"]);
        match echoed.get("status") {
            "413" => assert!(echoed.get("body").contains("payload too large"), "{}", echoed.text),
            "200" => {
                echoed.expect("rst", "INTERNAL_ERROR");
                assert!(echoed.num("body_len") <= 1024, "echoed past the limit:\n{}", echoed.text);
            }
            other => panic!("status {other}:\n{}", echoed.text),
        }
        echoed.expect("goaway", "none");
    }
}

/// Runs h2load and asserts every request succeeded.
fn h2load(args: &[&str]) {
    let out = run_bounded_for(Command::new("h2load").args(args), H2LOAD_TIMEOUT);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "h2load {args:?} failed:\n{text}\n{}", String::from_utf8_lossy(&out.stderr));
    let requests = text.lines().find(|l| l.starts_with("requests:")).unwrap_or_else(|| panic!("{text}"));
    assert!(
        requests.contains("20000 done, 20000 succeeded, 0 failed, 0 errored, 0 timeout"),
        "h2load {args:?}: {requests}\n{text}"
    );
    let codes = text.lines().find(|l| l.starts_with("status codes:")).unwrap_or_else(|| panic!("{text}"));
    assert!(codes.starts_with("status codes: 20000 2xx"), "{codes}");
}

both_drivers! {
    /// h2load -n 20000 -c 8 -m 16 over h2c: no failed or errored request.
    fn h2load_h2c(io) {
        let server = hello(io).start();
        h2load(&["-n", "20000", "-c", "8", "-m", "16", &server.url("/")]);
        assert!(!server.stderr().contains("panicked at"), "{}", server.stderr());
    }
}

both_drivers! {
    /// h2load -n 20000 -c 8 -m 16 over h2 with TLS: no failed or errored request.
    fn h2load_tls(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let server = tls_hello(io, &cert, "", "");
        h2load(&["-n", "20000", "-c", "8", "-m", "16", &server.https_url("/")]);
        assert!(!server.stderr().contains("panicked at"), "{}", server.stderr());
    }
}

both_drivers! {
    /// SIGTERM with an open h2 connection and an in-flight /delay stream: the client
    /// gets GOAWAY (NO_ERROR, covering the stream), the stream completes with 200,
    /// the connection closes and the process exits 0.
    fn goaway_on_sigterm(io) {
        let mut server = hello(io).start();
        let mut args: Vec<String> = addr_args(server.addr()).into();
        args.extend(["goaway-inflight".into(), "2000".into()]);
        let mut client = spawn_probe("h2raw.py", &args);
        client.wait_line("READY", Duration::from_secs(30));
        server.signal(libc::SIGTERM);
        let f = client.finish(Duration::from_secs(60));
        f.expect("status", "200");
        f.expect("body", "done");
        f.expect("ended", "True");
        f.expect("rst", "none");
        f.expect("goaway", "NO_ERROR");
        f.expect("goaway_last", "1");
        f.expect("goaway_before_end", "True");
        f.expect("eof", "True");
        let status = server.wait_exit(Duration::from_secs(30)).expect("server still running after SIGTERM");
        assert_eq!(status.code(), Some(0), "{}", server.stderr());
    }
}

both_drivers! {
    /// `keep_alive = 1`: an idle h2 connection gets GOAWAY and is closed, both one that
    /// never sent a request and one after a request longer than keep_alive completed.
    fn idle_h2_connection_closed(io) {
        let server = hello(io).config("[server]\nkeep_alive = 1\n").start();
        let f = h2raw(server.addr(), false, &["idle", "0"]);
        f.expect("goaway", "NO_ERROR");
        f.expect("eof", "True");

        let f = h2raw(server.addr(), false, &["idle", "2500"]);
        f.expect("status", "200");
        f.expect("body", "done");
        f.expect("rst", "none");
        f.expect("goaway_after_end", "True");
        f.expect("goaway", "NO_ERROR");
        f.expect("goaway_last", "1");
        f.expect("eof", "True");

        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let tls = tls_hello(io, &cert, "[server]\nkeep_alive = 1\n", "");
        let f = h2raw(tls.addr(), true, &["idle", "0"]);
        f.expect("goaway", "NO_ERROR");
        f.expect("eof", "True");
    }
}

// ---------------------------------------------------------------------------
// Frame-level conformance (RFC 9113)
// ---------------------------------------------------------------------------

both_drivers! {
    /// The `[http2]` settings are what the server announces (SETTINGS and the
    /// connection WINDOW_UPDATE).
    fn h2_settings_announced(io) {
        let server = hello(io)
            .config(
                "[http2]\nmax_concurrent_streams = 7\ninitial_window_size = 100000\n\
                 initial_connection_window_size = 2000000\nmax_frame_size = 32768\nmax_header_list_size = 8192\n",
            )
            .start();
        let f = h2raw(server.addr(), false, &["settings"]);
        f.expect("max_concurrent_streams", "7");
        f.expect("initial_window_size", "100000");
        f.expect("max_frame_size", "32768");
        f.expect("max_header_list_size", "8192");
        f.expect("conn_window_update", &(2_000_000 - 65_535).to_string());

        let defaults = hello(io).start();
        let f = h2raw(defaults.addr(), false, &["settings"]);
        f.expect("max_concurrent_streams", "128");
        f.expect("initial_window_size", "1048576");
        f.expect("conn_window_update", &((4 << 20) - 65_535).to_string());
    }
}

both_drivers! {
    /// A bad connection preface is closed (GOAWAY PROTOCOL_ERROR or a plain close),
    /// never answered: over TLS with ALPN h2, and on the h2c port.
    fn h2_bad_preface(io) {
        let pki = Pki::new();
        let cert = pki.ec("server", "localhost");
        let tls = tls_hello(io, &cert, "", "");
        let f = h2raw(tls.addr(), true, &["bad-preface"]);
        f.expect("closed", "True");
        f.expect("http_status_line", "none");
        let goaway = f.get("goaway");
        assert!(goaway == "none" || goaway == "PROTOCOL_ERROR", "{}", f.text);
        // Only SETTINGS (4) and GOAWAY (7) may come before the close.
        assert!(f.get("frames").split(',').all(|t| t == "4" || t == "7" || t == "none"), "{}", f.text);
        assert_eq!(https_get(&tls, "/", "--http2").status, 200);

        let plain = hello(io).start();
        let f = h2raw(plain.addr(), false, &["bad-preface"]);
        f.expect("closed", "True");
        let status = f.get("http_status_line");
        // Not a preface, so possibly read as HTTP/1.1: then only an error answer.
        assert!(status == "none" || status.starts_with("HTTP/1.1 4") || status.starts_with("HTTP/1.1 5"), "{}", f.text);
        if status == "none" {
            let goaway = f.get("goaway");
            assert!(goaway == "none" || goaway == "PROTOCOL_ERROR", "{}", f.text);
            assert!(f.get("frames").split(',').all(|t| t == "4" || t == "7" || t == "none"), "{}", f.text);
        }
    }
}

both_drivers! {
    /// Frames of unknown types (on the connection and on a stream) are ignored.
    fn h2_unknown_frame_ignored(io) {
        let server = hello(io).start();
        let f = h2raw(server.addr(), false, &["unknown-frame"]);
        f.expect("status", "200");
        f.expect("body", HELLO);
        f.expect("rst", "none");
        f.expect("goaway", "none");
        f.expect("eof", "False");
    }
}

both_drivers! {
    /// DATA beyond the stream's flow-control window: FLOW_CONTROL_ERROR (as RST_STREAM
    /// or GOAWAY); a window's worth is accepted.
    fn h2_flow_control_violation(io) {
        let server = hello(io).config("[http2]\ninitial_window_size = 100000\n").start();
        let f = h2raw(server.addr(), false, &["flow-control"]);
        f.expect("window", "100000");
        assert!(f.num("conn_window") > 100_000, "the connection window must not be the limit:\n{}", f.text);
        f.expect("error_within_window", "False");
        let rst = f.get("rst");
        let goaway = f.get("goaway");
        assert!(
            rst == "FLOW_CONTROL_ERROR" || goaway == "FLOW_CONTROL_ERROR",
            "expected FLOW_CONTROL_ERROR (rst {rst}, goaway {goaway}):\n{}",
            f.text
        );
    }
}

both_drivers! {
    /// A request without `:path` is a stream error (RST_STREAM PROTOCOL_ERROR); the
    /// connection serves the next stream.
    fn h2_missing_path_stream_error(io) {
        let server = hello(io).start();
        let f = h2raw(server.addr(), false, &["missing-path"]);
        f.expect("rst", "PROTOCOL_ERROR");
        f.expect("status", "none");
        f.expect("goaway", "none");
        f.expect("next_status", "200");
        f.expect("next_body", HELLO);
    }
}

both_drivers! {
    /// An uppercase header name makes the request malformed (RFC 9113 §8.2.1,
    /// §8.1.1): PROTOCOL_ERROR, never a response. The `h2` crate answers with a
    /// connection error (GOAWAY) rather than RST_STREAM, which §5.4 permits ("an
    /// endpoint MAY choose to treat a stream error as a connection error"); if it
    /// resets only the stream, the connection must serve the next one.
    fn h2_uppercase_header_is_refused(io) {
        let server = hello(io).start();
        let f = h2raw(server.addr(), false, &["uppercase"]);
        f.expect("status", "none");
        let (rst, goaway) = (f.get("rst"), f.get("goaway"));
        if goaway == "none" {
            assert_eq!(rst, "PROTOCOL_ERROR", "{}", f.text);
            f.expect("next_status", "200");
            f.expect("next_body", HELLO);
        } else {
            assert_eq!(goaway, "PROTOCOL_ERROR", "{}", f.text);
        }
    }
}

both_drivers! {
    /// HEADERS on a stream the client already ended with END_STREAM while the response
    /// is pending (half-closed remote) is refused: RFC 9113 §5.1 asks for a stream error
    /// STREAM_CLOSED; the `h2` crate raises it as a connection error (GOAWAY
    /// PROTOCOL_ERROR), which §5.4 lets an endpoint do. Either way no second request
    /// is started on the stream.
    fn h2_headers_after_end_stream(io) {
        let server = hello(io).start();
        let f = h2raw(server.addr(), false, &["headers-after-end", "half-closed"]);
        let rst = f.get("rst");
        let goaway = f.get("goaway");
        assert!(
            rst == "STREAM_CLOSED" || goaway == "STREAM_CLOSED" || goaway == "PROTOCOL_ERROR",
            "expected STREAM_CLOSED or a PROTOCOL_ERROR GOAWAY (rst {rst}, goaway {goaway}):\n{}",
            f.text
        );
    }
}

both_drivers! {
    /// HEADERS on a stream that is closed (END_STREAM both ways) is refused: STREAM_CLOSED
    /// (RFC 9113 §5.1), or PROTOCOL_ERROR as a connection error (§5.1.1: a stream id that
    /// is not new); never a second response on the stream.
    fn h2_headers_on_closed_stream(io) {
        let server = hello(io).start();
        let f = h2raw(server.addr(), false, &["headers-after-end", "closed"]);
        f.expect("status", "200");
        f.expect("body", HELLO);
        let rst = f.get("rst");
        let goaway = f.get("goaway");
        assert!(
            rst == "STREAM_CLOSED" || goaway == "STREAM_CLOSED" || goaway == "PROTOCOL_ERROR",
            "expected STREAM_CLOSED or a PROTOCOL_ERROR GOAWAY (rst {rst}, goaway {goaway}):\n{}",
            f.text
        );
        assert_eq!(f.get("events").matches("headers:1").count(), 1, "a second response on stream 1:\n{}", f.text);
    }
}
