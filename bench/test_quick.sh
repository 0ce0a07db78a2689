#!/usr/bin/env bash
# Smoke test of the bench suite: `bench/run --quick plaintext` must run and print a
# well-formed markdown table (header, one row per server that ran, numeric cells,
# ratio rows when skitai ran). No timing assertions. Extra args go to bench/run,
# e.g. `bench/test_quick.sh --no-build`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="$(mktemp)"
trap 'rm -f "$out"' EXIT

"$here/run" --quick "$@" plaintext >"$out"
cat "$out"

python3 - "$out" <<'PY'
import re, sys

text = open(sys.argv[1]).read()
passed = failed = 0

def check(ok, what):
    global passed, failed
    if ok:
        passed += 1
    else:
        failed += 1
        print(f"FAIL: {what}")

SERVERS = ["skitai-uring", "skitai-epoll", "nginx", "hyper", "may-minihttp",
           "monoio-raw-uring", "monoio-raw-epoll", "python-skitai"]
section = text.split("## plaintext", 1)
check(len(section) == 2, "a '## plaintext' section is printed")
body = section[1] if len(section) == 2 else ""
rows = [l for l in body.splitlines() if l.startswith("|")]
check(len(rows) >= 3, "the table has a header, a separator and at least one row")
if len(rows) >= 3:
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    check(header[:3] == ["server", "rounds", "req/s k (median)"], f"header row: {header}")
    for need in ("p50 µs", "p99 µs", "server CPU µs/req", "peak RSS MiB", "errors"):
        check(need in header, f"header has '{need}'")
    check(re.fullmatch(r"\|(-+:?\|)+", rows[1].replace("---:", "---:")) is not None
          and rows[1].count("|") == rows[0].count("|"), "separator row matches the header")
    num = re.compile(r"^\d+(\.\d+)?$")
    rng = re.compile(r"^\d+(\.\d+)?–\d+(\.\d+)?$")
    ratio = re.compile(r"^(\d+(\.\d+)?×|–)?$")
    ran = []
    for r in rows[2:]:
        cells = [c.strip() for c in r.strip("|").split("|")]
        check(len(cells) == len(header), f"row has {len(header)} cells: {r}")
        name = cells[0]
        if "÷" in name:
            a, b = [x.strip() for x in name.split("÷")]
            check(a in SERVERS and b in SERVERS, f"ratio row names servers: {name}")
            check(all(ratio.match(c) for c in cells[1:]), f"ratio cells are N.NN× or empty: {r}")
            continue
        check(name in SERVERS, f"known server: {name}")
        ran.append(name)
        for h, c in zip(header[1:], cells[1:]):
            pat = rng if "min–max" in h else num
            check(bool(pat.match(c)), f"{name}: '{h}' is numeric: {c!r}")
    check(len(ran) == len(set(ran)), "one row per server")
    check("nginx" in ran, "nginx ran")
    # every server either ran or was skipped with a note
    for s in SERVERS:
        check(s in ran or re.search(rf"^- {re.escape(s)}[ ,].*", body, re.M) is not None,
              f"{s} ran or has a skip note")
    if any(s.startswith("skitai-") for s in ran):
        check(any("÷" in r for r in rows), "ratio rows for skitai are printed")
print(f"{passed} passed, {failed} failed")
sys.exit(1 if failed else 0)
PY
