//! Zero-copy file transmission: `sendfile(2)` from the page cache straight
//! into a TCP socket.
//!
//! The socket must be non-blocking so a slow client never stalls the shard:
//! on epoll it already is; on io_uring monoio keeps sockets blocking (the ring
//! does the waiting), so the socket is switched to non-blocking for the
//! duration of the transfer and back afterwards. No other operation is in
//! flight on the socket meanwhile: an HTTP/1.1 connection reads the next
//! request only after the response is written.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use monoio::io::OwnedWriteHalf;
use monoio::net::TcpStream;

use crate::error::{Error, ErrorKind, Result};
use crate::proto::Deadline;

/// Largest single `sendfile` call; the kernel caps it near 2 GiB anyway.
const MAX_SENDFILE: u64 = 1 << 30;

/// A connection's write side that can hand out its TCP socket for `sendfile`.
pub(crate) trait ZeroCopyWrite {
    /// The socket, when this transport is plain TCP (not TLS).
    fn tcp_socket(&self) -> Option<&TcpStream>;
}

impl ZeroCopyWrite for OwnedWriteHalf<TcpStream> {
    fn tcp_socket(&self) -> Option<&TcpStream> {
        // SAFETY: the stream lives in the `Rc` shared by both halves for as
        // long as this half does; we only take a shared reference, on the
        // shard thread, while the read half has no operation in flight (see
        // the module doc). monoio's own `AsWriteFd` for this type does the same.
        Some(unsafe { &*self.0.get() })
    }
}

/// How a `sendfile` transfer ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sent {
    /// Every byte went out.
    All,
    /// The file's filesystem cannot `sendfile` (some FUSE and network
    /// filesystems); nothing was sent, the caller copies through memory.
    Unsupported,
}

impl ZeroCopyWrite for OwnedWriteHalf<monoio_rustls::ServerTlsStream<TcpStream>> {
    /// TLS encrypts in user space: files go through memory.
    fn tcp_socket(&self) -> Option<&TcpStream> {
        None
    }
}

/// Sends `len` bytes of `file` from `offset` to `socket`, waiting for the
/// socket to drain when it is full; each wait is bounded by `timeout`.
pub(crate) async fn send_file(
    socket: &TcpStream,
    file: &File,
    mut offset: u64,
    mut len: u64,
    timer: &mut Deadline,
    timeout: Duration,
) -> Result<Sent> {
    let sock = socket.as_raw_fd();
    // Restored when this future ends, however it ends (also when dropped).
    let _nonblocking = NonBlocking::enable(sock)?;
    let mut sent_any = false;
    while len > 0 {
        let mut off = offset as libc::off_t;
        let want = len.min(MAX_SENDFILE) as usize;
        // SAFETY: both fds are open for the duration of the call (we hold
        // the socket and the file by reference); `off` is a valid pointer.
        let sent = unsafe { libc::sendfile(sock, file.as_raw_fd(), &mut off, want) };
        if sent > 0 {
            offset += sent as u64;
            len -= sent as u64;
            sent_any = true;
            continue;
        }
        if sent == 0 {
            return Err(Error::new(ErrorKind::Internal, "file shrank while it was being sent"));
        }
        let err = io::Error::last_os_error();
        match err.raw_os_error() {
            Some(libc::EAGAIN) => match timer.limit(timeout, socket.writable(false)).await {
                Some(ready) => ready?,
                None => return Err(Error::new(ErrorKind::Timeout, "write stalled")),
            },
            Some(libc::EINTR) => {}
            Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) if !sent_any => return Ok(Sent::Unsupported),
            _ => return Err(err.into()),
        }
    }
    Ok(Sent::All)
}

/// Holds back partial TCP segments (`TCP_CORK`) while a response head and
/// its file body are written, so they leave in full-sized segments (nginx's
/// `tcp_nopush`); uncorking on drop pushes out whatever is left.
pub(crate) struct Cork {
    fd: RawFd,
}

impl Cork {
    /// Corks `socket`; `None` if the socket refused (the response still goes out, less packed).
    pub(crate) fn new(socket: &TcpStream) -> Option<Cork> {
        let fd = socket.as_raw_fd();
        set_cork(fd, 1).then_some(Cork { fd })
    }
}

impl Drop for Cork {
    fn drop(&mut self) {
        set_cork(self.fd, 0);
    }
}

fn set_cork(fd: RawFd, on: libc::c_int) -> bool {
    // SAFETY: setsockopt on an open socket with a pointer to a live c_int and its exact size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CORK,
            &on as *const libc::c_int as *const libc::c_void,
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        ) == 0
    }
}

/// Puts a socket in non-blocking mode and undoes it when dropped.
struct NonBlocking {
    fd: RawFd,
    flags: Option<libc::c_int>,
}

impl NonBlocking {
    fn enable(fd: RawFd) -> io::Result<NonBlocking> {
        // SAFETY: fcntl on an fd we hold open; F_GETFL takes no pointer.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
        if flags < 0 {
            return Err(io::Error::last_os_error());
        }
        if flags & libc::O_NONBLOCK != 0 {
            return Ok(NonBlocking { fd, flags: None });
        }
        // SAFETY: as above; F_SETFL takes an int of flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(NonBlocking { fd, flags: Some(flags) })
    }
}

impl Drop for NonBlocking {
    /// Restores the original flags (the socket goes back to the io_uring way).
    fn drop(&mut self) {
        if let Some(flags) = self.flags {
            // SAFETY: as in `enable`; the socket is still open (its owner
            // outlives this guard, which lives inside `send_file`).
            unsafe { libc::fcntl(self.fd, libc::F_SETFL, flags) };
        }
    }
}
