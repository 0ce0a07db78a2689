//! WebSocket echo server on tokio-tungstenite, tokio current_thread runtime: one core,
//! as one skitai shard (bench peer; workload ws-echo).
//! Usage: tungstenite-echo [--port PORT]   (listens on 127.0.0.1, any path)
//!
//! Every text and binary message is sent back as it came (`send`: write and flush);
//! tungstenite answers pings and the closing handshake by itself. This is the upstream
//! echo example's loop without its `split()` + `forward()` (the split puts a lock around
//! every read and write). Flushing only when no further input is ready, as `forward`
//! does, was measured too: in ws-echo every connection has one message in flight, so
//! there is never a second message to batch, and the extra poll cost a few % more
//! server CPU per message; hence a plain send.
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpListener, TcpStream};

fn port_arg() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

async fn serve(stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(mut ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    // ping, pong, close: tungstenite answers them itself
    while let Some(Ok(msg)) = ws.next().await {
        if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
            return;
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port = port_arg();
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("tungstenite-echo listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        tokio::task::spawn(serve(stream));
    }
}
