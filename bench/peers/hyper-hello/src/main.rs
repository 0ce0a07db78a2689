//! hyper 1.x hello server on a tokio current_thread runtime (bench peer).
//! Usage: hyper-hello [--port PORT]   (listens on 127.0.0.1)
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
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
    let listener = TcpListener::bind(("127.0.0.1", port)).await.expect("bind");
    eprintln!("hyper-hello listening on 127.0.0.1:{port}");
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(_) => continue,
        };
        let _ = stream.set_nodelay(true);
        tokio::task::spawn(async move {
            let _ = http1::Builder::new()
                .pipeline_flush(true)
                .serve_connection(TokioIo::new(stream), service_fn(hello))
                .await;
        });
    }
}
