//! WebSocket endpoints with small limits and odd behaviours, for the tests
//! (`tests/websocket.rs`) and for trying clients against.
//!
//! Routes:
//! - `/echo`          → echo (per-message mode); permessage-deflate accepted;
//!   subprotocols `chat.v2`, `chat.v1`; 1 MiB messages at most
//! - `/small`         → echo with a 1 KiB message cap (close 1009 beyond)
//! - `/quiet`         → echo; closes after 1 s of client silence, never pings
//! - `/ping`          → echo; pings after 300 ms of silence, closes after 1 s without an answer
//! - `/origin`        → echo; only the Origin `https://good.example` may open it
//! - `/session`       → session mode: greets `hello`, answers each message twice
//!   (`1:<msg>`, `2:<msg>`) and sends `tick 1..3` from a separate task;
//!   `bye` closes with 4000 "bye"; `panic` panics (close 1011)
//! - `/flood?n=N&size=S` → sends N messages of S bytes at once into a 64 KiB
//!   send queue that closes with 1008 when full
//! - `/flood-drop?n=N&size=S` → the same into a queue that drops what does not
//!   fit, then `done sent=.. dropped=..` after 2 s
//! - `/room`          → room mode, room `lab`
//! - `/members`       → JSON: members of room `lab` on each shard
//! - `/closes`        → JSON: the close codes `/echo` connections ended with, in order
//!
//! Run: `cargo run --example ws_lab -- --port 5000`.

use std::sync::Mutex;
use std::time::Duration;

use skitai::prelude::*;
use skitai::ws::{self, Message, Overflow};

/// Close codes of `/echo` connections, in the order they closed.
static CLOSES: Mutex<Vec<u16>> = Mutex::new(Vec::new());

fn echo() -> ws::Endpoint<impl ws::Mode> {
    ws::on_message(|msg: Message, _ws: &ws::WebSocket| async move { Some(msg) })
}

fn query_param<'a>(query: &'a str, name: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
}

async fn session(mut ws: ws::WebSocket) {
    let _ = ws.send("hello");
    let ticker = ws.sender();
    skitai::spawn(async move {
        for i in 1..=3 {
            skitai::time::sleep(Duration::from_millis(50)).await;
            if ticker.send(format!("tick {i}")).is_err() {
                return;
            }
        }
    });
    while let Some(msg) = ws.recv().await {
        match msg.as_text() {
            Some("bye") => return ws.close(4000, "bye"),
            Some("panic") => panic!("asked to panic"),
            _ => {}
        }
        let text = msg.as_text().unwrap_or("<binary>").to_owned();
        let _ = ws.send(format!("1:{text}"));
        let _ = ws.send(format!("2:{text}"));
    }
}

async fn flood(ws: ws::WebSocket, policy: Overflow) {
    let query = ws.ctx().original_uri().query().unwrap_or("").to_owned();
    let n: usize = query_param(&query, "n").and_then(|v| v.parse().ok()).unwrap_or(1000);
    let size: usize = query_param(&query, "size").and_then(|v| v.parse().ok()).unwrap_or(1024);
    let payload = bytes::Bytes::from(vec![b'x'; size]);
    let mut sent = 0;
    for _ in 0..n {
        match ws.send(Message::Binary(payload.clone())) {
            Ok(()) => sent += 1,
            Err(ws::SendError::Full) => {}
            Err(ws::SendError::Closed) => return,
        }
    }
    if policy == Overflow::Drop {
        skitai::time::sleep(Duration::from_secs(2)).await;
        let _ = ws.send(format!("done sent={sent} dropped={}", ws.dropped()));
        skitai::time::sleep(Duration::from_secs(30)).await;
    }
}

fn main() {
    let flood_policy = |policy: Overflow| ws::session(move |ws| flood(ws, policy)).send_queue(64 << 10, policy);
    let engine = Engine::new()
        .name("ws-lab")
        .mount(
            "/echo",
            echo().compression(true).protocols(["chat.v2", "chat.v1"]).max_message(1 << 20).on_close(|_, close| {
                CLOSES.lock().unwrap_or_else(|e| e.into_inner()).push(close.code);
            }),
        )
        .mount("/small", echo().max_message(1024))
        .mount("/quiet", echo().idle_timeout(Some(Duration::from_secs(1))).ping_interval(None))
        .mount(
            "/ping",
            echo().idle_timeout(Some(Duration::from_secs(1))).ping_interval(Some(Duration::from_millis(300))),
        )
        .mount("/origin", echo().check_origin(|origin| origin == Some("https://good.example")))
        .mount("/session", ws::session(session))
        .mount("/flood", flood_policy(Overflow::Close))
        .mount("/flood-drop", flood_policy(Overflow::Drop))
        .mount("/room", ws::room("lab"))
        .mount(
            "/members",
            handler_fn(|_req: Request, cx: &mut Ctx| {
                let members = ws::room_members(cx, "lab");
                async move {
                    match members.await {
                        Ok(per_shard) => Response::json(&per_shard),
                        Err(e) => Response::text(e.to_string()),
                    }
                }
            }),
        )
        .mount(
            "/closes",
            handler_fn(|_req: Request, _cx: &mut Ctx| async {
                let closes = CLOSES.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Response::json(&closes)
            }),
        );
    if let Err(e) = engine.run() {
        eprintln!("ws_lab: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
