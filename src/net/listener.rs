//! Listening sockets, one per shard per address, spread by the kernel with `SO_REUSEPORT`.

use std::io;
use std::net::{SocketAddr, TcpListener};

use socket2::{Domain, Protocol, Socket, Type};

/// Binds one listener for `addr` with `SO_REUSEPORT` (and `SO_REUSEADDR`).
fn bind_one(addr: SocketAddr, backlog: u32) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(i32::try_from(backlog).unwrap_or(i32::MAX))?;
    Ok(socket.into())
}

/// Fails if another socket already listens on `addr`.
///
/// `SO_REUSEPORT` would otherwise let a second instance (same user) bind the
/// same port silently and take half of the connections. A probe bound
/// without it conflicts with any existing listener, reuseport or not.
fn ensure_port_free(addr: SocketAddr) -> io::Result<()> {
    let probe = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // SO_REUSEADDR: connections of an earlier run in TIME_WAIT do not count.
    probe.set_reuse_address(true)?;
    if addr.is_ipv6() {
        probe.set_only_v6(true)?;
    }
    probe.bind(&addr.into()).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(e.kind(), "already in use by another process")
        } else {
            e
        }
    })
}

/// Binds `count` listeners on `addr`, one per shard. With port 0 the first
/// bind picks a free port and the others join it.
pub(crate) fn bind_shard_listeners(addr: SocketAddr, backlog: u32, count: usize) -> io::Result<Vec<TcpListener>> {
    if addr.port() != 0 {
        ensure_port_free(addr).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    }
    let first =
        bind_one(addr, backlog).map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
    let actual = first.local_addr()?;
    let mut listeners = Vec::with_capacity(count);
    listeners.push(first);
    for _ in 1..count {
        listeners.push(bind_one(actual, backlog)?);
    }
    Ok(listeners)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_refused() {
        let first = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 16, 2).unwrap();
        let taken = first[0].local_addr().unwrap();
        let err = bind_shard_listeners(taken, 16, 1).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrInUse, "{err}");
        assert!(err.to_string().contains("already in use"), "{err}");
        drop(first);
        bind_shard_listeners(taken, 16, 1).expect("free again once the first listeners are gone");
    }

    #[test]
    fn shards_share_a_picked_port() {
        let ls = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 16, 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
