//! Listeners: every shard listens on every configured address (IPv4 and IPv6),
//! and the kernel spreads connections over the shards with SO_REUSEPORT.

mod support;

use std::collections::HashSet;
use std::net::{SocketAddr, TcpStream};

use support::*;

/// The `/v1/` route of the hello example reports the shard that answered.
fn shard_of(addr: SocketAddr) -> u64 {
    let mut c = Conn::from_stream(TcpStream::connect(addr).expect("connect"));
    c.send(get("/v1/x"));
    let r = c.read_response();
    assert_eq!(r.status, 200);
    let body = r.body_str();
    let shard = body.split("\"shard\": ").nth(1).and_then(|s| s.trim_end_matches('}').trim().parse().ok());
    shard.unwrap_or_else(|| panic!("no shard in {body}"))
}

both_drivers! {
    /// `--address 127.0.0.1 --address ::1` serves both families on one port.
    fn ipv4_and_ipv6_on_one_port(io) {
        let server = hello(io).arg("--address").arg("::1").start();
        let port = server.addr().port();
        for addr in [format!("127.0.0.1:{port}"), format!("[::1]:{port}")] {
            let addr: SocketAddr = addr.parse().unwrap();
            let mut c = Conn::from_stream(TcpStream::connect(addr).expect("connect"));
            c.send(get("/"));
            let r = c.read_response();
            assert_eq!((r.status, r.body_str().as_str()), (200, "Hello, World!"), "via {addr}");
        }
    }
}

both_drivers! {
    /// With two shards, new connections land on both (each shard has its own listener).
    fn connections_spread_over_shards(io) {
        let server = hello(io).shards(2).start();
        assert_eq!(server.driver_lines(2), 2, "{}", server.stderr());
        let seen: HashSet<u64> = (0..200).map(|_| shard_of(server.addr())).collect();
        assert_eq!(seen, HashSet::from([0, 1]), "200 connections all went to one shard");
    }
}

both_drivers! {
    /// A second instance on a port that is already served fails loudly instead of
    /// sharing the port through SO_REUSEPORT.
    fn taken_port_is_refused(io) {
        let first = hello(io).start();
        let port = first.addr().port().to_string();
        let mut second = hello(io).no_listen_flags().arg("--address").arg("127.0.0.1").arg("--port").arg(&port).spawn();
        let status = second.wait_exit(EXIT_TIMEOUT).expect("the second instance should exit");
        assert_eq!(status.code(), Some(2), "stderr:\n{}", second.stderr());
        assert!(second.stderr().contains("already in use"), "stderr:\n{}", second.stderr());
        // The first one is unaffected.
        let mut c = first.connect();
        c.send(get("/"));
        assert_eq!(c.read_response().status, 200);
    }
}
