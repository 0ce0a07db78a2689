"""h2c: HTTP/2 by prior knowledge on a plain port, `h2load -c64 -m16` (64 connections,
up to 16 concurrent streams each: 1024 requests in flight).

h2load's own warm-up (`--warm-up-time`, on the same connections) precedes a `-D`
seconds measured phase; server and h2load CPU are sampled at the start and end of that
phase. skitai serves h2c on its plain port by default (the first bytes are sniffed for
the HTTP/2 preface); nginx gets `listen ... http2;` (nginx 1.22: a plain `http2`
listener speaks h2c by prior knowledge only). hyper runs `http2::Builder` with `--h2c`.

Goal: skitai's req/s ≥ 3× nginx's (nginx's HTTP/2 costs far more per request than its
HTTP/1.1). h2load reports no latency percentiles: mean and max per request are shown.
Any failed or errored request is flagged in the notes under the table.
"""
from benchlib import H2loadWorkload

WORKLOAD = H2loadWorkload(
    name="h2c",
    description="GET / over h2c (prior knowledge), `h2load -c64 -m16`",
    transport="h2c",
    connections=64,
    streams=16,
    servers=["skitai-uring", "skitai-epoll", "nginx", "hyper"],
)
