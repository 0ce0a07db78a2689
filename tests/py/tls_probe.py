#!/usr/bin/env python3
"""TLS probes for tests/tls_h2.rs: ALPN selection, certificates seen across a
SIGHUP reload, and garbage instead of a ClientHello.

Each subcommand prints its findings as `key=value` lines on stdout; the Rust
test makes the assertions. Every socket operation has a timeout.

  alpn HOST PORT PROTO,PROTO|none
  reload-loop HOST PORT OLD.pem NEW.pem MIN_TOTAL MIN_NEW
  garbage HOST PORT
"""

import socket
import ssl
import sys
import time

TIMEOUT = 10


def emit(**fields):
    """Prints `key=value` lines (values on one line) for the Rust side."""
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        print("%s=%s" % (key, str(value).replace("\r", "\\r").replace("\n", "\\n")), flush=True)


def context(alpn=None):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def connect(host, port, alpn=None):
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    return context(alpn).wrap_socket(raw, server_hostname="localhost")


def read_http1_response(sock):
    """Reads one HTTP/1.1 response with a Content-Length body; returns (status line, body)."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed before the response head: %r" % buf)
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise EOFError("closed in the response body")
        rest += chunk
    return lines[0], rest[:length].decode("latin-1")


def get(sock, path="/"):
    sock.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\n\r\n" % path).encode())
    return read_http1_response(sock)


def cmd_alpn(host, port, protos):
    alpn = None if protos == "none" else protos.split(",")
    sock = connect(host, port, alpn)
    out = {"selected": sock.selected_alpn_protocol(), "version": sock.version()}
    if out["selected"] == "h2":
        # Speak h2: the server's first frame must be SETTINGS (type 4) on stream 0.
        sock.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
        head = b""
        while len(head) < 9:
            chunk = sock.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
        out["first_frame_type"] = head[3] if len(head) == 9 else None
        out["first_frame_stream"] = int.from_bytes(head[5:9], "big") if len(head) == 9 else None
    else:
        status, body = get(sock)
        out["status_line"] = status
        out["body"] = body
    sock.close()
    emit(**out)


def cmd_reload_loop(host, port, old_pem, new_pem, min_total, min_new):
    """Handshakes (each with a request) in a loop; prints READY once a persistent
    connection is open and some handshakes are done, so the caller reloads
    meanwhile; stops once `min_total` handshakes are done and `min_new` of them
    got the new certificate (or a hard bound passes)."""
    old_der = ssl.PEM_cert_to_DER_cert(open(old_pem).read())
    new_der = ssl.PEM_cert_to_DER_cert(open(new_pem).read())

    def which(sock):
        der = sock.getpeercert(binary_form=True)
        return "old" if der == old_der else "new" if der == new_der else "other"

    persistent = connect(host, port, ["http/1.1"])
    persistent_before = get(persistent)[0]
    persistent_cert = which(persistent)
    counts = {"old": 0, "new": 0, "other": 0}
    failures = []
    sequence = []
    total = 0
    ready_at = 20
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            sock = connect(host, port, ["http/1.1"])
            cert = which(sock)
            status, body = get(sock)
            sock.close()
            if not status.startswith("HTTP/1.1 200") or body != "Hello, World!":
                failures.append("handshake %d: %s %r" % (total, status, body))
            counts[cert] += 1
            if not sequence or sequence[-1] != cert:
                sequence.append(cert)
        except Exception as e:  # noqa: BLE001 - every failure is reported
            failures.append("handshake %d: %r" % (total, e))
        total += 1
        if total == ready_at:
            print("READY", flush=True)
        if total >= min_total and counts["new"] >= min_new:
            break
    # The connection opened before the reload still works.
    try:
        persistent_after = get(persistent)[0]
    except Exception as e:  # noqa: BLE001
        persistent_after = "error: %r" % e
    emit(
        total=total,
        old=counts["old"],
        new=counts["new"],
        other=counts["other"],
        failure_count=len(failures),
        failures=" | ".join(failures[:20]),
        sequence=sequence,
        persistent_cert=persistent_cert,
        persistent_before=persistent_before,
        persistent_after=persistent_after,
    )


def cmd_garbage(host, port):
    """An established TLS connection, then garbage on a second connection, then
    the first connection and a new one are used again."""
    first = connect(host, port, ["http/1.1"])
    before = get(first)
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    raw.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n" + bytes(range(256)) * 4)
    received = b""
    closed = False
    try:
        while True:
            chunk = raw.recv(65536)
            if not chunk:
                closed = True
                break
            received += chunk
    except ConnectionResetError:
        closed = True
    except socket.timeout:
        closed = False
    raw.close()
    after = get(first)
    fresh = connect(host, port, ["http/1.1"])
    fresh_response = get(fresh)
    emit(
        before=" ".join(before),
        garbage_closed=closed,
        # A TLS alert record starts with content type 21; HTTP text would start with 'H'.
        garbage_reply_first_byte=received[0] if received else "none",
        garbage_reply_has_http=b"HTTP/" in received,
        after=" ".join(after),
        fresh=" ".join(fresh_response),
    )


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "alpn":
        cmd_alpn(args[0], int(args[1]), args[2])
    elif cmd == "reload-loop":
        cmd_reload_loop(args[0], int(args[1]), args[2], args[3], int(args[4]), int(args[5]))
    elif cmd == "garbage":
        cmd_garbage(args[0], int(args[1]))
    else:
        sys.exit("unknown subcommand " + cmd)


if __name__ == "__main__":
    main()
