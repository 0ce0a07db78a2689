//! The embedding API in-process: `Engine::serve` returns a running `Server`
//! only once every shard accepts, and fails (instead of hanging or serving
//! with fewer shards) when a shard cannot start.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, TcpStream};
use std::rc::Rc;
use std::sync::mpsc;
use std::time::Duration;

use skitai::config::Config;
use skitai::prelude::*;

/// An upper bound for a start that must finish; a hang fails the test.
const START_BOUND: Duration = Duration::from_secs(30);

/// Two shards on a free loopback port, with a state directory of their own.
fn config(name: &str, dir: &tempfile::TempDir) -> Config {
    let mut config = Config { name: name.to_owned(), ..Config::default() };
    config.server.address = vec![IpAddr::V4(Ipv4Addr::LOCALHOST)];
    config.server.port = 0;
    config.server.shards = 2;
    config.state.dir = Some(dir.path().to_owned());
    config
}

/// Runs `f` on another thread and waits at most [`START_BOUND`] for it.
fn bounded<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(START_BOUND).expect("Engine::serve did not return in time")
}

/// A factory whose handler for shard 1 cannot be built (it panics).
struct FailsOnShardOne;

impl HandlerFactory for FailsOnShardOne {
    fn build(&self, shard: &ShardInfo) -> Rc<dyn Handler> {
        assert!(shard.id != 1, "no handler for shard 1 (on purpose)");
        Rc::new(handler_fn(|_req: Request, _cx: &mut Ctx| async { Response::text("up") }))
    }
}

#[test]
fn serve_returns_once_every_shard_accepts() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config("engine-api-up", &dir);
    let server = bounded(move || {
        Engine::new()
            .mount(
                "/",
                handler_fn(|_req: Request, cx: &mut Ctx| {
                    let shard = cx.shard_id();
                    async move { Response::text(format!("shard {shard}")) }
                }),
            )
            .serve(config)
    })
    .expect("the server starts");
    let mut stream = TcpStream::connect(server.local_addr()).expect("connect");
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    stream.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).expect("read the answer");
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.ends_with("shard 0") || answer.ends_with("shard 1"), "{answer}");
    server.shutdown().expect("a clean stop");
}

#[test]
fn a_shard_that_cannot_start_fails_serve() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = config("engine-api-fails", &dir);
    let started = bounded(move || Engine::new().mount("/", FailsOnShardOne).serve(config).map(|s| s.local_addr()));
    let error = started.expect_err("serve must fail when shard 1 cannot start");
    let text = error.to_string();
    assert!(text.contains("shard 1 panicked") && text.contains("no handler for shard 1"), "{text}");
}
