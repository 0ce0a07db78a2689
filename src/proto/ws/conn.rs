//! One WebSocket connection after the handshake: a reader decoding client
//! frames, a writer sending the queued frames in batches, the session
//! (the handler's future), liveness pings, the idle timeout and the close
//! handshake, all driven from one task.
//!
//! The parts are polled together by hand, each with the task's waker; they
//! meet in the [`Link`]. Nothing is spawned and nothing is cancelled in
//! flight except when the whole connection ends.

use std::future::Future;
use std::io;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt};
use monoio::time::Instant;

use super::codec::{CloseCode, Decoder, Message as Frame};
use super::frame::OpCode;
use crate::shard::ShardCtx;
use crate::ws::link::Link;
use crate::ws::{CloseFrame, Message, Text};

/// Room made in the read buffer before each read.
const READ_SIZE: usize = 16 * 1024;
/// Far enough to mean "no timer".
const NEVER: Duration = Duration::from_secs(24 * 3600);

/// The byte stream a WebSocket reads from (the socket, or an HTTP/2 stream).
pub(crate) trait WsRead {
    /// Appends what arrives to `buf`; `Ok(0)` at end of stream.
    async fn read_into(&mut self, buf: BytesMut) -> (io::Result<usize>, BytesMut);
}

/// The byte stream a WebSocket writes to.
pub(crate) trait WsWrite {
    /// Writes all of `buf`; gives the buffer back for reuse.
    async fn write_batch(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut);
    /// Ends our direction of the stream (after the close handshake).
    async fn finish(&mut self);
}

/// The read half of an HTTP/1.1 connection after `101 Switching Protocols`.
pub(crate) struct H1Read<R>(pub(crate) R);

impl<R: AsyncReadRent> WsRead for H1Read<R> {
    async fn read_into(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        if buf.capacity() - buf.len() < 1024 {
            buf.reserve(READ_SIZE);
        }
        let (len, cap) = (buf.len(), buf.capacity());
        let (result, slice) = self.0.read(buf.slice_mut(len..cap)).await;
        (result, slice.into_inner())
    }
}

/// The write half of an HTTP/1.1 connection after `101 Switching Protocols`.
pub(crate) struct H1Write<W>(pub(crate) W);

impl<W: AsyncWriteRent> WsWrite for H1Write<W> {
    async fn write_batch(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        let (result, buf) = self.0.write_all(buf).await;
        (result.map(drop), buf)
    }

    async fn finish(&mut self) {
        let _ = self.0.shutdown().await;
    }
}

/// An HTTP/2 stream opened by extended CONNECT (RFC 8441), read side.
pub(crate) struct H2Read(pub(crate) h2::RecvStream);

impl WsRead for H2Read {
    async fn read_into(&mut self, mut buf: BytesMut) -> (io::Result<usize>, BytesMut) {
        match std::future::poll_fn(|cx| self.0.poll_data(cx)).await {
            Some(Ok(data)) => {
                // Hand the flow-control window back as the data is taken.
                let _ = self.0.flow_control().release_capacity(data.len());
                buf.extend_from_slice(&data);
                // An empty DATA frame is not the end of the stream.
                (Ok(data.len().max(usize::from(data.is_empty()))), buf)
            }
            Some(Err(e)) => (Err(io::Error::other(e)), buf),
            None => (Ok(0), buf),
        }
    }
}

/// An HTTP/2 stream opened by extended CONNECT (RFC 8441), write side.
pub(crate) struct H2Write(pub(crate) h2::SendStream<Bytes>);

impl WsWrite for H2Write {
    async fn write_batch(&mut self, buf: BytesMut) -> (io::Result<()>, BytesMut) {
        // The same flow-controlled sending as every HTTP/2 response body.
        let sent = crate::proto::h2::send_data(&mut self.0, buf.freeze(), false).await;
        (sent.map_err(io::Error::other), BytesMut::new())
    }

    async fn finish(&mut self) {
        let _ = self.0.send_data(Bytes::new(), true);
    }
}

/// The connection's timers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    /// Longest silence from the client before we close with 1001.
    pub(crate) idle_timeout: Option<Duration>,
    /// Silence after which we ping the client.
    pub(crate) ping_interval: Option<Duration>,
    /// How long we wait for the client's close after sending ours.
    pub(crate) close_timeout: Duration,
    /// Longest a single write may stall (a client that stopped reading).
    pub(crate) write_timeout: Duration,
}

/// Runs the connection until it closes; returns how it closed.
#[allow(clippy::too_many_arguments)] // the parts of one connection, handed over once
pub(crate) async fn run<R: WsRead, W: WsWrite>(
    mut read: R,
    mut write: W,
    mut buf: BytesMut,
    mut decoder: Decoder,
    link: Rc<Link>,
    session: LocalBoxFuture<'static, ()>,
    timing: Timing,
    shard: Rc<ShardCtx>,
    conn_key: usize,
) -> CloseFrame {
    let heard = std::cell::Cell::new(Instant::now());

    let reader = pin!(async {
        loop {
            loop {
                // The session is behind: read nothing until it catches up
                // (`Link::poll_recv` wakes the task when room appears).
                std::future::poll_fn(|_| {
                    if link.inbox_full() && !link.closing() { Poll::Pending } else { Poll::Ready(()) }
                })
                .await;
                match decoder.decode(&mut buf) {
                    Ok(Some(frame)) => {
                        if on_frame(&link, frame) {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(code) => {
                        link.close(CloseFrame::new(code as u16, close_reason(code)));
                        return;
                    }
                }
            }
            let (result, b) = read.read_into(std::mem::take(&mut buf)).await;
            buf = b;
            match result {
                Ok(0) | Err(_) => {
                    if !link.closing() {
                        // Gone without a close frame: nothing more to say.
                        link.ended.set(true);
                    }
                    return;
                }
                Ok(_) => heard.set(Instant::now()),
            }
        }
    });

    let writer = pin!(async {
        let mut spare = BytesMut::new();
        loop {
            std::future::poll_fn(|_| {
                if link.ended.get() || link.has_out() || link.finished() { Poll::Ready(()) } else { Poll::Pending }
            })
            .await;
            if link.ended.get() || !link.has_out() {
                break;
            }
            let (batch, close_in_batch) = link.take_out(spare);
            match monoio::time::timeout(timing.write_timeout, write.write_batch(batch)).await {
                Ok((Ok(()), mut b)) => {
                    b.clear();
                    spare = b;
                    if close_in_batch {
                        link.close_written.set(true);
                    }
                }
                _ => {
                    link.ended.set(true);
                    break;
                }
            }
        }
        write.finish().await;
    });

    let drain = pin!(shard.drain_started(conn_key));
    let mut session = Some(session);
    let mut reader = Some(reader);
    let mut drain = Some(drain);
    let mut writer = writer;
    let mut timer = pin!(monoio::time::sleep(NEVER));
    let mut pinged = false;
    let mut last_heard = heard.get();
    let mut close_by: Option<Instant> = None;

    let mut poll_parts = |cx: &mut std::task::Context<'_>| -> Poll<()> {
        if let Some(r) = reader.as_mut() {
            if r.as_mut().poll(cx).is_ready() {
                reader = None;
                link.reader_done.set(true);
            }
        }
        if let Some(s) = session.as_mut() {
            if s.as_mut().poll(cx).is_ready() {
                session = None;
                link.close(CloseFrame::new(1000, ""));
            }
        }
        if let Some(d) = drain.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                drain = None;
                link.close(CloseFrame::new(1001, "server shutting down"));
            }
        }
        if writer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(());
        }
        // Timers: the next ping, the idle limit, or the end of the close handshake.
        if heard.get() != last_heard {
            last_heard = heard.get();
            pinged = false;
        }
        let target = if link.closing() {
            *close_by.get_or_insert_with(|| Instant::now() + timing.close_timeout)
        } else {
            let idle = timing.idle_timeout.map(|d| last_heard + d);
            let ping = timing.ping_interval.filter(|_| !pinged).map(|d| last_heard + d);
            [idle, ping].into_iter().flatten().min().unwrap_or_else(|| Instant::now() + NEVER)
        };
        if timer.deadline() != target {
            timer.as_mut().reset(target);
        }
        if timer.as_mut().poll(cx).is_ready() {
            if link.closing() {
                link.ended.set(true);
            } else if timing.idle_timeout.is_some_and(|d| last_heard + d <= Instant::now()) {
                link.close(CloseFrame::new(1001, "idle timeout"));
            } else {
                pinged = true;
                link.push_control(OpCode::Ping, b"skitai");
            }
            // Something changed for the writer (and the timer needs a new
            // deadline): poll again.
            cx.waker().wake_by_ref();
        }
        Poll::Pending
    };

    std::future::poll_fn(|cx| {
        link.register(cx.waker());
        link.in_pass.set(true);
        let done = poll_parts(cx);
        link.in_pass.set(false);
        if link.repoll.take() {
            cx.waker().wake_by_ref();
        }
        done
    })
    .await;
    link.outcome()
}

/// Handles one frame from the client; true when the reader should stop.
fn on_frame(link: &Link, frame: Frame) -> bool {
    match frame {
        Frame::Text(bytes) => link.deliver(Message::Text(Text::from_validated(bytes))),
        Frame::Binary(bytes) => link.deliver(Message::Binary(bytes)),
        Frame::Ping(payload) => link.push_control(OpCode::Pong, &payload),
        Frame::Pong(_) => {}
        Frame::Close(frame) => {
            link.peer_closed(frame);
            return true;
        }
    }
    false
}

fn close_reason(code: CloseCode) -> &'static str {
    match code {
        CloseCode::Protocol => "protocol error",
        CloseCode::InvalidData => "invalid UTF-8 or compressed data",
        CloseCode::TooBig => "message too big",
    }
}

/// Runs an accepted WebSocket over `read`/`write` (with `buf` holding
/// bytes already received), then leaves its rooms and calls `on_close`.
pub(crate) async fn serve<R: WsRead, W: WsWrite>(
    read: R,
    write: W,
    buf: BytesMut,
    pending: crate::ws::Pending,
    shard: Rc<ShardCtx>,
    conn_key: usize,
) {
    let (opened, decoder, session) = pending.open();
    let services = shard.services().clone();
    services.metrics.websocket_opened();
    let link = opened.link.clone();
    let outcome = run(read, write, buf, decoder, opened.link.clone(), session, opened.timing, shard, conn_key).await;
    let (sent, received) = link.counted.get();
    services.metrics.websocket_messages(received, sent);
    services.metrics.websocket_closed();
    opened.finish(&outcome);
}
