//! may_minihttp hello server with one may worker thread (bench peer).
//! Usage: may-hello [--port PORT]   (listens on 127.0.0.1)
use std::io;

use may_minihttp::{HttpService, HttpServiceFactory, Request, Response};

#[derive(Clone)]
struct Hello;

impl HttpService for Hello {
    fn call(&mut self, _req: Request, rsp: &mut Response) -> io::Result<()> {
        rsp.header("Content-Type: text/plain");
        rsp.body("Hello, World!");
        Ok(())
    }
}

struct Factory;

impl HttpServiceFactory for Factory {
    type Service = Hello;
    fn new_service(&self, _id: usize) -> Hello {
        Hello
    }
}

fn port_arg() -> u16 {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == "--port")
        .and_then(|i| args.get(i + 1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(8080)
}

fn main() {
    // one worker thread; stack size as in may_minihttp's techempower example
    may::config().set_workers(1).set_pool_capacity(1000).set_stack_size(0x1000);
    let port = port_arg();
    let addr = format!("127.0.0.1:{port}");
    let server = Factory.start(&addr).expect("bind");
    eprintln!("may-hello listening on {addr}");
    server.join().unwrap();
}
