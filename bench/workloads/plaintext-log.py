"""plaintext-log: the plaintext workload with skitai's request log on (to a file) and off.

What logging costs: compare server CPU µs/req of skitai-uring-log with skitai-uring
(and the epoll pair). The log lines are formatted per request into a per-shard
buffer and written by a log thread in 32 KiB batches; the log thread's CPU is part
of the server's CPU (it is the same process).
"""
from benchlib import WrkWorkload

WORKLOAD = WrkWorkload(
    name="plaintext-log",
    description="GET / → `Hello, World!`, keep-alive, `wrk -t1 -c64`; request log on vs off",
    connections=64,
    servers=["skitai-uring", "skitai-uring-log", "skitai-epoll", "skitai-epoll-log"],
)
