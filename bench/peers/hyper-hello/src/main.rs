//! hyper 1.x hello server on a tokio current_thread runtime (bench peer).
//! Usage: hyper-hello [--port PORT] [--h2c]   (listens on 127.0.0.1)
//! `--h2c`: HTTP/2 by prior knowledge only (hyper's http2 server; bench workload h2c).
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    server::conn::{http1, http2},
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

fn port_arg() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

async fn hello(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut resp = Response::new(Full::new(Bytes::from_static(b"Hello, World!")));
    resp.headers_mut()
        .insert("content-type", hyper::header::HeaderValue::from_static("text/plain"));
    Ok(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let port = port_arg();
    let h2c = std::env::args().any(|a| a == "--h2c");
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("hyper-hello listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::task::spawn(async move {
            if h2c {
                let _ = http2::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            } else {
                let _ = http1::Builder::new()
                    .pipeline_flush(true)
                    .serve_connection(TokioIo::new(stream), service_fn(hello))
                    .await;
            }
        });
    }
}
