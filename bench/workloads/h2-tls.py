"""h2-tls: HTTP/2 over TLS (ALPN h2), `h2load -c64 -m16 https://...`.

As h2c, over TLS: the certificate is a self-signed EC P-256 one for 127.0.0.1 /
localhost, made once per bench run with the `openssl` CLI into the run's temp dir
($TLS). skitai gets `-c tls.toml` with `[tls] cert/key`; nginx `listen ... ssl http2;`
with the same certificate (`ssl_protocols TLSv1.2 TLSv1.3`). The handshakes happen during
h2load's warm-up, so the measured phase is steady-state record encryption + HTTP/2.
The protocol and cipher h2load negotiated with each server are noted under the table.
"""
from benchlib import H2loadWorkload

WORKLOAD = H2loadWorkload(
    name="h2-tls",
    description="GET / over TLS + HTTP/2 (ALPN h2), `h2load -c64 -m16`",
    transport="h2-tls",
    connections=64,
    streams=16,
    servers=["skitai-uring", "skitai-epoll", "nginx"],
)
