"""static-4k: GET /4k.bin (4096 B of fixed pseudo-random bytes) from disk, wrk -t1 -c64.

The small-file case: the work per request is the request, the file lookup (path
resolution, metadata / validator checks, open-file cache) and writing headers + 4 KiB.
64 connections, as in plaintext, so the figures sit next to plaintext's: wrk (one core)
is the limit here too, so rank servers by server CPU µs/req. Goal: skitai's CPU µs/req
≤ nginx's (nginx with sendfile, tcp_nopush and open_file_cache).

Servers: the `skitai` binary with `--mount /=$FIXTURES` (uring and epoll drivers) and
nginx with `root $FIXTURES`; both serve the same directory, written once per run.
"""
from benchlib import StaticWorkload

WORKLOAD = StaticWorkload(
    name="static-4k",
    description="GET /4k.bin (4 KiB file), keep-alive, `wrk -t1 -c64`",
    connections=64,
    path="/4k.bin",
    servers=["skitai-uring", "skitai-epoll", "nginx"],
)
