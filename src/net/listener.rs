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

/// Binds `count` listeners on `addr`, one per shard. With port 0 the first
/// bind picks a free port and the others join it.
pub(crate) fn bind_shard_listeners(addr: SocketAddr, backlog: u32, count: usize) -> io::Result<Vec<TcpListener>> {
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
    fn shards_share_a_picked_port() {
        let ls = bind_shard_listeners("127.0.0.1:0".parse().unwrap(), 16, 3).unwrap();
        let port = ls[0].local_addr().unwrap().port();
        assert_ne!(port, 0);
        assert!(ls.iter().all(|l| l.local_addr().unwrap().port() == port));
    }
}
