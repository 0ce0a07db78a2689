"""ws-echo: WebSocket echo, 64 connections, 64-byte text messages, closed loop.

bench/peers/ws-load (one thread, pinned like wrk) opens 64 WebSocket connections to
/ws/echo and on each one sends a masked 64-byte text message, waits for the echo,
checks it is the message sent, and sends the next. A round trip is one message in and
one out of the server: server CPU µs/msg = the server's CPU over ws-load's measured
phase ÷ round trips. As in plaintext, read `ws-load CPU %`: near 100 means the client
is the limit and CPU µs/msg ranks the servers; below it, round trips/s does too.

Servers: skitai's `examples/chat` (its `/ws/echo` endpoint; uring and epoll drivers)
and bench/peers/tungstenite-echo (tokio-tungstenite on a current_thread runtime: one
core, as one skitai shard).
"""
from benchlib import WsLoadWorkload

WORKLOAD = WsLoadWorkload(
    name="ws-echo",
    description="WebSocket echo of 64-byte text messages at /ws/echo, 64 connections, `ws-load -c64`",
    connections=64,
    size=64,
    path="/ws/echo",
    servers=["skitai-uring", "skitai-epoll", "tungstenite"],
)
