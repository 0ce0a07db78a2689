"""plaintext: HTTP/1.1 keep-alive hello, wrk -t1 -c64 (no pipelining).

At ~165k req/s wrk saturates its core, so rank servers by server CPU µs/req.
Python Skitai (the reference users come from) runs on this workload only.
"""
from benchlib import WrkWorkload

WORKLOAD = WrkWorkload(
    name="plaintext",
    description="GET / → `Hello, World!`, keep-alive, `wrk -t1 -c64`",
    connections=64,
    servers=["skitai-uring", "skitai-epoll", "nginx", "hyper", "may-minihttp", "monoio-raw-uring", "monoio-raw-epoll", "python-skitai"],
)
