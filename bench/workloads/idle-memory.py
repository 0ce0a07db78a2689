"""idle-memory: RSS growth per idle keep-alive connection.

Per server: start it, note VmRSS of its process tree, open N idle keep-alive
connections (each sent one GET / and read the answer; 10,000 in a full run, 1,000 in
--quick), wait, note VmRSS again, then re-use a sample of 100 connections to check the
server kept them. Figure: (RSS after − RSS before) / N. Kernel socket buffers are not
in RSS, so this is the server's own per-connection memory (buffers, task, state).
"""
import json
import subprocess
import sys
import time

from benchlib import (BENCH_DIR, LOAD_CPU, Column, Ctx, RunError, Running, Workload,
                      fmt_1, fmt_int, fmt_mib, tree_kb)


CLIENT = BENCH_DIR / "lib" / "idle_conns.py"


def fmt_bytes(v: float) -> str:
    return f"{v:.0f}"


class IdleMemory(Workload):
    name = "idle-memory"
    description = "RSS growth per idle HTTP/1.1 keep-alive connection"
    servers = ["skitai-uring", "skitai-epoll", "nginx", "hyper", "may-minihttp"]
    columns = [
        Column("conns", "idle conns", fmt_int, ratio=False),
        Column("rss_before_kb", "RSS before MiB", fmt_mib),
        Column("rss_after_kb", "RSS after MiB", fmt_mib),
        Column("bytes_per_conn", "RSS growth B/conn", fmt_bytes),
        Column("open_secs", "open time s", fmt_1, ratio=False),
        Column("rss_peak_kb", "peak RSS MiB", fmt_mib, agg="max"),
        Column("errors", "errors", fmt_int, agg="sum", ratio=False),
    ]
    summary_columns = [("bytes_per_conn", "B/conn", fmt_bytes)]

    def count(self, ctx: Ctx) -> int:
        return 1000 if ctx.quick else 10000

    def hold(self, ctx: Ctx) -> float:
        return 0.5 if ctx.quick else 2.0

    def run_once(self, ctx: Ctx, run: Running, first_round: bool) -> dict:
        n = self.count(ctx)
        time.sleep(0.2)
        before = tree_kb(run.pid, "VmRSS")
        argv = ctx.pin(LOAD_CPU, [sys.executable, str(CLIENT), "--port", str(run.port),
                                  "--count", str(n), "--hold-max", "120"])
        p = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
        try:
            line = p.stdout.readline()
            if not line.startswith("READY "):
                raise RunError(f"idle client failed: {line.strip()} {p.stderr.read()[-300:]}")
            ready = json.loads(line[6:])
            time.sleep(self.hold(ctx))
            after = tree_kb(run.pid, "VmRSS")
            peak = tree_kb(run.pid, "VmHWM")
            p.stdin.write("check\n")
            p.stdin.flush()
            line = p.stdout.readline()
            checked = json.loads(line[8:]) if line.startswith("CHECKED ") else {"ok": 0, "failed": -1}
            p.wait(60)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait()
        opened = ready["opened"]
        return {
            "conns": opened,
            "rss_before_kb": before,
            "rss_after_kb": after,
            "bytes_per_conn": (after - before) * 1024 / max(opened, 1),
            "open_secs": ready["secs"],
            "rss_peak_kb": peak,
            "errors": (n - opened) + max(checked["failed"], 0),
            "recheck_ok": checked["ok"],
            "recheck_failed": checked["failed"],
        }

    def commands(self, ctx: Ctx) -> list[str]:
        return [f"taskset -c {LOAD_CPU} python3 bench/lib/idle_conns.py --port PORT --count {self.count(ctx)}"
                f"  (then hold {self.hold(ctx)} s, read VmRSS, re-use 100 connections)"]


WORKLOAD = IdleMemory()
