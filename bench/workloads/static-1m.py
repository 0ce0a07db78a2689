"""static-1m: GET /1m.bin (1 MiB of fixed pseudo-random bytes) from disk, wrk -t1 -c16.

The large-file case: the cost is moving bytes (sendfile / read+write into the socket,
and the kernel's copy into wrk's buffer on loopback), so the figure that ranks is
throughput, MiB/s = req/s × 1 MiB (bodies only), next to server CPU µs/req.
Goal: skitai's MiB/s ≥ nginx's.

Why 16 connections, not 64: a single loopback connection moving 1 MiB responses can
already keep a core busy, so 16 always leave the server work queued on both sides;
64 would only add queueing (p50/p99 × 4) and 4× the socket-buffer memory, not bytes
per second. wrk reads into an 8 KiB buffer (RECVBUF in wrk.h), i.e. ≥ 128 read()s per
response, so on 2 cores wrk's core may well be the limit: check the `wrk CPU %` column,
and when it reads ~100 compare server CPU µs/req too.
"""
from benchlib import StaticWorkload

WORKLOAD = StaticWorkload(
    name="static-1m",
    description="GET /1m.bin (1 MiB file), keep-alive, `wrk -t1 -c16`",
    connections=16,
    path="/1m.bin",
    servers=["skitai-uring", "skitai-epoll", "nginx"],
    throughput=True,
)
