//! Shared state and bus measurements on a running engine (`cargo bench --bench state`).
//!
//! - incgs/getgs throughput from every shard at once: one contended state,
//!   and one state per shard (separate cache lines), against one shard alone.
//! - broadcast latency (send → subscriber call) to every shard, p50/p99/p999:
//!   from a thread outside the shards, and from shard 0, on both drivers.
//!
//! The work runs inside broadcast subscribers, so it runs on the shard
//! threads themselves, through the public API (`SharedState`, `on_broadcast`).

use std::cell::RefCell;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, unbounded};
use hdrhistogram::Histogram;
use skitai::config::{Config, IoMode};
use skitai::{Engine, Payload, SharedState};

/// Operations per shard in each throughput run.
const OPS: u64 = 4_000_000;
/// Broadcasts per latency run.
const PINGS: u64 = 20_000;
/// Pause between pings, so each measures a wake-up rather than a queue.
const PING_GAP: Duration = Duration::from_micros(100);

/// What a `hammer` broadcast asks every shard (or only shard 0) to do.
struct Hammer {
    /// `None`: each shard uses its own state `s<id>`.
    state: Option<&'static str>,
    ops: u64,
    read: bool,
    only_shard0: bool,
}

thread_local! {
    static LATENCY: RefCell<Histogram<u64>> = RefCell::new(new_histogram());
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 10_000_000_000, 3).expect("histogram bounds")
}

/// The shard a subscriber runs on, from its thread name `skitai-shard-N`.
fn shard_id() -> usize {
    std::thread::current()
        .name()
        .and_then(|n| n.strip_prefix("skitai-shard-"))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

struct Bench {
    state: SharedState,
    shards: usize,
    done: Receiver<(usize, Duration)>,
    histograms: Receiver<Histogram<u64>>,
}

fn start(io: IoMode, shards: usize, dir: &std::path::Path) -> (skitai::Server, Bench) {
    let cell: Arc<OnceLock<SharedState>> = Arc::new(OnceLock::new());
    let (done_tx, done): (Sender<(usize, Duration)>, _) = unbounded();
    let (hist_tx, histograms) = unbounded();
    let mut config = Config { name: format!("perf-state-{}", std::process::id()), ..Config::default() };
    config.server.address = vec!["127.0.0.1".parse().unwrap()];
    config.server.port = 0;
    config.server.shards = shards;
    config.server.io = io;
    config.state.dir = Some(dir.to_owned());
    config.state.bus_capacity = 1 << 16;
    let per_shard: Vec<String> = (0..shards).map(|i| format!("s{i}")).collect();
    let hammer_cell = cell.clone();
    let fire_cell = cell.clone();
    let engine = Engine::new()
        .register_states(["shared"])
        .register_states(per_shard)
        .on_broadcast("hammer", move |event| {
            let job = event.value::<Hammer>().expect("hammer payload");
            let id = shard_id();
            if job.only_shard0 && id != 0 {
                return;
            }
            let state = hammer_cell.get().expect("state set");
            let name = job.state.map_or_else(|| format!("s{id}"), str::to_owned);
            let started = Instant::now();
            if job.read {
                let mut sum = 0i64;
                for _ in 0..job.ops {
                    sum = sum.wrapping_add(state.getgs(&name).unwrap());
                }
                std::hint::black_box(sum);
            } else {
                for _ in 0..job.ops {
                    state.incgs(&name, 1).unwrap();
                }
            }
            done_tx.send((id, started.elapsed())).unwrap();
        })
        .on_broadcast("ping", |event| {
            let sent = event.value::<Instant>().expect("ping payload");
            let ns = sent.elapsed().as_nanos() as u64;
            LATENCY.with(|h| h.borrow_mut().saturating_record(ns.max(1)));
        })
        .on_broadcast("report", move |_| {
            let h = LATENCY.with(|h| std::mem::replace(&mut *h.borrow_mut(), new_histogram()));
            hist_tx.send(h).unwrap();
        })
        .on_broadcast("fire", move |event| {
            if shard_id() != 0 {
                return;
            }
            let count = *event.value::<u64>().expect("fire payload");
            let state = fire_cell.get().expect("state set").clone();
            skitai::spawn(async move {
                for _ in 0..count {
                    state.broadcast("ping", Payload::value(Instant::now())).unwrap();
                    skitai::time::sleep(PING_GAP).await;
                }
            });
        });
    let server = engine.serve(config).expect("server starts");
    let state = server.state();
    cell.set(state.clone()).ok();
    (server, Bench { state, shards, done, histograms })
}

impl Bench {
    /// Runs a hammer job; returns (total ops, wall time of the slowest shard).
    fn hammer(&self, state: Option<&'static str>, read: bool, only_shard0: bool) -> (u64, Duration) {
        let job = Hammer { state, ops: OPS, read, only_shard0 };
        self.state.broadcast("hammer", Payload::value(job)).unwrap();
        let shards = if only_shard0 { 1 } else { self.shards };
        let mut slowest = Duration::ZERO;
        for _ in 0..shards {
            let (_, took) = self.done.recv_timeout(Duration::from_secs(120)).expect("hammer finished");
            slowest = slowest.max(took);
        }
        (OPS * shards as u64, slowest)
    }

    /// Merges the shards' histograms until `expected` samples arrived (bounded).
    fn collect(&self, expected: u64) -> Histogram<u64> {
        let mut merged = new_histogram();
        let deadline = Instant::now() + Duration::from_secs(60);
        while merged.len() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(200));
            merged.add(self.gather()).unwrap();
        }
        merged
    }

    /// Merged latency histogram of every shard, then reset.
    fn gather(&self) -> Histogram<u64> {
        self.state.broadcast("report", ()).unwrap();
        let mut merged = new_histogram();
        for _ in 0..self.shards {
            merged.add(self.histograms.recv_timeout(Duration::from_secs(10)).expect("report")).unwrap();
        }
        merged
    }
}

fn line(what: &str, ops: u64, took: Duration) {
    let per_sec = ops as f64 / took.as_secs_f64();
    let ns = took.as_nanos() as f64 / OPS as f64;
    println!("  {what:<44} {:>8.1} M ops/s in total  {:>6.1} ns per op on each shard", per_sec / 1e6, ns);
}

fn latency(what: &str, h: &Histogram<u64>) {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    println!(
        "  {what:<44} n={:<6} p50 {:>6.1} µs  p99 {:>6.1} µs  p99.9 {:>7.1} µs  max {:>8.1} µs",
        h.len(),
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1000.0
    );
}

/// The floor for a cross-thread wake-up on this machine: a plain thread
/// blocked in a crossbeam channel, woken by another thread's send.
fn baseline_wake_latency() -> Histogram<u64> {
    let (tx, rx) = unbounded::<Instant>();
    let receiver = std::thread::spawn(move || {
        let mut h = new_histogram();
        while let Ok(sent) = rx.recv() {
            h.saturating_record((sent.elapsed().as_nanos() as u64).max(1));
        }
        h
    });
    for _ in 0..PINGS {
        tx.send(Instant::now()).unwrap();
        std::thread::sleep(PING_GAP);
    }
    drop(tx);
    receiver.join().unwrap()
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        println!("state: bench");
        return;
    }
    latency("baseline: thread → blocked thread (crossbeam)", &baseline_wake_latency());
    let shards = std::thread::available_parallelism().map_or(2, |n| n.get()).max(2);
    let dir = tempfile::tempdir().unwrap();
    for io in [IoMode::Uring, IoMode::Epoll] {
        println!("{io:?}, {shards} shards");
        let (server, bench) = start(io, shards, dir.path());
        bench.hammer(Some("shared"), false, true); // warm-up
        let (ops, took) = bench.hammer(Some("shared"), false, true);
        line("incgs, one shard alone", ops, took);
        let (ops, took) = bench.hammer(Some("shared"), false, false);
        line("incgs, every shard on one state", ops, took);
        let (ops, took) = bench.hammer(None, false, false);
        line("incgs, every shard on its own state", ops, took);
        let (ops, took) = bench.hammer(Some("shared"), true, false);
        line("getgs, every shard on one state", ops, took);
        assert_eq!(bench.state.getgs("shared").unwrap() as u64, OPS * (2 + shards as u64), "every increment counted");

        bench.gather();
        for _ in 0..PINGS {
            bench.state.broadcast("ping", Payload::value(Instant::now())).unwrap();
            std::thread::sleep(PING_GAP);
        }
        let expected = PINGS * shards as u64;
        latency("broadcast, outside thread → every shard", &bench.collect(expected));
        bench.state.broadcast("fire", Payload::value(PINGS)).unwrap();
        latency("broadcast, shard 0 → every shard", &bench.collect(expected));
        server.shutdown().unwrap();
    }
}
