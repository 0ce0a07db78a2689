//! Process life cycle: start-up driver lines, graceful shutdown on SIGTERM/SIGINT
//! (drain in-flight requests, close idle ones, refuse new ones, exit 0), the
//! shutdown deadline and the second signal. Each case on both I/O drivers.

#[macro_use]
mod support;

use std::io::ErrorKind;
use std::net::TcpStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use support::*;

/// Upper bound for a draining server to exit (its in-flight work is ~3 s).
const DRAIN_BOUND: Duration = Duration::from_secs(20);

both_drivers! {
    /// Each shard logs the driver it got; with `--io X` every shard has X.
    fn driver_line_per_shard(io) {
        let server = hello(io).shards(2).start();
        assert_eq!(server.driver_lines(2), 2, "expected one driver line per shard:\n{}", server.stderr());
        server.assert_driver(io);
    }
}

/// `--io auto` on a machine with io_uring: the tuned setup, and the line says so.
#[test]
fn io_auto_picks_tuned_io_uring() {
    let server = ServerBuilder::new(hello_bin()).arg("--io").arg("auto").shards(2).start();
    assert_eq!(server.driver_lines(2), 2, "{}", server.stderr());
    for line in server.stderr().lines().filter(|l| l.contains("driver=")) {
        assert!(line.contains("driver=io_uring (COOP_TASKRUN|TASKRUN_FLAG)"), "{line}");
    }
    assert!(hello_answers(&server));
}

/// Where io_uring is refused (here by a seccomp filter, as under Docker's
/// default profile), `--io auto` falls back to epoll, says why, and serves.
#[test]
fn io_auto_falls_back_to_epoll_when_io_uring_is_refused() {
    let server = ServerBuilder::new(hello_bin()).arg("--io").arg("auto").shards(2).deny_io_uring().start();
    assert_eq!(server.driver_lines(2), 2, "{}", server.stderr());
    for line in server.stderr().lines().filter(|l| l.contains("driver=")) {
        assert!(line.contains("driver=epoll (io_uring unavailable: "), "{line}");
        assert!(line.contains("Operation not permitted"), "the reason names the error: {line}");
    }
    assert!(hello_answers(&server));
    let mut c = server.connect();
    c.send(get("/"));
    assert_eq!(c.read_response().body_str(), "Hello, World!");
}

/// `--io uring` where io_uring is refused is an error that says so, not a
/// silent fallback: the process exits non-zero.
#[test]
fn io_uring_when_refused_is_a_clear_error() {
    let mut server = ServerBuilder::new(hello_bin()).arg("--io").arg("uring").deny_io_uring().spawn();
    let status = server.wait_exit(Duration::from_secs(20)).expect("the server did not exit");
    assert!(!status.success(), "exited with {status:?}");
    let err = server.stderr();
    assert!(err.contains("io_uring unavailable") && err.contains("Operation not permitted"), "{err}");
}

/// Sends a slow request on a new connection from a thread; the thread returns
/// the response and whether the server closed the connection after it.
fn slow_request(server: &Server, ms: u64, done: Arc<AtomicBool>) -> thread::JoinHandle<(Response, bool)> {
    let mut c = server.connect();
    c.set_read_timeout(DRAIN_BOUND);
    c.send(get(&format!("/delay?ms={ms}")));
    thread::spawn(move || {
        let r = c.try_read_response(false).unwrap_or_else(|e| panic!("in-flight request lost: {}", describe(&e)));
        done.store(true, Ordering::SeqCst);
        let closed = c.closed_within(Duration::from_secs(5)) == Ok(true);
        (r, closed)
    })
}

/// Polls until a new connection is refused; `Ok` says how, `Err` if it never was.
fn wait_refused(server: &Server, bound: Duration) -> Result<(), String> {
    let deadline = Instant::now() + bound;
    let addr = server.addr();
    loop {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(1)) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Ok(()),
            Err(e) => return Err(format!("connect failed oddly: {e}")),
            Ok(s) => {
                // Accepted (the signal may not be handled yet): the server must not
                // serve it once it is draining, but it may have been just in time.
                drop(s);
            }
        }
        if Instant::now() >= deadline {
            return Err(format!("new connections still accepted {bound:?} after SIGTERM"));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn drain(io: Io, signal: i32) {
    let mut server = hello(io).start();
    assert!(server.stderr().contains("listening on"));

    // An idle keep-alive connection, which the drain must close.
    let mut idle = server.connect();
    idle.send(get("/"));
    assert_eq!(idle.read_response().status, 200);

    let done = Arc::new(AtomicBool::new(false));
    let inflight = slow_request(&server, 3000, done.clone());
    // Give the request time to reach the handler (ordering, not a measurement).
    thread::sleep(Duration::from_millis(500));
    assert!(!done.load(Ordering::SeqCst), "the slow request finished before the signal");
    server.signal(signal);

    // New connections are refused while the slow request is still running.
    let refused = wait_refused(&server, Duration::from_secs(10));
    let refused_while_draining = !done.load(Ordering::SeqCst);
    refused.unwrap();
    assert!(refused_while_draining, "new connections were accepted until the in-flight request finished");

    // The idle connection is closed without a response.
    idle.expect_closed();

    let (r, closed) = inflight.join().expect("in-flight client thread");
    assert_eq!((r.status, r.body_str().as_str()), (200, "done"), "in-flight request must complete: {r:?}");
    assert!(r.connection_has("close"), "a response sent while draining must say Connection: close: {r:?}");
    assert!(closed, "the connection must be closed after the drained response");

    let status = server.wait_exit(DRAIN_BOUND).expect("server still running after the drain");
    assert_eq!(status.code(), Some(0), "graceful shutdown exits 0; stderr:\n{}", server.stderr());
    assert!(!server.stderr().contains("panicked at"), "{}", server.stderr());
}

both_drivers! {
    /// SIGTERM: the in-flight slow request completes with `Connection: close`, idle
    /// connections close, new ones are refused, the process exits 0.
    fn sigterm_drains(io) {
        drain(io, libc::SIGTERM);
    }
}

both_drivers! {
    /// SIGINT drains like SIGTERM.
    fn sigint_drains(io) {
        drain(io, libc::SIGINT);
    }
}

both_drivers! {
    /// SIGTERM on an idle server: a prompt exit 0, via the `kill` command.
    fn sigterm_idle_exits_zero(io) {
        let mut server = hello(io).shards(2).start();
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
        let out = run_bounded(std::process::Command::new("kill").args(["-TERM", &server.pid().to_string()]));
        assert!(out.status.success(), "kill failed: {}", String::from_utf8_lossy(&out.stderr));
        let status = server.wait_exit(DRAIN_BOUND).expect("server did not exit after SIGTERM");
        assert_eq!(status.code(), Some(0), "stderr:\n{}", server.stderr());
        c.expect_closed();
    }
}

both_drivers! {
    /// The shutdown deadline (`shutdown_timeout`) ends a straggler.
    fn shutdown_deadline_ends_stragglers(io) {
        let mut server = hello(io).config("[server]\nshutdown_timeout = 1\n").start();
        let mut c = server.connect();
        c.send(get("/delay?ms=60000"));
        thread::sleep(Duration::from_millis(300));
        server.signal(libc::SIGTERM);
        let status = server.wait_exit(DRAIN_BOUND);
        assert!(status.is_some(), "a 60 s request kept the server alive past shutdown_timeout = 1");
        // The straggler's connection is gone with the process.
        assert_ne!(c.closed_within(Duration::from_secs(5)), Ok(false), "straggler connection left open");
    }
}

both_drivers! {
    /// A second signal exits at once, without waiting for in-flight requests.
    fn second_signal_exits_at_once(io) {
        let mut server = hello(io).start();
        let mut c = server.connect();
        c.send(get("/delay?ms=60000"));
        thread::sleep(Duration::from_millis(300));
        server.signal(libc::SIGTERM);
        thread::sleep(Duration::from_millis(300));
        assert!(server.is_running(), "the first SIGTERM must wait for the in-flight request");
        server.signal(libc::SIGTERM);
        // shutdown_timeout defaults to 30 s; exiting well before it proves the second signal acted.
        let status = server.wait_exit(Duration::from_secs(15));
        assert!(status.is_some(), "second SIGTERM did not end the process");
        assert_ne!(c.closed_within(Duration::from_secs(5)), Ok(false));
    }
}

both_drivers! {
    /// A handler panic does not take the process (or the shard) down.
    fn panic_does_not_kill_process(io) {
        let mut server = hello(io).start();
        for _ in 0..5 {
            let mut c = server.connect();
            c.send(get("/panic"));
            assert_eq!(c.read_response().status, 500);
        }
        assert!(server.is_running());
        let mut c = server.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}
