#!/usr/bin/env python3
"""A raw-frame HTTP/2 client for tests/tls_h2.rs (RFC 9113 conformance cases,
GOAWAY on drain and idle, bodies without content-length) and tests/websocket.rs
(WebSocket over HTTP/2 by extended CONNECT, RFC 8441).

Frames are built by hand so the client can send what a well-behaved library
refuses to (bad prefaces, flow-control violations, malformed header blocks);
header blocks are HPACK-coded with the `hpack` package (a dependency of
`python3-h2`). Each subcommand prints its findings as `key=value` lines on
stdout and the Rust test makes the assertions. Every read has a deadline.

Usage: h2raw.py [--tls] HOST PORT SUBCOMMAND [ARGS...]
"""

import socket
import ssl
import struct
import sys
import time

import hpack

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

SETTING_NAMES = {
    1: "header_table_size",
    2: "enable_push",
    3: "max_concurrent_streams",
    4: "initial_window_size",
    5: "max_frame_size",
    6: "max_header_list_size",
    8: "enable_connect_protocol",
}

ERROR_NAMES = {
    0x0: "NO_ERROR",
    0x1: "PROTOCOL_ERROR",
    0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR",
    0x4: "SETTINGS_TIMEOUT",
    0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR",
    0x7: "REFUSED_STREAM",
    0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR",
    0xA: "CONNECT_ERROR",
    0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY",
    0xD: "HTTP_1_1_REQUIRED",
}

TIMEOUT = 10.0


def error_name(code):
    return ERROR_NAMES.get(code, "0x%x" % code)


def emit(**fields):
    """Prints `key=value` lines (values on one line) for the Rust side."""
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        print("%s=%s" % (key, str(value).replace("\r", "\\r").replace("\n", "\\n")), flush=True)


def frame(ftype, flags, sid, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", sid & 0x7FFFFFFF) + payload


class Closed(Exception):
    pass


class Conn:
    def __init__(self, host, port, tls):
        sock = socket.create_connection((host, port), timeout=TIMEOUT)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            sock = ctx.wrap_socket(sock, server_hostname="localhost")
            if sock.selected_alpn_protocol() != "h2":
                raise SystemExit("ALPN did not select h2: %r" % sock.selected_alpn_protocol())
        self.sock = sock
        self.buf = b""
        self.encoder = hpack.Encoder()
        self.decoder = hpack.Decoder()
        self.server_settings = {}
        self.conn_window_updates = 0
        self.eof = False
        self.reset = False
        # Events in arrival order: (kind, stream, detail).
        self.events = []
        self._block = None  # (stream, flags, bytes) while a header block continues

    # -- sending -----------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def try_send(self, data):
        """Sends; False if the server already closed the connection."""
        try:
            self.sock.sendall(data)
            return True
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, OSError):
            return False

    def send_frame(self, ftype, flags, sid, payload=b""):
        self.send(frame(ftype, flags, sid, payload))

    def send_headers(self, sid, headers, end_stream=True):
        block = self.encoder.encode(headers)
        self.send_frame(HEADERS, END_HEADERS | (END_STREAM if end_stream else 0), sid, block)

    def get(self, sid, path, extra=()):
        headers = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
        self.send_headers(sid, headers + list(extra), end_stream=True)

    def handshake(self):
        """Preface and an empty SETTINGS; waits for the server's SETTINGS and acks it."""
        self.send(PREFACE + frame(SETTINGS, 0, 0))
        deadline = time.monotonic() + TIMEOUT
        while not self.server_settings_seen():
            if not self.step(deadline):
                raise SystemExit("no SETTINGS from the server (events %r)" % self.events)

    def server_settings_seen(self):
        return any(kind == "settings" for kind, _, _ in self.events)

    def barrier(self, opaque=b"barrier!"):
        """A PING round trip: everything sent before it has been processed."""
        self.send_frame(PING, 0, 0, opaque)
        deadline = time.monotonic() + TIMEOUT
        while True:
            if any(kind == "ping_ack" and detail == opaque for kind, _, detail in self.events):
                return True
            if not self.step(deadline):
                return False

    # -- receiving ---------------------------------------------------------

    def _fill(self, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except (ConnectionResetError, ssl.SSLError, BrokenPipeError):
            self.reset = True
            chunk = b""
        except OSError as e:
            if isinstance(e, socket.timeout):
                raise
            self.reset = True
            chunk = b""
        if not chunk:
            raise Closed()
        self.buf += chunk

    def read_frame(self, deadline):
        while len(self.buf) < 9:
            self._fill(deadline)
        length = int.from_bytes(self.buf[0:3], "big")
        while len(self.buf) < 9 + length:
            self._fill(deadline)
        ftype, flags = self.buf[3], self.buf[4]
        sid = int.from_bytes(self.buf[5:9], "big") & 0x7FFFFFFF
        payload = self.buf[9 : 9 + length]
        self.buf = self.buf[9 + length :]
        return ftype, flags, sid, payload

    def step(self, deadline):
        """Reads and handles one frame; False on EOF or when the deadline passes."""
        if self.eof:
            return False
        try:
            ftype, flags, sid, payload = self.read_frame(deadline)
        except Closed:
            self.eof = True
            self.events.append(("eof", 0, "reset" if self.reset else "fin"))
            return False
        except socket.timeout:
            return False
        self.handle(ftype, flags, sid, payload)
        return True

    def handle(self, ftype, flags, sid, payload):
        if ftype == SETTINGS:
            if flags & ACK:
                self.events.append(("settings_ack", 0, None))
            else:
                for i in range(0, len(payload) - len(payload) % 6, 6):
                    ident, value = struct.unpack(">HI", payload[i : i + 6])
                    self.server_settings[SETTING_NAMES.get(ident, "0x%x" % ident)] = value
                self.try_send(frame(SETTINGS, ACK, 0))
                self.events.append(("settings", 0, dict(self.server_settings)))
        elif ftype == PING:
            if flags & ACK:
                self.events.append(("ping_ack", 0, payload))
            else:
                self.try_send(frame(PING, ACK, 0, payload))
        elif ftype == WINDOW_UPDATE:
            increment = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF
            if sid == 0:
                self.conn_window_updates += increment
            self.events.append(("window_update", sid, increment))
        elif ftype == GOAWAY:
            last = int.from_bytes(payload[0:4], "big") & 0x7FFFFFFF
            code = int.from_bytes(payload[4:8], "big")
            self.events.append(("goaway", last, error_name(code)))
        elif ftype == RST_STREAM:
            self.events.append(("rst", sid, error_name(int.from_bytes(payload[0:4], "big"))))
        elif ftype in (HEADERS, CONTINUATION, PUSH_PROMISE):
            if ftype == HEADERS:
                data = payload
                if flags & PADDED:
                    pad = data[0]
                    data = data[1 : len(data) - pad]
                if flags & PRIORITY_FLAG:
                    data = data[5:]
                self._block = (sid, flags, data)
            elif ftype == PUSH_PROMISE:
                self._block = (sid, flags | 0x100, payload[4:])
            else:
                bsid, bflags, data = self._block
                self._block = (bsid, bflags, data + payload)
            if flags & END_HEADERS:
                bsid, bflags, data = self._block
                self._block = None
                headers = self.decoder.decode(data)
                kind = "push_promise" if bflags & 0x100 else "headers"
                self.events.append((kind, bsid, headers))
                if kind == "headers" and bflags & END_STREAM:
                    self.events.append(("end", bsid, None))
        elif ftype == DATA:
            data = payload
            if flags & PADDED:
                data = data[1 : len(data) - data[0]]
            self.events.append(("data", sid, data))
            if payload:
                # Keep both windows open so bodies of any size flow.
                inc = struct.pack(">I", len(payload))
                self.try_send(frame(WINDOW_UPDATE, 0, 0, inc) + frame(WINDOW_UPDATE, 0, sid, inc))
            if flags & END_STREAM:
                self.events.append(("end", sid, None))
        else:
            self.events.append(("frame_type_%d" % ftype, sid, None))

    def run_until(self, pred, seconds=TIMEOUT):
        deadline = time.monotonic() + seconds
        while not pred():
            if not self.step(deadline):
                return pred()
        return True

    # -- summaries ---------------------------------------------------------

    def stream_done(self, sid):
        return any(kind in ("end", "rst") and s == sid for kind, s, _ in self.events)

    def goaway(self):
        """(last stream id, error name) of the last GOAWAY, or None."""
        found = [(s, d) for kind, s, d in self.events if kind == "goaway"]
        return found[-1] if found else None

    def stream(self, sid):
        status, headers, body, ended, rst = None, [], b"", False, None
        for kind, s, detail in self.events:
            if s != sid:
                continue
            if kind == "headers" and status is None:
                headers = detail
                status = dict(detail).get(":status")
            elif kind == "data":
                body += detail
            elif kind == "end":
                ended = True
            elif kind == "rst":
                rst = detail
        return status, headers, body, ended, rst

    def index(self, pred):
        for i, event in enumerate(self.events):
            if pred(event):
                return i
        return None

    def emit_stream(self, prefix, sid):
        status, headers, body, ended, rst = self.stream(sid)
        names = [name for name, _ in headers]
        emit(
            **{
                prefix + "status": status or "none",
                prefix + "body": body[:200].decode("latin-1"),
                prefix + "body_len": len(body),
                prefix + "ended": ended,
                prefix + "rst": rst or "none",
                prefix + "header_names": names,
                prefix + "content_length": dict(headers).get("content-length", "none"),
            }
        )

    def emit_connection(self):
        goaway = self.goaway()
        emit(
            goaway=goaway[1] if goaway else "none",
            goaway_last=goaway[0] if goaway else "none",
            eof=self.eof,
            events=[kind + ":" + str(s) for kind, s, _ in self.events],
        )


# -- subcommands ------------------------------------------------------------


def cmd_settings(c):
    c.handshake()
    c.barrier()
    # The connection-level WINDOW_UPDATE may follow the PING ack; wait for it (bounded).
    c.run_until(lambda: c.conn_window_updates > 0 or c.eof, seconds=5)
    emit(**{name: value for name, value in c.server_settings.items()})
    emit(conn_window_update=c.conn_window_updates)


def cmd_bad_preface(c):
    """A wrong connection preface: the server must close (GOAWAY or not), never answer."""
    c.send(b"PRI * HTTP/2.0\r\n\r\nXX\r\n\r\n" + frame(SETTINGS, 0, 0))
    deadline = time.monotonic() + TIMEOUT
    closed = False
    try:
        while True:
            c._fill(deadline)
    except Closed:
        closed = True
    except socket.timeout:
        closed = False
    raw = c.buf
    emit(closed=closed)
    if raw.startswith(b"HTTP/"):
        emit(http_status_line=raw.split(b"\r\n", 1)[0].decode("latin-1"), frames="none")
        return
    types, goaway = [], "none"
    while len(raw) >= 9:
        length = int.from_bytes(raw[0:3], "big")
        ftype = raw[3]
        payload = raw[9 : 9 + length]
        types.append(ftype)
        if ftype == GOAWAY and len(payload) >= 8:
            goaway = error_name(int.from_bytes(payload[4:8], "big"))
        raw = raw[9 + length :]
    emit(http_status_line="none", frames=types or "none", goaway=goaway, trailing_bytes=len(raw))


def cmd_unknown_frame(c):
    c.handshake()
    # Unknown types on the connection and on a stream that is not open yet, then a request.
    c.send_frame(0xFA, 0xFF, 0, b"ignore me")
    c.send_frame(0xFB, 0, 1, b"and me")
    c.get(1, "/")
    c.send_frame(0xFC, 0, 1, b"me too")
    c.run_until(lambda: c.stream_done(1) or c.eof)
    c.barrier()
    c.emit_stream("", 1)
    c.emit_connection()


def cmd_flow_control(c):
    """A window's worth of DATA on one stream is accepted; one byte more is a
    FLOW_CONTROL_ERROR. The handler (/delay) never reads the body, so the
    server releases no window meanwhile."""
    c.handshake()
    c.barrier()
    window = c.server_settings.get("initial_window_size", 65535)
    max_frame = c.server_settings.get("max_frame_size", 16384)
    # Stay within the connection window, so only the stream's window is exceeded.
    c.run_until(lambda: 65535 + c.conn_window_updates > window or c.eof, seconds=5)
    emit(conn_window=65535 + c.conn_window_updates)
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), (":path", "/delay?ms=10000")]
    c.send_headers(1, headers, end_stream=False)
    sent = 0
    while sent < window:
        piece = b"x" * min(max_frame, window - sent)
        if not c.try_send(frame(DATA, 0, 1, piece)):
            break
        sent += len(piece)
    c.barrier(b"inwindow")

    def failed():
        return any(k == "rst" and s == 1 for k, s, _ in c.events) or c.goaway() is not None or c.eof

    error_within_window = failed()
    if c.try_send(frame(DATA, 0, 1, b"y")):
        sent += 1
    c.run_until(failed)
    emit(window=window, sent=sent, error_within_window=error_within_window)
    c.emit_stream("", 1)
    c.emit_connection()


def malformed_then_next(c, headers):
    """A malformed request on stream 1, then a normal one on stream 3."""
    c.handshake()
    c.send_headers(1, headers, end_stream=True)
    c.run_until(lambda: c.stream_done(1) or c.goaway() or c.eof)
    c.get(3, "/")
    c.run_until(lambda: c.stream_done(3) or c.eof)
    c.emit_stream("", 1)
    c.emit_stream("next_", 3)
    c.emit_connection()


def cmd_missing_path(c):
    malformed_then_next(c, [(":method", "GET"), (":scheme", "http"), (":authority", "localhost")])


def cmd_uppercase(c):
    base = [(":method", "GET"), (":scheme", "http"), (":authority", "localhost"), (":path", "/")]
    malformed_then_next(c, base + [("X-Upper", "1")])


def cmd_headers_after_end(c, mode):
    """HEADERS again on a stream the client already ended: STREAM_CLOSED.
    `half-closed`: the response is still pending (the stream is half-closed
    remote); `closed`: after the whole response (the stream is closed)."""
    c.handshake()
    if mode == "half-closed":
        c.get(1, "/delay?ms=3000")
        c.barrier()
    else:
        c.get(1, "/")
        c.run_until(lambda: c.stream_done(1) or c.eof)
    c.get(1, "/")
    c.run_until(lambda: any(k == "rst" and s == 1 for k, s, _ in c.events) or c.goaway() or c.eof)
    c.emit_stream("", 1)
    c.emit_connection()


def cmd_upload(c, size, declare, path="/echo"):
    """POST `path` with `size` bytes in DATA frames, with or without content-length."""
    c.handshake()
    c.barrier()
    headers = [(":method", "POST"), (":scheme", "http"), (":authority", "localhost"), (":path", path)]
    if declare:
        headers.append(("content-length", str(size)))
    c.send_headers(1, headers, end_stream=False)
    body = bytes((i * 7) % 251 for i in range(size))
    pieces = [body[i : i + 1000] for i in range(0, size, 1000)] or [b""]
    for i, piece in enumerate(pieces):
        if not c.try_send(frame(DATA, END_STREAM if i == len(pieces) - 1 else 0, 1, piece)):
            break
    c.run_until(lambda: c.stream_done(1) or c.eof, seconds=15)
    echoed = c.stream(1)[2]
    c.emit_stream("", 1)
    emit(echo_matches=echoed == body)
    c.emit_connection()


def cmd_sequence(c, paths):
    """GETs `paths` one after another on one connection (streams 1, 3, 5, ...)."""
    c.handshake()
    for i, path in enumerate(paths):
        sid = 2 * i + 1
        c.get(sid, path)
        c.run_until(lambda: c.stream_done(sid) or c.eof)
        c.emit_stream("s%d_" % sid, sid)
    c.emit_connection()


def cmd_goaway_inflight(c, ms):
    """An in-flight request when the server is told to stop: GOAWAY, the stream completes."""
    c.handshake()
    c.get(1, "/delay?ms=%d" % ms)
    if not c.barrier():
        raise SystemExit("no PING ack (events %r)" % c.events)
    print("READY", flush=True)
    c.run_until(lambda: c.stream_done(1) and c.goaway() is not None and c.eof, seconds=40)
    goaway_at = c.index(lambda e: e[0] == "goaway")
    end_at = c.index(lambda e: e[0] in ("end", "rst") and e[1] == 1)
    emit(goaway_before_end=goaway_at is not None and end_at is not None and goaway_at < end_at)
    c.emit_stream("", 1)
    c.emit_connection()


def cmd_idle(c, ms):
    """With `keep_alive` shorter than a request: the request completes, then the idle
    connection gets GOAWAY and is closed. `ms` = 0 sends no request at all."""
    c.handshake()
    started = time.monotonic()
    if ms:
        c.get(1, "/delay?ms=%d" % ms)
        c.run_until(lambda: c.stream_done(1) or c.eof, seconds=30)
        c.emit_stream("", 1)
    c.run_until(lambda: c.goaway() is not None and c.eof, seconds=30)
    goaway_at = c.index(lambda e: e[0] == "goaway")
    end_at = c.index(lambda e: e[0] in ("end", "rst") and e[1] == 1)
    emit(
        goaway_after_end=goaway_at is not None and (end_at is None or end_at < goaway_at),
        seconds_to_close=round(time.monotonic() - started, 1),
    )
    c.emit_connection()


def ws_frame(opcode, payload, mask=b"\x37\xfa\x21\x3d"):
    """A masked, final client WebSocket frame (RFC 6455 §5.2)."""
    head = bytes([0x80 | opcode])
    n = len(payload)
    if n < 126:
        head += bytes([0x80 | n])
    elif n <= 0xFFFF:
        head += bytes([0x80 | 126]) + struct.pack(">H", n)
    else:
        head += bytes([0x80 | 127]) + struct.pack(">Q", n)
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def ws_parse(buf):
    """The first whole server frame in `buf`: ((fin, opcode, masked, payload), rest), or (None, buf)."""
    if len(buf) < 2:
        return None, buf
    fin, opcode, masked, n, at = buf[0] >> 7, buf[0] & 0x0F, buf[1] >> 7, buf[1] & 0x7F, 2
    if n == 126:
        if len(buf) < 4:
            return None, buf
        n, at = struct.unpack(">H", buf[2:4])[0], 4
    elif n == 127:
        if len(buf) < 10:
            return None, buf
        n, at = struct.unpack(">Q", buf[2:10])[0], 10
    mask = b""
    if masked:
        mask, at = buf[at : at + 4], at + 4
    if len(buf) < at + n:
        return None, buf
    payload = buf[at : at + n]
    if masked:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return (fin, opcode, masked, payload), buf[at + n :]


def cmd_ws(c, path):
    """RFC 8441: SETTINGS_ENABLE_CONNECT_PROTOCOL, an extended CONNECT to
    `path`, a text message and a close handshake in DATA frames on the stream.
    /echo: the message comes back; /session: the greeting arrives first."""
    c.handshake()
    c.barrier()
    emit(enable_connect_protocol=c.server_settings.get("enable_connect_protocol", "none"))
    headers = [
        (":method", "CONNECT"),
        (":protocol", "websocket"),
        (":scheme", "http"),
        (":path", path),
        (":authority", "localhost"),
        ("sec-websocket-version", "13"),
    ]
    c.send_headers(1, headers, end_stream=False)
    c.run_until(lambda: c.stream(1)[0] is not None or c.stream_done(1) or c.eof)
    status, response_headers, _, _, rst = c.stream(1)
    emit(status=status or "none", rst=rst or "none")
    emit(accept_header="sec-websocket-accept" in dict(response_headers))
    if status != "200":
        c.emit_connection()
        return
    consumed = 0
    frames = []

    def next_frame():
        """The next WebSocket frame the server sent on stream 1, or None."""
        nonlocal consumed

        def parsed():
            body = c.stream(1)[2]
            f, rest = ws_parse(body[consumed:])
            return f, len(body) - len(rest)

        c.run_until(lambda: parsed()[0] is not None or c.stream_done(1) or c.eof)
        f, used = parsed()
        if f is not None:
            consumed = used
            frames.append(f)
        return f

    if path == "/session":
        f = next_frame()
        emit(greeting=f[3].decode() if f else "none")
        text = b"over h2"
        c.send_frame(DATA, 0, 1, ws_frame(0x1, text))
        answers = []
        while len(answers) < 5:
            f = next_frame()
            if f is None:
                break
            answers.append(f[3].decode())
        emit(answers=sorted(answers))
    else:
        text = "hello over h2 ✓".encode()
        c.send_frame(DATA, 0, 1, ws_frame(0x1, text))
        f = next_frame()
        emit(echo_opcode=f[1] if f else "none", echo_masked=f[2] if f else "none")
        emit(echo_matches=f is not None and f[3] == text)
        # Larger than one DATA frame and than the initial window: flow control both ways.
        blob = bytes((i * 7) % 251 for i in range(100000))
        wire = ws_frame(0x2, blob)
        for i in range(0, len(wire), 16384):
            c.send_frame(DATA, 0, 1, wire[i : i + 16384])
        f = next_frame()
        emit(big_echo_matches=f is not None and f[1] == 0x2 and f[3] == blob)
    c.send_frame(DATA, 0, 1, ws_frame(0x8, struct.pack(">H", 1000) + b"done"))
    f = next_frame()
    while f is not None and f[1] != 0x8:
        f = next_frame()
    emit(close_opcode=f[1] if f else "none")
    emit(close_code=struct.unpack(">H", f[3][:2])[0] if f and len(f[3]) >= 2 else "none")
    c.run_until(lambda: c.stream_done(1) or c.eof)
    emit(stream_ended=c.stream(1)[3], stream_rst=c.stream(1)[4] or "none")
    # The connection still serves requests after the WebSocket stream ended.
    c.get(3, "/members")
    c.run_until(lambda: c.stream_done(3) or c.eof)
    c.emit_stream("next_", 3)


def main():
    args = sys.argv[1:]
    tls = False
    if args and args[0] == "--tls":
        tls = True
        args = args[1:]
    host, port, cmd, rest = args[0], int(args[1]), args[2], args[3:]
    c = Conn(host, port, tls)
    if cmd == "settings":
        cmd_settings(c)
    elif cmd == "bad-preface":
        cmd_bad_preface(c)
    elif cmd == "unknown-frame":
        cmd_unknown_frame(c)
    elif cmd == "flow-control":
        cmd_flow_control(c)
    elif cmd == "missing-path":
        cmd_missing_path(c)
    elif cmd == "uppercase":
        cmd_uppercase(c)
    elif cmd == "headers-after-end":
        cmd_headers_after_end(c, rest[0])
    elif cmd == "upload":
        cmd_upload(c, int(rest[0]), rest[1] == "with-length", *rest[2:3])
    elif cmd == "sequence":
        cmd_sequence(c, rest)
    elif cmd == "goaway-inflight":
        cmd_goaway_inflight(c, int(rest[0]))
    elif cmd == "idle":
        cmd_idle(c, int(rest[0]))
    elif cmd == "ws":
        cmd_ws(c, rest[0])
    else:
        raise SystemExit("unknown subcommand " + cmd)


if __name__ == "__main__":
    main()
