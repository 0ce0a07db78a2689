//! Shared state across shards and processes, through the `counter` example.
//!
//! What is covered, over real sockets against real server processes:
//! - `incgs`: concurrent increments from many connections (spread over the
//!   shards by SO_REUSEPORT) each return a unique new value, and the total is exact;
//! - broadcasts: every shard handles each `hello` exactly once, late duplicates
//!   never arrive, and with a tiny bus every broadcast is either delivered or
//!   counted as dropped for that shard (`[state] bus_capacity`);
//! - `setlu`/`getlu`: the instance start time before any change, strictly
//!   increasing stored times, the latest of several keys, unknown keys (404),
//!   one `model-changed:*` event per change on every shard;
//! - `status` (the example's and the `skitai` binary's) read from outside the
//!   running process: values, shards, drivers, pid, and that reading does not
//!   disturb the server;
//! - the state file's life cycle: removed on a graceful exit, left stale by a
//!   crash (`status` says so, the next start replaces it with fresh values),
//!   a second instance of the same name refused while the first runs;
//! - `[state]` configuration errors, which name the key and exit 2.
//!
//! Waits on anything asynchronous (bus delivery, process exit) poll with a
//! deadline; none of the bounds is a performance assertion.

#[macro_use]
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::*;

/// Upper bound for events to reach every shard (debug build, busy 2-core machine).
const DELIVERY_BOUND: Duration = Duration::from_secs(10);
/// Upper bound for a server to exit after a signal.
const EXIT_BOUND: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// The `counter` example on `io` with `shards` shards, in a state directory of its own.
fn counter(io: Io, shards: usize) -> ServerBuilder {
    ServerBuilder::new(example_bin("counter")).io(io).shards(shards)
}

/// A `[state]` section pointing the instance at `dir` (it wins over `SKITAI_STATE_DIR`):
/// how a second server shares the state directory of an earlier one.
fn state_dir_config(dir: &Path) -> String {
    format!("[state]\ndir = {:?}\n", dir.to_str().expect("UTF-8 temp dir"))
}

/// Where the instance `name` keeps its state file in `dir`.
fn state_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("skitai-{name}.state"))
}

/// One request on a fresh connection (so that requests spread over the shards).
fn request(addr: SocketAddr, path: &str) -> Response {
    let mut c = Conn::connect(addr);
    c.send(get(path));
    c.read_response()
}

/// The body of `r` as JSON, after checking the Content-Type.
fn json_body(r: &Response) -> Value {
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("application/json"), "Content-Type {ct:?} for {:?}", r.body_str());
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("body is not JSON ({e}): {:?}", r.body_str()))
}

/// `GET path` on a fresh connection; asserts 200 and returns the JSON body.
fn get_json(addr: SocketAddr, path: &str) -> Value {
    let r = request(addr, path);
    assert_eq!(r.status, 200, "GET {path}: {r:?}");
    json_body(&r)
}

/// A JSON field that must be an unsigned integer.
fn u64_field(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("{key:?} is not an unsigned integer in {v}"))
}

/// A JSON field that must be a signed integer.
fn i64_field(v: &Value, key: &str) -> i64 {
    v[key].as_i64().unwrap_or_else(|| panic!("{key:?} is not an integer in {v}"))
}

/// A per-shard JSON object (`{"0": n, "1": m, ...}`) as shard id → count.
fn per_shard(v: &Value) -> BTreeMap<usize, u64> {
    let obj = v.as_object().unwrap_or_else(|| panic!("not an object: {v}"));
    obj.iter()
        .map(|(k, n)| {
            let id = k.parse().unwrap_or_else(|_| panic!("key {k:?} is not a shard id in {v}"));
            (id, n.as_u64().unwrap_or_else(|| panic!("count for shard {k} is not a number in {v}")))
        })
        .collect()
}

/// `{0: n, 1: n, ..}` for `shards` shards.
fn all_shards(shards: usize, n: u64) -> BTreeMap<usize, u64> {
    (0..shards).map(|i| (i, n)).collect()
}

/// Calls `probe` until it returns `Ok`; panics with its last `Err` once `bound` has passed.
fn poll<T>(bound: Duration, what: &str, mut probe: impl FnMut() -> Result<T, String>) -> T {
    let deadline = Instant::now() + bound;
    loop {
        match probe() {
            Ok(v) => return v,
            Err(last) if Instant::now() >= deadline => panic!("{what}: not reached within {bound:?}; last: {last}"),
            Err(_) => thread::sleep(Duration::from_millis(25)),
        }
    }
}

/// Runs `bin status [args]` against the state directory `dir` (bounded).
fn run_status(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    run_bounded(
        Command::new(bin)
            .arg("status")
            .args(args)
            .env(STATE_DIR_ENV, dir)
            .env_remove("RUST_LOG")
            // No ./skitai.toml can change the instance name.
            .current_dir(dir),
    )
}

/// `(exit code, stdout, stderr)` of a finished command.
fn outcome(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `counter status --json` for `dir`: exit code and the parsed report.
fn counter_status_json(dir: &Path) -> (Option<i32>, Value) {
    let out = run_status(&example_bin("counter"), dir, &["--json"]);
    let (code, stdout, stderr) = outcome(&out);
    let v = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("status --json printed no JSON ({e}): {stdout:?}\nstderr: {stderr}"));
    (code, v)
}

/// The shard table of a status report as (driver, received, dropped) per shard.
fn status_shards(v: &Value) -> Vec<(String, u64, u64)> {
    let shards = v["shards"].as_array().unwrap_or_else(|| panic!("no shards array in {v}"));
    shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            assert_eq!(s["id"].as_u64(), Some(i as u64), "shard entries in id order: {v}");
            let driver = s["driver"].as_str().unwrap_or_else(|| panic!("shard {i} has no driver: {v}")).to_owned();
            (driver, u64_field(s, "broadcasts_received"), u64_field(s, "bus_dropped"))
        })
        .collect()
}

/// Polls `counter status --json` until every shard has handled `received`
/// broadcasts and reports its driver (shards record it once started).
fn wait_status_settled(dir: &Path, shards: usize, received: u64) -> Value {
    poll(DELIVERY_BOUND, "status: every shard started and handled the broadcasts", || {
        let (code, v) = counter_status_json(dir);
        if code != Some(0) {
            return Err(format!("exit {code:?}: {v}"));
        }
        let table = status_shards(&v);
        let settled = table.len() == shards && table.iter().all(|(d, r, _)| d.as_str() != "starting" && *r == received);
        if settled { Ok(v) } else { Err(v.to_string()) }
    })
}

/// Asserts that `server` still answers `/get` with `value`.
fn assert_get(server: &Server, value: i64) {
    let v = get_json(server.addr(), "/get");
    assert_eq!(i64_field(&v, "value"), value, "/get after the status calls: {v}");
}

// ---------------------------------------------------------------------------
// incgs across shards
// ---------------------------------------------------------------------------

both_drivers! {
    /// 2000 `/incr` from 8 threads over 40 fresh connections on 4 shards: more than
    /// one shard serves them, every increment returns a distinct new value (the
    /// values are exactly 1..=2000), and `/get` then reads 2000.
    fn increments_agree_across_shards(io) {
        const THREADS: usize = 8;
        const CONNS_PER_THREAD: usize = 5;
        const PER_CONN: usize = 50;
        let total = THREADS * CONNS_PER_THREAD * PER_CONN;
        let server = counter(io, 4).start();
        let addr = server.addr();

        let answers: Vec<(u64, i64)> = thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(move || {
                        let mut seen = Vec::with_capacity(CONNS_PER_THREAD * PER_CONN);
                        for _ in 0..CONNS_PER_THREAD {
                            let mut c = Conn::connect(addr);
                            for _ in 0..PER_CONN {
                                c.send(get("/incr"));
                                let r = c.read_response();
                                assert_eq!(r.status, 200, "/incr: {r:?}");
                                let v = json_body(&r);
                                seen.push((u64_field(&v, "shard"), i64_field(&v, "value")));
                            }
                        }
                        seen
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("client thread panicked")).collect()
        });

        assert_eq!(answers.len(), total);
        let shards: BTreeSet<u64> = answers.iter().map(|(s, _)| *s).collect();
        assert!(shards.iter().all(|s| *s < 4), "shard ids out of range: {shards:?}");
        assert!(shards.len() >= 2, "40 connections all went to one shard ({shards:?}): not a cross-shard test");

        let mut values: Vec<i64> = answers.iter().map(|(_, v)| *v).collect();
        values.sort_unstable();
        let expected: Vec<i64> = (1..=total as i64).collect();
        if values != expected {
            let dups: Vec<_> = values.windows(2).filter(|w| w[0] == w[1]).map(|w| w[0]).take(10).collect();
            panic!(
                "the /incr values are not exactly 1..={total}: min {:?}, max {:?}, duplicates (first 10) {dups:?}",
                values.first(),
                values.last()
            );
        }

        // Every shard reads the same total.
        for _ in 0..8 {
            let v = get_json(addr, "/get");
            assert_eq!(i64_field(&v, "value"), total as i64, "/get from shard {}: {v}", v["shard"]);
        }
    }
}

both_drivers! {
    /// The two factory adapters on 4 shards, over 60 fresh connections (so
    /// several shards serve): `per_shard` built each shard its own handler
    /// (`/whoami` always names the shard serving it), and one `shared`
    /// handler counts every request of every shard (`/tally` answers exactly
    /// 1..=60 between them).
    fn per_shard_and_shared_handlers(io) {
        const CONNS: u64 = 60;
        let server = counter(io, 4).start();
        let addr = server.addr();
        let mut tally_shards = BTreeSet::new();
        let mut totals = Vec::new();
        let mut whoami_shards = BTreeSet::new();
        for _ in 0..CONNS {
            let v = get_json(addr, "/whoami");
            assert_eq!(v["built_for"], v["shard"], "a handler served a shard it was not built for: {v}");
            whoami_shards.insert(u64_field(&v, "shard"));
            let v = get_json(addr, "/tally");
            tally_shards.insert(u64_field(&v, "shard"));
            totals.push(u64_field(&v, "total"));
        }
        assert!(whoami_shards.len() >= 2, "60 connections all went to one shard ({whoami_shards:?})");
        assert!(tally_shards.len() >= 2, "60 /tally connections all went to one shard ({tally_shards:?})");
        // Sequential requests: the one shared instance counted each once, in order.
        assert_eq!(totals, (1..=CONNS).collect::<Vec<_>>());
    }
}

// ---------------------------------------------------------------------------
// Broadcasts
// ---------------------------------------------------------------------------

both_drivers! {
    /// 25 `/hello-all` sent from fresh connections (several shards send): every one
    /// of the 4 shards handles exactly 25 `hello` events, no late duplicates
    /// follow, and `status` counts 25 broadcasts received per shard.
    fn broadcast_reaches_every_shard_exactly_once(io) {
        const SHARDS: usize = 4;
        const K: u64 = 25;
        let server = counter(io, SHARDS).start();
        let addr = server.addr();

        let mut senders = BTreeSet::new();
        for _ in 0..K {
            let v = get_json(addr, "/hello-all");
            assert_eq!(v["sent"], Value::Bool(true), "/hello-all: {v}");
            senders.insert(u64_field(&v, "shard"));
        }
        assert!(senders.len() >= 2, "all 25 broadcasts were sent from one shard ({senders:?})");

        let receipts = || per_shard(&get_json(addr, "/receipts"));
        let got = poll(DELIVERY_BOUND, "every shard received every hello", || {
            let r = receipts();
            if r.len() == SHARDS && r.values().all(|n| *n >= K) { Ok(r) } else { Err(format!("{r:?}")) }
        });
        assert_eq!(got, all_shards(SHARDS, K), "each shard must handle each broadcast exactly once");

        // Nothing more arrives later, whichever shard is asked.
        thread::sleep(Duration::from_millis(300));
        for _ in 0..8 {
            assert_eq!(receipts(), all_shards(SHARDS, K), "late duplicate broadcasts");
        }

        // The engine's own accounting agrees with the program's.
        let status = wait_status_settled(server.state_dir(), SHARDS, K);
        for (i, (_, received, dropped)) in status_shards(&status).into_iter().enumerate() {
            assert_eq!((received, dropped), (K, 0), "status for shard {i}: {status}");
        }
    }
}

/// The shard ids in a `/hello-all` 503 (`not delivered to shard(s) 0, 2 (queue full)`).
fn full_shards(message: &str) -> Vec<usize> {
    let start = message.find("shard(s) ").unwrap_or_else(|| panic!("unexpected bus error {message:?}")) + 9;
    let end = message.find(" (queue full)").unwrap_or_else(|| panic!("bus error without a full queue: {message:?}"));
    assert!(!message.contains("(stopped)"), "a shard stopped while the server runs: {message:?}");
    message[start..end].split(", ").map(|s| s.parse().unwrap_or_else(|_| panic!("bad id in {message:?}"))).collect()
}

both_drivers! {
    /// `[state] bus_capacity = 1`: a burst of broadcasts from 8 threads may overflow
    /// the queues. Whatever happens, each broadcast is delivered to or counted as
    /// dropped for every shard: per shard, received + dropped = sent, the dropped
    /// count matches the shards named by the 503 answers, and the program saw
    /// exactly the received ones.
    fn tiny_bus_accounts_for_every_broadcast(io) {
        const SHARDS: usize = 4;
        const THREADS: usize = 8;
        const CONNS: usize = 4;
        const PER_CONN: usize = 8;
        let sent = (THREADS * CONNS * PER_CONN) as u64;
        let server = counter(io, SHARDS).config("[state]\nbus_capacity = 1\n").start();
        let addr = server.addr();

        let answers: Vec<Response> = thread::scope(|scope| {
            let workers: Vec<_> = (0..THREADS)
                .map(|_| {
                    scope.spawn(move || {
                        let mut out = Vec::new();
                        for _ in 0..CONNS {
                            let mut c = Conn::connect(addr);
                            // Pipelined, to make the burst as dense as possible.
                            c.send(get("/hello-all").repeat(PER_CONN));
                            out.extend((0..PER_CONN).map(|_| c.read_response()));
                        }
                        out
                    })
                })
                .collect();
            workers.into_iter().flat_map(|w| w.join().expect("client thread panicked")).collect()
        });

        let mut expected_dropped = vec![0u64; SHARDS];
        for r in &answers {
            let v = json_body(r);
            match r.status {
                200 => assert_eq!(v["sent"], Value::Bool(true), "{v}"),
                503 => {
                    let message = v["error"].as_str().unwrap_or_else(|| panic!("503 without an error: {v}"));
                    for shard in full_shards(message) {
                        expected_dropped[shard] += 1;
                    }
                }
                other => panic!("/hello-all answered {other}: {v}"),
            }
        }

        let status = poll(DELIVERY_BOUND, "received + dropped = sent on every shard", || {
            let (code, v) = counter_status_json(server.state_dir());
            let table = status_shards(&v);
            let done = code == Some(0) && table.len() == SHARDS && table.iter().all(|(_, r, d)| r + d >= sent);
            if done { Ok(v) } else { Err(v.to_string()) }
        });
        let table = status_shards(&status);
        let dropped: Vec<u64> = table.iter().map(|(_, _, d)| *d).collect();
        assert_eq!(dropped, expected_dropped, "dropped per shard vs. the shards named by 503 answers: {status}");
        for (i, (_, received, dropped)) in table.iter().enumerate() {
            assert_eq!(received + dropped, sent, "shard {i}: every broadcast delivered or dropped once: {status}");
        }
        // The queues are empty now: the fan-out behind /receipts fits in them.
        let receipts = per_shard(&get_json(addr, "/receipts"));
        let received: BTreeMap<usize, u64> = table.iter().enumerate().map(|(i, (_, r, _))| (i, *r)).collect();
        assert_eq!(receipts, received, "the subscribers saw exactly the broadcasts counted as received");
        eprintln!("{sent} broadcasts, dropped per shard {expected_dropped:?}");
    }
}

// ---------------------------------------------------------------------------
// setlu / getlu
// ---------------------------------------------------------------------------

/// `updated_micros` of a `/touch/<key>` or `/lu/<keys>` answer.
fn micros_of(v: &Value) -> u64 {
    u64_field(v, "updated_micros")
}

/// Asserts that `/lu/<keys>` answers `expected` from `n` fresh connections.
fn assert_lu(addr: SocketAddr, keys: &str, expected: u64, n: usize) {
    for _ in 0..n {
        let v = get_json(addr, &format!("/lu/{keys}"));
        assert_eq!(micros_of(&v), expected, "/lu/{keys} from shard {}: {v}", v["shard"]);
    }
}

both_drivers! {
    /// Cache keys: before any change every key reads as the instance start;
    /// a change stores a later time, visible from every shard; several keys read
    /// as the latest; 50 changes in a row store strictly increasing times; an
    /// unknown key is a 404 that says so; and every change reaches every shard
    /// as exactly one `model-changed` event.
    fn setlu_getlu_across_shards(io) {
        const SHARDS: usize = 4;
        let server = counter(io, SHARDS).start();
        let addr = server.addr();

        let (code, status) = counter_status_json(server.state_dir());
        assert_eq!(code, Some(0), "{status}");
        let start = u64_field(&status, "started_micros");
        for keys in ["users", "posts", "users,posts", ""] {
            assert_lu(addr, keys, start, 4);
        }

        let r = get_json(addr, "/touch/users");
        assert_eq!(r["key"], "users", "{r}");
        let users1 = micros_of(&r);
        assert!(users1 > start, "a change after the start stores a later time: {users1} <= {start}");
        assert_lu(addr, "users,posts", users1, 8);
        assert_lu(addr, "users", users1, 2);
        assert_lu(addr, "posts", start, 2);

        let posts = micros_of(&get_json(addr, "/touch/posts"));
        assert!(posts > users1, "posts touched after users: {posts} <= {users1}");
        assert_lu(addr, "users,posts", posts, 8);
        assert_lu(addr, "posts,users", posts, 2);
        assert_lu(addr, "users", users1, 2);

        // 50 changes in a row, over 5 connections (so several shards write).
        let mut conns: Vec<Conn> = (0..5).map(|_| Conn::connect(addr)).collect();
        let mut last = users1;
        let mut writers = BTreeSet::new();
        for i in 0..50 {
            let c = &mut conns[i % 5];
            c.send(get("/touch/users"));
            let r = c.read_response();
            assert_eq!(r.status, 200, "{r:?}");
            let v = json_body(&r);
            writers.insert(u64_field(&v, "shard"));
            let t = micros_of(&v);
            assert!(t > last, "touch {i} (shard {}) stored {t}, not after {last}", v["shard"]);
            last = t;
        }
        assert_lu(addr, "users", last, 4);
        assert_lu(addr, "users,posts", last.max(posts), 4);
        eprintln!("touches written from shards {writers:?}");

        // Unknown keys.
        for path in ["/touch/nope", "/lu/nope", "/lu/users,nope"] {
            let r = request(addr, path);
            assert_eq!(r.status, 404, "{path}: {r:?}");
            let v = json_body(&r);
            let message = v["error"].as_str().unwrap_or_default();
            assert!(message.contains("not registered") && message.contains("nope"), "{path}: {v}");
        }
        assert_lu(addr, "users", last, 2);

        // 52 successful changes: 52 model-changed events on every shard, no more.
        let touches = 52;
        let model_changes = || per_shard(&get_json(addr, "/model-changes"));
        let got = poll(DELIVERY_BOUND, "every shard got every model-changed event", || {
            let m = model_changes();
            if m.len() == SHARDS && m.values().all(|n| *n >= touches) { Ok(m) } else { Err(format!("{m:?}")) }
        });
        assert_eq!(got, all_shards(SHARDS, touches), "one model-changed event per change per shard");
        thread::sleep(Duration::from_millis(200));
        assert_eq!(model_changes(), all_shards(SHARDS, touches), "late duplicate model-changed events");
    }
}

// ---------------------------------------------------------------------------
// status from outside
// ---------------------------------------------------------------------------

both_drivers! {
    /// `counter status`, `counter status --json` and `skitai status --name counter
    /// --json` report the running instance: its pid, shards and their driver, the
    /// state and cache-key values; the server keeps serving afterwards.
    fn status_reports_the_running_instance(io) {
        const SHARDS: usize = 3;
        let server = counter(io, SHARDS).start();
        let addr = server.addr();
        let dir = server.state_dir().to_owned();
        for _ in 0..7 {
            get_json(addr, "/incr");
        }
        let touched = micros_of(&get_json(addr, "/touch/users"));

        // The touch is one broadcast (model-changed:users) per shard.
        let j = wait_status_settled(&dir, SHARDS, 1);
        assert_eq!(j["name"], "counter", "{j}");
        assert_eq!(j["running"], Value::Bool(true), "{j}");
        assert_eq!(u64_field(&j, "pid"), u64::from(server.pid()), "{j}");
        assert_eq!(j["version"], env!("CARGO_PKG_VERSION"), "{j}");
        assert_eq!(u64_field(&j, "slots"), 256, "default slots: {j}");
        let started = u64_field(&j, "started_micros");
        assert!(started > 0 && started < touched, "started_micros {started} vs touch {touched}");
        let _uptime = u64_field(&j, "uptime_secs"); // present and a number
        let drivers: Vec<String> = status_shards(&j).into_iter().map(|(d, _, _)| d).collect();
        assert_eq!(drivers, vec![io.driver().to_owned(); SHARDS], "{j}");
        assert_eq!(j["states"], serde_json::json!({ "counter": 7 }), "{j}");
        assert_eq!(j["cache_keys"]["users"].as_u64(), Some(touched), "{j}");
        assert_eq!(j["cache_keys"]["posts"], Value::Null, "never set: {j}");
        assert_eq!(j["cache_keys"].as_object().map(|o| o.len()), Some(2), "{j}");

        // The text form.
        let out = run_status(&example_bin("counter"), &dir, &[]);
        let (code, text, stderr) = outcome(&out);
        assert_eq!(code, Some(0), "counter status: {text}\n{stderr}");
        let mut lines = text.lines();
        assert_eq!(lines.next(), Some(format!("counter [running:{}]", server.pid()).as_str()), "{text}");
        let words: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
        assert!(words.iter().any(|w| w[..] == ["counter", "7"]), "no `counter  7` line:\n{text}");
        assert!(words.iter().any(|w| w[..] == ["posts", "never", "set"]), "no `posts  never set` line:\n{text}");
        assert!(text.contains(&format!("({touched} µs)")), "users' update time {touched} missing:\n{text}");
        let file = state_file(&dir, "counter");
        assert!(text.contains(&format!("state file  {}", file.display())), "{text}");
        let shards_line = (0..SHARDS).map(|i| format!("#{i} {}", io.driver())).collect::<Vec<_>>().join(", ");
        assert!(text.contains(&format!("shards      {SHARDS} ({shards_line})")), "{text}");

        // The skitai binary reads the same instance by name.
        let out = run_status(&skitai_bin(), &dir, &["--name", "counter", "--json"]);
        let (code, stdout, stderr) = outcome(&out);
        assert_eq!(code, Some(0), "skitai status --name counter --json: {stdout}\n{stderr}");
        let mut from_skitai: Value = serde_json::from_str(stdout.trim()).expect("skitai status JSON");
        let mut from_counter = counter_status_json(&dir).1;
        for v in [&mut from_skitai, &mut from_counter] {
            v.as_object_mut().unwrap().remove("uptime_secs");
        }
        assert_eq!(from_skitai, from_counter, "both programs report the same instance");

        // Without --name, skitai looks for its own instance, which does not run.
        let out = run_status(&skitai_bin(), &dir, &[]);
        assert_eq!(out.status.code(), Some(3), "{}", outcome(&out).1);

        // Reading did not disturb the server.
        assert_get(&server, 7);
        assert_eq!(i64_field(&get_json(addr, "/incr"), "value"), 8);
        assert_eq!(counter_status_json(&dir).1["states"]["counter"], 8);
    }
}

// ---------------------------------------------------------------------------
// The state file's life cycle
// ---------------------------------------------------------------------------

both_drivers! {
    /// A graceful exit (SIGTERM) removes the state file: `status` then says
    /// `counter [stopped]` (no stale file) and exits 3.
    fn state_file_removed_on_graceful_exit(io) {
        let mut server = counter(io, 2).start();
        let dir = server.state_dir().to_owned();
        let file = state_file(&dir, "counter");
        get_json(server.addr(), "/incr");
        get_json(server.addr(), "/touch/posts");
        assert!(file.exists(), "no state file at {} while running", file.display());

        server.signal(libc::SIGTERM);
        let status = server.wait_exit(EXIT_BOUND).expect("server did not exit after SIGTERM");
        assert_eq!(status.code(), Some(0), "graceful exit status; stderr:\n{}", server.stderr());
        assert!(!file.exists(), "the state file outlived a graceful exit: {}", file.display());

        let out = run_status(&example_bin("counter"), &dir, &[]);
        let (code, text, _) = outcome(&out);
        assert_eq!((code, text.lines().next()), (Some(3), Some("counter [stopped]")), "{text}");
        assert!(text.contains(&format!("no state file at {}", file.display())), "names where it looked: {text}");
        let (code, j) = counter_status_json(&dir);
        assert_eq!(code, Some(3));
        assert_eq!(j, serde_json::json!({ "name": "counter", "running": false }));
    }
}

both_drivers! {
    /// A crash (SIGKILL) leaves the state file: `status` reports it stale with the
    /// dead pid (exit 3); a new server in the same directory (with another shard
    /// count) replaces it, says so, and starts from fresh values.
    fn stale_file_after_crash_is_replaced(io) {
        let mut crashed = counter(io, 4).start();
        let dir = crashed.state_dir().to_owned();
        let file = state_file(&dir, "counter");
        for _ in 0..3 {
            get_json(crashed.addr(), "/incr");
        }
        get_json(crashed.addr(), "/touch/users");
        let old_pid = crashed.pid();
        crashed.signal(libc::SIGKILL);
        let status = crashed.wait_exit(EXIT_BOUND).expect("SIGKILL did not end the server");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
        assert!(file.exists(), "a crash cannot remove the state file, yet {} is gone", file.display());

        let out = run_status(&example_bin("counter"), &dir, &[]);
        let (code, text, _) = outcome(&out);
        assert_eq!(code, Some(3), "{text}");
        assert!(text.starts_with("counter [stopped]"), "{text}");
        assert!(text.contains("stale") && text.contains(&format!("pid {old_pid}")), "{text}");
        let (code, j) = counter_status_json(&dir);
        assert_eq!(code, Some(3));
        assert_eq!(j, serde_json::json!({ "name": "counter", "running": false, "stale_pid": old_pid }));

        // Restart in the same directory.
        let server = counter(io, 2).config(&state_dir_config(&dir)).start();
        let stderr = server.stderr();
        assert!(stderr.contains("stale") && stderr.contains(&format!("pid {old_pid}")), "{stderr}");
        assert_get(&server, 0);
        let (code, j) = counter_status_json(&dir);
        assert_eq!(code, Some(0), "{j}");
        assert_eq!(u64_field(&j, "pid"), u64::from(server.pid()), "{j}");
        assert_eq!(j["states"]["counter"], 0, "{j}");
        assert_eq!(j["cache_keys"]["users"], Value::Null, "{j}");
        assert_eq!(j["shards"].as_array().map(Vec::len), Some(2), "the new layout: {j}");
        assert_eq!(i64_field(&get_json(server.addr(), "/incr"), "value"), 1);
        drop(crashed); // owns the directory
    }
}

both_drivers! {
    /// While an instance runs, a second one of the same name in the same state
    /// directory is refused (exit 2, `already running` with the first pid) and
    /// disturbs nothing; one with another name starts beside it.
    fn same_name_refused_other_name_allowed(io) {
        let first = counter(io, 2).start();
        let dir = first.state_dir().to_owned();
        for _ in 0..3 {
            get_json(first.addr(), "/incr");
        }

        let out = run_bounded(
            Command::new(example_bin("counter"))
                .args(["--port", "0", "--address", "127.0.0.1", "--shards", "1", "--io", io.flag()])
                .env(STATE_DIR_ENV, &dir)
                .env_remove("RUST_LOG"),
        );
        let (code, stdout, stderr) = outcome(&out);
        assert_eq!(code, Some(2), "second instance: stdout {stdout}\nstderr {stderr}");
        assert!(stderr.contains("already running"), "{stderr}");
        assert!(stderr.contains(&format!("pid {}", first.pid())), "the message names the first pid: {stderr}");
        assert!(!stderr.contains("listening on"), "the refused instance listened: {stderr}");

        // The first one is untouched.
        assert_get(&first, 3);
        assert!(state_file(&dir, "counter").exists());
        let (code, j) = counter_status_json(&dir);
        assert_eq!((code, u64_field(&j, "pid")), (Some(0), u64::from(first.pid())), "{j}");
        assert_eq!(j["states"]["counter"], 3, "{j}");

        // Another name in the same directory is another instance.
        let other = counter(io, 1).arg("--name").arg("other").config(&state_dir_config(&dir)).start();
        assert_eq!(i64_field(&get_json(other.addr(), "/incr"), "value"), 1, "separate values");
        assert!(state_file(&dir, "other").exists());
        let out = run_status(&example_bin("counter"), &dir, &["--name", "other", "--json"]);
        let (code, stdout, _) = outcome(&out);
        let j: Value = serde_json::from_str(stdout.trim()).expect("status JSON");
        assert_eq!(code, Some(0), "{j}");
        assert_eq!((j["name"].as_str(), u64_field(&j, "pid")), (Some("other"), u64::from(other.pid())), "{j}");
        assert_eq!(j["states"]["counter"], 1, "{j}");
        assert_get(&first, 3);
    }
}

/// Sends `/delay?ms=60000` to `server` (the `hello` example) on a connection
/// that has just been served, so the slow request is being handled.
fn start_slow_request(server: &Server) -> Conn {
    let mut c = server.connect();
    // Not pipelined: the server writes a batch of pipelined answers at once,
    // so the quick answer would wait for the slow one.
    c.send(get("/"));
    assert_eq!(c.read_response().status, 200);
    c.send(get("/delay?ms=60000"));
    // Let the pipelined request reach its handler (ordering, not a measurement).
    thread::sleep(Duration::from_millis(300));
    c
}

both_drivers! {
    /// The shutdown deadline (`shutdown_timeout`) stops a straggler; the state
    /// file is still removed on the way out.
    fn state_file_removed_after_shutdown_deadline(io) {
        let mut server = hello(io).config("[server]\nshutdown_timeout = 1\n").start();
        let file = state_file(server.state_dir(), "hello");
        assert!(file.exists(), "no state file at {}", file.display());
        let _slow = start_slow_request(&server);
        server.signal(libc::SIGTERM);
        server.wait_exit(EXIT_BOUND).expect("the straggler kept the server alive past shutdown_timeout");
        assert!(!file.exists(), "the state file outlived the shutdown deadline: {}", file.display());
    }
}

both_drivers! {
    /// A second SIGTERM during the drain exits at once (status 1): a deliberate,
    /// orderly exit, which should remove the state file like the others do,
    /// rather than leave a file that `status` calls stale and the next start
    /// warns about as "did not exit cleanly".
    fn state_file_removed_after_second_signal(io) {
        let mut server = hello(io).start();
        let dir = server.state_dir().to_owned();
        let file = state_file(&dir, "hello");
        assert!(file.exists(), "no state file at {}", file.display());
        let _slow = start_slow_request(&server);
        server.signal(libc::SIGTERM);
        let stderr = poll(EXIT_BOUND, "the first SIGTERM starts the drain", || {
            let e = server.stderr();
            if e.contains("stopping") { Ok(e) } else { Err(e) }
        });
        assert!(server.is_running(), "precondition: the slow request keeps the server draining\n{stderr}");
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(EXIT_BOUND).expect("second SIGTERM did not end the server");
        assert_eq!(status.code(), Some(1), "forced exit status; stderr:\n{}", server.stderr());

        let out = run_status(&example_bin("hello"), &dir, &[]);
        let (code, text, _) = outcome(&out);
        assert!(
            !file.exists(),
            "the state file outlived the forced exit; `hello status` says (exit {code:?}): {text}"
        );
        assert_eq!((code, text.lines().next()), (Some(3), Some("hello [stopped]")), "{text}");
    }
}

// ---------------------------------------------------------------------------
// [state] configuration
// ---------------------------------------------------------------------------

/// Runs `bin args` with `SKITAI_STATE_DIR` set to `dir` (bounded).
fn run_in(bin: &Path, dir: &Path, args: &[&str]) -> Output {
    run_bounded(Command::new(bin).args(args).env(STATE_DIR_ENV, dir).env_remove("RUST_LOG"))
}

/// Asserts exit 2, no panic, and `key` named on stderr.
fn assert_config_error(out: &Output, what: &str, key: &str) {
    let (code, stdout, stderr) = outcome(out);
    assert_eq!(code, Some(2), "{what}: exit status\nstdout: {stdout}\nstderr: {stderr}");
    assert!(!stderr.contains("panicked at"), "{what} panicked:\n{stderr}");
    assert!(stderr.contains(key), "{what}: stderr should name {key:?}:\n{stderr}");
}

/// Invalid `[state]` values, the key each error must name.
const BAD_STATE: &[(&str, &str)] = &[
    ("[state]\nslots = 0\n", "state.slots"),
    ("[state]\nslots = 65537\n", "state.slots"),
    ("[state]\nbus_capacity = 0\n", "state.bus_capacity"),
    ("[state]\nstates = [\"ok\", \"\"]\n", "state.states"),
    ("[state]\ncache_keys = [\"tab\\there\"]\n", "state.cache_keys"),
];

/// `check -c` and a start both refuse invalid `[state]` values (exit 2, naming
/// the key), for the `skitai` binary and the `counter` program; nothing is left
/// in the state directory.
#[test]
fn bad_state_config_names_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let long = format!("[state]\ncache_keys = [\"{}\"]\n", "k".repeat(64));
    let cases = BAD_STATE.iter().map(|(t, k)| (t.to_string(), *k)).chain([(long, "state.cache_keys")]);
    for (toml, key) in cases {
        let file = temp_toml(&toml);
        let path = file.path().to_str().unwrap();
        for bin in [skitai_bin(), example_bin("counter")] {
            let what = format!("{} check with {toml:?}", bin.display());
            assert_config_error(&run_in(&bin, dir.path(), &["check", "-c", path]), &what, key);
            let what = format!("{} started with {toml:?}", bin.display());
            let out = run_in(&bin, dir.path(), &["-c", path, "--port", "0", "--address", "127.0.0.1"]);
            assert_config_error(&out, &what, key);
        }
    }
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "refused starts left files behind: {left:?}");
}

/// Registering more names than `slots` fails at start (exit 2, naming the array),
/// whether the names come from the file alone or from the program and the file.
#[test]
fn more_names_than_slots_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("[state]\nslots = 2\nstates = [\"a\", \"b\", \"c\"]\n", "state.states"),
        ("[state]\nslots = 2\ncache_keys = [\"a\", \"b\", \"c\"]\n", "state.cache_keys"),
    ];
    for (toml, key) in cases {
        let file = temp_toml(toml);
        let path = file.path().to_str().unwrap();
        for bin in [skitai_bin(), example_bin("counter")] {
            let args = ["-c", path, "--port", "0", "--address", "127.0.0.1", "--shards", "1"];
            let out = run_in(&bin, dir.path(), &args);
            assert_config_error(&out, &format!("{} started with {toml:?}", bin.display()), key);
        }
    }
    // counter registers 2 cache keys itself: one slot is too few, two are enough.
    let file = temp_toml("[state]\nslots = 1\n");
    let out = run_in(
        &example_bin("counter"),
        dir.path(),
        &["-c", file.path().to_str().unwrap(), "--port", "0", "--address", "127.0.0.1"],
    );
    assert_config_error(&out, "counter with slots = 1", "state.cache_keys");
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "refused starts left files behind: {left:?}");
}

/// `check` validates the configuration, so it should refuse one the server
/// then refuses to start with: more names than `slots`. (It prints `ok`.)
#[test]
fn check_refuses_more_names_than_slots() {
    let dir = tempfile::tempdir().unwrap();
    let file = temp_toml("[state]\nslots = 2\nstates = [\"a\", \"b\", \"c\"]\n");
    let path = file.path().to_str().unwrap();
    for bin in [skitai_bin(), example_bin("counter")] {
        let out = run_in(&bin, dir.path(), &["check", "-c", path]);
        assert_config_error(&out, &format!("{} check with 3 states in 2 slots", bin.display()), "state.states");
    }
}

both_drivers! {
    /// Names from `[state]` are registered beside the program's (duplicates once),
    /// in a file of `slots` slots, and `status` lists them.
    fn config_names_join_the_program_names(io) {
        let toml = "[state]\nslots = 4\nstates = [\"hits\", \"counter\"]\ncache_keys = [\"extra\"]\n";
        let server = counter(io, 1).config(toml).start();
        for _ in 0..2 {
            get_json(server.addr(), "/incr");
        }
        let extra = micros_of(&get_json(server.addr(), "/touch/extra"));
        let (code, j) = counter_status_json(server.state_dir());
        assert_eq!(code, Some(0), "{j}");
        assert_eq!(u64_field(&j, "slots"), 4, "{j}");
        assert_eq!(j["states"], serde_json::json!({ "counter": 2, "hits": 0 }), "{j}");
        assert_eq!(
            j["cache_keys"],
            serde_json::json!({ "users": null, "posts": null, "extra": extra }),
            "{j}"
        );
    }
}
