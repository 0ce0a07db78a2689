//! The smallest useful embedding program, also used by the tests and benchmarks.
//!
//! Routes:
//! - `/`             → `Hello, World!` (text/plain)
//! - `/echo`         → echoes the request body, streaming (any method)
//! - `/upload`       → reads the whole body, then answers `received N bytes`
//! - `/panic`        → the handler panics; the client gets a 500, the shard lives on
//!   (`?when=call`: before it returns its future; `?when=later`: after a wait;
//!   `?when=body`: the handler answers, its streamed body panics at once;
//!   `?when=midbody`: the body panics after its first chunk)
//! - `/delay?ms=N`   → answers `done` after N milliseconds (for drain tests)
//! - `/v1/...`       → JSON describing the mount (shows prefix stripping; `/v1` → 308)
//! - `/push`         → text; over HTTP/2 it also pushes `/v1/pushed`
//! - `/burn?ms=N`    → keeps the shard busy for N ms of CPU in 1 ms slices, letting
//!   other requests in between (for load shedding)
//! - `/txn`          → the request's transaction ids as JSON, and a line in the app log
//!
//! Run: `cargo run --release --example hello -- --port 5000`; every skitai flag works.

use futures_util::StreamExt;
use skitai::prelude::*;

/// mimalloc: measurably cheaper than glibc malloc for the per-request
/// allocations of the `http` types (see bench/README.md).
#[global_allocator]
static GLOBAL: skitai::Mimalloc = skitai::Mimalloc;

/// The `ms=N` query parameter (0 when absent), at most `max`.
fn query_ms(req: &Request, max: u64) -> u64 {
    req.uri()
        .query()
        .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("ms=")))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        .min(max)
}

fn main() {
    let engine = Engine::new()
        .name("hello")
        .mount(
            "/",
            handler_fn(|req: Request, _cx: &mut Ctx| async move {
                if req.uri().path() == "/" {
                    Response::text("Hello, World!")
                } else {
                    skitai::http::error_response(StatusCode::NOT_FOUND, req.headers().get("accept"), None)
                }
            }),
        )
        .mount(
            "/echo",
            handler_fn(|req: Request, _cx: &mut Ctx| async move {
                let content_type = req.headers().get("content-type").cloned();
                let mut res = Response::new(req.into_body());
                if let Some(t) = content_type {
                    res.headers_mut().insert("content-type", t);
                }
                res
            }),
        )
        .mount(
            "/panic",
            handler_fn(|req: Request, _cx: &mut Ctx| {
                // `?when=call`: in the call itself, before a future exists;
                // `?when=later`: in a later poll, after the handler waited once.
                let when = req.uri().query().unwrap_or_default().to_owned();
                if when == "when=call" {
                    panic!("this handler panics on purpose, before its future");
                }
                async move {
                    if let Some(good) = match when.as_str() {
                        "when=body" => Some(0),
                        "when=midbody" => Some(1),
                        _ => None,
                    } {
                        let chunks = futures_util::stream::iter(0..2).map(move |i| {
                            assert!(i < good, "this response body panics on purpose");
                            Ok::<_, skitai::Error>(&b"a chunk\n"[..])
                        });
                        return Response::new(Body::stream(chunks));
                    }
                    if when == "when=later" {
                        monoio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                    panic!("this handler panics on purpose");
                    #[allow(unreachable_code)]
                    Response::text("unreachable")
                }
            }),
        )
        .mount(
            "/delay",
            handler_fn(|req: Request, _cx: &mut Ctx| async move {
                let ms = query_ms(&req, 60_000);
                skitai::time::sleep(std::time::Duration::from_millis(ms)).await;
                Response::text("done")
            }),
        )
        .mount(
            "/burn",
            handler_fn(|req: Request, _cx: &mut Ctx| async move {
                let ms = query_ms(&req, 10_000);
                for _ in 0..ms {
                    let slice = std::time::Instant::now();
                    while slice.elapsed() < std::time::Duration::from_millis(1) {
                        std::hint::spin_loop();
                    }
                    // A timer, not a bare yield: the shard goes back to its
                    // ring (new requests come in) before this one goes on.
                    skitai::time::sleep(std::time::Duration::from_micros(1)).await;
                }
                Response::text(format!("burned {ms} ms"))
            }),
        )
        .mount(
            "/txn",
            handler_fn(|_req: Request, cx: &mut Ctx| {
                cx.log(format_args!("transaction asked on shard {}", cx.shard_id()));
                let [(_, gtxid), (_, ltxid)] = cx.next_upstream_txn();
                let body = format!(
                    "{{\"gtxid\": \"{}\", \"ltxid\": {}, \"upstream_gtxid\": \"{}\", \"upstream_ltxid\": {}}}",
                    cx.txn(),
                    cx.txn().ltxid(),
                    gtxid.to_str().unwrap_or("?"),
                    ltxid.to_str().unwrap_or("?"),
                );
                async move { Response::json_bytes(body) }
            }),
        )
        .mount(
            "/upload",
            handler_fn(|req: Request, _cx: &mut Ctx| async move {
                // Reads the whole body before answering (unlike /echo, which streams it back).
                match req.into_body().collect(usize::MAX).await {
                    Ok(bytes) => Response::text(format!("received {} bytes", bytes.len())),
                    Err(e) => skitai::http::error_response(e.status().unwrap_or(StatusCode::BAD_REQUEST), None, None),
                }
            }),
        )
        .mount(
            "/push",
            handler_fn(|_req: Request, cx: &mut Ctx| {
                // Over HTTP/2 (when the client allows it) /v1/pushed arrives as a push.
                cx.push("/v1/pushed");
                async move { Response::text("pushed /v1/pushed") }
            }),
        )
        .mount(
            "/v1/",
            handler_fn(|req: Request, cx: &mut Ctx| {
                let body = format!(
                    "{{\"mount\": \"{}\", \"path\": \"{}\", \"full\": \"{}\", \"shard\": {}}}",
                    cx.mount_point(),
                    req.uri().path(),
                    cx.full_path(),
                    cx.shard_id()
                );
                async move { Response::json_bytes(body) }
            }),
        );
    if let Err(e) = engine.run() {
        eprintln!("hello: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
