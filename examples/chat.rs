//! WebSocket: an echo endpoint and a room chat with a page to try it in a browser.
//!
//! Routes:
//! - `/`         → the chat page (`examples/chat-page/`, a static mount)
//! - `/ws/echo`  → WebSocket echo: every message comes back as it was sent
//!   (per-message mode; permessage-deflate accepted)
//! - `/ws/chat`  → WebSocket room chat: every message reaches everyone in the
//!   room `lobby`, on every shard (room mode); joins and leaves are announced
//!
//! Run: `cargo run --release --example chat -- --port 5000`, then open
//! <http://localhost:5000/> in two browser windows. Every skitai flag works.

use skitai::prelude::*;
use skitai::ws;

#[global_allocator]
static GLOBAL: skitai::Mimalloc = skitai::Mimalloc;

/// The page, found from the source tree so `cargo run` works from anywhere.
const PAGE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/chat-page");

/// The chat room every `/ws/chat` connection joins.
const ROOM: &str = "lobby";

fn main() {
    let engine = Engine::new()
        .name("chat")
        .mount("/", StaticDir::new(PAGE_DIR))
        .mount("/ws/echo", ws::on_message(|msg, _ws| async move { Some(msg) }).compression(true))
        .mount(
            "/ws/chat",
            ws::room(ROOM)
                .compression(true)
                .on_open(|ws| {
                    let _ = ws.publish(ROOM, format!("* {} joined", ws.ctx().peer()));
                })
                .on_close(|cx, _| {
                    let _ = ws::publish(cx.state(), ROOM, format!("* {} left", cx.peer()));
                }),
        );
    if let Err(e) = engine.run() {
        eprintln!("chat: error: {e}");
        std::process::exit(if e.kind() == skitai::ErrorKind::Config { 2 } else { 1 });
    }
}
