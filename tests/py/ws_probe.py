#!/usr/bin/env python3
"""A WebSocket client for tests/websocket.rs, on the `websockets` package
(apt's python3-websockets 10.4, asyncio API), against examples/ws_lab.

Each subcommand prints its findings as `key=value` lines on stdout and the
Rust test makes the assertions; a step that cannot go on (a timeout, an
unexpected close) raises, which makes the script exit non-zero with a
traceback that the Rust test shows. Every wait has a deadline.

Usage: ws_probe.py HOST PORT SUBCOMMAND
Subcommands: echo, deflate, session, flood, flood-drop, room
"""

import asyncio
import json
import random
import sys
import urllib.request

import websockets
from websockets.legacy.client import WebSocketClientProtocol

# Upper bound of any single wait (debug server, busy 2-core machine).
STEP = 10.0
# Upper bound of a whole subcommand.
TOTAL = 90.0


def emit(**fields):
    """Prints `key=value` lines (values on one line) for the Rust side."""
    for key, value in fields.items():
        if isinstance(value, (list, tuple)):
            value = ",".join(str(v) for v in value)
        print("%s=%s" % (key, str(value).replace("\r", "\\r").replace("\n", "\\n")), flush=True)


class CountingProtocol(WebSocketClientProtocol):
    """Counts the bytes that arrive on the socket (to see compression at work)."""

    wire_in = 0

    def data_received(self, data):
        self.wire_in += len(data)
        super().data_received(data)


def url(host, port, path):
    return "ws://%s:%d%s" % (host, port, path)


def connect(host, port, path, **kwargs):
    kwargs.setdefault("open_timeout", STEP)
    kwargs.setdefault("close_timeout", STEP)
    kwargs.setdefault("ping_interval", None)
    return websockets.connect(url(host, port, path), **kwargs)


async def recv(ws):
    return await asyncio.wait_for(ws.recv(), STEP)


async def closed_with(ws):
    """Reads until the connection closes; (code, reason, messages read before)."""
    count = 0
    try:
        while True:
            await recv(ws)
            count += 1
    except websockets.ConnectionClosed:
        pass
    await asyncio.wait_for(ws.wait_closed(), STEP)
    return ws.close_code, ws.close_reason, count


# -- subcommands ------------------------------------------------------------


async def cmd_echo(host, port):
    """Text, binary, a message just under /echo's 1 MiB cap, one just over it,
    and the subprotocol choice, without compression."""
    async with connect(host, port, "/echo", compression=None, subprotocols=["chat.v1", "chat.v2"]) as ws:
        emit(subprotocol=ws.subprotocol, extensions=ws.response_headers.get("Sec-WebSocket-Extensions", "none"))
        await ws.send("héllo wörld")
        got = await recv(ws)
        emit(text_echo=got == "héllo wörld", text_type=type(got).__name__)
        blob = bytes(range(256)) * 4
        await ws.send(blob)
        got = await recv(ws)
        emit(binary_echo=got == blob, binary_type=type(got).__name__)
        big = random.Random(7).randbytes((1 << 20) - 100)
        await ws.send(big)
        got = await recv(ws)
        emit(big_len=len(got), big_echo=got == big)
        await ws.send("after big")
        emit(after_big=(await recv(ws)) == "after big")
    async with connect(host, port, "/echo", compression=None) as ws:
        # Over the cap: the server refuses it from the frame header (1009).
        try:
            await ws.send(b"\x00" * ((1 << 20) + 1))
        except websockets.ConnectionClosed:
            pass
        code, reason, count = await closed_with(ws)
        emit(over_cap_code=code, over_cap_reason=reason, over_cap_messages=count)


async def cmd_deflate(host, port):
    """permessage-deflate (offered by websockets by default): negotiated,
    compressed round trips, and the size cap applied after inflating."""
    async with connect(host, port, "/echo", create_protocol=CountingProtocol, max_size=2 << 20) as ws:
        emit(
            extensions_header=ws.response_headers.get("Sec-WebSocket-Extensions", "none"),
            extensions=[type(e).__name__ for e in ws.extensions] or "none",
        )
        total = 0
        ok = True
        before = ws.wire_in
        for i in range(3):
            text = ("round %d: skitai speaks websocket, compressed; " % i) * 8000
            total += len(text.encode())
            await ws.send(text)
            got = await recv(ws)
            ok = ok and got == text
        emit(compressed_echo=ok, plain_bytes=total, wire_bytes=ws.wire_in - before)
        # A short message (sent uncompressed by the server) still round-trips.
        await ws.send("hi")
        emit(short_echo=(await recv(ws)) == "hi")
        rnd = random.Random(3).randbytes(300000)
        await ws.send(rnd)
        emit(random_echo=(await recv(ws)) == rnd)
    async with connect(host, port, "/echo") as ws:
        # 2 MiB of zeros deflate to a few KiB: the frame is small, the message is not.
        try:
            await ws.send(b"\x00" * (2 << 20))
        except websockets.ConnectionClosed:
            pass
        code, reason, count = await closed_with(ws)
        emit(inflated_over_cap_code=code, inflated_over_cap_reason=reason)


async def cmd_session(host, port):
    """/session: the greeting, two answers per message, three ticks from
    another task, `bye` (4000), `panic` (1011) and life after the panic."""
    async with connect(host, port, "/session") as ws:
        emit(first=await recv(ws))
        await ws.send("x")
        got = []
        while len(got) < 5:
            got.append(await recv(ws))
        emit(
            rest=sorted(got),
            answers_in_order=got.index("1:x") < got.index("2:x"),
            ticks_in_order=[m for m in got if m.startswith("tick")] == ["tick 1", "tick 2", "tick 3"],
        )
        await ws.send(b"\x01\x02")
        emit(binary_answers=[await recv(ws), await recv(ws)])
        await ws.send("bye")
        code, reason, count = await closed_with(ws)
        emit(bye_code=code, bye_reason=reason, bye_messages=count)

    # A bystander on the same server lives through another session's panic.
    async with connect(host, port, "/session") as bystander:
        await recv(bystander)
        async with connect(host, port, "/session") as ws:
            await recv(ws)
            await ws.send("panic")
            code, reason, count = await closed_with(ws)
            emit(panic_code=code, panic_reason=reason)
        await bystander.send("still there?")
        replies = []
        while "1:still there?" not in replies:
            replies.append(await recv(bystander))
        emit(bystander_ok=True)
    async with connect(host, port, "/session") as ws:
        emit(after_panic_first=await recv(ws))
        await ws.send("y")
        replies = []
        while "1:y" not in replies:
            replies.append(await recv(ws))
        emit(after_panic_answer=True)


async def cmd_flood(host, port):
    """/flood (close policy): the client reads nothing for a second, then reads."""
    async with connect(host, port, "/flood?n=2000&size=1024") as ws:
        await asyncio.sleep(1.0)
        code, reason, count = await closed_with(ws)
        emit(flood_code=code, flood_reason=reason, flood_messages=count)


async def cmd_flood_drop(host, port):
    """/flood-drop (drop policy): what fit in the queue, then the report."""
    async with connect(host, port, "/flood-drop?n=2000&size=1024") as ws:
        await asyncio.sleep(1.0)
        count, sizes_ok = 0, True
        while True:
            msg = await recv(ws)
            if isinstance(msg, str):
                break
            count += 1
            sizes_ok = sizes_ok and msg == b"x" * 1024
        fields = dict(kv.split("=", 1) for kv in msg.split()[1:])
        emit(report=msg, received_before=count, sizes_ok=sizes_ok, sent=fields["sent"], dropped=fields["dropped"])


def members(host, port):
    with urllib.request.urlopen("http://%s:%d/members" % (host, port), timeout=STEP) as r:
        return json.loads(r.read())


async def cmd_room(host, port):
    """/room on a 2-shard server: connections until both shards have members
    (each connection's shard told by which count grew), then one message from
    a member of each shard reaches every connection exactly once."""
    conns, shard_of = [], []
    counts = await asyncio.to_thread(members, host, port)
    emit(initial_members=counts)
    while len(conns) < 16 and not all(shard_of.count(s) for s in range(len(counts))):
        ws = await connect(host, port, "/room")
        conns.append(ws)
        # Wait until the new member is counted (it joins as its session starts).
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP
        while True:
            now = await asyncio.to_thread(members, host, port)
            if sum(now) == len(conns):
                break
            if loop.time() > deadline:
                raise SystemExit("members %r never added up to %d" % (now, len(conns)))
            await asyncio.sleep(0.02)
        grew = [i for i, (a, b) in enumerate(zip(counts, now)) if b == a + 1]
        if len(grew) != 1:
            raise SystemExit("members went from %r to %r" % (counts, now))
        shard_of.append(grew[0])
        counts = now
    emit(connections=len(conns), shard_of=shard_of, members=counts)

    async def read_until(ws, marker, watch):
        """Messages on `ws` up to `marker`; counts of each in `watch`."""
        seen = {w: 0 for w in watch}
        others = []
        while True:
            msg = await recv(ws)
            if msg in seen:
                seen[msg] += 1
            else:
                others.append(msg)
            if msg == marker:
                return seen, others

    for shard in range(len(counts)):
        if shard not in shard_of:
            continue
        sender = conns[shard_of.index(shard)]
        first, second = "first from shard %d" % shard, "second from shard %d" % shard
        await sender.send(first)
        await sender.send(second)
        results = await asyncio.gather(*(read_until(ws, second, [first, second]) for ws in conns))
        emit(
            **{
                "shard%d_first_counts" % shard: [seen[first] for seen, _ in results],
                "shard%d_second_counts" % shard: [seen[second] for seen, _ in results],
                "shard%d_others" % shard: sum(len(o) for _, o in results),
            }
        )
    for ws in conns:
        await ws.close()
    # Closed connections leave the room.
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STEP
    while sum(await asyncio.to_thread(members, host, port)) and loop.time() < deadline:
        await asyncio.sleep(0.05)
    emit(members_after_close=await asyncio.to_thread(members, host, port))


COMMANDS = {
    "echo": cmd_echo,
    "deflate": cmd_deflate,
    "session": cmd_session,
    "flood": cmd_flood,
    "flood-drop": cmd_flood_drop,
    "room": cmd_room,
}


def main():
    host, port, cmd = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if cmd not in COMMANDS:
        raise SystemExit("unknown subcommand " + cmd)
    asyncio.run(asyncio.wait_for(COMMANDS[cmd](host, port), TOTAL))


if __name__ == "__main__":
    main()
