#!/usr/bin/env python3
"""Opens N idle HTTP/1.1 keep-alive connections to 127.0.0.1:PORT and holds them.

Each connection sends one `GET /` and reads the whole response, then stays open.
Protocol with the caller (bench/workloads/idle-memory.py), one line each:
  stdout  READY {"opened": n, "errors": e, "secs": s}   all connections are open and idle
  stdin   check                                         re-use a sample of connections
  stdout  CHECKED {"ok": n, "failed": f}                then everything is closed, exit 0
Stops by itself: closes everything after --hold-max seconds or when stdin closes.

Standalone: python3 bench/lib/idle_conns.py --port 8080 --count 10000
"""
import argparse
import json
import resource
import select
import socket
import sys
import time


def read_response(s: socket.socket) -> int:
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed by server")
        data += chunk
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            continue
        length = None
        chunked = False
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            k = k.strip().lower()
            if k == b"content-length":
                length = int(v)
            elif k == b"transfer-encoding" and b"chunked" in v.lower():
                chunked = True
        if chunked:
            if body.endswith(b"0\r\n\r\n"):
                break
        elif length is None or len(body) >= length:
            break
    return int(head.split()[1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, default=10000)
    ap.add_argument("--sample", type=int, default=100)
    ap.add_argument("--hold-max", type=float, default=120.0)
    a = ap.parse_args()
    if a.host not in ("127.0.0.1", "localhost", "::1"):
        print("only loopback targets are allowed", file=sys.stderr)
        return 2
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.count + 100
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(need, soft), max(need, hard)))

    req = f"GET / HTTP/1.1\r\nHost: {a.host}:{a.port}\r\n\r\n".encode()
    conns, errors = [], 0
    t0 = time.monotonic()
    for _ in range(a.count):
        for attempt in range(2):
            s = None
            try:
                s = socket.create_connection((a.host, a.port), timeout=5)
                s.sendall(req)
                if read_response(s) // 100 != 2:
                    raise ConnectionError("non-2xx")
                conns.append(s)
                break
            except (OSError, ValueError, ConnectionError):
                if s:
                    s.close()
                if attempt == 1:
                    errors += 1
    secs = time.monotonic() - t0
    print("READY " + json.dumps({"opened": len(conns), "errors": errors, "secs": round(secs, 3)}), flush=True)

    ok = failed = 0
    r, _, _ = select.select([sys.stdin], [], [], a.hold_max)
    if r and sys.stdin.readline().strip() == "check" and conns:
        step = max(1, len(conns) // max(1, a.sample))
        for s in conns[::step][: a.sample]:
            try:
                s.sendall(req)
                if read_response(s) // 100 == 2:
                    ok += 1
                else:
                    failed += 1
            except (OSError, ValueError, ConnectionError):
                failed += 1
    for s in conns:
        s.close()
    print("CHECKED " + json.dumps({"ok": ok, "failed": failed}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
