//! WebSocket echo load generator (bench client; workload ws-echo).
//!
//! Usage: ws-load --url ws://127.0.0.1:PORT/ws/echo [--connections 64] [--duration 10]
//!                [--warmup 2] [--size 64] [--binary]
//!
//! Opens `--connections` WebSocket connections (RFC 6455 opening handshake, the
//! Sec-WebSocket-Accept checked), then on each one, closed-loop: send one masked frame
//! of `--size` payload bytes (text of ASCII letters, or the same bytes as binary with
//! `--binary`; the first up to 16 bytes carry the message's sequence number in hex, so
//! no two consecutive messages are alike), wait for the whole echo, check that it is
//! the message sent (opcode and payload), repeat. Server frames are parsed with 7/16/64
//! bit lengths, fragmented messages are reassembled, pings are answered with pongs and
//! pongs ignored; a masked or otherwise malformed server frame is an error. Each frame
//! gets a fresh masking key.
//!
//! Only round trips completed in the measured phase (after `--warmup` seconds, for
//! `--duration` seconds, on the same connections) count; their latency (send to whole
//! echo received) goes into an HdrHistogram. The phase boundaries are printed on
//! stdout as they happen (`ws-load: measured phase started` / `... over`, for a runner
//! that samples CPU times there), then one JSON line:
//!   {"round_trips":N,"per_sec":X,"p50_us":..,"p90_us":..,"p99_us":..,"max_us":..,
//!    "mean_us":..,"errors":N,"connections_failed":N,"connections":N,"secs":S,...}
//! `errors` (whole run, warm-up included): echo mismatches (the connection goes on),
//! protocol errors, closes or I/O errors on established connections (each ends its
//! connection), and connections still waiting for an echo 3 s after the end.
//! `connections_failed`: connect or handshake failures.
//! Exits 1 when no round trip was measured, 2 on bad arguments.
//!
//! One thread (tokio current_thread): the runner pins it to one core. Frames are
//! written by hand over the TcpStream (one write and usually one read per round trip)
//! to keep the client cheap.
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use hdrhistogram::Histogram;
use sha1::{Digest, Sha1};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
const OP_CONT: u8 = 0x0;
const OP_TEXT: u8 = 0x1;
const OP_BINARY: u8 = 0x2;
const OP_CLOSE: u8 = 0x8;
const OP_PING: u8 = 0x9;
const OP_PONG: u8 = 0xA;
const MAX_MESSAGE: usize = 64 << 20;
const STAMP: usize = 16; // payload bytes carrying the sequence number
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const END_GRACE: Duration = Duration::from_secs(3);
const LOGGED_ERRORS: u64 = 5;

struct Args {
    host: String,
    port: u16,
    path: String,
    connections: usize,
    duration: f64,
    warmup: f64,
    size: usize,
    binary: bool,
}

fn usage() -> ! {
    eprintln!(
        "usage: ws-load --url ws://HOST:PORT/PATH [--connections N (64)] [--duration S (10)] \
         [--warmup S (2)] [--size BYTES (64)] [--binary]"
    );
    std::process::exit(2)
}

fn parse_args() -> Args {
    let mut url = None;
    let mut a = Args {
        host: String::new(),
        port: 80,
        path: "/".into(),
        connections: 64,
        duration: 10.0,
        warmup: 2.0,
        size: 64,
        binary: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = || inline.clone().or_else(|| it.next()).unwrap_or_else(|| usage());
        fn num<T: std::str::FromStr>(flag: &str, v: String) -> T {
            v.parse().unwrap_or_else(|_| {
                eprintln!("ws-load: bad value for {flag}: {v}");
                usage()
            })
        }
        match flag.as_str() {
            "--url" => url = Some(value()),
            "--connections" | "-c" => a.connections = num(&flag, value()),
            "--duration" | "-d" => a.duration = num(&flag, value()),
            "--warmup" => a.warmup = num(&flag, value()),
            "--size" => a.size = num(&flag, value()),
            "--binary" => a.binary = true,
            "--help" | "-h" => usage(),
            _ => {
                eprintln!("ws-load: unknown argument {arg}");
                usage()
            }
        }
    }
    let url = url.unwrap_or_else(|| usage());
    let Some(rest) = url.strip_prefix("ws://") else {
        eprintln!("ws-load: only ws:// URLs: {url}");
        usage()
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().unwrap_or_else(|_| usage())),
        None => (authority, 80),
    };
    a.host = host.to_string();
    a.port = port;
    a.path = path.to_string();
    if a.connections == 0 || a.duration <= 0.0 || a.warmup < 0.0 || a.size > MAX_MESSAGE {
        usage()
    }
    a
}

#[derive(Clone, Copy, PartialEq)]
enum Phase {
    Warmup,
    Measure,
    Done,
}

/// State shared by the connection tasks (one thread: Cells).
struct Shared {
    phase: Cell<Phase>,
    round_trips: Cell<u64>,
    errors: Cell<u64>,
    connections_failed: Cell<u64>,
    awaiting_echo: Cell<u64>,
    live: Cell<usize>,
    hist: RefCell<Histogram<u64>>, // nanoseconds
}

impl Shared {
    fn error(&self, what: &str) {
        let n = self.errors.get() + 1;
        self.errors.set(n);
        if n <= LOGGED_ERRORS {
            eprintln!("ws-load: error: {what}");
        }
    }
}

fn xorshift(s: &mut u64) -> u64 {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    *s
}

fn seed(id: u64) -> u64 {
    let t = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(1);
    (t ^ id.wrapping_mul(0x9E37_79B9_7F4A_7C15)) | 1
}

/// A frame header as parsed from the server.
struct Header {
    fin: bool,
    opcode: u8,
    header_len: usize,
    len: usize,
}

/// Parses a server frame header at the start of `b`: Ok(None) if incomplete.
fn parse_header(b: &[u8]) -> Result<Option<Header>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (b[0], b[1]);
    if b0 & 0x70 != 0 {
        return Err(format!("server frame with RSV bits set (0x{b0:02x}) and no extension negotiated"));
    }
    if b1 & 0x80 != 0 {
        return Err("masked frame from the server".into());
    }
    let (header_len, len) = match b1 & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (4, u16::from_be_bytes([b[2], b[3]]) as u64)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            (10, u64::from_be_bytes(b[2..10].try_into().unwrap()))
        }
        n => (2, n as u64),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(format!("server frame of {len} bytes"));
    }
    let h = Header { fin: b0 & 0x80 != 0, opcode: b0 & 0x0f, header_len, len: len as usize };
    if h.opcode >= 0x8 && (!h.fin || h.len > 125) {
        return Err(format!("bad control frame (opcode {}, fin {}, {} bytes)", h.opcode, h.fin, h.len));
    }
    Ok(Some(h))
}

/// Appends a masked client frame to `out`.
fn put_frame(out: &mut Vec<u8>, opcode: u8, payload: &[u8], mask: [u8; 4]) {
    out.push(0x80 | opcode);
    let n = payload.len();
    if n < 126 {
        out.push(0x80 | n as u8);
    } else if n < 65536 {
        out.push(0x80 | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
}

enum Event {
    /// A whole data message: opcode and where its payload is (valid until the next recv).
    Data(u8, Payload),
    Close(Option<u16>),
}

enum Payload {
    InBuf(usize, usize),
    Assembled,
}

struct Conn {
    stream: TcpStream,
    rbuf: Vec<u8>,
    start: usize,
    end: usize,
    assembled: Vec<u8>,
    opcode: u8,
    payload: Vec<u8>, // the current message, unmasked
    frame: Vec<u8>,   // the current message as a masked frame
    rng: u64,
    seq: u64,
}

impl Conn {
    async fn open(a: &Args, id: u64) -> Result<Conn, String> {
        let stream = TcpStream::connect((a.host.as_str(), a.port)).await.map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let mut rng = seed(id);
        let mut c = Conn {
            stream,
            rbuf: vec![0; 16384.max(a.size + 64)],
            start: 0,
            end: 0,
            assembled: Vec::new(),
            opcode: if a.binary { OP_BINARY } else { OP_TEXT },
            payload: (0..a.size).map(|i| b'a' + (i % 26) as u8).collect(),
            frame: Vec::with_capacity(a.size + 14),
            rng: xorshift(&mut rng),
            seq: 0,
        };
        c.handshake(a).await?;
        Ok(c)
    }

    async fn handshake(&mut self, a: &Args) -> Result<(), String> {
        let mut key = [0u8; 16];
        key[..8].copy_from_slice(&xorshift(&mut self.rng).to_le_bytes());
        key[8..].copy_from_slice(&xorshift(&mut self.rng).to_le_bytes());
        let b64 = base64::engine::general_purpose::STANDARD;
        let key = b64.encode(key);
        let want = b64.encode(Sha1::digest(format!("{key}{GUID}").as_bytes()));
        let host = if a.port == 80 { a.host.clone() } else { format!("{}:{}", a.host, a.port) };
        let req = format!(
            "GET {} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n",
            a.path
        );
        self.stream.write_all(req.as_bytes()).await.map_err(|e| format!("handshake write: {e}"))?;
        let head_end = loop {
            if let Some(i) = self.rbuf[..self.end].windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if self.end == self.rbuf.len() {
                return Err("handshake: response head too large".into());
            }
            self.fill().await.map_err(|e| format!("handshake: {e}"))?;
        };
        let head = String::from_utf8_lossy(&self.rbuf[..head_end]).into_owned();
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or("");
        if status.split_whitespace().nth(1) != Some("101") {
            return Err(format!("handshake: answered {status:?}"));
        }
        let (mut accept, mut upgrade, mut connection) = (None, false, false);
        for line in lines {
            let Some((k, v)) = line.split_once(':') else { continue };
            let (k, v) = (k.trim().to_ascii_lowercase(), v.trim());
            match k.as_str() {
                "sec-websocket-accept" => accept = Some(v.to_string()),
                "upgrade" => upgrade = v.eq_ignore_ascii_case("websocket"),
                "connection" => connection = v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
                "sec-websocket-extensions" => return Err(format!("handshake: unrequested extensions {v:?}")),
                _ => {}
            }
        }
        if !upgrade || !connection {
            return Err("handshake: 101 without Upgrade: websocket / Connection: Upgrade".into());
        }
        if accept.as_deref() != Some(want.as_str()) {
            return Err(format!("handshake: Sec-WebSocket-Accept {accept:?}, expected {want:?}"));
        }
        self.start = head_end; // anything after the head is already frames
        Ok(())
    }

    /// Reads more bytes into rbuf (compacting or growing it first when full).
    async fn fill(&mut self) -> Result<(), String> {
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        if self.end == self.rbuf.len() {
            if self.start > 0 {
                self.rbuf.copy_within(self.start..self.end, 0);
                self.end -= self.start;
                self.start = 0;
            } else {
                self.rbuf.resize(self.rbuf.len() * 2, 0);
            }
        }
        match self.stream.read(&mut self.rbuf[self.end..]).await {
            Ok(0) => Err("the server closed the TCP connection".into()),
            Ok(n) => {
                self.end += n;
                Ok(())
            }
            Err(e) => Err(format!("read: {e}")),
        }
    }

    /// The next data message or close from the server; answers pings on the way.
    async fn recv(&mut self) -> Result<Event, String> {
        let mut fragmented: Option<u8> = None;
        loop {
            let h = match parse_header(&self.rbuf[self.start..self.end])? {
                Some(h) if self.end - self.start >= h.header_len + h.len => h,
                Some(h) => {
                    // make room for the whole frame, then read on
                    let need = h.header_len + h.len;
                    if need > self.rbuf.len() - self.start {
                        self.rbuf.copy_within(self.start..self.end, 0);
                        self.end -= self.start;
                        self.start = 0;
                        if need > self.rbuf.len() {
                            self.rbuf.resize(need, 0);
                        }
                    }
                    self.fill().await?;
                    continue;
                }
                None => {
                    self.fill().await?;
                    continue;
                }
            };
            let (p0, p1) = (self.start + h.header_len, self.start + h.header_len + h.len);
            self.start = p1;
            match h.opcode {
                OP_TEXT | OP_BINARY => {
                    if fragmented.is_some() {
                        return Err("a new data frame inside a fragmented message".into());
                    }
                    if h.fin {
                        return Ok(Event::Data(h.opcode, Payload::InBuf(p0, p1)));
                    }
                    fragmented = Some(h.opcode);
                    self.assembled.clear();
                    self.assembled.extend_from_slice(&self.rbuf[p0..p1]);
                }
                OP_CONT => {
                    let Some(op) = fragmented else {
                        return Err("a continuation frame without a message".into());
                    };
                    if self.assembled.len() + h.len > MAX_MESSAGE {
                        return Err("a fragmented message over 64 MiB".into());
                    }
                    self.assembled.extend_from_slice(&self.rbuf[p0..p1]);
                    if h.fin {
                        return Ok(Event::Data(op, Payload::Assembled));
                    }
                }
                OP_PING => {
                    let data = self.rbuf[p0..p1].to_vec();
                    self.send_control(OP_PONG, &data).await?;
                }
                OP_PONG => {}
                OP_CLOSE => {
                    let code = (h.len >= 2).then(|| u16::from_be_bytes([self.rbuf[p0], self.rbuf[p0 + 1]]));
                    return Ok(Event::Close(code));
                }
                op => return Err(format!("reserved opcode {op}")),
            }
        }
    }

    async fn send_control(&mut self, opcode: u8, data: &[u8]) -> Result<(), String> {
        let mut f = Vec::with_capacity(6 + data.len());
        let mask = (xorshift(&mut self.rng) as u32).to_ne_bytes();
        put_frame(&mut f, opcode, data, mask);
        self.stream.write_all(&f).await.map_err(|e| format!("write: {e}"))
    }

    /// The next message: sequence number stamped into the payload, a fresh mask.
    fn next_frame(&mut self) {
        self.seq += 1;
        let k = self.payload.len().min(STAMP);
        let mut s = self.seq;
        for b in self.payload[..k].iter_mut().rev() {
            *b = b"0123456789abcdef"[(s & 15) as usize];
            s >>= 4;
        }
        let mask = (xorshift(&mut self.rng) as u32).to_ne_bytes();
        self.frame.clear();
        put_frame(&mut self.frame, self.opcode, &self.payload, mask);
    }

    /// Closed-loop echo until the phase is Done.
    async fn run(&mut self, sh: &Shared) -> Result<(), String> {
        while sh.phase.get() != Phase::Done {
            self.next_frame();
            let t = Instant::now();
            sh.awaiting_echo.set(sh.awaiting_echo.get() + 1);
            let r = self.round_trip().await;
            sh.awaiting_echo.set(sh.awaiting_echo.get() - 1);
            if let Err(mismatch) = r? {
                sh.error(&mismatch); // framing is intact: count it and go on
                continue;
            }
            if sh.phase.get() == Phase::Measure {
                let ns = t.elapsed().as_nanos() as u64;
                sh.hist.borrow_mut().saturating_record(ns.max(1));
                sh.round_trips.set(sh.round_trips.get() + 1);
            }
        }
        Ok(())
    }

    /// One message out, its echo in: Ok(Err(why)) when the echo differs from the message.
    async fn round_trip(&mut self) -> Result<Result<(), String>, String> {
        self.stream.write_all(&self.frame).await.map_err(|e| format!("write: {e}"))?;
        match self.recv().await? {
            Event::Data(op, at) => {
                let got = match at {
                    Payload::InBuf(p0, p1) => &self.rbuf[p0..p1],
                    Payload::Assembled => &self.assembled[..],
                };
                if op != self.opcode || got != &self.payload[..] {
                    return Ok(Err(format!(
                        "echo mismatch: sent opcode {} with {} bytes, got opcode {op} with {} bytes{}",
                        self.opcode,
                        self.payload.len(),
                        got.len(),
                        if got.len() == self.payload.len() { " (different content)" } else { "" }
                    )));
                }
                Ok(Ok(()))
            }
            Event::Close(code) => Err(format!("the server sent a close frame (code {code:?})")),
        }
    }

    /// Closing handshake: send close 1000, wait (bounded) for the server's close.
    async fn close(&mut self) {
        if self.send_control(OP_CLOSE, &1000u16.to_be_bytes()).await.is_err() {
            return;
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(Event::Data(..)) = self.recv().await {}
        })
        .await;
    }
}

async fn connection(a: Rc<Args>, sh: Rc<Shared>, id: u64) {
    struct Live(Rc<Shared>);
    impl Drop for Live {
        fn drop(&mut self) {
            self.0.live.set(self.0.live.get() - 1);
        }
    }
    let _live = Live(sh.clone());
    let mut conn = match tokio::time::timeout(HANDSHAKE_TIMEOUT, Conn::open(&a, id)).await {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => return failed(&sh, &e),
        Err(_) => return failed(&sh, "connect + handshake timed out"),
    };
    match conn.run(&sh).await {
        Ok(()) => conn.close().await,
        Err(e) => sh.error(&e),
    }
}

fn failed(sh: &Shared, what: &str) {
    let n = sh.connections_failed.get() + 1;
    sh.connections_failed.set(n);
    if n <= LOGGED_ERRORS {
        eprintln!("ws-load: connection failed: {what}");
    }
}

fn main() {
    let a = Rc::new(parse_args());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let local = tokio::task::LocalSet::new();
    let sh = Rc::new(Shared {
        phase: Cell::new(Phase::Warmup),
        round_trips: Cell::new(0),
        errors: Cell::new(0),
        connections_failed: Cell::new(0),
        awaiting_echo: Cell::new(0),
        live: Cell::new(a.connections),
        hist: RefCell::new(Histogram::new_with_bounds(1, 3_600_000_000_000, 3).expect("histogram")),
    });
    let secs = local.block_on(&rt, async {
        for id in 0..a.connections {
            tokio::task::spawn_local(connection(a.clone(), sh.clone(), id as u64));
        }
        if a.warmup > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(a.warmup)).await;
        }
        sh.phase.set(Phase::Measure);
        let m0 = Instant::now();
        println!("ws-load: measured phase started");
        tokio::time::sleep(Duration::from_secs_f64(a.duration)).await;
        sh.phase.set(Phase::Done);
        let secs = m0.elapsed().as_secs_f64();
        println!("ws-load: measured phase over");
        let deadline = Instant::now() + END_GRACE;
        while sh.live.get() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        secs
    });
    let stalled = sh.awaiting_echo.get();
    if stalled > 0 {
        eprintln!("ws-load: error: {stalled} connection(s) still waiting for an echo {END_GRACE:?} after the end");
        sh.errors.set(sh.errors.get() + stalled);
    }
    let h = sh.hist.borrow();
    let us = |ns: u64| ns as f64 / 1000.0;
    let n = sh.round_trips.get();
    println!(
        "{{\"round_trips\":{n},\"per_sec\":{:.1},\"p50_us\":{:.1},\"p90_us\":{:.1},\"p99_us\":{:.1},\
         \"max_us\":{:.1},\"mean_us\":{:.1},\"errors\":{},\"connections_failed\":{},\"connections\":{},\
         \"secs\":{:.3},\"size\":{},\"binary\":{}}}",
        n as f64 / secs,
        us(h.value_at_quantile(0.50)),
        us(h.value_at_quantile(0.90)),
        us(h.value_at_quantile(0.99)),
        us(h.max()),
        h.mean() / 1000.0,
        sh.errors.get(),
        sh.connections_failed.get(),
        a.connections,
        secs,
        a.size,
        a.binary,
    );
    // the runtime and any task still alive are not waited for
    std::process::exit(if n == 0 { 1 } else { 0 });
}
