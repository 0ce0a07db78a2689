//! WebSocket (RFC 6455, and RFC 8441 over HTTP/2) over loopback against
//! `examples/ws_lab` (and `examples/chat` for the browser page), each case on
//! both I/O drivers.
//!
//! - Raw frames from a hand-written client (below): the opening handshake
//!   (`Sec-WebSocket-Accept`, refusals with 400/403/405/426, Origin check,
//!   subprotocol choice), fragmentation with an interleaved ping, fail-fast
//!   UTF-8 (1007), protocol violations (1002), the close handshake, invalid
//!   close codes, the size cap checked from the frame header (1009), every
//!   length encoding, the idle timeout and pings (1001), frames sent in the
//!   same write as the upgrade request, permessage-deflate from our own
//!   compressor (fragments, context takeover, `server_no_context_takeover`,
//!   RSV1 misuse, bad deflate data), and 1001 to every connection on SIGTERM.
//! - `tests/py/ws_probe.py` on Python `websockets` (python3-websockets):
//!   echo, permessage-deflate (also the cap after inflating), session mode
//!   (4000 on `bye`, 1011 on a panic, the server lives on), slow readers
//!   under the close (1008) and drop policies, a room across two shards.
//! - `tests/py/h2raw.py ws`: extended CONNECT over h2c by prior knowledge.
//! - Headless Chromium against `examples/chat`'s page.
//!
//! Every wait is bounded; no bound is a performance assertion.

#[macro_use]
mod support;

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Upper bound for a Python probe (a 2-shard room, MiB messages on a debug build).
const PY_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for one headless Chromium run.
const CHROMIUM_TIMEOUT: Duration = Duration::from_secs(90);
/// The RFC 6455 §1.3 example key and the accept value it must produce.
const RFC_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const RFC_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";
/// The mask of every client frame here (any value works; not all zero so masking shows).
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

const TEXT: u8 = 0x1;
const BINARY: u8 = 0x2;
const CLOSE: u8 = 0x8;
const PING: u8 = 0x9;
const PONG: u8 = 0xA;
/// FIN bit of the first header byte.
const FIN: u8 = 0x80;

// ---------------------------------------------------------------------------
// Servers
// ---------------------------------------------------------------------------

/// `examples/ws_lab` on `io`, one shard.
fn ws_lab(io: Io) -> ServerBuilder {
    ServerBuilder::new(example_bin("ws_lab")).io(io).shards(1)
}

/// One `GET path` on a fresh connection; asserts 200 and returns the body as JSON.
fn get_json(addr: SocketAddr, path: &str) -> serde_json::Value {
    let mut c = Conn::connect(addr);
    c.send(get(path));
    let r = c.read_response();
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("GET {path}: not JSON ({e}): {:?}", r.body_str()))
}

/// Waits until `/closes` (the close codes of finished `/echo` connections,
/// in order) is `want`; on_close runs just after the socket closes, so this polls.
fn expect_closes(server: &Server, want: &[u16]) {
    let deadline = Instant::now() + IO_TIMEOUT;
    loop {
        let got: Vec<u16> = serde_json::from_value(get_json(server.addr(), "/closes")).expect("a list of codes");
        if got == want {
            return;
        }
        assert!(Instant::now() < deadline, "/closes is {got:?}, expected {want:?}");
        thread::sleep(Duration::from_millis(20));
    }
}

// ---------------------------------------------------------------------------
// A raw WebSocket client
// ---------------------------------------------------------------------------

/// A frame header for a client (`mask` set) or a rogue unmasked frame.
fn frame_header(first: u8, len: usize, mask: Option<[u8; 4]>) -> Vec<u8> {
    let bit = if mask.is_some() { 0x80 } else { 0 };
    let mut out = vec![first];
    match len {
        n if n < 126 => out.push(bit | n as u8),
        n if n <= 0xFFFF => {
            out.push(bit | 126);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.push(bit | 127);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend(mask.iter().flatten());
    out
}

/// A masked client frame; `first` is the whole first byte (FIN, RSV, opcode).
fn client_frame(first: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = frame_header(first, payload.len(), Some(MASK));
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    out
}

/// A whole masked text message in one frame.
fn text_frame(text: &str) -> Vec<u8> {
    client_frame(FIN | TEXT, text.as_bytes())
}

/// A close frame with `code` and `reason`.
fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason.as_bytes());
    client_frame(FIN | CLOSE, &payload)
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Frame {
    fin: bool,
    /// RSV1..3 as the top three bits of the first byte (`0x70` mask).
    rsv: u8,
    opcode: u8,
    payload: Vec<u8>,
    /// Bytes the header took: 2, 4 or 10 (servers never mask).
    header_len: usize,
}

impl Frame {
    /// The close code and reason of a close frame (`None` for an empty one).
    fn close(&self) -> Option<(u16, String)> {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        if self.payload.is_empty() {
            return None;
        }
        assert!(self.payload.len() >= 2, "one-byte close payload: {self:?}");
        let code = u16::from_be_bytes([self.payload[0], self.payload[1]]);
        let reason = String::from_utf8(self.payload[2..].to_vec()).expect("close reason is UTF-8");
        Some((code, reason))
    }

    fn text(&self) -> &str {
        assert_eq!((self.opcode, self.fin), (TEXT, true), "not a whole text message: {self:?}");
        std::str::from_utf8(&self.payload).expect("text frame is UTF-8")
    }
}

/// Why no frame could be read.
#[derive(Debug)]
enum End {
    /// The server closed the connection (FIN, or RST when `reset`).
    Closed {
        reset: bool,
    },
    Timeout,
}

/// An open WebSocket connection with a read buffer.
struct Ws {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// An upgrade request for `path` with `RFC_KEY`, plus `extra` header lines.
fn upgrade_request(path: &str, extra: &[(&str, &str)]) -> String {
    let mut r = format!(
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {RFC_KEY}\r\nSec-WebSocket-Version: 13\r\n"
    );
    for (name, value) in extra {
        r.push_str(&format!("{name}: {value}\r\n"));
    }
    r.push_str("\r\n");
    r
}

/// Sends `request` (and anything after it) on a new connection and reads the response head.
fn handshake(addr: SocketAddr, request: &[u8]) -> (Response, Conn) {
    let mut conn = Conn::connect(addr);
    conn.send(request);
    let response = conn.read_response();
    (response, conn)
}

/// Asserts a 101 that switches to WebSocket and returns the connection.
fn switched(response: &Response, conn: Conn) -> Ws {
    assert_eq!(response.status, 101, "no switch: {response:?}");
    let upgrade = response.header("upgrade").unwrap_or_default();
    assert!(upgrade.eq_ignore_ascii_case("websocket"), "Upgrade {upgrade:?} in {response:?}");
    let connection = response.header("connection").unwrap_or_default();
    assert!(
        connection.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")),
        "Connection {connection:?} in {response:?}"
    );
    assert_eq!(response.header("sec-websocket-accept"), Some(RFC_ACCEPT), "{response:?}");
    let buf = conn.leftover().to_vec();
    Ws { stream: conn.stream.try_clone().unwrap(), buf }
}

/// Opens a WebSocket on `path` (asserting the 101).
fn open(addr: SocketAddr, path: &str) -> Ws {
    let (response, conn) = handshake(addr, upgrade_request(path, &[]).as_bytes());
    switched(&response, conn)
}

impl Ws {
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap_or_else(|e| panic!("write to server: {e}"));
    }

    fn send_text(&mut self, text: &str) {
        self.send(&text_frame(text));
    }

    /// The next server frame, waiting up to `timeout`.
    fn read_frame_within(&mut self, timeout: Duration) -> Result<Frame, End> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(frame) = self.parse()? {
                return Ok(frame);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(End::Timeout);
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(End::Closed { reset: false }),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(_) => return Err(End::Closed { reset: true }),
            }
        }
    }

    /// A whole frame from the buffer, if one is there.
    fn parse(&mut self) -> Result<Option<Frame>, End> {
        let b = &self.buf;
        if b.len() < 2 {
            return Ok(None);
        }
        assert_eq!(b[1] & 0x80, 0, "the server masked a frame: {:02x?}", &b[..2]);
        let (len, at) = match b[1] & 0x7F {
            126 if b.len() < 4 => return Ok(None),
            126 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
            127 if b.len() < 10 => return Ok(None),
            127 => (u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize, 10),
            n => (n as usize, 2),
        };
        if b.len() < at + len {
            return Ok(None);
        }
        let frame = Frame {
            fin: b[0] & 0x80 != 0,
            rsv: b[0] & 0x70,
            opcode: b[0] & 0x0F,
            payload: b[at..at + len].to_vec(),
            header_len: at,
        };
        self.buf.drain(..at + len);
        Ok(Some(frame))
    }

    /// The next server frame (panics after [`IO_TIMEOUT`] or on a closed connection).
    fn next(&mut self) -> Frame {
        self.read_frame_within(IO_TIMEOUT).unwrap_or_else(|e| panic!("no frame from the server: {e:?}"))
    }

    /// The next frame, which must be a whole text message.
    fn next_text(&mut self) -> String {
        self.next().text().to_owned()
    }

    /// Reads until a close frame (no data frames may come first) and returns its code.
    fn expect_close(&mut self, why: &str) -> Option<(u16, String)> {
        let frame = self.next();
        assert_eq!(frame.opcode, CLOSE, "{why}: expected a close frame, got {frame:?}");
        assert!(frame.fin && frame.rsv == 0, "{why}: {frame:?}");
        assert!(frame.payload.len() <= 125, "{why}: control payload over 125 bytes");
        frame.close()
    }

    /// Asserts the close frame carries `code`.
    fn expect_close_code(&mut self, code: u16, why: &str) {
        let got = self.expect_close(why);
        assert_eq!(got.as_ref().map(|c| c.0), Some(code), "{why}: close {got:?}");
    }

    /// Asserts the server closes the TCP connection (FIN, not a reset that
    /// could have destroyed its close frame in flight), sending nothing more.
    fn expect_eof(&mut self, why: &str) {
        match self.read_frame_within(IO_TIMEOUT) {
            Err(End::Closed { reset: false }) => {}
            other => panic!("{why}: expected the connection to close, got {other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------
// Opening handshake
// ---------------------------------------------------------------------------

both_drivers! {
    /// The accept value of RFC 6455's example key and of a key of our own,
    /// 101 with `Upgrade`/`Connection`, no subprotocol or extension unasked,
    /// and the connection echoes.
    fn handshake_accept_value(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/echo");
        ws.send_text("hello");
        assert_eq!(ws.next_text(), "hello");

        let (key, accept) = ("x3JJHMbDL1EzLkh9GBhXDw==", "HSmrc0sMlYUkAGmm5OPpG2HaGWk=");
        let request = upgrade_request("/echo", &[]).replace(RFC_KEY, key);
        let (response, _conn) = handshake(server.addr(), request.as_bytes());
        assert_eq!(response.status, 101, "{response:?}");
        assert_eq!(response.header("sec-websocket-accept"), Some(accept), "{response:?}");
        assert_eq!(response.header("sec-websocket-protocol"), None, "no subprotocol was offered");
        assert_eq!(response.header("sec-websocket-extensions"), None, "no extension was offered");
        assert!(response.body.is_empty());

        // Tokens are case-insensitive, and Connection may list others.
        let request = upgrade_request("/echo", &[])
            .replace("Upgrade: websocket", "Upgrade: WebSocket")
            .replace("Connection: Upgrade", "Connection: keep-alive, upgrade");
        let (response, conn) = handshake(server.addr(), request.as_bytes());
        let mut ws = switched(&response, conn);
        ws.send_text("mixed case");
        assert_eq!(ws.next_text(), "mixed case");
    }
}

both_drivers! {
    /// Refusals: no key 400, version 8 426 naming 13, POST 405, a plain GET 426.
    fn refused_handshakes(io) {
        let server = ws_lab(io).start();
        let addr = server.addr();
        let no_key = upgrade_request("/echo", &[]).replace(&format!("Sec-WebSocket-Key: {RFC_KEY}\r\n"), "");
        let (r, _) = handshake(addr, no_key.as_bytes());
        assert_eq!(r.status, 400, "missing key: {r:?}");
        let bad_key = upgrade_request("/echo", &[]).replace(RFC_KEY, "c2hvcnQ=");
        let (r, _) = handshake(addr, bad_key.as_bytes());
        assert_eq!(r.status, 400, "a key of 5 bytes: {r:?}");

        let v8 = upgrade_request("/echo", &[]).replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8");
        let (r, _) = handshake(addr, v8.as_bytes());
        assert_eq!(r.status, 426, "version 8: {r:?}");
        assert_eq!(r.header("sec-websocket-version"), Some("13"), "version 8: {r:?}");

        let post = upgrade_request("/echo", &[]).replacen("GET", "POST", 1);
        let (r, _) = handshake(addr, post.as_bytes());
        assert_eq!(r.status, 405, "POST: {r:?}");

        let (r, _) = handshake(addr, get("/echo").as_bytes());
        assert_eq!(r.status, 426, "plain GET: {r:?}");
        assert_eq!(r.header("sec-websocket-version"), Some("13"), "plain GET: {r:?}");
        assert!(r.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket")), "plain GET: {r:?}");

        let no_connection = upgrade_request("/echo", &[]).replace("Connection: Upgrade\r\n", "");
        let (r, _) = handshake(addr, no_connection.as_bytes());
        assert_eq!(r.status, 400, "no Connection: upgrade: {r:?}");
        let http10 = upgrade_request("/echo", &[]).replace("HTTP/1.1", "HTTP/1.0");
        let (r, _) = handshake(addr, http10.as_bytes());
        assert_eq!(r.status, 400, "HTTP/1.0: {r:?}");
        let with_body = upgrade_request("/echo", &[("Content-Length", "5")]) + "hello";
        let (r, _) = handshake(addr, with_body.as_bytes());
        assert_eq!(r.status, 400, "a body: {r:?}");

        // None of them opened a connection.
        expect_closes(&server, &[]);
    }
}

both_drivers! {
    /// `/origin` takes only `https://good.example`.
    fn origin_check(io) {
        let server = ws_lab(io).start();
        let addr = server.addr();
        for bad in ["https://evil.example", "http://good.example", "null"] {
            let (r, _) = handshake(addr, upgrade_request("/origin", &[("Origin", bad)]).as_bytes());
            assert_eq!(r.status, 403, "Origin {bad}: {r:?}");
        }
        let (r, _) = handshake(addr, upgrade_request("/origin", &[]).as_bytes());
        assert_eq!(r.status, 403, "no Origin: {r:?}");
        let (r, conn) = handshake(addr, upgrade_request("/origin", &[("Origin", "https://good.example")]).as_bytes());
        let mut ws = switched(&r, conn);
        ws.send_text("from a good page");
        assert_eq!(ws.next_text(), "from a good page");
    }
}

both_drivers! {
    /// The chosen subprotocol is the first the client offers that `/echo`
    /// speaks (it speaks `chat.v2`, `chat.v1`), whatever the endpoint's order.
    fn subprotocol_choice(io) {
        let server = ws_lab(io).start();
        let chosen = |offer: &[&str]| {
            let extra: Vec<(&str, &str)> = offer.iter().map(|v| ("Sec-WebSocket-Protocol", *v)).collect();
            let (r, _) = handshake(server.addr(), upgrade_request("/echo", &extra).as_bytes());
            assert_eq!(r.status, 101, "offer {offer:?}: {r:?}");
            r.header("sec-websocket-protocol").map(str::to_owned)
        };
        assert_eq!(chosen(&["chat.v1, chat.v2"]).as_deref(), Some("chat.v1"));
        assert_eq!(chosen(&["chat.v2, chat.v1"]).as_deref(), Some("chat.v2"));
        assert_eq!(chosen(&["other, chat.v2"]).as_deref(), Some("chat.v2"));
        assert_eq!(chosen(&["other", "chat.v1"]).as_deref(), Some("chat.v1"), "offers over two fields");
        assert_eq!(chosen(&["other, chat.v3"]), None);
    }
}

both_drivers! {
    /// Frames in the same write as the upgrade request are not lost.
    fn pipelined_frames_after_the_upgrade(io) {
        let server = ws_lab(io).start();
        // A plain request, the upgrade and three frames, in one write.
        let mut bytes = get("/members").into_bytes();
        bytes.extend(upgrade_request("/echo", &[]).into_bytes());
        bytes.extend(text_frame("early"));
        bytes.extend(client_frame(FIN | PING, b"p"));
        bytes.extend(client_frame(FIN | BINARY, &[1, 2, 3]));
        let (first, mut conn) = handshake(server.addr(), &bytes);
        assert_eq!((first.status, first.body_str()), (200, "[0]".into()), "{first:?}");
        let r = conn.read_response();
        let mut ws = switched(&r, conn);
        // The pong goes out as the ping is read, the echoes when the handler
        // answers: the order between them is not fixed, the echoes' order is.
        let mut got: Vec<(u8, Vec<u8>)> = (0..3).map(|_| ws.next()).map(|f| (f.opcode, f.payload)).collect();
        let pong_at = got.iter().position(|(op, _)| *op == PONG).expect("no pong");
        assert_eq!(got.remove(pong_at), (PONG, b"p".to_vec()));
        assert_eq!(got, [(TEXT, b"early".to_vec()), (BINARY, vec![1, 2, 3])]);
    }
}

// ---------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------

both_drivers! {
    /// A text message over three frames with a ping between them (and a
    /// character split between frames): the pong comes first, then the text.
    fn fragmented_text_with_interleaved_ping(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/echo");
        let whole = "Hello wörld";
        let bytes = whole.as_bytes();
        let cut = whole.find('ö').unwrap() + 1; // inside the two bytes of ö
        ws.send(&client_frame(TEXT, &bytes[..4]));
        ws.send(&client_frame(FIN | PING, b"mid-message"));
        ws.send(&client_frame(0x0, &bytes[4..cut]));
        ws.send(&client_frame(FIN, &bytes[cut..]));
        let pong = ws.next();
        assert_eq!((pong.opcode, pong.fin), (PONG, true), "{pong:?}");
        assert_eq!(pong.payload, b"mid-message");
        assert_eq!(ws.next_text(), whole);

        // A binary message in fragments, and the largest ping.
        ws.send(&client_frame(BINARY, &[0u8; 100]));
        ws.send(&client_frame(0x0, &[1u8; 100]));
        ws.send(&client_frame(FIN, &[2u8; 100]));
        let bin = ws.next();
        assert_eq!((bin.opcode, bin.fin, bin.payload.len()), (BINARY, true, 300));
        assert_eq!(&bin.payload[95..105], &[0, 0, 0, 0, 0, 1, 1, 1, 1, 1]);
        let big_ping = vec![b'p'; 125];
        ws.send(&client_frame(FIN | PING, &big_ping));
        let pong = ws.next();
        assert_eq!((pong.opcode, pong.payload), (PONG, big_ping));
        // An unsolicited pong is ignored.
        ws.send(&client_frame(FIN | PONG, b"unasked"));
        ws.send_text("after pong");
        assert_eq!(ws.next_text(), "after pong");
    }
}

both_drivers! {
    /// Messages whose length takes each header form come back whole, with
    /// the shortest length encoding.
    fn every_length_encoding(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/echo");
        for (len, header_len) in [(0usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10), (300_000, 10)] {
            let payload = test_bytes(len, len as u64 + 1);
            ws.send(&client_frame(FIN | BINARY, &payload));
            let echo = ws.next();
            assert_eq!((echo.opcode, echo.fin, echo.rsv), (BINARY, true, 0), "len {len}");
            assert_eq!(echo.header_len, header_len, "len {len}");
            assert!(echo.payload == payload, "len {len}: the echo differs");
        }
    }
}

both_drivers! {
    /// `/small` takes 1 KiB; a larger message is refused from its header alone.
    fn message_over_the_cap_closes_1009(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/small");
        ws.send(&client_frame(FIN | BINARY, &[7u8; 1024]));
        assert_eq!(ws.next().payload.len(), 1024);
        // The header of a 2000-byte frame, and not one byte of its payload.
        ws.send(&frame_header(FIN | BINARY, 2000, Some(MASK)));
        ws.expect_close_code(1009, "2000 bytes to /small");
        ws.expect_eof("after 1009");

        // Fragments adding up to more than the cap.
        let mut ws = open(server.addr(), "/small");
        ws.send(&client_frame(TEXT, &[b'a'; 600]));
        ws.send(&frame_header(FIN, 600, Some(MASK)));
        ws.expect_close_code(1009, "600 + 600 bytes to /small");
        ws.expect_eof("after 1009");
    }
}

// ---------------------------------------------------------------------------
// Violations
// ---------------------------------------------------------------------------

both_drivers! {
    /// Invalid UTF-8 in a text message closes with 1007; so does a close
    /// reason that is not UTF-8.
    fn invalid_utf8_closes_1007(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | TEXT, b"ok \xc0\xaf"));
        ws.expect_close_code(1007, "overlong encoding");
        ws.expect_eof("after 1007");

        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | TEXT, b"ends mid-character \xe2\x82"));
        ws.expect_close_code(1007, "truncated character");
        ws.expect_eof("after 1007");

        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | CLOSE, b"\x03\xe8bad \xff reason"));
        ws.expect_close_code(1007, "close reason not UTF-8");
        ws.expect_eof("after 1007");

        // Binary is not checked.
        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | BINARY, b"\xc0\xaf"));
        assert_eq!(ws.next().payload, b"\xc0\xaf");
        drop(ws);
        expect_closes(&server, &[1007, 1007, 1007, 1006]);
    }
}

both_drivers! {
    /// Invalid UTF-8 is refused as soon as it shows, before the final fragment:
    /// a character cut between fragments is fine, a bad continuation byte is not.
    fn invalid_utf8_across_fragments_fails_fast(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(TEXT, b"so far so good \xe2\x82"));
        // A ping answered means the first fragment was taken without complaint.
        ws.send(&client_frame(FIN | PING, b"still open?"));
        let pong = ws.next();
        assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"still open?"[..]));
        // \xe2\x82 must be followed by a continuation byte; '(' is not one.
        ws.send(&client_frame(0x0, b"( and more"));
        ws.expect_close_code(1007, "bad continuation in the second fragment");
        ws.expect_eof("after 1007");

        // A code point above U+10FFFF in the first of several fragments.
        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(TEXT, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80"));
        ws.expect_close_code(1007, "U+110000 in the first fragment");
        ws.expect_eof("after 1007");
    }
}

both_drivers! {
    /// Protocol violations close with 1002, then the server closes the TCP connection.
    fn protocol_violations_close_1002(io) {
        let server = ws_lab(io).start();
        let mut unmasked = frame_header(FIN | TEXT, 5, None);
        unmasked.extend_from_slice(b"plain");
        let mut continuation_of_nothing = client_frame(0x0, b"lo");
        continuation_of_nothing.extend(client_frame(FIN, b"!"));
        let mut text_inside_text = client_frame(TEXT, b"a");
        text_inside_text.extend(client_frame(FIN | TEXT, b"b"));
        let cases: [(&str, Vec<u8>); 9] = [
            ("unmasked frame", unmasked),
            ("reserved data opcode 0x3", client_frame(FIN | 0x3, b"x")),
            ("reserved control opcode 0xB", client_frame(FIN | 0xB, b"x")),
            ("RSV1 without an extension", client_frame(FIN | 0x40 | TEXT, b"x")),
            ("RSV2", client_frame(FIN | 0x20 | TEXT, b"x")),
            ("RSV3", client_frame(FIN | 0x10 | BINARY, b"x")),
            ("continuation without a start", continuation_of_nothing),
            ("a new message inside a fragmented one", text_inside_text),
            ("a fragmented ping", client_frame(PING, b"x")),
        ];
        for (why, bytes) in &cases {
            let mut ws = open(server.addr(), "/echo");
            ws.send(bytes);
            ws.expect_close_code(1002, why);
            ws.expect_eof(why);
        }
        // A ping longer than 125 bytes.
        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | PING, &[0u8; 126]));
        ws.expect_close_code(1002, "126-byte ping");
        ws.expect_eof("126-byte ping");
        expect_closes(&server, &[1002; 10]);
    }
}

// ---------------------------------------------------------------------------
// Closing
// ---------------------------------------------------------------------------

both_drivers! {
    /// The client closes: the server answers with the same code and closes
    /// TCP; an empty close gets an empty close.
    fn client_close_is_echoed(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/echo");
        ws.send_text("before");
        assert_eq!(ws.next_text(), "before");
        ws.send(&close_frame(1000, "all done"));
        assert_eq!(ws.expect_close("close 1000").map(|c| c.0), Some(1000));
        ws.expect_eof("after the close handshake");

        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | CLOSE, b""));
        assert_eq!(ws.expect_close("empty close"), None, "an empty close is answered with an empty close");
        ws.expect_eof("after the empty close");

        let mut ws = open(server.addr(), "/echo");
        ws.send(&close_frame(4321, "app code"));
        assert_eq!(ws.expect_close("close 4321").map(|c| c.0), Some(4321));
        ws.expect_eof("after close 4321");
        // Messages after the client's close frame are ignored.
        let mut ws = open(server.addr(), "/echo");
        let mut bytes = close_frame(1001, "");
        bytes.extend(text_frame("too late"));
        ws.send(&bytes);
        assert_eq!(ws.expect_close("close 1001").map(|c| c.0), Some(1001));
        ws.expect_eof("after close 1001");
        expect_closes(&server, &[1000, 1005, 4321, 1001]);
    }
}

both_drivers! {
    /// Close codes that may not be sent (1005, 999, 1004, 1015, 2999, 5000)
    /// and a one-byte close payload are protocol errors.
    fn invalid_close_codes_close_1002(io) {
        let server = ws_lab(io).start();
        for code in [1005u16, 999, 1004, 1006, 1015, 2999, 5000] {
            let mut ws = open(server.addr(), "/echo");
            ws.send(&close_frame(code, "x"));
            ws.expect_close_code(1002, &format!("close code {code}"));
            ws.expect_eof(&format!("close code {code}"));
        }
        let mut ws = open(server.addr(), "/echo");
        ws.send(&client_frame(FIN | CLOSE, b"\x03"));
        ws.expect_close_code(1002, "one-byte close payload");
        ws.expect_eof("one-byte close payload");
    }
}

both_drivers! {
    /// `/quiet` closes with 1001 after a second of client silence, without pinging.
    fn idle_timeout_closes_1001(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/quiet");
        ws.send_text("one message, then silence");
        assert_eq!(ws.next_text(), "one message, then silence");
        let frame = ws.next();
        assert_eq!(frame.opcode, CLOSE, "the first frame after the silence: {frame:?}");
        assert_eq!(frame.close().map(|c| c.0), Some(1001));
        ws.send(&close_frame(1001, ""));
        ws.expect_eof("after the idle close handshake");
    }
}

both_drivers! {
    /// `/ping` pings a silent client, then closes it with 1001 when no pong comes.
    fn unanswered_pings_close_1001(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/ping");
        let mut pings = 0;
        let close = loop {
            let frame = ws.next();
            match frame.opcode {
                PING => {
                    assert!(frame.fin && frame.payload.len() <= 125, "{frame:?}");
                    pings += 1;
                }
                CLOSE => break frame,
                _ => panic!("unexpected frame {frame:?}"),
            }
        };
        assert!(pings >= 1, "closed without a ping first");
        assert_eq!(close.close().map(|c| c.0), Some(1001), "{close:?}");
        // Our close answer completes the handshake.
        ws.send(&close_frame(1001, ""));
        ws.expect_eof("after the close handshake");
    }
}

both_drivers! {
    /// A client that answers `/ping`'s pings stays open well past the 1 s limit.
    fn answered_pings_keep_the_connection(io) {
        let server = ws_lab(io).start();
        let mut ws = open(server.addr(), "/ping");
        let until = Instant::now() + Duration::from_millis(2500);
        let mut pings = 0;
        while Instant::now() < until {
            match ws.read_frame_within(until.saturating_duration_since(Instant::now())) {
                Ok(f) if f.opcode == PING => {
                    pings += 1;
                    ws.send(&client_frame(FIN | PONG, &f.payload));
                }
                Ok(f) => panic!("unexpected frame while answering pings: {f:?}"),
                Err(End::Timeout) => break,
                Err(e) => panic!("the connection ended while answering pings ({pings} answered): {e:?}"),
            }
        }
        assert!(pings >= 2, "only {pings} ping(s) in 2.5 s of silence");
        ws.send_text("still here");
        loop {
            let f = ws.next();
            if f.opcode == PING {
                ws.send(&client_frame(FIN | PONG, &f.payload));
                continue;
            }
            assert_eq!(f.text(), "still here");
            break;
        }
    }
}

// ---------------------------------------------------------------------------
// permessage-deflate with raw frames
// ---------------------------------------------------------------------------

/// The four bytes a sync flush ends with, left off on the wire (RFC 7692 §7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// One message through a raw-deflate compressor, as permessage-deflate sends it.
fn deflate(c: &mut flate2::Compress, data: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len() + 1024);
    let before = c.total_in();
    c.compress_vec(data, &mut out, flate2::FlushCompress::Sync).unwrap();
    assert_eq!(c.total_in() - before, data.len() as u64, "room enough for one call");
    assert!(out.ends_with(&TAIL), "a sync flush ends with 00 00 ff ff");
    out.truncate(out.len() - TAIL.len());
    out
}

/// One message's payload through a raw-deflate decompressor.
fn inflate(d: &mut flate2::Decompress, data: &[u8]) -> Vec<u8> {
    let input = [data, &TAIL[..]].concat();
    let mut out = Vec::with_capacity(1 << 20);
    let before = d.total_in();
    d.decompress_vec(&input, &mut out, flate2::FlushDecompress::Sync).expect("the server's deflate data inflates");
    assert_eq!(d.total_in() - before, input.len() as u64);
    out
}

/// Opens `/echo` offering permessage-deflate with `params`; returns the connection
/// and the extension the server accepted.
fn open_deflate(addr: SocketAddr, params: &str) -> (Ws, String) {
    let offer = format!("permessage-deflate{params}");
    let (r, conn) = handshake(addr, upgrade_request("/echo", &[("Sec-WebSocket-Extensions", &offer)]).as_bytes());
    let accepted = r.header("sec-websocket-extensions").unwrap_or("none").to_owned();
    (switched(&r, conn), accepted)
}

both_drivers! {
    /// Compressed messages from the client, in one frame and in fragments
    /// (RSV1 on the first only), with context takeover both ways; short
    /// messages travel uncompressed.
    fn raw_permessage_deflate(io) {
        let server = ws_lab(io).start();
        let (mut ws, accepted) = open_deflate(server.addr(), "; client_max_window_bits");
        assert_eq!(accepted, "permessage-deflate");
        let mut ours = flate2::Compress::new(flate2::Compression::default(), false);
        let mut theirs = flate2::Decompress::new(false);
        let text = "the same words again and again, ".repeat(64);

        let packed = deflate(&mut ours, text.as_bytes());
        let (a, b) = packed.split_at(packed.len() / 2);
        ws.send(&client_frame(0x40 | TEXT, a));
        ws.send(&client_frame(FIN, b));
        let echo = ws.next();
        assert_eq!((echo.opcode, echo.fin, echo.rsv), (TEXT, true, 0x40), "a compressed text frame");
        assert!(echo.payload.len() < text.len() / 4);
        assert_eq!(inflate(&mut theirs, &echo.payload), text.as_bytes());

        // The second copy refers back to the first on both sides.
        let packed_again = deflate(&mut ours, text.as_bytes());
        assert!(packed_again.len() < packed.len());
        ws.send(&client_frame(FIN | 0x40 | TEXT, &packed_again));
        let echo_again = ws.next();
        assert_eq!(echo_again.rsv, 0x40);
        assert!(echo_again.payload.len() < echo.payload.len(), "the server keeps its context");
        assert_eq!(inflate(&mut theirs, &echo_again.payload), text.as_bytes());

        ws.send_text("short");
        let short = ws.next();
        assert_eq!((short.rsv, short.payload.as_slice()), (0, &b"short"[..]), "short messages go uncompressed");
        let packed_bin = deflate(&mut ours, &[9u8; 5000]);
        ws.send(&client_frame(FIN | 0x40 | BINARY, &packed_bin));
        let bin = ws.next();
        assert_eq!((bin.opcode, bin.rsv), (BINARY, 0x40));
        assert_eq!(inflate(&mut theirs, &bin.payload), vec![9u8; 5000]);
    }
}

both_drivers! {
    /// `server_no_context_takeover`: accepted, and each message compresses alone.
    fn raw_deflate_without_server_context_takeover(io) {
        let server = ws_lab(io).start();
        let (mut ws, accepted) = open_deflate(server.addr(), "; server_no_context_takeover");
        assert_eq!(accepted, "permessage-deflate; server_no_context_takeover");
        let text = "no context, every message alone; ".repeat(40);
        ws.send_text(&text);
        let first = ws.next();
        ws.send_text(&text);
        let second = ws.next();
        assert_eq!(first.rsv, 0x40);
        assert_eq!(first.payload, second.payload, "the same message compresses the same without context");
        assert_eq!(inflate(&mut flate2::Decompress::new(false), &second.payload), text.as_bytes());
    }
}

both_drivers! {
    /// Violations under permessage-deflate: RSV1 on a continuation or a
    /// control frame (1002), data that is not deflate, compressed text that
    /// is not UTF-8 (1007).
    fn raw_deflate_violations(io) {
        let server = ws_lab(io).start();
        let mut c = flate2::Compress::new(flate2::Compression::default(), false);
        let packed = deflate(&mut c, &[b'z'; 300]);
        let bad_utf8 = deflate(&mut flate2::Compress::new(flate2::Compression::default(), false), b"ok \xc0\xaf");
        let mut rsv1_continuation = client_frame(0x40 | TEXT, &packed[..2]);
        rsv1_continuation.extend(client_frame(FIN | 0x40, &packed[2..]));
        let cases: [(&str, Vec<u8>, u16); 4] = [
            ("RSV1 on a continuation", rsv1_continuation, 1002),
            ("RSV1 on a ping", client_frame(FIN | 0x40 | PING, b"p"), 1002),
            ("not deflate data", client_frame(FIN | 0x40 | TEXT, &[0xff, 0xff, 0xff]), 1007),
            ("compressed text that is not UTF-8", client_frame(FIN | 0x40 | TEXT, &bad_utf8), 1007),
        ];
        for (why, bytes, code) in &cases {
            let (mut ws, accepted) = open_deflate(server.addr(), "");
            assert_eq!(accepted, "permessage-deflate");
            ws.send(bytes);
            ws.expect_close_code(*code, why);
            ws.expect_eof(why);
        }
        // Declined offers: the connection opens without the extension.
        let (mut ws, accepted) = open_deflate(server.addr(), "; server_max_window_bits=8");
        assert_eq!(accepted, "none", "zlib cannot make an 8-bit window");
        ws.send(&client_frame(FIN | 0x40 | TEXT, &packed));
        ws.expect_close_code(1002, "RSV1 without the extension");
    }
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

both_drivers! {
    /// SIGTERM: every open WebSocket is closed with 1001, the close
    /// handshake completes, and the server exits cleanly.
    fn shutdown_closes_with_1001(io) {
        let mut server = ws_lab(io).start();
        let mut echo = open(server.addr(), "/echo");
        echo.send_text("up");
        assert_eq!(echo.next_text(), "up");
        let mut session = open(server.addr(), "/session");
        assert_eq!(session.next_text(), "hello");
        server.signal(libc::SIGTERM);
        for (name, ws) in [("/echo", &mut echo), ("/session", &mut session)] {
            let close = loop {
                let f = ws.next();
                if f.opcode == CLOSE {
                    break f;
                }
                assert_eq!(f.opcode, TEXT, "{name}: {f:?}");
            };
            assert_eq!(close.close().map(|c| c.0), Some(1001), "{name}: {close:?}");
            ws.send(&close_frame(1001, ""));
            ws.expect_eof(name);
        }
        let status = server.wait_exit(Duration::from_secs(20)).expect("the server exits after SIGTERM");
        assert!(status.success(), "exit status {status}\n{}", server.stderr());
    }
}

// ---------------------------------------------------------------------------
// Python `websockets`
// ---------------------------------------------------------------------------

/// `ws_probe.py HOST PORT SUBCOMMAND` against `server`.
fn ws_probe(server: &Server, subcommand: &str) -> Findings {
    let mut args: Vec<String> = addr_args(server.addr()).into();
    args.push(subcommand.into());
    py_probe(&python_with("websockets"), "ws_probe.py", &args, PY_TIMEOUT)
}

both_drivers! {
    /// Text and binary echo, a message just under the 1 MiB cap, one just
    /// over it (1009), the subprotocol, all without compression.
    fn py_echo(io) {
        let server = ws_lab(io).start();
        let f = ws_probe(&server, "echo");
        f.expect("subprotocol", "chat.v1");
        f.expect("extensions", "none");
        for key in ["text_echo", "binary_echo", "big_echo", "after_big"] {
            f.expect(key, "True");
        }
        f.expect("text_type", "str");
        f.expect("binary_type", "bytes");
        f.expect("big_len", &((1 << 20) - 100).to_string());
        f.expect("over_cap_code", "1009");
        f.expect("over_cap_messages", "0");
    }
}

both_drivers! {
    /// permessage-deflate: negotiated, compressed both ways (the wire carries
    /// a small fraction of repetitive text), and the cap applies after inflating.
    fn py_permessage_deflate(io) {
        let server = ws_lab(io).start();
        let f = ws_probe(&server, "deflate");
        f.expect("extensions_header", "permessage-deflate");
        f.expect("extensions", "PerMessageDeflate");
        f.expect("compressed_echo", "True");
        f.expect("short_echo", "True");
        f.expect("random_echo", "True");
        let (plain, wire) = (f.num("plain_bytes"), f.num("wire_bytes"));
        assert!(wire * 10 < plain, "{wire} bytes on the wire for {plain} bytes of repetitive text:\n{}", f.text);
        f.expect("inflated_over_cap_code", "1009");
    }
}

both_drivers! {
    /// `/session`: greeting, answers, ticks from another task; `bye` closes
    /// with 4000 "bye"; a panic closes with 1011 and the shard serves on.
    fn py_session(io) {
        let server = ws_lab(io).start();
        let f = ws_probe(&server, "session");
        f.expect("first", "hello");
        f.expect("rest", "1:x,2:x,tick 1,tick 2,tick 3");
        f.expect("answers_in_order", "True");
        f.expect("ticks_in_order", "True");
        f.expect("binary_answers", "1:<binary>,2:<binary>");
        f.expect("bye_code", "4000");
        f.expect("bye_reason", "bye");
        f.expect("panic_code", "1011");
        f.expect("bystander_ok", "True");
        f.expect("after_panic_first", "hello");
        f.expect("after_panic_answer", "True");
    }
}

both_drivers! {
    /// A slow reader of `/flood` (close policy) is closed with 1008 and gets
    /// fewer messages than were sent.
    fn py_slow_reader_close_policy(io) {
        let server = ws_lab(io).start();
        let f = ws_probe(&server, "flood");
        f.expect("flood_code", "1008");
        assert!(f.num("flood_messages") < 2000, "{}", f.text);
    }
}

both_drivers! {
    /// A slow reader of `/flood-drop` (drop policy) gets exactly the messages
    /// the server queued, then the report: sent + dropped = 2000, dropped > 0.
    fn py_slow_reader_drop_policy(io) {
        let server = ws_lab(io).start();
        let f = ws_probe(&server, "flood-drop");
        let (sent, dropped) = (f.num("sent"), f.num("dropped"));
        assert!(dropped > 0, "nothing dropped:\n{}", f.text);
        assert_eq!(sent + dropped, 2000, "{}", f.text);
        // Under the drop policy nothing queued is lost: every message counted
        // as sent arrives, before the report.
        assert_eq!(f.num("received_before"), sent, "{}", f.text);
        f.expect("sizes_ok", "True");
    }
}

both_drivers! {
    /// `/room` on two shards: a message from a member on either shard reaches
    /// every member on both shards exactly once; members leave when they close.
    fn py_room_across_shards(io) {
        let server = ws_lab(io).shards(2).start();
        let f = ws_probe(&server, "room");
        f.expect("initial_members", "0,0");
        let shard_of: Vec<u64> = f.get("shard_of").split(',').map(|s| s.parse().unwrap()).collect();
        assert!(shard_of.contains(&0) && shard_of.contains(&1), "members on one shard only:\n{}", f.text);
        let ones = vec!["1"; shard_of.len()].join(",");
        for shard in 0..2 {
            f.expect(&format!("shard{shard}_first_counts"), &ones);
            f.expect(&format!("shard{shard}_second_counts"), &ones);
            f.expect(&format!("shard{shard}_others"), "0");
        }
        f.expect("members_after_close", "0,0");
    }
}

// ---------------------------------------------------------------------------
// HTTP/2 (RFC 8441)
// ---------------------------------------------------------------------------

/// `h2raw.py HOST PORT ws PATH` against `server` (h2c by prior knowledge).
fn h2_ws(server: &Server, path: &str) -> Findings {
    let mut args: Vec<String> = addr_args(server.addr()).into();
    args.extend(["ws".into(), path.into()]);
    py_probe(&python_with("h2, hpack"), "h2raw.py", &args, PY_TIMEOUT)
}

both_drivers! {
    /// Extended CONNECT to `/echo`: SETTINGS_ENABLE_CONNECT_PROTOCOL, 200,
    /// messages both ways in DATA frames, the close handshake ends the stream.
    fn h2_extended_connect_echo(io) {
        let server = ws_lab(io).start();
        let f = h2_ws(&server, "/echo");
        f.expect("enable_connect_protocol", "1");
        f.expect("status", "200");
        f.expect("accept_header", "False");
        f.expect("echo_opcode", "1");
        f.expect("echo_masked", "0");
        f.expect("echo_matches", "True");
        f.expect("big_echo_matches", "True");
        f.expect("close_opcode", "8");
        f.expect("close_code", "1000");
        f.expect("stream_ended", "True");
        f.expect("stream_rst", "none");
        f.expect("next_status", "200");
    }
}

both_drivers! {
    /// An extended CONNECT to a resource that is not a WebSocket endpoint
    /// must not get a 2xx (which would mean "tunnel open", RFC 8441 §5).
    fn h2_connect_to_a_plain_resource_is_refused(io) {
        let server = ws_lab(io).start();
        let f = h2_ws(&server, "/members");
        f.expect("status", "405");
    }
}

both_drivers! {
    /// `/session` over HTTP/2: the greeting, the answers and the ticks.
    fn h2_session(io) {
        let server = ws_lab(io).start();
        let f = h2_ws(&server, "/session");
        f.expect("status", "200");
        f.expect("greeting", "hello");
        f.expect("answers", "1:over h2,2:over h2,tick 1,tick 2,tick 3");
        f.expect("close_code", "1000");
        f.expect("stream_ended", "True");
    }
}

// ---------------------------------------------------------------------------
// A browser
// ---------------------------------------------------------------------------

/// The text of every `<div class="line">` in the chat page's log.
fn log_lines(dom: &str) -> Vec<String> {
    dom.split("<div class=\"line\">").skip(1).filter_map(|s| s.split("</div>").next()).map(str::to_owned).collect()
}

/// The text of `<p id="status">`.
fn status_text(dom: &str) -> Option<&str> {
    let start = dom.find("<p id=\"status\">")? + "<p id=\"status\">".len();
    dom[start..].split("</p>").next()
}

both_drivers! {
    /// Headless Chromium opens `examples/chat`'s page, which connects to the
    /// room and says something; the page shows its own line relayed back,
    /// and a second member (a raw client here) receives it and answers.
    fn chromium_chat_page(io) {
        let server = ServerBuilder::new(example_bin("chat")).io(io).shards(1).start();
        let addr = server.addr();

        // The second member: answers every line from the browser.
        let mut member = open(addr, "/ws/chat");
        let (seen_tx, seen_rx) = mpsc::channel();
        let member_thread = thread::spawn(move || {
            let until = Instant::now() + CHROMIUM_TIMEOUT * 3;
            while Instant::now() < until {
                match member.read_frame_within(until.saturating_duration_since(Instant::now())) {
                    Ok(f) if f.opcode == TEXT => {
                        let line = f.text().to_owned();
                        if line == "tester: hi-from-chromium" {
                            member.send_text("member: hello tester");
                        }
                        if seen_tx.send(line).is_err() {
                            return;
                        }
                    }
                    Ok(f) if f.opcode == PING => member.send(&client_frame(FIN | PONG, &f.payload)),
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });

        let profile = tempfile::tempdir().expect("temp profile dir");
        let url = format!("http://{addr}/?name=tester&say=hi-from-chromium");
        let mut attempts = Vec::new();
        // A busy machine may dump the page before the socket traffic is in;
        // a retry starts over (the member answers each time).
        for _ in 0..3 {
            let out = run_bounded_for(
                Command::new("chromium").args([
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    &format!("--user-data-dir={}", profile.path().display()),
                    "--virtual-time-budget=10000",
                    "--dump-dom",
                    &url,
                ]),
                CHROMIUM_TIMEOUT,
            );
            let dom = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success() && dom.contains("skitai chat"),
                "chromium failed ({}); is it installed (scripts/setup)?\nstderr: {}\nstdout: {dom}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            let lines = log_lines(&dom);
            let own = lines.iter().filter(|l| *l == "tester: hi-from-chromium").count();
            let answered = lines.iter().any(|l| l == "member: hello tester");
            let status = status_text(&dom).unwrap_or_default().to_owned();
            attempts.push(format!("status {status:?}, log {lines:?}"));
            if status == "connected" && own == 1 && answered {
                break;
            }
        }
        let last = attempts.last().unwrap();
        assert!(
            last.starts_with("status \"connected\"")
                && last.contains("\"tester: hi-from-chromium\"")
                && last.contains("\"member: hello tester\""),
            "the page never showed its own line relayed once and the member's answer:\n{}",
            attempts.join("\n")
        );
        let mut seen = Vec::new();
        let deadline = Instant::now() + IO_TIMEOUT;
        while !seen.iter().any(|l| l == "tester: hi-from-chromium") {
            match seen_rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => seen.push(line),
                Err(e) => panic!("the member never got the browser's line ({e}); it got {seen:?}"),
            }
        }
        drop(seen_rx);
        drop(server);
        member_thread.join().unwrap();
    }
}

both_drivers! {
    /// A client that floods 125-byte pings (60 MB of them) and reads
    /// nothing is owed one pong, the latest, not one per ping: the server's
    /// resident memory stays flat (it grew by ~50 MB when each ping queued
    /// its own pong). The server still answers a ping once the client reads.
    fn ping_flood_queues_one_pong(io) {
        let server = ws_lab(io).start();
        let pid = server.serving_pid();
        let mut ws = open(server.addr(), "/echo");
        let before = rss_kib(pid);
        let one = client_frame(FIN | PING, &[b'p'; 125]);
        let flood = one.repeat(60_000_000 / one.len());
        let mut writer = ws.stream.try_clone().unwrap();
        let sending = thread::spawn(move || writer.write_all(&flood));
        let mut peak = before;
        for _ in 0..40 {
            thread::sleep(Duration::from_millis(50));
            peak = peak.max(rss_kib(pid));
        }
        sending.join().expect("writer thread").expect("the flood was written");
        assert!(peak < before + 16 * 1024, "resident memory grew from {before} KiB to {peak} KiB");
        // Reading now: pongs come (at least the latest), all with the ping's payload.
        ws.send(&client_frame(FIN | PING, b"last"));
        let mut pongs = 0;
        loop {
            let frame = ws.read_frame_within(Duration::from_secs(10)).expect("a pong");
            assert_eq!(frame.opcode, PONG, "{frame:?}");
            pongs += 1;
            if frame.payload == b"last" {
                break;
            }
            assert_eq!(frame.payload, vec![b'p'; 125]);
        }
        assert!(pongs < 200_000, "{pongs} pongs for the flood");
    }
}
