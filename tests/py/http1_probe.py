#!/usr/bin/env python3
"""HTTP/1.1 through Python's own client (`http.client`), for tests/http1.rs.

One connection, reused for every request (the client reconnects on its own
if the server closed, so the probe reports the local port before and after
each request, and the Rust test checks they stayed the same):

  session HOST PORT

Prints `key=value` lines; the Rust test makes the assertions. Every socket
operation has a timeout.
"""

import http.client
import sys

TIMEOUT = 10


def emit(**fields):
    """Prints `key=value` lines (values on one line) for the Rust side."""
    for key, value in fields.items():
        print("%s=%s" % (key, str(value).replace("\r", "\\r").replace("\n", "\\n")), flush=True)


def chunks(parts):
    """A generator body: http.client sends it with Transfer-Encoding: chunked."""
    for part in parts:
        yield part


def session(host, port):
    conn = http.client.HTTPConnection(host, port, timeout=TIMEOUT)
    ports = []

    def local_port():
        return conn.sock.getsockname()[1] if conn.sock else None

    def request(name, method, path, body=None, headers=None, encode_chunked=False):
        conn.request(method, path, body=body, headers=headers or {}, encode_chunked=encode_chunked)
        ports.append(local_port())
        resp = conn.getresponse()
        data = resp.read()
        emit(**{
            name + "_status": resp.status,
            name + "_body": data.decode("latin-1") if len(data) < 200 else "%d bytes" % len(data),
            name + "_length": len(data),
            name + "_server": resp.getheader("Server", ""),
            name + "_type": resp.getheader("Content-Type", ""),
            name + "_te": resp.getheader("Transfer-Encoding", ""),
            name + "_clen": resp.getheader("Content-Length", ""),
        })
        return data

    request("get", "GET", "/")
    request("head", "HEAD", "/")
    # A chunked upload of three pieces, echoed back.
    pieces = [b"alpha-", b"beta-" * 1000, b"gamma"]
    echoed = request("chunked", "POST", "/echo", body=chunks(pieces),
                     headers={"Transfer-Encoding": "chunked"}, encode_chunked=True)
    emit(chunked_matches=echoed == b"".join(pieces))
    # A Content-Length upload with Expect: 100-continue (http.client sends
    # the body at once; the server must still read it as the body).
    body = bytes(range(256)) * 64
    echoed = request("expect", "PUT", "/echo", body=body,
                     headers={"Expect": "100-continue", "Content-Length": str(len(body))})
    emit(expect_matches=echoed == body)
    request("missing", "GET", "/no/such/page")
    request("after", "GET", "/")
    emit(ports=",".join(str(p) for p in ports), one_connection=len(set(ports)) == 1)
    conn.close()


def main():
    if len(sys.argv) != 4 or sys.argv[1] != "session":
        sys.exit(__doc__)
    session(sys.argv[2], int(sys.argv[3]))


if __name__ == "__main__":
    main()
