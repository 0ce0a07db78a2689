//! Protocol implementations. Codecs work on buffers; connection loops drive them.
//!
//! [`serve_connection`] is where an accepted socket starts: TLS (and ALPN)
//! when the listener has it, else a look at the first bytes to tell an
//! HTTP/2 preface (h2c by prior knowledge) from HTTP/1.1.

mod deadline;
pub(crate) mod h1;
pub(crate) mod h2;
mod prefixed;
pub(crate) mod ws;

use std::net::SocketAddr;
use std::rc::Rc;

use bytes::BytesMut;
use monoio::buf::IoBufMut;
use monoio::io::AsyncReadRent;
use monoio::net::TcpStream;

pub(crate) use deadline::Deadline;

use crate::shard::{ShardCtx, Site};
use prefixed::Prefixed;

/// Capacity of the buffer for a connection's first read (the HTTP/1.1 read buffer).
const FIRST_READ_SIZE: usize = 4 * 1024;

/// What a listener's connections are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ListenerRole {
    /// The site: TLS if configured, HTTP/1.1 and HTTP/2.
    Main,
    /// The plain port beside a TLS one: every request gets a 301 to https.
    RedirectToHttps,
    /// The admin listener: metrics, status page, health checks (plain HTTP/1.1).
    Admin,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    shard: Rc<ShardCtx>,
    key: usize,
    role: ListenerRole,
) {
    let site = match role {
        ListenerRole::Main => Site::Main,
        ListenerRole::RedirectToHttps => Site::Redirect,
        ListenerRole::Admin => Site::Admin,
    };
    if site != Site::Main {
        h1::serve(stream, peer, shard, key, BytesMut::with_capacity(FIRST_READ_SIZE), site, false).await;
        return;
    }
    // The TLS and HTTP/2 paths are boxed: a connection's task is as large as
    // its largest state, and idle HTTP/1.1 connections should not pay for them.
    if let Some(acceptor) = shard.protocols.tls.clone() {
        return Box::pin(serve_tls(acceptor, stream, peer, shard, key)).await;
    }
    if !shard.protocols.http2.enabled {
        h1::serve(stream, peer, shard, key, BytesMut::with_capacity(FIRST_READ_SIZE), Site::Main, false).await;
        return;
    }
    // Plain: read the first bytes and decide between h2c and HTTP/1.1.
    let mut stream = stream;
    let mut buf = BytesMut::with_capacity(FIRST_READ_SIZE);
    loop {
        let (len, cap) = (buf.len(), buf.capacity());
        // Waiting for a first request: idle, so a drain may close it.
        shard.set_idle(key, len == 0);
        let read = monoio::time::timeout(shard.limits.header_timeout, stream.read(buf.slice_mut(len..cap))).await;
        shard.set_idle(key, false);
        let Ok((result, slice)) = read else {
            // Nothing (more) arrived in time: close quietly.
            return;
        };
        buf = slice.into_inner();
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let seen = buf.len().min(h2::PREFACE.len());
        if buf[..seen] != h2::PREFACE[..seen] {
            if let Some(upgrade) = h1::serve(stream, peer, shard.clone(), key, buf, Site::Main, true).await {
                Box::pin(serve_upgraded(upgrade, peer, shard, key)).await;
            }
            return;
        }
        if seen == h2::PREFACE.len() {
            return Box::pin(h2::serve(Prefixed::new(buf.freeze(), stream), peer, shard, key)).await;
        }
        // A prefix of the preface so far: read on.
    }
}

/// A TLS connection: handshake (bounded), then HTTP/2 or HTTP/1.1 by ALPN.
async fn serve_tls(
    acceptor: monoio_rustls::TlsAcceptor,
    stream: TcpStream,
    peer: SocketAddr,
    shard: Rc<ShardCtx>,
    key: usize,
) {
    let handshake = monoio::time::timeout(shard.protocols.handshake_timeout, acceptor.accept(stream)).await;
    let tls = match handshake {
        Ok(Ok(tls)) => tls,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            return;
        }
    };
    if tls.alpn_protocol().as_deref() == Some(crate::net::tls::ALPN_H2) {
        return h2::serve(tls, peer, shard, key).await;
    }
    h1::serve(tls, peer, shard, key, BytesMut::with_capacity(FIRST_READ_SIZE), Site::Main, false).await;
}

/// Continues a connection that switched from HTTP/1.1 with `Upgrade: h2c`:
/// waits for the client's preface and SETTINGS, then starts HTTP/2 with the
/// upgrade request placed as stream 1 right after them.
async fn serve_upgraded(
    upgrade: h1::H2cUpgrade<monoio::net::tcp::TcpOwnedReadHalf, monoio::net::tcp::TcpOwnedWriteHalf>,
    peer: SocketAddr,
    shard: Rc<ShardCtx>,
    key: usize,
) {
    let h1::H2cUpgrade { read, write, mut buffered, request_frame } = upgrade;
    let Ok(mut stream) = read.reunite(write) else { return };
    // One deadline for the whole client start, not one per read: a start
    // trickled in a byte at a time still ends at `header_timeout`.
    let deadline = monoio::time::Instant::now() + shard.limits.header_timeout;
    let at = loop {
        match h2::upgrade::injection_point(&buffered) {
            Ok(Some(at)) => break at,
            Err(()) => {
                tracing::debug!(%peer, "no HTTP/2 preface after 101 Switching Protocols");
                return;
            }
            Ok(None) => {}
        }
        if buffered.capacity() - buffered.len() < 1024 {
            buffered.reserve(FIRST_READ_SIZE);
        }
        let (len, cap) = (buffered.len(), buffered.capacity());
        let read = monoio::time::timeout_at(deadline, stream.read(buffered.slice_mut(len..cap))).await;
        let Ok((result, slice)) = read else { return };
        buffered = slice.into_inner();
        match result {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    };
    let mut prefix = BytesMut::with_capacity(buffered.len() + request_frame.len());
    prefix.extend_from_slice(&buffered[..at]);
    prefix.extend_from_slice(&request_frame);
    prefix.extend_from_slice(&buffered[at..]);
    h2::serve(Prefixed::new(prefix.freeze(), stream), peer, shard, key).await
}
