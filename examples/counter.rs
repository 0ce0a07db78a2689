//! Shared state and broadcasts across shards.
//!
//! Routes (every JSON answer names the shard that served it):
//! - `/incr`           → adds 1 to the shared state `counter` (incgs); `{"shard", "value"}`
//! - `/get`            → reads `counter` (getgs); `{"shard", "value"}`
//! - `/touch/<key>`    → marks cache key `<key>` updated now (setlu); `{"shard", "key", "updated_micros"}`
//! - `/lu/<k1,k2,..>`  → the latest update of those keys (getlu); `{"shard", "keys", "updated_micros"}`
//! - `/hello-all`      → broadcasts `hello` to every shard; `{"shard", "sent"}`
//! - `/receipts`       → shard id → number of `hello` broadcasts that shard received
//! - `/model-changes`  → shard id → number of `model-changed:*` events that shard received
//! - `/whoami`         → `{"shard", "built_for"}`: the shard that served it and the shard
//!   the `per_shard` factory built this handler instance for (always the same)
//! - `/tally`          → one `shared` handler (an `Arc`, one instance for all shards)
//!   counting its requests in process memory; `{"shard", "total"}`
//!
//! Registered names: state `counter`; cache keys `users`, `posts`. Unknown
//! keys answer 404 with the reason.
//!
//! Run: `cargo run --release --example counter -- --port 5000 --shards 2`,
//! then `skitai status --name counter` (or `counter status`) from another shell.

use std::cell::Cell;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::UNIX_EPOCH;

use serde_json::{Map, Value, json};
use skitai::prelude::*;

#[global_allocator]
static GLOBAL: skitai::Mimalloc = skitai::Mimalloc;

/// The cache keys this program registers.
const CACHE_KEYS: [&str; 2] = ["users", "posts"];

thread_local! {
    /// `hello` broadcasts received by this shard (one thread per shard).
    static HELLOS: Cell<u64> = const { Cell::new(0) };
    /// `model-changed:*` events received by this shard.
    static MODEL_CHANGES: Cell<u64> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<u64>>) {
    counter.with(|c| c.set(c.get() + 1));
}

/// `{"0": a, "1": b, ...}` from per-shard answers.
fn by_shard(values: Vec<u64>) -> Value {
    Value::Object(values.into_iter().enumerate().map(|(i, n)| (i.to_string(), json!(n))).collect::<Map<_, _>>())
}

fn error(status: StatusCode, message: String) -> Response {
    let mut res = Response::json(&json!({ "error": message }));
    *res.status_mut() = status;
    res
}

fn micros(t: std::time::SystemTime) -> u128 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

async fn route(req: Request, cx: &mut Ctx, built_for: usize) -> Response {
    let shard = cx.shard_id();
    let path = req.uri().path().to_owned();
    match path.as_str() {
        "/whoami" => Response::json(&json!({ "shard": shard, "built_for": built_for })),
        "/incr" => match cx.incgs("counter", 1) {
            Ok(value) => Response::json(&json!({ "shard": shard, "value": value })),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        "/get" => match cx.getgs("counter") {
            Ok(value) => Response::json(&json!({ "shard": shard, "value": value })),
            Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        },
        "/hello-all" => match cx.broadcast("hello", format!("hello from shard {shard}")) {
            Ok(()) => Response::json(&json!({ "shard": shard, "sent": true })),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        "/receipts" => match cx.fan_out(|_| HELLOS.with(Cell::get)).await {
            Ok(counts) => Response::json(&by_shard(counts)),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        "/model-changes" => match cx.fan_out(|_| MODEL_CHANGES.with(Cell::get)).await {
            Ok(counts) => Response::json(&by_shard(counts)),
            Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        },
        _ => {
            if let Some(key) = path.strip_prefix("/touch/") {
                match cx.setlu(key) {
                    Ok(t) => Response::json(&json!({ "shard": shard, "key": key, "updated_micros": micros(t) })),
                    Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
                }
            } else if let Some(keys) = path.strip_prefix("/lu/") {
                let keys: Vec<&str> = keys.split(',').filter(|k| !k.is_empty()).collect();
                match cx.getlu(&keys) {
                    Ok(t) => Response::json(&json!({ "shard": shard, "keys": keys, "updated_micros": micros(t) })),
                    Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
                }
            } else {
                error(StatusCode::NOT_FOUND, format!("no route {path}"))
            }
        }
    }
}

/// The program's main handler, one per shard; `route` borrows the context
/// across awaits, which a `Handler` impl allows (a `handler_fn` future must
/// own its data).
struct Counter {
    /// The shard `per_shard` built this instance for.
    built_for: usize,
}

impl Handler for Counter {
    fn call<'a>(&'a self, req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
        Box::pin(route(req, cx, self.built_for))
    }
}

/// One instance shared by every shard (`shared`): state crosses threads, so atomics.
#[derive(Default)]
struct Tally {
    requests: AtomicU64,
}

impl Handler for Tally {
    fn call<'a>(&'a self, _req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
        let total = self.requests.fetch_add(1, Ordering::Relaxed) + 1;
        let shard = cx.shard_id();
        Box::pin(async move { Response::json(&json!({ "shard": shard, "total": total })) })
    }
}

fn main() {
    let mut engine = Engine::new()
        .name("counter")
        .register_states(["counter"])
        .register_cache_keys(CACHE_KEYS)
        .on_broadcast("hello", |_event| bump(&HELLOS))
        .mount("/tally", shared(Arc::new(Tally::default())))
        .mount("/", per_shard(|shard: &ShardInfo| Counter { built_for: shard.id }));
    for key in CACHE_KEYS {
        engine = engine.on_broadcast(&format!("model-changed:{key}"), |_event| bump(&MODEL_CHANGES));
    }
    if let Err(e) = engine.run() {
        eprintln!("counter: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
