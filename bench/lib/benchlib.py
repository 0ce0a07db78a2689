"""Core of the skitai comparative benchmark suite (python3 stdlib only).

`bench/run` is the entry point; this module holds the pieces it is made of:
setup (apt packages, cargo builds, the Python Skitai venv), the servers,
process measurement from /proc, wrk runs, and the markdown tables.

Workloads live in `bench/workloads/<name>.py`, one file each; each defines
`WORKLOAD`, an instance of a `Workload` subclass (see `WrkWorkload` below and
`workloads/idle-memory.py` for a custom one).
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
PEERS_DIR = BENCH_DIR / "peers"
PEERS_TARGET = PEERS_DIR / "target"
RESULTS_DIR = BENCH_DIR / "results"
CARGO_LOCK = "/tmp/cargo.lock"
PY_SKITAI_VENV = Path("/tmp/skitai-bench-pyvenv")
CLK_TCK = os.sysconf("SC_CLK_TCK")
HOST = "127.0.0.1"  # every server binds here and every client targets it
HELLO_BODY = b"Hello, World!"
# Static-file fixtures (route "static"): URL path -> size. Fixed pseudo-random bytes,
# written once per run into Ctx.fixtures, the one directory every server serves.
STATIC_FILES = {"/4k.bin": 4096, "/1m.bin": 1 << 20}
NOFILE = 65536
NOISY_PCT = 15.0  # other processes' CPU use (% of one CPU) during a run that earns a note

SERVER_CPU = "0"  # taskset CPU list for servers
LOAD_CPU = "1"  # taskset CPU list for wrk / clients (and this runner)


class Skip(Exception):
    """A server or workload that cannot run (yet); reported as a note."""


class RunError(Exception):
    """One measured run failed; reported as a note, the rest goes on."""


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def which(exe: str) -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/sbin:/sbin:/usr/local/sbin"
    return shutil.which(exe, path=path)


# --------------------------------------------------------------------------
# Context: options, notes, machine facts
# --------------------------------------------------------------------------


class Ctx:
    def __init__(self, quick: bool, rounds: int, duration: int, warmup: int,
                 build: bool, install: bool, server_filter: list[str] | None, quiet_wait: float = 0.0):
        self.quick = quick
        self.rounds = rounds
        self.duration = duration
        self.warmup = warmup
        self.build = build
        self.install = install
        self.server_filter = server_filter
        self.quiet_wait = quiet_wait
        self.tmp = Path(tempfile.mkdtemp(prefix="skitai-bench-"))
        self.notes: list[str] = []  # global notes (setup, builds)
        self.server_skips: dict[str, str] = {}  # server name -> reason (setup-level)
        self.skitai_missing: dict[str, str] = {}  # skitai binary ("hello", "skitai") -> reason
        self.fixtures = self.tmp / "fixtures"  # static files served by every server (route "static")
        self.pinned = (os.cpu_count() or 1) >= 2
        self.date = datetime.date.today().isoformat()
        self.started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M:%S")

    def note(self, msg: str) -> None:
        log("note: " + msg)
        self.notes.append(msg)

    def pin(self, cpus: str, argv: list[str]) -> list[str]:
        return (["taskset", "-c", cpus] + argv) if self.pinned else argv


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(NOFILE, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(want, hard)))
    except (ValueError, OSError):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def fixture_bytes(path: str) -> bytes:
    """The fixed pseudo-random content of a STATIC_FILES entry (the same in every run)."""
    import random
    return random.Random(f"skitai-bench{path}").randbytes(STATIC_FILES[path])


def ensure_fixtures(ctx: Ctx) -> Path:
    """Writes the STATIC_FILES into ctx.fixtures (once per run) and returns that directory.
    The run's temp dir is made traversable (0711) so that nginx's worker, which runs as
    `nobody` when the master is root, can read the files."""
    d = ctx.fixtures
    if not d.is_dir():
        d.mkdir(parents=True)
        for path in STATIC_FILES:
            f = d / path.lstrip("/")
            f.write_bytes(fixture_bytes(path))
            f.chmod(0o644)
        d.chmod(0o755)
        ctx.tmp.chmod(0o711)
    return d


# Transports a workload can ask the servers for (Workload.transport):
#   plain   HTTP/1.1 on a plain port (every existing workload)
#   h2c     HTTP/2 by prior knowledge on a plain port
#   h2-tls  TLS with ALPN h2 (skitai: its [tls] config; nginx: `listen ... ssl http2`)
#   tls-h1  HTTP/1.1 over TLS (skitai: the same [tls] config; nginx: `listen ... ssl`)
TRANSPORTS = ("plain", "h2c", "h2-tls", "tls-h1")
TLS_TRANSPORTS = ("h2-tls", "tls-h1")


def tls_dir(ctx: Ctx) -> Path:
    return ctx.tmp / "tls"


def ensure_tls_cert(ctx: Ctx) -> tuple[Path, Path]:
    """A self-signed EC P-256 certificate for 127.0.0.1 / localhost, generated once per run
    with the `openssl` CLI into <run temp dir>/tls ($TLS): (cert.pem, key.pem, PKCS#8)."""
    d = tls_dir(ctx)
    cert, key = d / "cert.pem", d / "key.pem"
    if cert.exists() and key.exists():
        return cert, key
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-keyout", str(key), "-out", str(cert), "-days", "30", "-subj", "/CN=localhost",
            "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    if p.returncode != 0 or not cert.exists() or not key.exists():
        raise Skip(f"openssl could not make the test certificate: {(p.stderr or p.stdout).strip()[-300:]}")
    return cert, key


TLS_CERT_CMD = ('openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes '
                '-keyout $TLS/key.pem -out $TLS/cert.pem -days 30 -subj /CN=localhost '
                '-addext subjectAltName=IP:127.0.0.1,DNS:localhost')


def _cmd_out(argv: list[str], cwd: Path | None = None) -> str:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=cwd)
        return (p.stdout + p.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(ctx: Ctx) -> dict[str, str]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    uring = "?"
    try:
        v = Path("/proc/sys/kernel/io_uring_disabled").read_text().strip()
        uring = {"0": "enabled", "1": "restricted", "2": "disabled"}.get(v, v)
    except OSError:
        uring = "no io_uring_disabled sysctl (assumed enabled)"
    head = _cmd_out(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])
    dirty = _cmd_out(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=no"])
    wrk_v = _cmd_out(["wrk", "-v"]).splitlines()
    h2load_v = _cmd_out(["h2load", "--version"]).splitlines()
    return {
        "date": ctx.started,
        "nproc": str(os.cpu_count()),
        "kernel": platform.release(),
        "cpu": cpu,
        "io_uring": uring,
        "drivers": "skitai-uring = `--io uring`, skitai-epoll = `--io epoll` (monoio drivers)",
        "pinning": (f"servers `taskset -c {SERVER_CPU}`, wrk/clients `taskset -c {LOAD_CPU}`"
                    if ctx.pinned else "none (fewer than 2 CPUs)"),
        "skitai commit": (head + (" (dirty)" if dirty and dirty != "?" else "")) if head else "?",
        "wrk": wrk_v[0] if wrk_v else "?",
        "h2load": h2load_v[0] if h2load_v else "?",
        "openssl": _cmd_out(["openssl", "version"]),
        "nginx": _cmd_out([which("nginx") or "nginx", "-v"]).replace("nginx version: ", ""),
        "rustc": _cmd_out(["rustc", "-V"]),
        "mode": (f"{'quick' if ctx.quick else 'full'}: {ctx.rounds} round(s), "
                 f"{ctx.warmup} s warm-up + {ctx.duration} s measured per run"),
    }


# --------------------------------------------------------------------------
# Setup: apt packages, cargo builds, Python Skitai venv
# --------------------------------------------------------------------------

APT_TOOLS = {"wrk": "wrk", "nginx": "nginx", "h2load": "nghttp2-client", "taskset": "util-linux",
             "openssl": "openssl", "curl": "curl"}


def ensure_tools(ctx: Ctx) -> None:
    missing = sorted({pkg for exe, pkg in APT_TOOLS.items() if not which(exe)})
    if not missing:
        return
    if not ctx.install:
        ctx.note(f"missing tools not installed (--no-install): {', '.join(missing)}")
        return
    if os.geteuid() != 0:
        ctx.note(f"missing tools and not root, cannot apt-get install: {', '.join(missing)}")
        return
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    cmd = ["apt-get", "install", "-y", "-qq"] + missing
    if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], env=env, stdout=subprocess.DEVNULL)
        if subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL).returncode != 0:
            ctx.note(f"apt-get install failed for: {', '.join(missing)}")


def cargo_build(ctx: Ctx, args: list[str], cwd: Path, what: str) -> bool:
    """Runs `flock /tmp/cargo.lock cargo build ...` (never two cargo builds at once)."""
    if not which("cargo"):
        ctx.note(f"cargo not found: cannot build {what}")
        return False
    logf = ctx.tmp / f"build-{what}.log"
    cmd = ["flock", CARGO_LOCK, "cargo", "build", "--release"] + args
    log(f"building {what}: {' '.join(cmd)} (in {cwd}; log {logf})")
    with open(logf, "w") as f:
        rc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        tail = logf.read_text(errors="replace").strip().splitlines()[-15:]
        log(f"build of {what} failed (rc {rc}):\n    " + "\n    ".join(tail))
    return rc == 0


def main_target_dir() -> Path:
    t = os.environ.get("CARGO_TARGET_DIR")
    return Path(t) if t else REPO / "target"


def skitai_example_bin(example: str) -> Path:
    return main_target_dir() / "release" / "examples" / example


def skitai_hello_bin() -> Path:
    return skitai_example_bin("hello")


def skitai_main_bin() -> Path:
    """The `skitai` binary itself (static files: `--mount /=DIR`)."""
    return main_target_dir() / "release" / "skitai"


def _rel(p: Path) -> Path:
    return p.relative_to(REPO) if p.is_relative_to(REPO) else p


# Routes served by a skitai example program (the rest: "static", the skitai binary):
# route -> example. "ws": examples/chat, whose /ws/echo echoes every WebSocket message.
SKITAI_EXAMPLES = {"hello": "hello", "ws": "chat"}


def build_skitai_example(ctx: Ctx, example: str) -> None:
    """`cargo build --release --example NAME`; without its source (examples/NAME.rs or
    examples/NAME/main.rs) or a binary, NAME goes into ctx.skitai_missing."""
    bin_ = skitai_example_bin(example)
    has_src = (REPO / "examples" / f"{example}.rs").exists() or (REPO / "examples" / example / "main.rs").exists()
    if ctx.build and has_src:
        ok = cargo_build(ctx, ["--example", example], REPO, f"skitai-{example}")
        if not ok and bin_.exists():
            ctx.note(f"skitai: `cargo build --release --example {example}` failed; "
                     f"using the existing, possibly stale {_rel(bin_)}")
    if not has_src:
        ctx.skitai_missing[example] = f"the skitai {example} example does not exist yet (examples/{example}.rs)"
    elif not bin_.exists():
        ctx.skitai_missing[example] = (f"the skitai {example} example does not build yet" if ctx.build
                                       else f"the skitai {example} example is not built (--no-build)")


def build_skitai(ctx: Ctx, routes: set[str] | None = None) -> None:
    """Builds what the selected routes need: the example of each route in SKITAI_EXAMPLES
    ("hello": examples/hello, "ws": examples/chat) and the skitai binary (route "static").
    What is missing ends up in ctx.skitai_missing, and SkitaiServer.argv() turns that into
    a Skip for the workloads that need it."""
    routes = routes if routes is not None else {"hello", "static"}
    for route, example in SKITAI_EXAMPLES.items():
        if route in routes:
            build_skitai_example(ctx, example)
    if "static" in routes:
        bin_ = skitai_main_bin()
        if ctx.build:
            ok = cargo_build(ctx, ["--bin", "skitai"], REPO, "skitai-bin")
            if not ok and bin_.exists():
                ctx.note("skitai: `cargo build --release --bin skitai` failed; "
                         f"using the existing, possibly stale {_rel(bin_)}")
        if not bin_.exists():
            ctx.skitai_missing["skitai"] = "the skitai binary does not build"


# Bench servers built from bench/peers, and their binaries.
PEER_BINARIES = (("hyper", "hyper-hello"), ("may-minihttp", "may-hello"),
                 ("monoio-raw-uring", "monoio-raw"), ("monoio-raw-epoll", "monoio-raw"),
                 ("tungstenite", "tungstenite-echo"))


def peer_bin(exe: str) -> Path:
    """A binary of the bench/peers workspace (servers and load generators such as ws-load)."""
    return PEERS_TARGET / "release" / exe


def build_peers(ctx: Ctx) -> None:
    if ctx.build:
        cargo_build(ctx, ["--target-dir", str(PEERS_TARGET)], PEERS_DIR, "peers")
    for name, exe in PEER_BINARIES:
        if not peer_bin(exe).exists():
            ctx.server_skips[name] = f"bench/peers/{exe} did not build"


def setup_python_skitai(ctx: Ctx) -> None:
    py = PY_SKITAI_VENV / "bin" / "python"
    ok = py.exists() and subprocess.run([str(py), "-c", "import skitai"],
                                        capture_output=True).returncode == 0
    if not ok and ctx.install:
        log(f"installing PyPI skitai into the throwaway venv {PY_SKITAI_VENV}")
        try:
            shutil.rmtree(PY_SKITAI_VENV, ignore_errors=True)
            subprocess.run([sys.executable, "-m", "venv", str(PY_SKITAI_VENV)], check=True,
                           capture_output=True, timeout=300)
            r = subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                "skitai"], capture_output=True, text=True, timeout=600)
            ok = r.returncode == 0
            if not ok:
                log("pip install skitai failed:\n" + r.stderr[-2000:])
        except (OSError, subprocess.SubprocessError) as e:
            log(f"venv/pip failed: {e}")
            ok = False
    if not ok:
        ctx.server_skips["python-skitai"] = "PyPI skitai could not be installed into a venv"


# --------------------------------------------------------------------------
# Process accounting from /proc
# --------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        s = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return s[s.rindex(")") + 2:].split()  # fields from #3 (state) on


def tree_pids(root: int) -> list[int]:
    """root and all its descendant processes (threads are covered by /proc/PID/stat)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            f = _stat_fields(int(d))
            if f:
                children.setdefault(int(f[1]), []).append(int(d))
    out, todo = [], [root]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_ticks(root: int) -> int:
    """utime+stime clock ticks of root and its descendants (all threads included)."""
    total = 0
    for p in tree_pids(root):
        f = _stat_fields(p)
        if f:
            total += int(f[11]) + int(f[12])  # fields 14 utime, 15 stime
    return total


def cpu_busy_ticks() -> int:
    """Busy clock ticks of the whole machine (all CPUs) from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    # user nice system idle iowait irq softirq steal ...
    return v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)


def wait_for_quiet(ctx: "Ctx") -> None:
    """With --quiet-wait S: before a run, wait up to S seconds until the rest of the
    machine uses less than NOISY_PCT of a CPU (sampled over 1 s)."""
    if ctx.quiet_wait <= 0:
        return
    deadline = time.monotonic() + ctx.quiet_wait
    waited = False
    while True:
        b0 = cpu_busy_ticks()
        time.sleep(1.0)
        busy = 100.0 * (cpu_busy_ticks() - b0) / CLK_TCK
        if busy < NOISY_PCT:
            break
        if time.monotonic() >= deadline:
            log(f"machine still busy ({busy:.0f}% of a CPU) after {ctx.quiet_wait:.0f} s; going on")
            break
        if not waited:
            log(f"machine busy ({busy:.0f}% of a CPU): waiting up to {ctx.quiet_wait:.0f} s for quiet")
            waited = True


def tree_kb(root: int, key: str) -> int:
    """Sum of a /proc/PID/status memory field (VmHWM, VmRSS) in KiB over the tree."""
    total = 0
    for p in tree_pids(root):
        try:
            for line in open(f"/proc/{p}/status"):
                if line.startswith(key + ":"):
                    total += int(line.split()[1])
                    break
        except OSError:
            pass
    return total


# --------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------

_LIVE: dict[int, subprocess.Popen] = {}


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def http_get(port: int, path: str = "/", timeout: float = 2.0, tls: bool = False) -> tuple[int, bytes]:
    """GET over HTTP/1.1 (with `tls`: over TLS, ALPN http/1.1, certificate not verified)."""
    with socket.create_connection((HOST, port), timeout=timeout) as raw:
        s = raw
        if tls:
            import ssl
            c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            c.check_hostname = False
            c.verify_mode = ssl.CERT_NONE
            c.set_alpn_protocols(["http/1.1"])
            s = c.wrap_socket(raw, server_hostname="localhost")
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
            head, sep, body = data.partition(b"\r\n\r\n")
            if sep:
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length" and len(body) >= int(v):
                        return int(head.split()[1]), body
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


def curl_h2_get(port: int, path: str = "/", timeout: float = 2.0, tls: bool = False) -> tuple[int, bytes]:
    """GET over HTTP/2 with curl: h2c by prior knowledge, or TLS with ALPN h2 (`tls`).
    Raises ValueError unless the answer really came over HTTP/2."""
    url = f"{'https' if tls else 'http'}://{HOST}:{port}{path}"
    argv = ["curl", "-s"] + (["-k", "--http2"] if tls else ["--http2-prior-knowledge"]) + [
        "-o", "-", "-w", "\n%{http_code} %{http_version}", "--max-time", str(timeout), url]
    p = subprocess.run(argv, capture_output=True, timeout=timeout + 5)
    if p.returncode != 0:
        raise OSError(f"curl exit {p.returncode}")
    body, _, tail = p.stdout.rpartition(b"\n")
    code, _, version = tail.decode().partition(" ")
    if version != "2":
        raise ValueError(f"answered over HTTP/{version}, not HTTP/2")
    return int(code), body


def probe_get(transport: str, port: int, path: str = "/", timeout: float = 2.0) -> tuple[int, bytes]:
    """GET `path` the way the workload's transport speaks (start_server's readiness check)."""
    if transport == "h2c":
        return curl_h2_get(port, path, timeout)
    if transport == "h2-tls":
        return curl_h2_get(port, path, timeout, tls=True)
    return http_get(port, path, timeout, tls=transport == "tls-h1")


WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def ws_echo_check(port: int, path: str = "/ws/echo", timeout: float = 2.0) -> str | None:
    """Readiness of a WebSocket echo endpoint, the real thing: an RFC 6455 opening
    handshake on `path` (101, Upgrade, Connection and Sec-WebSocket-Accept checked), one
    masked text message, its echo (pings on the way answered), then a close. Returns None
    when all went right, else what did not (OSError / ValueError on socket trouble)."""
    import base64
    import hashlib
    key = base64.b64encode(os.urandom(16)).decode()
    accept = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
    what = f"GET {path} (WebSocket)"

    def frame(opcode: int, payload: bytes) -> bytes:  # a masked client frame, payload < 126 B
        mask = os.urandom(4)
        return bytes([0x80 | opcode, 0x80 | len(payload)]) + mask + bytes(
            b ^ mask[i % 4] for i, b in enumerate(payload))

    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nUpgrade: websocket\r\n"
                  f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
                  .encode())
        buf = b""

        def need(n: int) -> bytes:
            nonlocal buf
            while len(buf) < n:
                chunk = s.recv(65536)
                if not chunk:
                    raise ValueError(f"{what}: connection closed")
                buf += chunk
            out, buf = buf[:n], buf[n:]
            return out

        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return f"{what}: connection closed before the handshake answer ({buf[:60]!r})"
            buf += chunk
            if len(buf) > 65536:
                return f"{what}: no end of the handshake answer in 64 KiB"
        head, _, buf = buf.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        if lines[0].split()[1:2] != ["101"]:
            return f"{what} answered {lines[0]!r}"
        hdrs = {k.strip().lower(): v.strip() for k, _, v in (l.partition(":") for l in lines[1:])}
        if hdrs.get("upgrade", "").lower() != "websocket" or "upgrade" not in hdrs.get("connection", "").lower():
            return f"{what}: 101 without Upgrade: websocket / Connection: Upgrade"
        if hdrs.get("sec-websocket-accept") != accept:
            return f"{what}: Sec-WebSocket-Accept {hdrs.get('sec-websocket-accept')!r}, expected {accept!r}"
        msg = b"skitai-bench readiness " + os.urandom(6).hex().encode()
        s.sendall(frame(0x1, msg))
        got: bytes | None = None  # the echo so far (a server may fragment it)
        while True:
            b0, b1 = need(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(need(2), "big")
            elif n == 127:
                n = int.from_bytes(need(8), "big")
            if b1 & 0x80:
                return f"{what}: the server sent a masked frame"
            payload = need(n)
            opcode = b0 & 0x0F
            if opcode == 0x9:
                s.sendall(frame(0xA, payload))
            elif opcode == 0xA:
                continue
            elif opcode == 0x8:
                return f"{what}: the server closed instead of echoing ({payload[:40]!r})"
            elif (opcode == 0x1 and got is None) or (opcode == 0x0 and got is not None):
                got = (got or b"") + payload
                if b0 & 0x80:
                    if got != msg:
                        return f"{what}: echo {got[:60]!r}, not {msg!r}"
                    break
            else:
                return f"{what}: a frame with opcode {opcode} instead of the text echo {msg!r}"
        try:  # closing handshake, best effort
            s.sendall(frame(0x8, (1000).to_bytes(2, "big")))
            need(2)
        except (OSError, ValueError):
            pass
    return None


def _kx_name(v: str) -> str:
    """"X25519, 253 bits" (openssl s_client) or "X25519 253 bits" (h2load) -> "X25519"."""
    return v.split(",")[0].split()[0] if v.strip() else ""


def tls_session_info(port: int) -> str:
    """Protocol, cipher and key exchange a default OpenSSL client (as wrk's) negotiates,
    from `openssl s_client`."""
    try:
        p = subprocess.run(["openssl", "s_client", "-connect", f"{HOST}:{port}", "-servername", "localhost"],
                           stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "?"
    proto = cipher = kx = ""
    for line in p.stdout.splitlines():
        line = line.strip()
        if line.startswith("New, ") and ", Cipher is " in line:
            proto, cipher = line[5:].split(", Cipher is ", 1)
        elif line.startswith("Server Temp Key:"):
            kx = _kx_name(line.split(":", 1)[1])
    return " ".join(x for x in (proto, cipher, kx) if x) or "?"


class Server:
    """A server under test. `argv()` raises Skip for a route or transport it cannot serve."""

    name = "?"
    desc = "?"
    is_skitai = False
    ready_timeout = 20.0

    def argv(self, ctx: Ctx, port: int, route: str, workdir: Path, transport: str = "plain") -> list[str]:
        raise NotImplementedError

    def env(self, ctx: Ctx, workdir: Path) -> dict[str, str]:
        return dict(os.environ)

    def describe(self, route: str, transport: str = "plain") -> str:
        """What this server is for a route (results files); `desc` is the general one."""
        return self.desc

    def config_text(self, run: "Running") -> str | None:
        """A generated config file worth showing in the results (e.g. nginx.conf)."""
        return None


_ADDR_FLAG: dict[str, bool] = {}


def _skitai_has_address_flag(bin_: Path | None = None) -> bool:
    """Whether the hello example takes --address (then it is bound to 127.0.0.1)."""
    b = str(bin_ or skitai_hello_bin())
    if b not in _ADDR_FLAG:
        _ADDR_FLAG[b] = "--address" in _cmd_out([b, "--help"])
    return _ADDR_FLAG[b]


class SkitaiServer(Server):
    is_skitai = True

    def __init__(self, io: str, log: bool = False):
        self.io = io
        self.log = log
        self.name = f"skitai-{io}" + ("-log" if log else "")
        self.desc = (f"skitai, 1 shard, `--io {io}` (hello: `examples/hello`; static: the `skitai` binary; "
                     "ws: `examples/chat`)")
        if log:
            self.desc += "; request log on, to a file (`-c log.toml`: `[log] path = $WORKDIR/logs`)"

    LOG_CONF = """[log]
path = "{path}"
"""

    def describe(self, route, transport="plain"):
        extra = {"h2c": ", h2c by prior knowledge (on by default on plain ports)",
                 "h2-tls": ", `-c tls.toml` ([tls] cert/key: TLS, ALPN h2)",
                 "tls-h1": ", `-c tls.toml` ([tls] cert/key: TLS, HTTP/1.1)"}.get(transport, "")
        if self.log:
            extra += ", request log to a file (`-c log.toml`: `[log] path = $WORKDIR/logs`)"
        if route == "static":
            return f"the `skitai` binary, 1 shard, `--io {self.io}`, `--mount /=$FIXTURES`{extra}"
        if route == "ws":
            return f"skitai `examples/chat` (WebSocket echo at `/ws/echo`), 1 shard, `--io {self.io}`{extra}"
        return f"skitai `examples/hello`, 1 shard, `--io {self.io}`{extra}"

    TLS_CONF = """[tls]
cert = "{cert}"
key = "{key}"
"""

    def argv(self, ctx, port, route, workdir, transport="plain"):
        if route == "static":
            if "skitai" in ctx.skitai_missing:
                raise Skip(ctx.skitai_missing["skitai"])
            argv = [str(skitai_main_bin()), "--address", HOST, "--port", str(port), "--shards", "1",
                    "--io", self.io, "--silent", "--mount", f"/={ensure_fixtures(ctx)}"]
        elif route not in SKITAI_EXAMPLES:
            raise Skip(f"skitai has no `{route}` example yet")
        else:
            example = SKITAI_EXAMPLES[route]
            if example in ctx.skitai_missing:
                raise Skip(ctx.skitai_missing[example])
            bin_ = skitai_example_bin(example)
            argv = [str(bin_), "--port", str(port), "--shards", "1", "--io", self.io, "--silent"]
            if _skitai_has_address_flag(bin_):
                argv[1:1] = ["--address", HOST]
        if transport in TLS_TRANSPORTS:
            cert, key = ensure_tls_cert(ctx)
            conf = workdir / "tls.toml"
            conf.write_text(self.TLS_CONF.format(cert=cert, key=key))
            argv += ["-c", str(conf)]
        elif transport not in ("plain", "h2c"):
            raise Skip(f"skitai: unknown transport `{transport}`")
        if self.log:
            if transport in TLS_TRANSPORTS:
                raise Skip("skitai-log: measured on plain transports only")
            (workdir / "logs").mkdir(exist_ok=True)
            conf = workdir / "log.toml"
            conf.write_text(self.LOG_CONF.format(path=workdir / "logs"))
            argv += ["-c", str(conf)]
        # An instance name of its own: skitai refuses to start a second live instance of
        # one name (its state file), and a developer's `hello` or `chat` may be running.
        return argv + ["--name", f"bench-{port}"]

    def config_text(self, run):
        try:
            text = (run.workdir / "tls.toml").read_text()
        except OSError:
            return None
        return _shown_paths(text, run)


class NginxServer(Server):
    name = "nginx"
    desc = "nginx (Debian), 1 worker, reuseport, access_log off (hello: `return 200`; static: `root $FIXTURES`)"

    # One config for both routes; ROUTES fills in what differs.
    CONF = """worker_processes 1;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
worker_rlimit_nofile {nofile};
events {{
    worker_connections 30000;
    use epoll;
}}
http {{
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
{http_extra}
    server {{
        listen {host}:{port} reuseport backlog=4096{listen_opts};{tls}
        location / {{
            {location}
        }}
    }}
}}
"""

    # Route → (lines in `http {}`, the `location /` body). "static" serves
    # $FIXTURES the way a tuned nginx serves files.
    ROUTES = {
        "hello": ("    default_type text/plain;", 'return 200 "Hello, World!";'),
        "static": ("""    default_type application/octet-stream;
    sendfile on;
    tcp_nopush on;
    open_file_cache max=1000 inactive=60s;
    open_file_cache_valid 1s;
    etag on;""", "root {root};"),
    }

    # Per transport: extra `listen` parameters, and whether the server block gets the
    # TLS lines (the run's certificate; TLS 1.2 and 1.3 as rustls in skitai).
    LISTEN_OPTS = {"plain": "", "h2c": " http2", "h2-tls": " ssl http2", "tls-h1": " ssl"}
    TLS_LINES = """
        ssl_certificate {cert};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;"""

    def describe(self, route, transport="plain"):
        extra = {"h2c": ", `listen ... http2` (h2c)", "h2-tls": ", `listen ... ssl http2`",
                 "tls-h1": ", `listen ... ssl`"}.get(transport, "")
        if route == "static":
            return ("nginx (Debian), 1 worker, reuseport, access_log off, sendfile + tcp_nopush, "
                    "open_file_cache, `root $FIXTURES`" + extra)
        return "nginx (Debian), 1 worker, `return 200`, reuseport, access_log off" + extra

    def argv(self, ctx, port, route, workdir, transport="plain"):
        nginx = which("nginx")
        if not nginx:
            raise Skip("nginx is not installed")
        if transport not in self.LISTEN_OPTS:
            raise Skip(f"no nginx config for transport `{transport}`")
        tls = ""
        if transport in TLS_TRANSPORTS:
            cert, key = ensure_tls_cert(ctx)
            tls = self.TLS_LINES.format(cert=cert, key=key)
        if route not in self.ROUTES:
            raise Skip(f"no nginx config for route `{route}`")
        http_extra, location = self.ROUTES[route]
        if route == "static":
            location = location.format(root=ensure_fixtures(ctx))
        conf = workdir / "nginx.conf"
        conf.write_text(self.CONF.format(d=workdir, host=HOST, port=port, nofile=NOFILE,
                                         listen_opts=self.LISTEN_OPTS[transport], tls=tls,
                                         http_extra=http_extra, location=location))
        return [nginx, "-p", str(workdir), "-e", str(workdir / "error.log"), "-c", str(conf)]

    def config_text(self, run):
        try:
            text = (run.workdir / "nginx.conf").read_text()
        except OSError:
            return None
        return _shown_paths(text, run).replace(f":{run.port} ", ":PORT ")


class PeerBinServer(Server):
    """A bench/peers binary. `transports`: transport -> extra arguments (plain HTTP/1.1 only
    unless given); `routes`: the routes it serves (hello only unless given)."""

    def __init__(self, name: str, exe: str, desc: str, args: tuple[str, ...] = (),
                 transports: dict[str, tuple[str, ...]] | None = None, routes: tuple[str, ...] = ("hello",)):
        self.name, self.exe, self.desc, self.args = name, exe, desc, args
        self.transports = transports or {"plain": ()}
        self.routes = routes

    def argv(self, ctx, port, route, workdir, transport="plain"):
        if route not in self.routes:
            raise Skip(f"{self.name} peer has no `{route}` route")
        if transport not in self.transports:
            raise Skip(f"{self.name} peer has no {transport} listener")
        return [str(peer_bin(self.exe)), "--port", str(port), *self.args, *self.transports[transport]]


class PythonSkitaiServer(Server):
    name = "python-skitai"
    desc = "original Python Skitai (PyPI), WSGI hello, 1 worker, threads=0"
    ready_timeout = 30.0

    def argv(self, ctx, port, route, workdir, transport="plain"):
        if route != "hello" or transport != "plain":
            raise Skip(f"no Python Skitai app for route `{route}` over {transport}")
        return [str(PY_SKITAI_VENV / "bin" / "python"), str(PEERS_DIR / "python-skitai" / "app.py"),
                "--port", str(port)]

    def env(self, ctx, workdir):
        # Skitai keeps its var/ data under ~/.skitai: keep that in the temp dir.
        return dict(os.environ, HOME=str(workdir))


SERVERS: dict[str, Server] = {s.name: s for s in [
    SkitaiServer("uring"),
    SkitaiServer("epoll"),
    SkitaiServer("uring", log=True),
    SkitaiServer("epoll", log=True),
    NginxServer(),
    PeerBinServer("hyper", "hyper-hello", "hyper 1.x http1 (h2c: http2 with `--h2c`), tokio current_thread "
                  "(bench/peers/hyper-hello)", transports={"plain": (), "h2c": ("--h2c",)}),
    PeerBinServer("may-minihttp", "may-hello", "may_minihttp, 1 may worker (bench/peers/may-hello)"),
    PeerBinServer("monoio-raw-uring", "monoio-raw",
                  "the floor: raw monoio read/httparse/write loop, io_uring COOP_TASKRUN (bench/peers/monoio-raw)",
                  ("--io", "uring")),
    PeerBinServer("monoio-raw-epoll", "monoio-raw", "the same raw loop on monoio's epoll driver",
                  ("--io", "epoll")),
    PeerBinServer("tungstenite", "tungstenite-echo",
                  "WebSocket echo (any path) on tokio-tungstenite, tokio current_thread "
                  "(bench/peers/tungstenite-echo)", routes=("ws",)),
    PythonSkitaiServer(),
]}


def display_argv(argv: list[str], port: int, workdir: Path, fixtures: Path | None = None,
                 tls: Path | None = None) -> str:
    """A command line as it goes into results: repo-relative paths, PORT, $WORKDIR, $FIXTURES, $TLS."""
    text = " ".join(argv)
    if fixtures is not None:
        text = text.replace(str(fixtures), "$FIXTURES")
    if tls is not None:
        text = text.replace(str(tls), "$TLS")
    text = text.replace(str(workdir), "$WORKDIR").replace(str(REPO) + "/", "")
    return (text.replace(f"--port {port}", "--port PORT").replace(f":{port}", ":PORT")
            .replace(f"--name bench-{port}", "--name bench-PORT"))


def _shown_paths(text: str, run: "Running") -> str:
    """A generated config as it goes into results: $FIXTURES, $TLS, $WORKDIR."""
    if run.fixtures is not None:
        text = text.replace(str(run.fixtures), "$FIXTURES")
    if run.tls is not None:
        text = text.replace(str(run.tls), "$TLS")
    return text.replace(str(run.workdir), "$WORKDIR")


class Running:
    """A started server: process, port, log."""

    def __init__(self, server: Server, proc: subprocess.Popen, port: int, argv: list[str], logf: Path,
                 workdir: Path, fixtures: Path | None = None, tls: Path | None = None,
                 transport: str = "plain"):
        self.server, self.proc, self.port, self.argv, self.logf = server, proc, port, argv, logf
        self.workdir, self.fixtures, self.tls, self.transport = workdir, fixtures, tls, transport

    @property
    def shown_argv(self) -> str:
        return display_argv(self.argv, self.port, self.workdir, self.fixtures, self.tls)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log_tail(self, n: int = 8) -> str:
        try:
            lines = self.logf.read_text(errors="replace").strip().splitlines()[-n:]
        except OSError:
            return ""
        return " | ".join(l.strip() for l in lines)


def start_server(ctx: Ctx, server: Server, route: str = "hello", check_body: bytes | None = HELLO_BODY,
                 path: str = "/", exact: bool = False, transport: str = "plain", probe=None) -> Running:
    """Starts `server` for `route` over `transport` and waits until GET `path` (spoken over
    that transport: probe_get) answers 200 with a body that contains `check_body` (or
    equals it with `exact`; None: any body). With `probe` (a function (port, timeout) ->
    None when ready, else why not; e.g. ws_echo_check) that decides instead."""
    port = free_port()
    workdir = Path(tempfile.mkdtemp(prefix=f"{server.name}-", dir=ctx.tmp))
    argv = ctx.pin(SERVER_CPU, server.argv(ctx, port, route, workdir, transport))
    logf = workdir / "server.log"
    with open(logf, "w") as lf:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=lf, stderr=subprocess.STDOUT,
                                cwd=workdir, env=server.env(ctx, workdir), start_new_session=True)
    _LIVE[proc.pid] = proc
    run = Running(server, proc, port, argv, logf, workdir, ctx.fixtures, tls_dir(ctx), transport)
    deadline = time.monotonic() + server.ready_timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            stop_server(run)
            raise RunError(f"{server.name} exited with {proc.returncode} at start: {run.log_tail()}")
        try:
            if probe is not None:
                last = probe(port, 1.0)
                if last is None:
                    return run
                time.sleep(0.05)
                continue
            status, body = probe_get(transport, port, path, timeout=1.0)
            if status == 200 and (check_body is None or (body == check_body if exact else check_body in body)):
                return run
            last = (f"GET {path} answered {status} {body[:60]!r}" if len(body) < 200 or not exact
                    else f"GET {path} answered {status} with {len(body)} bytes, not the expected "
                         f"{len(check_body)} of the fixture")
        except (OSError, ValueError, IndexError, subprocess.SubprocessError) as e:
            last = f"{type(e).__name__}: {e}"
        time.sleep(0.05)
    stop_server(run)
    raise RunError(f"{server.name} not ready within {server.ready_timeout:.0f} s ({last}); log: {run.log_tail()}")


def _kill_group(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            pass
    # the group may still hold children (nginx worker, Python Skitai worker)
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        pass


def stop_server(run: Running) -> None:
    _kill_group(run.proc)
    _LIVE.pop(run.proc.pid, None)


def cleanup_all() -> None:
    for proc in list(_LIVE.values()):
        _kill_group(proc, grace=2.0)
    _LIVE.clear()


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

DONE_LUA = r"""
-- appended by bench: report the run as one machine-readable line.
-- Percentiles: wrk's latency:percentile() returns 0 when its coordinated-omission
-- correction puts samples below the recorded minimum (it does with pipelining), so
-- they are computed here by walking the histogram (latency(i) = i-th distinct value
-- and its count) when that is cheap enough, which it is unless the spread is huge.
local function percentiles(latency, ps)
  local n = #latency
  local out = {}
  if n * (latency.max - latency.min + 1) > 3e8 then
    for k = 1, #ps do out[k] = latency:percentile(ps[k]) end
    return out
  end
  local vals, cnts, total = {}, {}, 0
  for i = 1, n do
    local v, c = latency(i)
    vals[i], cnts[i] = v, c
    total = total + c
  end
  local k, cum = 1, 0
  for i = 1, n do
    cum = cum + cnts[i]
    while k <= #ps and cum >= ps[k] / 100 * total do out[k] = vals[i]; k = k + 1 end
  end
  for j = k, #ps do out[j] = latency.max end
  return out
end

done = function(summary, latency, requests)
  local e = summary.errors
  local p = percentiles(latency, {50, 90, 99})
  io.write(string.format(
    "BENCHJSON {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
    "\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d," ..
    "\"p50\":%d,\"p90\":%d,\"p99\":%d,\"max\":%d,\"mean\":%.1f}\n",
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    p[1], p[2], p[3], latency.max, latency.mean))
end
"""


def wrk_argv(ctx: Ctx, port: int, conns: int, duration: int, script: Path,
             script_args: list[str], path: str = "/", scheme: str = "http") -> list[str]:
    argv = ["wrk", "-t1", f"-c{conns}", f"-d{duration}s", "--timeout", "2s", "-s", str(script),
            f"{scheme}://{HOST}:{port}{path}"]
    if script_args:
        argv += ["--"] + script_args
    return ctx.pin(LOAD_CPU, argv)


def run_wrk(ctx: Ctx, port: int, conns: int, duration: int, lua: str, lua_args: list[str],
            path: str = "/", scheme: str = "http") -> dict:
    script = ctx.tmp / f"wrk-{abs(hash(lua))}.lua"
    if not script.exists():
        script.write_text(lua + "\n" + DONE_LUA)
    argv = wrk_argv(ctx, port, conns, duration, script, lua_args, path, scheme)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=duration + 60)
    except subprocess.TimeoutExpired:
        raise RunError("wrk did not finish in time")
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((l for l in p.stdout.splitlines() if l.startswith("BENCHJSON ")), None)
    if p.returncode != 0 or line is None:
        raise RunError(f"wrk failed (rc {p.returncode}): {(p.stderr or p.stdout).strip()[-300:]}")
    r = json.loads(line[len("BENCHJSON "):])
    r["wrk_cpu_s"] = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    r["argv"] = argv
    return r


# --------------------------------------------------------------------------
# Workloads
# --------------------------------------------------------------------------


class Column:
    def __init__(self, key: str, header: str, fmt, agg: str = "median", ratio: bool = True):
        self.key, self.header, self.fmt, self.agg, self.ratio = key, header, fmt, agg, ratio


def fmt_k(v: float) -> str:
    return f"{v / 1000:.1f}"


def fmt_int(v: float) -> str:
    return f"{v:.0f}"


def fmt_1(v: float) -> str:
    return f"{v:.1f}"


def fmt_2(v: float) -> str:
    return f"{v:.2f}" if v < 10 else f"{v:.1f}"


def fmt_mib(v: float) -> str:
    return f"{v / 1024:.1f}"


class Workload:
    """Base: subclasses implement run_once() and COLUMNS."""

    name = "?"
    description = "?"
    servers: list[str] = []
    route = "hello"
    transport = "plain"  # one of TRANSPORTS: how servers listen and how the readiness probe speaks
    columns: list[Column] = []

    def skip_reason(self, ctx: Ctx) -> str | None:
        """Non-None skips the whole workload with a note (feature missing, tool missing)."""
        return None

    def prepare(self, ctx: Ctx) -> None:
        pass

    def ready_probe(self, ctx: Ctx) -> dict:
        """start_server() keywords saying when a started server is ready: GET / → hello."""
        return {"check_body": HELLO_BODY, "path": "/", "exact": False}

    def run_once(self, ctx: Ctx, run: Running, first_round: bool) -> dict:
        """One measured run. Besides its figures the dict may hold "warnings" (a list of
        strings: notes under the table, prefixed with server and round) and "tls" (the
        negotiated protocol/cipher: one note per workload listing each server's)."""
        raise NotImplementedError

    def commands(self, ctx: Ctx) -> list[str]:
        return []


class WrkWorkload(Workload):
    """An HTTP/1.1 wrk workload: warm-up, then a measured run, per server per round."""

    def __init__(self, name: str, description: str, connections: int, servers: list[str],
                 lua: str = "", lua_args: list[str] | None = None, route: str = "hello", path: str = "/",
                 transport: str = "plain"):
        if transport not in ("plain", "tls-h1"):
            raise ValueError(f"wrk speaks HTTP/1.1 only, not {transport}")
        self.name, self.description, self.connections = name, description, connections
        self.servers, self.lua, self.lua_args = servers, lua, lua_args or []
        self.route, self.path, self.transport = route, path, transport
        self.scheme = "https" if transport == "tls-h1" else "http"
        self.columns = [
            Column("rps", "req/s k (median)", fmt_k),
            Column("rps", "req/s k (min–max)", None, agg="range", ratio=False),
            Column("p50", "p50 µs", fmt_int),
            Column("p99", "p99 µs", fmt_int),
            Column("cpu_us_per_req", "server CPU µs/req", fmt_2),
            Column("srv_cpu_pct", "server CPU %", fmt_int, ratio=False),
            Column("wrk_cpu_pct", "wrk CPU %", fmt_int, ratio=False),
            Column("rss_peak_kb", "peak RSS MiB", fmt_mib, agg="max"),
            Column("errors", "errors", fmt_int, agg="sum", ratio=False),
        ]

    def skip_reason(self, ctx):
        if not which("wrk"):
            return "wrk is not installed"
        if self.transport in TLS_TRANSPORTS and not which("openssl"):
            return "openssl is not installed (the test certificate)"
        return None

    def prepare(self, ctx):
        if self.transport in TLS_TRANSPORTS:
            ensure_tls_cert(ctx)

    def run_once(self, ctx, run, first_round):
        tls = tls_session_info(run.port) if self.transport in TLS_TRANSPORTS else None
        if ctx.warmup > 0:
            run_wrk(ctx, run.port, self.connections, ctx.warmup, self.lua, self.lua_args, self.path, self.scheme)
        b0, t0 = cpu_busy_ticks(), tree_ticks(run.pid)
        r = run_wrk(ctx, run.port, self.connections, ctx.duration, self.lua, self.lua_args, self.path,
                    self.scheme)
        t1, b1 = tree_ticks(run.pid), cpu_busy_ticks()
        secs = r["duration_us"] / 1e6
        reqs = max(r["requests"], 1)
        cpu_s = (t1 - t0) / CLK_TCK
        # CPU used meanwhile by anything but the server and wrk: a noisy-neighbour gauge
        other_s = max(0.0, (b1 - b0) / CLK_TCK - cpu_s - r["wrk_cpu_s"])
        self._last_wrk = r["argv"]
        out = {"tls": tls} if tls else {}
        return out | {
            "requests": r["requests"],
            "bytes_read": r["bytes"],
            "rps": r["requests"] / secs,
            "p50": r["p50"], "p99": r["p99"], "max": r["max"],
            "cpu_us_per_req": cpu_s * 1e6 / reqs,
            "srv_cpu_pct": 100 * cpu_s / secs,
            "wrk_cpu_pct": 100 * r["wrk_cpu_s"] / secs,
            "other_cpu_pct": 100 * other_s / secs,
            "rss_peak_kb": tree_kb(run.pid, "VmHWM"),
            "errors": r["connect"] + r["read"] + r["write"] + r["status"] + r["timeout"],
            "error_detail": {k: r[k] for k in ("connect", "read", "write", "status", "timeout")},
        }

    def commands(self, ctx):
        script = "<lua script + done() reporter>"
        argv = wrk_argv(ctx, 0, self.connections, ctx.duration, Path(script), self.lua_args, self.path,
                        self.scheme)
        out = [" ".join(argv).replace(f"{HOST}:0", f"{HOST}:PORT") + (
                   "  (the Lua script is in bench/workloads/" + self.name + ".py)" if self.lua else ""),
               f"warm-up: the same for {ctx.warmup} s before each measured run"]
        if self.transport in TLS_TRANSPORTS:
            out += [f"$TLS: the run's certificate, made once per run: {TLS_CERT_CMD}",
                    f"negotiated TLS parameters: openssl s_client -connect {HOST}:PORT -servername localhost "
                    "(OpenSSL's default client offer, as wrk's), once per run before the warm-up"]
        return out


def fmt_mibps(v: float) -> str:
    return f"{v:.0f}"


class StaticWorkload(WrkWorkload):
    """GET of one fixture file (STATIC_FILES) on route "static", keep-alive, wrk -t1.

    The fixtures are written once per run into Ctx.fixtures, which every server serves.
    Ready means GET `path` returns exactly the fixture. A run whose wrk read fewer bytes
    than requests × file size (a server answering something else) fails. With
    `throughput`, a "MiB/s" column (req/s × file size, bodies only) follows req/s."""

    def __init__(self, name: str, description: str, connections: int, servers: list[str], path: str,
                 throughput: bool = False):
        super().__init__(name=name, description=description, connections=connections, servers=servers,
                         route="static", path=path)
        self.size = STATIC_FILES[path]
        if throughput:
            self.columns.insert(2, Column("mibps", "MiB/s (median)", fmt_mibps))
            self.summary_columns = [("mibps", "MiB/s", fmt_mibps), ("cpu_us_per_req", "µs/req", fmt_2)]

    def prepare(self, ctx):
        ensure_fixtures(ctx)

    def ready_probe(self, ctx):
        return {"check_body": fixture_bytes(self.path), "path": self.path, "exact": True}

    def run_once(self, ctx, run, first_round):
        r = super().run_once(ctx, run, first_round)
        reqs = max(r["requests"], 1)
        r["bytes_per_resp"] = r["bytes_read"] / reqs
        if r["requests"] and r["bytes_per_resp"] < self.size:
            raise RunError(f"wrk read {r['bytes_per_resp']:.0f} B per response, less than the "
                           f"{self.size} B of {self.path}")
        r["mibps"] = r["rps"] * self.size / (1 << 20)
        return r

    def commands(self, ctx):
        # (results files put each of these lines in backticks: no backticks inside)
        files = ", ".join(f"{p[1:]} ({n} B)" for p, n in STATIC_FILES.items())
        return super().commands(ctx) + [
            f"$FIXTURES: a directory written once per run with {files} of fixed pseudo-random bytes "
            '(random.Random("skitai-bench/<name>").randbytes(size)), served by every server']


# --------------------------------------------------------------------------
# h2load (HTTP/2)
# --------------------------------------------------------------------------

# h2load prints these as its measured phase (after --warm-up-time) starts and ends; the
# runner reads h2load's output as it comes and samples the server's and h2load's CPU
# ticks at these two lines, so the CPU figures cover exactly the measured phase.
H2LOAD_START = "Main benchmark duration is started"
H2LOAD_END = "Main benchmark duration is over"


def h2load_argv(ctx: Ctx, port: int, conns: int, streams: int, duration: int, warmup: int,
                scheme: str, path: str = "/") -> list[str]:
    argv = ["h2load", "-t1", f"-c{conns}", f"-m{streams}", "-D", str(duration)]
    if warmup > 0:
        argv.append(f"--warm-up-time={warmup}")
    return ctx.pin(LOAD_CPU, argv + [f"{scheme}://{HOST}:{port}{path}"])


def _h2load_us(v: str) -> float:
    """h2load's time figures ("545us", "5.83ms", "1.20s") in µs."""
    for unit, mul in (("us", 1.0), ("ms", 1e3), ("s", 1e6)):
        if v.endswith(unit):
            return float(v[:-len(unit)]) * mul
    raise ValueError(f"h2load time {v!r}")


def parse_h2load(out: str) -> dict:
    """The figures of h2load's final report (and the negotiated protocol / TLS lines)."""
    r: dict = {}
    for line in out.splitlines():
        line = line.strip()
        head, _, rest = line.partition(":")
        if line.startswith("finished in "):  # finished in 3.00s, 282000.00 req/s, 10.76MB/s
            r["rps"] = float(line.split(",")[1].split()[0])
        elif head == "requests":  # 564000 total, 564000 started, 564000 done, 564000 succeeded, 0 failed, ...
            for item in rest.split(","):
                n, key = item.split()
                r[key] = int(n)
        elif head == "status codes":  # 564000 2xx, 0 3xx, 0 4xx, 0 5xx
            for item in rest.split(","):
                n, key = item.split()
                r["status_" + key] = int(n)
        elif head == "traffic":  # 21.52MB (22562944) total, ...
            r["bytes"] = int(rest.split("(", 1)[1].split(")", 1)[0])
        elif head == "time for request":  # min max mean sd +/-sd
            f = rest.split()
            r["lat_min"], r["lat_max"], r["lat_mean"], r["lat_sd"] = (_h2load_us(x) for x in f[:4])
        elif head == "Application protocol":
            r["protocol"] = rest.strip()
        elif head in ("TLS Protocol", "Cipher", "Server Temp Key"):
            r[head] = rest.strip()
    return r


def _pid_ticks(pid: int) -> int:
    f = _stat_fields(pid)
    return int(f[11]) + int(f[12]) if f else 0


def run_sampled(argv: list[str], server_pid: int, start_mark: str, end_mark: str, timeout: float,
                keep=None) -> tuple[int, list[str], dict]:
    """Runs a load generator that prints `start_mark` / `end_mark` (substrings of a line)
    as its measured phase starts and ends, reading its output (stdout + stderr) as it
    comes; at each mark samples (monotonic time, server tree ticks, the generator's ticks,
    whole-machine busy ticks). Killed after `timeout` s. Returns (exit code, the output
    lines `keep` accepts (all without it), {"start": sample, "end": sample} as seen)."""
    import threading
    p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True)
    timer = threading.Timer(timeout, p.kill)
    timer.start()
    lines, marks = [], {}
    try:
        for line in p.stdout:
            for name, mark in (("start", start_mark), ("end", end_mark)):
                if mark in line and name not in marks:
                    marks[name] = (time.monotonic(), tree_ticks(server_pid), _pid_ticks(p.pid), cpu_busy_ticks())
            if keep is None or keep(line):
                lines.append(line)
        p.wait()
    finally:
        timer.cancel()
        if p.poll() is None:
            p.kill()
            p.wait()
    return p.returncode, lines, marks


def _sampled_deltas(marks: dict) -> dict:
    """run_sampled's two samples -> secs, srv_ticks, client_ticks, busy_ticks."""
    (m0, s0, c0, b0), (m1, s1, c1, b1) = marks["start"], marks["end"]
    return {"secs": m1 - m0, "srv_ticks": s1 - s0, "client_ticks": c1 - c0, "busy_ticks": b1 - b0}


def _exit_why(rc: int) -> str:
    return "was killed (timeout)" if rc == -signal.SIGKILL else f"rc {rc}"


def run_h2load(ctx: Ctx, server_pid: int, argv: list[str], timeout: float) -> dict:
    """Runs h2load, samples CPU ticks (server tree, h2load, whole machine) at the start and
    end of its measured phase, and returns its parsed report plus those deltas."""
    rc, lines, marks = run_sampled(argv, server_pid, H2LOAD_START, H2LOAD_END, timeout,
                                   keep=lambda line: not line.startswith("progress: "))
    out = "".join(lines)
    if rc != 0 or "start" not in marks or "end" not in marks or "finished in" not in out:
        raise RunError(f"h2load failed ({_exit_why(rc)}): {' | '.join(l.strip() for l in lines[-6:])}")
    r = parse_h2load(out)
    r.update(_sampled_deltas(marks), argv=argv)
    return r


class H2loadWorkload(Workload):
    """HTTP/2 with h2load: `h2load -t1 -cC -mM -D duration --warm-up-time=warmup` (one
    process: the warm-up is h2load's own, on the same connections), over h2c by prior
    knowledge or TLS with ALPN h2. CPU figures cover h2load's measured phase exactly (see
    run_h2load). h2load prints no latency percentiles: its mean and max per request are
    shown. A run with failed requests is flagged in the notes."""

    def __init__(self, name: str, description: str, servers: list[str], transport: str,
                 connections: int = 64, streams: int = 16, path: str = "/"):
        if transport not in ("h2c", "h2-tls"):
            raise ValueError(f"h2load workloads are h2c or h2-tls, not {transport}")
        self.name, self.description, self.servers = name, description, servers
        self.transport, self.connections, self.streams, self.path = transport, connections, streams, path
        self.scheme = "https" if transport == "h2-tls" else "http"
        self.columns = [
            Column("rps", "req/s k (median)", fmt_k),
            Column("rps", "req/s k (min–max)", None, agg="range", ratio=False),
            Column("lat_mean", "mean µs", fmt_int),
            Column("lat_max", "max µs", fmt_int),
            Column("cpu_us_per_req", "server CPU µs/req", fmt_2),
            Column("srv_cpu_pct", "server CPU %", fmt_int, ratio=False),
            Column("client_cpu_pct", "h2load CPU %", fmt_int, ratio=False),
            Column("rss_peak_kb", "peak RSS MiB", fmt_mib, agg="max"),
            Column("failed", "failed", fmt_int, agg="sum", ratio=False),
            Column("errored", "errored", fmt_int, agg="sum", ratio=False),
        ]

    def skip_reason(self, ctx):
        missing = [t for t in ("h2load", "curl") + (("openssl",) if self.transport == "h2-tls" else ())
                   if not which(t)]
        return f"not installed: {', '.join(missing)}" if missing else None

    def prepare(self, ctx):
        if self.transport in TLS_TRANSPORTS:
            ensure_tls_cert(ctx)

    def run_once(self, ctx, run, first_round):
        argv = h2load_argv(ctx, run.port, self.connections, self.streams, ctx.duration, ctx.warmup,
                           self.scheme, self.path)
        r = run_h2load(ctx, run.pid, argv, timeout=ctx.warmup + ctx.duration + 60)
        want = "h2c" if self.transport == "h2c" else "h2"
        if r.get("protocol") != want:
            raise RunError(f"h2load negotiated {r.get('protocol', 'no protocol')!r}, not {want}")
        ok = r.get("succeeded", 0)
        if not ok:
            raise RunError(f"h2load: no request succeeded ({r.get('failed', 0)} failed, "
                           f"{r.get('errored', 0)} errored)")
        secs = max(r["secs"], 1e-9)
        cpu_s = r["srv_ticks"] / CLK_TCK
        client_s = r["client_ticks"] / CLK_TCK
        other_s = max(0.0, r["busy_ticks"] / CLK_TCK - cpu_s - client_s)
        out = {
            "requests": ok,
            "rps": r["rps"],
            "lat_mean": r.get("lat_mean"), "lat_max": r.get("lat_max"), "lat_sd": r.get("lat_sd"),
            "cpu_us_per_req": cpu_s * 1e6 / ok,
            "srv_cpu_pct": 100 * cpu_s / secs,
            "client_cpu_pct": 100 * client_s / secs,
            "other_cpu_pct": 100 * other_s / secs,
            "rss_peak_kb": tree_kb(run.pid, "VmHWM"),
            "failed": r.get("failed", 0), "errored": r.get("errored", 0), "timeout": r.get("timeout", 0),
            "h2load": {k: v for k, v in r.items() if k != "argv"},
        }
        out = {k: v for k, v in out.items() if v is not None}  # no latency line: "–" in the table
        if self.transport == "h2-tls":
            out["tls"] = " ".join(x for x in (r.get("TLS Protocol", "?"), r.get("Cipher", "?"),
                                              _kx_name(r.get("Server Temp Key", ""))) if x)
        if out["failed"] or out["errored"]:
            out["warnings"] = [f"h2load: {out['failed']} failed, {out['errored']} errored "
                               f"({out['timeout']} timed out) of {r.get('started', '?')} started, "
                               f"{ok} succeeded: FAILURES, do not trust this run's figures"]
        return out

    def commands(self, ctx):
        argv = h2load_argv(ctx, 0, self.connections, self.streams, ctx.duration, ctx.warmup, self.scheme,
                           self.path)
        out = [" ".join(argv).replace(f"{HOST}:0", f"{HOST}:PORT"),
               f"warm-up: h2load's own --warm-up-time ({ctx.warmup} s, same connections); server and h2load "
               "CPU are sampled when h2load prints that its measured phase starts and ends"]
        if self.transport in TLS_TRANSPORTS:
            out.append(f"$TLS: the run's certificate, made once per run: {TLS_CERT_CMD}")
        return out


# --------------------------------------------------------------------------
# ws-load (WebSocket echo)
# --------------------------------------------------------------------------

# bench/peers/ws-load prints these as its measured phase (after --warmup) starts and
# ends: the runner samples CPU ticks there, as for h2load.
WS_LOAD_START = "ws-load: measured phase started"
WS_LOAD_END = "ws-load: measured phase over"


def ws_load_argv(ctx: Ctx, port: int, path: str, conns: int, duration: int, warmup: int, size: int,
                 binary: bool) -> list[str]:
    argv = [str(peer_bin("ws-load")), "--url", f"ws://{HOST}:{port}{path}", "--connections", str(conns),
            "--duration", str(duration), "--warmup", str(warmup), "--size", str(size)]
    return ctx.pin(LOAD_CPU, argv + (["--binary"] if binary else []))


class WsLoadWorkload(Workload):
    """WebSocket echo with bench/peers/ws-load on route "ws" (skitai: examples/chat at
    `path`): C connections, each closed-loop (send one message of `size` bytes, wait for
    its echo, check it), one process whose warm-up is its own, on the same connections.
    CPU figures cover ws-load's measured phase exactly (run_sampled); a round trip is one
    message in and one out, so server CPU µs/msg = server CPU ÷ round trips. Ready means
    a real handshake and one echo on `path` (ws_echo_check)."""

    route = "ws"
    peer_clients = ("ws-load",)  # load generators from bench/peers that `bench/run` builds

    def __init__(self, name: str, description: str, servers: list[str], connections: int = 64,
                 size: int = 64, binary: bool = False, path: str = "/ws/echo"):
        self.name, self.description, self.servers = name, description, servers
        self.connections, self.size, self.binary, self.path = connections, size, binary, path
        self.columns = [
            Column("rps", "round trips/s k (median)", fmt_k),
            Column("rps", "round trips/s k (min–max)", None, agg="range", ratio=False),
            Column("p50", "p50 µs", fmt_int),
            Column("p99", "p99 µs", fmt_int),
            Column("cpu_us_per_msg", "server CPU µs/msg", fmt_2),
            Column("srv_cpu_pct", "server CPU %", fmt_int, ratio=False),
            Column("client_cpu_pct", "ws-load CPU %", fmt_int, ratio=False),
            Column("rss_peak_kb", "peak RSS MiB", fmt_mib, agg="max"),
            Column("errors", "errors", fmt_int, agg="sum", ratio=False),
        ]
        self.summary_columns = [("rps", "rt/s k", fmt_k), ("cpu_us_per_msg", "µs/msg", fmt_2)]

    def skip_reason(self, ctx):
        if not peer_bin("ws-load").exists():
            return "the load generator bench/peers/ws-load is not built"
        return None

    def ready_probe(self, ctx):
        return {"probe": lambda port, timeout: ws_echo_check(port, self.path, timeout), "path": self.path}

    def run_once(self, ctx, run, first_round):
        argv = ws_load_argv(ctx, run.port, self.path, self.connections, ctx.duration, ctx.warmup, self.size,
                            self.binary)
        rc, lines, marks = run_sampled(argv, run.pid, WS_LOAD_START, WS_LOAD_END,
                                       timeout=ctx.warmup + ctx.duration + 60)
        report = next((l for l in reversed(lines) if l.startswith("{")), None)
        if report is None or "start" not in marks or "end" not in marks:
            raise RunError(f"ws-load failed ({_exit_why(rc)}): {' | '.join(l.strip() for l in lines[-6:])}")
        r = json.loads(report)
        if not r["round_trips"]:
            raise RunError(f"ws-load: no round trip in the measured phase ({r['errors']} errors, "
                           f"{r['connections_failed']} connections failed): "
                           f"{' | '.join(l.strip() for l in lines[-6:])}")
        d = _sampled_deltas(marks)
        secs = max(d["secs"], 1e-9)
        cpu_s = d["srv_ticks"] / CLK_TCK
        client_s = d["client_ticks"] / CLK_TCK
        other_s = max(0.0, d["busy_ticks"] / CLK_TCK - cpu_s - client_s)
        out = {
            "requests": r["round_trips"],
            "rps": r["per_sec"],
            "p50": r["p50_us"], "p99": r["p99_us"], "max": r["max_us"], "mean": r.get("mean_us"),
            "cpu_us_per_msg": cpu_s * 1e6 / r["round_trips"],
            "srv_cpu_pct": 100 * cpu_s / secs,
            "client_cpu_pct": 100 * client_s / secs,
            "other_cpu_pct": 100 * other_s / secs,
            "rss_peak_kb": tree_kb(run.pid, "VmHWM"),
            "errors": r["errors"] + r["connections_failed"],
            "ws_load": r,
        }
        if out["errors"]:
            msgs = [l.strip() for l in lines if l.startswith("ws-load: ")
                    and l.strip() not in (WS_LOAD_START, WS_LOAD_END)][:3]
            out["warnings"] = [f"ws-load: {r['errors']} errors, {r['connections_failed']} of {self.connections} "
                               f"connections failed: FAILURES, do not trust this run's figures"
                               + (f" ({' | '.join(msgs)})" if msgs else "")]
        return out

    def commands(self, ctx):
        argv = ws_load_argv(ctx, 0, self.path, self.connections, ctx.duration, ctx.warmup, self.size,
                            self.binary)
        return [" ".join(argv).replace(f"{HOST}:0", f"{HOST}:PORT").replace(str(REPO) + "/", ""),
                f"warm-up: ws-load's own --warmup ({ctx.warmup} s, same connections); server and ws-load CPU "
                "are sampled when ws-load prints that its measured phase starts and ends",
                f"readiness: a WebSocket handshake on {self.path} and one echoed text message (Python, stdlib)"]


# --------------------------------------------------------------------------
# Running a workload: interleaved rounds
# --------------------------------------------------------------------------


class WorkloadResult:
    def __init__(self, workload: Workload):
        self.workload = workload
        self.runs: dict[str, list[dict]] = {}
        self.argv: dict[str, str] = {}
        self.configs: dict[str, str] = {}
        self.notes: list[str] = []
        self.skipped: str | None = None


def run_workload(ctx: Ctx, wl: Workload) -> WorkloadResult:
    res = WorkloadResult(wl)
    reason = wl.skip_reason(ctx)
    if reason:
        res.skipped = reason
        ctx.note(f"workload {wl.name} skipped: {reason}")
        return res
    wl.prepare(ctx)
    active: list[Server] = []
    for name in wl.servers:
        if ctx.server_filter and name not in ctx.server_filter:
            continue
        srv = SERVERS[name]
        if name in ctx.server_skips:
            res.notes.append(f"{name} skipped: {ctx.server_skips[name]}")
            continue
        try:
            (ctx.tmp / "probe").mkdir(exist_ok=True)
            srv.argv(ctx, 0, wl.route, ctx.tmp / "probe", wl.transport)
        except Skip as e:
            res.notes.append(f"{name} skipped: {e}")
            continue
        except OSError:
            pass
        active.append(srv)
    failed: set[str] = set()
    for rnd in range(ctx.rounds):
        for srv in active:  # interleaved: A B C A B C ...
            if srv.name in failed:
                continue
            log(f"{wl.name}: round {rnd + 1}/{ctx.rounds}: {srv.name}")
            run = None
            try:
                wait_for_quiet(ctx)
                run = start_server(ctx, srv, wl.route, transport=wl.transport, **wl.ready_probe(ctx))
                res.argv[srv.name] = run.shown_argv
                extra = srv.config_text(run)
                if extra:
                    res.configs[srv.name] = extra
                r = wl.run_once(ctx, run, rnd == 0)
                if run.proc.poll() is not None:
                    raise RunError(f"{srv.name} died during the run: {run.log_tail()}")
                for w in r.pop("warnings", []):
                    res.notes.append(f"{srv.name}, round {rnd + 1}: {w}")
                res.runs.setdefault(srv.name, []).append(r)
                if r.get("other_cpu_pct", 0) > NOISY_PCT:
                    res.notes.append(f"{srv.name}, round {rnd + 1}: noisy machine: other processes used "
                                     f"{r['other_cpu_pct']:.0f}% of a CPU during the measured run")
            except (RunError, Skip, OSError, ValueError, KeyError, subprocess.SubprocessError) as e:
                res.notes.append(f"{srv.name}, round {rnd + 1}: {e}")
                log(f"  failed: {e}")
                if rnd == 0 and not res.runs.get(srv.name):
                    failed.add(srv.name)  # do not retry a server that cannot even start
            finally:
                if run:
                    stop_server(run)
    tls = {n: sorted({r["tls"] for r in runs if r.get("tls")}) for n, runs in res.runs.items()}
    tls = {n: v for n, v in tls.items() if v}
    if tls:
        same = len({tuple(v) for v in tls.values()}) == 1
        res.notes.append("negotiated TLS: " + "; ".join(f"{n}: {', '.join(v)}" for n, v in tls.items())
                         + ("" if same else " — the servers DIFFER: compare CPU figures with care"))
    return res


# --------------------------------------------------------------------------
# Tables
# --------------------------------------------------------------------------


def aggregate(runs: list[dict], col: Column):
    vals = [r[col.key] for r in runs if col.key in r]
    if not vals:
        return None
    if col.agg == "median":
        return statistics.median(vals)
    if col.agg == "max":
        return max(vals)
    if col.agg == "sum":
        return sum(vals)
    if col.agg == "range":
        return (min(vals), max(vals))
    raise ValueError(col.agg)


def fmt_cell(col: Column, v) -> str:
    if v is None:
        return "–"
    if col.agg == "range":
        lo, hi = v
        return f"{fmt_k(lo)}–{fmt_k(hi)}"
    return col.fmt(v)


def result_table(res: WorkloadResult) -> str:
    wl = res.workload
    cols = wl.columns
    names = [n for n in wl.servers if res.runs.get(n)]
    lines = ["| server | rounds | " + " | ".join(c.header for c in cols) + " |",
             "|---|---:|" + "---:|" * len(cols)]
    agg = {n: [aggregate(res.runs[n], c) for c in cols] for n in names}
    for n in names:
        lines.append(f"| {n} | {len(res.runs[n])} | " +
                     " | ".join(fmt_cell(c, v) for c, v in zip(cols, agg[n])) + " |")
    skitais = [n for n in names if SERVERS[n].is_skitai]
    peers = [n for n in names if not SERVERS[n].is_skitai]
    for s in skitais:
        for p in peers:
            cells = []
            for c, a, b in zip(cols, agg[s], agg[p]):
                if not c.ratio or a is None or b is None or c.agg == "range":
                    cells.append("")
                elif b == 0:
                    cells.append("–")
                else:
                    cells.append(f"{a / b:.2f}×")
            lines.append(f"| {s} ÷ {p} | | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def notes_block(res: WorkloadResult) -> str:
    out = []
    if res.skipped:
        out.append(f"- workload skipped: {res.skipped}")
    for n in res.notes:
        out.append(f"- {n}")
    return "\n".join(out)


def summary_table(results: list[WorkloadResult]) -> str:
    """Cross-workload summary: the headline figures per server."""
    heads, cells = [], {}
    order: list[str] = []
    for res in results:
        if res.skipped or not res.runs:
            continue
        for n in res.workload.servers:
            if res.runs.get(n) and n not in order:
                order.append(n)
        for key, label, fmt in getattr(res.workload, "summary_columns",
                                       [("rps", "req/s k", fmt_k), ("cpu_us_per_req", "µs/req", fmt_2)]):
            heads.append(f"{res.workload.name} {label}")
            col = Column(key, "", fmt)
            for n in res.workload.servers:
                if res.runs.get(n):
                    v = aggregate(res.runs[n], col)
                    cells[(n, len(heads) - 1)] = fmt(v) if v is not None else "–"
    if not heads:
        return ""
    order = [n for n in SERVERS if n in order]
    lines = ["| server | " + " | ".join(heads) + " |", "|---|" + "---:|" * len(heads)]
    for n in order:
        lines.append(f"| {n} | " + " | ".join(cells.get((n, i), "–") for i in range(len(heads))) + " |")
    return "\n".join(lines)


def machine_block(info: dict[str, str]) -> str:
    return "\n".join(f"- {k}: {v}" for k, v in info.items())


def server_block(res: WorkloadResult) -> str:
    out = []
    for n in res.workload.servers:
        if n in res.argv:
            out.append(f"- {n} ({SERVERS[n].describe(res.workload.route, res.workload.transport)}): "
                       f"`{res.argv[n]}`")
    for n, text in res.configs.items():
        where = "`$WORKDIR` is a fresh temp dir per run" + (
            ", `$FIXTURES` the run's fixture directory" if "$FIXTURES" in text else "") + (
            ", `$TLS` the run's certificate directory" if "$TLS" in text else "")
        out += ["", f"{n} config ({where}):", "", "```nginx" if n == "nginx" else "```toml" if SERVERS[n].is_skitai else "```",
                text.rstrip(), "```", ""]
    return "\n".join(out)


def write_result(ctx: Ctx, res: WorkloadResult, info: dict[str, str], outdir: Path) -> Path:
    outdir.mkdir(parents=True, exist_ok=True)
    wl = res.workload
    path = outdir / f"{ctx.date}-{wl.name}.md"
    cmds = "\n".join(f"- `{c}`" for c in wl.commands(ctx))
    body = [f"# {wl.name}: {wl.description}", "",
            f"Run by `bench/run` on {info['date']}.", "",
            "## Machine", machine_block(info), "",
            "## Commands", server_block(res), cmds, "",
            "## Results", result_table(res) if res.runs else "_no server ran_", ""]
    nb = notes_block(res)
    if nb:
        body += ["## Notes", nb, ""]
    path.write_text("\n".join(body))
    raw = {"workload": wl.name, "machine": info, "runs": res.runs, "argv": res.argv, "configs": res.configs,
           "notes": res.notes, "skipped": res.skipped}
    (outdir / f"{ctx.date}-{wl.name}.json").write_text(json.dumps(raw, indent=1, default=str))
    return path
