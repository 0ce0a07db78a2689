"""tls-h1: HTTP/1.1 keep-alive over TLS, `wrk -t1 -c64 https://...`.

The same certificate as h2-tls (EC P-256, self-signed, made once per run). skitai: the
hello example with `-c tls.toml` (its ALPN offers h2 and http/1.1; wrk sends no ALPN,
so HTTP/1.1); nginx: `listen ... ssl;` (no http2 on that listener). wrk opens its 64
connections (64 handshakes) at the start of the warm-up and again of the measured run;
over a run of 10 s that is noise. The protocol and cipher a default OpenSSL client (as
wrk) negotiates with each server (`openssl s_client`) are noted under the table.

Goal: skitai's server CPU µs/req ≤ nginx's (wrk is likely the limit, as in plaintext,
so that is the column that ranks).
"""
from benchlib import WrkWorkload

WORKLOAD = WrkWorkload(
    name="tls-h1",
    description="GET / over TLS, HTTP/1.1 keep-alive, `wrk -t1 -c64 https://…`",
    connections=64,
    transport="tls-h1",
    servers=["skitai-uring", "skitai-epoll", "nginx"],
)
