"""c1000: 1000 concurrent keep-alive connections, wrk -t1 -c1000.

bench/run raises RLIMIT_NOFILE (ulimit -n) to 65536 for itself, wrk and the servers.
"""
from benchlib import WrkWorkload

WORKLOAD = WrkWorkload(
    name="c1000",
    description="GET / → `Hello, World!`, keep-alive, `wrk -t1 -c1000`",
    connections=1000,
    servers=["skitai-uring", "skitai-epoll", "nginx", "hyper", "may-minihttp", "monoio-raw-uring", "monoio-raw-epoll"],
)
