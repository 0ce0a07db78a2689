//! The floor: a raw monoio accept/read/parse/write loop with no framework
//! (bench peer; the "raw monoio loop" of BENCH.md). Every request in a read
//! is parsed with httparse and answered with a fixed response; one write per
//! read. No timeouts, no routing, no header map: what a server costs when it
//! does nothing but HTTP/1.1 framing.
//!
//! Usage: monoio-raw [--port PORT] [--io uring|epoll]   (listens on 127.0.0.1)
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::{TcpListener, TcpStream};

const RESPONSE: &[u8] = b"HTTP/1.1 200 OK\r\nServer: monoio-raw\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n\r\nHello, World!";

async fn serve(mut stream: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut out: Vec<u8> = Vec::with_capacity(4096);
    loop {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(4096);
        }
        let (res, b) = stream.read(buf).await;
        buf = b;
        match res {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut start = 0;
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut req = httparse::Request::new(&mut headers);
            match req.parse(&buf[start..]) {
                Ok(httparse::Status::Complete(n)) => {
                    start += n;
                    out.extend_from_slice(RESPONSE);
                }
                Ok(httparse::Status::Partial) => break,
                Err(_) => return,
            }
        }
        buf.drain(..start);
        if !out.is_empty() {
            let (res, o) = stream.write_all(out).await;
            out = o;
            if res.is_err() {
                return;
            }
            out.clear();
        }
    }
}

async fn accept_loop(port: u16) {
    let opts = monoio::net::ListenerOpts::new().backlog(4096);
    let listener = TcpListener::bind_with_config(("127.0.0.1", port), &opts).expect("bind");
    eprintln!("monoio-raw listening on 127.0.0.1:{port}");
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            monoio::spawn(serve(stream));
        }
    }
}

fn arg(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

fn main() {
    let port = arg("--port").and_then(|p| p.parse().ok()).unwrap_or(8080);
    match arg("--io").as_deref().unwrap_or("uring") {
        "epoll" => monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
            .enable_timer()
            .build()
            .expect("epoll runtime")
            .block_on(accept_loop(port)),
        _ => {
            // The setup skitai uses: COOP_TASKRUN | TASKRUN_FLAG.
            let mut uring = io_uring::IoUring::builder();
            uring.setup_coop_taskrun().setup_taskrun_flag();
            monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                .with_entries(1024)
                .enable_timer()
                .uring_builder(uring)
                .build()
                .expect("io_uring runtime")
                .block_on(accept_loop(port))
        }
    }
}
