//! One HTTP/1.1 connection: read, decode every pipelined request, dispatch,
//! encode every response into one buffer, write once.
//!
//! The connection owns its read half and read buffer ([`ReadSide`]). While a
//! request with a body is being handled, the read side is lent to the body
//! (so a handler can stream the upload, even into its response) and taken back
//! when the response is written.

use std::cell::RefCell;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::pin;
use std::rc::Rc;
use std::task::Poll;
use std::time::{Duration, Instant};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use http::header::HeaderValue;
use http::{Method, StatusCode, Version};
use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRent, AsyncWriteRentExt, Splitable};

use super::decode::{Decoded, Decoder};
use super::encode::{self, LAST_CHUNK, encode_chunk, encode_head, status_has_no_body};
use super::parse::{Framing, Head, parse_head, txn_refs};
use crate::error::{Error, ErrorKind, Result};
use crate::http::{Body, BodySource, FileBody, FilePart, Response, error_response, header_pool};
use crate::net::{Cork, Sent, ZeroCopyWrite, send_file};
use crate::observe::{RequestHead, Tick};
use crate::proto::Deadline;
use crate::proto::ws::conn::{H1Read, H1Write};
use crate::shard::{DRAIN_IDLE_GRACE, Route, ShardCtx, Site};

/// Capacity of a connection's read buffer for request heads; grows up to the head limit.
const READ_BUF_SIZE: usize = 4 * 1024;
/// Room made in the read buffer while a request body streams in.
const BODY_READ_SIZE: usize = 64 * 1024;
/// A write buffer larger than this is freed while the connection is idle
/// (idle keep-alive connections should cost little memory). Large enough
/// for a batch of 16 small pipelined answers, which a client that
/// pipelines sends again and again: freeing that buffer after each batch
/// cost five reallocations per batch.
const MAX_IDLE_WRITE_BUF: usize = 8 * 1024;
/// A full body at least this large is written straight from its buffer
/// instead of being copied into the batch.
const DIRECT_WRITE_MIN: usize = 64 * 1024;
/// Bytes read from a file per write when a file body goes through memory.
const FILE_READ_CHUNK: usize = 256 * 1024;
/// Unread request body we are willing to read and discard to keep a
/// connection alive; more than this and we close instead.
const MAX_DRAIN: u64 = 256 * 1024;
/// A batch up to this size is written by one timed `write_all` (it almost
/// always goes in one system call); a larger one a write at a time.
const TIMED_WRITE_WHOLE: usize = 64 * 1024;
/// Answers encoded into the batch buffer before it is written, although
/// more pipelined requests are waiting in the read buffer.
const MAX_BATCH: usize = 64 * 1024;
/// A read buffer that grew past this (a large head) is replaced when idle.
const MAX_IDLE_READ_BUF: usize = 64 * 1024;

/// How long a closing connection keeps reading (and dropping) client data.
const LINGER_TIME: Duration = Duration::from_secs(5);
/// Longest silence from the client while lingering.
const LINGER_READ_TIMEOUT: Duration = Duration::from_secs(1);
/// Most client data read and dropped while lingering.
const MAX_LINGER_BYTES: usize = 4 << 20;

const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

/// True when a response's body is in memory and small enough to be copied
/// into the batch buffer (see [`Conn::respond_in_batch`]).
fn fits_batch(response: &Response) -> bool {
    response.body().in_memory_len().is_some_and(|len| len < DIRECT_WRITE_MIN)
}

/// The read half of a connection, its buffer, and the body decoder of the
/// request in progress.
struct ReadSide<R> {
    io: R,
    buf: BytesMut,
    timer: Deadline,
    decoder: Decoder,
    /// Set when reading the body failed; the request's response becomes this error.
    failure: Option<Error>,
    /// Body bytes of the current request read so far.
    body_received: u64,
}

impl<R: AsyncReadRent> ReadSide<R> {
    /// Reads more bytes into the buffer; `Ok(0)` at end of stream.
    async fn fill(&mut self, timeout: Duration, room: usize) -> Result<usize> {
        if self.buf.capacity() - self.buf.len() < 1024 {
            self.buf.reserve(room);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let cap = buf.capacity();
        match self.timer.limit(timeout, pin!(self.io.read(buf.slice_mut(len..cap)))).await {
            Some((result, slice)) => {
                self.buf = slice.into_inner();
                Ok(result?)
            }
            // The buffer went with the cancelled read; the caller closes the connection.
            None => Err(Error::new(ErrorKind::Timeout, "read timed out")),
        }
    }

    /// The next piece of the current request body.
    async fn body_chunk(&mut self, timeout: Duration) -> Option<Result<Bytes>> {
        if self.failure.is_some() {
            return Some(Err(Error::new(ErrorKind::BadRequest, "request body failed earlier")));
        }
        loop {
            let err = match self.decoder.decode(&mut self.buf) {
                Ok(Decoded::Data(bytes)) => {
                    self.body_received += bytes.len() as u64;
                    return Some(Ok(bytes));
                }
                Ok(Decoded::End) => return None,
                Ok(Decoded::NeedMore) => match self.fill(timeout, BODY_READ_SIZE).await {
                    Ok(0) => Error::new(ErrorKind::BadRequest, "connection closed inside the request body"),
                    Ok(_) => continue,
                    Err(e) => e,
                },
                Err(e) => e,
            };
            let reported = Error::new(err.kind(), err.detail().to_owned());
            self.failure = Some(err);
            return Some(Err(reported));
        }
    }
}

/// The request body as handed to a handler: a loan of the connection's read side.
struct H1Body<R> {
    slot: Rc<RefCell<Option<ReadSide<R>>>>,
    timeout: Duration,
    /// Where the request's `100 Continue` stands (shared with the connection).
    expect: Rc<std::cell::Cell<Continue>>,
}

/// The `100 Continue` a request with `Expect: 100-continue` is owed. It is
/// sent only once the body is asked for: a request refused or answered
/// without its body (a 404, a 401, a 503 under load) never invites the
/// upload (RFC 9110 §10.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Continue {
    /// No `Expect: 100-continue`, or the 100 went out.
    Settled,
    /// Owed, the body not asked for yet.
    Owed,
    /// The handler asked for the body: the connection sends the 100.
    Wanted,
}

impl<R: AsyncReadRent + 'static> BodySource for H1Body<R> {
    fn next_chunk(&mut self) -> LocalBoxFuture<'_, Option<Result<Bytes>>> {
        Box::pin(async move {
            if self.expect.get() == Continue::Owed {
                // The read below waits for a body the client sends only
                // after the 100, which the connection now writes.
                self.expect.set(Continue::Wanted);
            }
            let Some(mut side) = self.slot.borrow_mut().take() else {
                return Some(Err(Error::new(ErrorKind::Internal, "request body read after the response was sent")));
            };
            let chunk = side.body_chunk(self.timeout).await;
            *self.slot.borrow_mut() = Some(side);
            chunk
        })
    }

    fn remaining(&self) -> Option<u64> {
        self.slot.borrow().as_ref().and_then(|side| side.decoder.remaining())
    }
}

/// Whether the connection goes on after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    KeepAlive,
    Close,
    /// Switch to HTTP/2 (`Upgrade: h2c`); the request goes on as stream 1.
    UpgradeH2c,
    /// The `101` for a WebSocket is in the batch; the connection becomes one.
    UpgradeWs,
}

/// A connection handed over to HTTP/2 after `101 Switching Protocols`.
pub(crate) struct H2cUpgrade<R, W> {
    pub(crate) read: R,
    pub(crate) write: W,
    /// Bytes the client sent after the upgrade request.
    pub(crate) buffered: BytesMut,
    /// The upgrade request as a HEADERS frame on stream 1.
    pub(crate) request_frame: Bytes,
}

/// Awaits the future `$answer` inside connection method `$conn`. When it is
/// not ready at once and the answers to earlier pipelined requests wait in
/// the buffer, they are written first: a slow request never holds back the
/// responses before it (a ready answer joins the batch, so pipelining still
/// writes once). A macro, not a method, so the future is pinned where it is
/// made instead of being moved into another future on every request.
macro_rules! flush_while_pending {
    ($conn:expr, $answer:expr) => {{
        let mut answer = std::pin::pin!($answer);
        let mut early = None;
        if !$conn.out.is_empty() {
            if let Poll::Ready(value) = std::future::poll_fn(|cx| Poll::Ready(answer.as_mut().poll(cx))).await {
                early = Some(value);
            } else {
                // A failed flush lost its batch (a stalled or failed write):
                // answering on would send the next response after a cut-off one.
                $conn.flush().await?;
            }
        }
        match early {
            Some(value) => value,
            None => answer.await,
        }
    }};
}

/// Serves one accepted connection until it closes. `initial` holds bytes
/// already read from it; `site` says who answers (the mount table, a 301 to
/// the same URL over https on the plain listener beside a TLS one, or the
/// admin endpoints).
/// With `h2c_upgrade`, a request asking for `Upgrade: h2c` ends HTTP/1.1 on
/// this connection and the halves come back for HTTP/2.
pub(crate) async fn serve<IO>(
    io: IO,
    peer: SocketAddr,
    shard: Rc<ShardCtx>,
    conn_key: usize,
    initial: BytesMut,
    site: Site,
    h2c_upgrade: bool,
) -> Option<H2cUpgrade<IO::OwnedRead, IO::OwnedWrite>>
where
    IO: Splitable + 'static,
    IO::OwnedRead: AsyncReadRent + 'static,
    IO::OwnedWrite: AsyncWriteRent + ZeroCopyWrite + 'static,
{
    let (read, write) = io.into_split();
    let mut conn = Conn {
        side: Some(ReadSide {
            io: read,
            buf: initial,
            timer: Deadline::new(),
            decoder: Decoder::Done,
            failure: None,
            body_received: 0,
        }),
        write,
        write_timer: Deadline::new(),
        out: BytesMut::new(),
        peer,
        shard,
        conn_key,
        site,
        h2c_upgrade,
        upgrade: None,
        websocket: None,
    };
    if let Err(e) = conn.run().await {
        tracing::debug!(%peer, error = %e, "connection ended with an error");
        return None;
    }
    if let Some(pending) = conn.websocket.take() {
        let side = conn.side.take()?;
        let (read, write) = (H1Read(side.io), H1Write(conn.write));
        crate::proto::ws::conn::serve(read, write, side.buf, *pending, conn.shard, conn_key).await;
        return None;
    }
    let request_frame = conn.upgrade.take()?;
    let side = conn.side.take()?;
    Some(H2cUpgrade { read: side.io, write: conn.write, buffered: side.buf, request_frame })
}

struct Conn<R, W> {
    side: Option<ReadSide<R>>,
    write: W,
    write_timer: Deadline,
    out: BytesMut,
    peer: SocketAddr,
    shard: Rc<ShardCtx>,
    conn_key: usize,
    /// Who answers the requests.
    site: Site,
    /// Honour `Upgrade: h2c` (plain connections with HTTP/2 enabled).
    h2c_upgrade: bool,
    /// Set when a request switched the connection to HTTP/2.
    upgrade: Option<Bytes>,
    /// Set when a request switched the connection to WebSocket.
    websocket: Option<Box<crate::ws::Pending>>,
}

impl<R, W> Conn<R, W>
where
    R: AsyncReadRent + 'static,
    W: AsyncWriteRent + ZeroCopyWrite + 'static,
{
    async fn run(&mut self) -> Result<()> {
        let limits = self.shard.limits;
        let mut first_request = true;
        // When the current (incomplete) head started arriving.
        let mut head_started: Option<Instant> = None;
        loop {
            // Decode and answer every complete request in the buffer.
            loop {
                // An empty buffer (after the last request of a read, the
                // usual case) has nothing to parse: go straight to the read.
                if self.side.as_ref().is_some_and(|side| side.buf.is_empty()) {
                    break;
                }
                // Pipelined answers are written once they fill a batch, so
                // a client that sends many requests and reads nothing holds
                // at most this much of ours (and the socket buffers).
                if self.out.len() >= MAX_BATCH {
                    self.flush().await?;
                }
                match self.answer_next().await? {
                    None => break,
                    Some(next) => {
                        head_started = None;
                        first_request = false;
                        match next {
                            Next::Close => return self.flush_and_close().await,
                            Next::UpgradeH2c => {
                                self.out.put_slice(crate::proto::h2::upgrade::SWITCHING);
                                return self.flush().await;
                            }
                            Next::UpgradeWs => return self.flush().await,
                            Next::KeepAlive => {}
                        }
                    }
                }
            }
            self.flush().await?;

            let side = self.side.as_mut().expect("read side present between requests");
            let timeout = if side.buf.is_empty() {
                if side.buf.capacity() > MAX_IDLE_READ_BUF {
                    side.buf = BytesMut::with_capacity(READ_BUF_SIZE);
                }
                if self.out.capacity() > MAX_IDLE_WRITE_BUF {
                    self.out = BytesMut::new();
                }
                if self.shard.draining() {
                    // The client may have sent its next request before it saw
                    // that we drain: wait a moment for it and answer it (with
                    // `Connection: close`) rather than reset the connection
                    // under it. (A new admin connection is answered too:
                    // `/readyz` says "draining".)
                    DRAIN_IDLE_GRACE
                } else if first_request {
                    limits.header_timeout
                } else {
                    limits.keep_alive
                }
            } else {
                let started = *head_started.get_or_insert_with(Instant::now);
                limits.header_timeout.saturating_sub(started.elapsed())
            };
            let idle = side.buf.is_empty();
            self.shard.set_idle(self.conn_key, idle);
            let filled = side.fill(timeout, READ_BUF_SIZE).await;
            self.shard.set_idle(self.conn_key, false);
            match filled {
                Ok(0) => return Ok(()),
                // The head's clock starts when a partial head is first seen (above),
                // so a complete head costs no clock read.
                Ok(_) => {}
                Err(e) if e.kind() == ErrorKind::Timeout && !idle => {
                    // Slowloris: part of a head arrived, the rest did not in time.
                    self.side = None;
                    self.write_error(&Error::new(ErrorKind::Timeout, "request head timed out"), None, Version::HTTP_11);
                    return self.flush_and_close().await;
                }
                // An idle connection whose time is up (keep-alive, or a drain's grace) just closes.
                Err(e) if e.kind() == ErrorKind::Timeout => return Ok(()),
                Err(e) => return Err(e),
            }
        }
    }

    /// Parses the next request in the read buffer and answers it; `None`
    /// when the buffer holds no complete head. A malformed head is answered
    /// with its error and `Next::Close`.
    ///
    /// A request without a body (the hot path) is answered right here,
    /// where its head was parsed: handing a 336-byte head to another
    /// `async fn` copied it three times (into the call, into that future's
    /// state, out of the `Result`). Bodies take the boxed road. Routing is
    /// synchronous and the context lives in this future, so the only future
    /// awaited per request is the handler's own (boxed) one.
    async fn answer_next(&mut self) -> Result<Option<Next>> {
        let side = self.side.as_mut().expect("read side present between requests");
        let mut head = match parse_head(&mut side.buf, &self.shard.limits) {
            Ok(Some(head)) => head,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.write_error(&e.error, e.accept.as_ref(), Version::HTTP_11);
                self.count_refused(&e.error);
                return Ok(Some(Next::Close));
            }
        };
        if head.framing != Framing::Empty {
            return Box::pin(self.handle_with_body(head)).await.map(Some);
        }
        let version = head.request.version();
        let http10 = version == Version::HTTP_10;
        let is_head = head.request.method() == Method::HEAD;
        let shard = self.shard.clone();
        if self.h2c_upgrade && head.upgrade && !http10 {
            let max_frame = shard.protocols.http2.max_frame_size as usize;
            if let Some(frame) = crate::proto::h2::upgrade::upgrade_frame(&head.request, max_frame) {
                self.upgrade = Some(frame);
                return Ok(Some(Next::UpgradeH2c));
            }
        }
        let found = Some(txn_refs(&head.txn));
        let mut exchange =
            shard.exchange(self.site, self.peer, RequestHead { txn: found, ..RequestHead::of(&head.request) });
        let accept = head.accept.as_ref();
        let mut from = 0;
        let response = match self.site {
            Site::Redirect => shard.https_redirect(&head.request),
            site => {
                match if site == Site::Main && exchange.counted() { shard.admit(accept) } else { Ok(()) } {
                    Err(refusal) => *refusal,
                    Ok(()) => loop {
                        match shard.route(&mut head.request, accept, from, site) {
                            Route::Respond(response) => break *response,
                            Route::Handler { handler, mount_point, original_uri, slot } => {
                                exchange.slot = slot;
                                let mut cx = shard.ctx(self.peer, mount_point, original_uri, version, &exchange.txn);
                                let mut answer = shard.call(handler, head.request, &mut cx, exchange.started);
                                flush_while_pending!(self, &mut answer);
                                let outcome = ShardCtx::settle(&mut answer, &mut exchange);
                                drop(answer);
                                let response = outcome.unwrap_or_else(|panic| shard.panic_response(panic, &cx, accept));
                                if let Some(pending) = cx.upgrade.0.take() {
                                    if response.status() == StatusCode::SWITCHING_PROTOCOLS && !http10 {
                                        let handled = exchange.answered_at();
                                        self.respond(response, false, true, false).await;
                                        exchange.finish(101, 0, 0, handled);
                                        self.websocket = Some(pending);
                                        return Ok(Some(Next::UpgradeWs));
                                    }
                                }
                                break response;
                            }
                            // Boxed so the file server's state does not enlarge every request's future.
                            Route::Static { files, strip, next } => {
                                match flush_while_pending!(self, Box::pin(files.serve(&head.request, strip))) {
                                    Some(response) => {
                                        exchange.slot = next - 1;
                                        break response;
                                    }
                                    None => from = next,
                                }
                            }
                        }
                    },
                }
            }
        };
        let handled = exchange.answered_at();
        let status = response.status().as_u16();
        let keep_alive = head.keep_alive && !self.shard.draining();
        let (next, sent) = if fits_batch(&response) {
            self.respond_in_batch(response, is_head, keep_alive, http10)
        } else {
            self.respond(response, is_head, keep_alive, http10).await
        };
        exchange.finish(status, 0, sent, handled);
        Ok(Some(next))
    }

    /// Counts a request refused before it could be parsed (it has no log line).
    fn count_refused(&self, error: &Error) {
        if let Some(status) = error.status() {
            let metrics = &self.shard.services().metrics;
            metrics.record(Version::HTTP_11, status.as_u16(), metrics.engine_slot(), Duration::ZERO, 0, 0);
        }
    }

    /// Encodes a response that [`fits_batch`] (the common case) into the
    /// batch buffer, returning what [`Self::respond`] would. Not `async`:
    /// the response is not moved into another future.
    #[inline]
    fn respond_in_batch(&mut self, response: Response, is_head: bool, keep_alive: bool, http10: bool) -> (Next, u64) {
        debug_assert!(fits_batch(&response));
        let (parts, body) = response.into_parts();
        let Ok(full) = body.try_into_full() else {
            unreachable!("fits_batch: the body is in memory");
        };
        let (keep_alive, to_send) = self.encode_full_head(parts, full, is_head, keep_alive, http10);
        let mut sent = 0;
        if let Some(bytes) = to_send {
            self.out.put_slice(&bytes);
            sent = bytes.len() as u64;
        }
        (if keep_alive { Next::KeepAlive } else { Next::Close }, sent)
    }

    /// Encodes the head of a response whose body `full` is in memory and
    /// returns the map to the pool; gives back whether the connection stays
    /// open and the body bytes to send (none for HEAD or a bodiless status).
    #[inline(always)]
    fn encode_full_head(
        &mut self,
        parts: http::response::Parts,
        full: Option<Bytes>,
        is_head: bool,
        keep_alive: bool,
        http10: bool,
    ) -> (bool, Option<Bytes>) {
        let no_body = status_has_no_body(parts.status);
        let len = full.as_ref().map_or(0, |b| b.len() as u64);
        let framing = if no_body { encode::Framing::None } else { encode::Framing::Length(len) };
        let keep_alive = encode_head(parts.status, &parts.headers, framing, keep_alive, http10, &mut self.out);
        header_pool::give_back(parts.headers);
        (keep_alive, full.filter(|_| !is_head && !no_body))
    }

    /// Sends a response: small in-memory bodies are encoded straight into the
    /// batch buffer; large or streamed bodies go through the boxed writer.
    /// Also returns the body bytes sent.
    async fn respond(&mut self, response: Response, is_head: bool, mut keep_alive: bool, http10: bool) -> (Next, u64) {
        if fits_batch(&response) {
            return self.respond_in_batch(response, is_head, keep_alive, http10);
        }
        let (parts, body) = response.into_parts();
        let mut sent = 0;
        let written = match body.try_into_full() {
            // A large body in memory: written from its own buffer after the batch.
            Ok(full) => {
                let to_send;
                (keep_alive, to_send) = self.encode_full_head(parts, full, is_head, keep_alive, http10);
                match to_send {
                    Some(bytes) => {
                        let len = bytes.len() as u64;
                        let written = Box::pin(self.write_large(bytes)).await;
                        sent = if written.is_ok() { len } else { 0 };
                        written
                    }
                    None => Ok(()),
                }
            }
            Err(body) => match body.try_into_file() {
                Ok(file) => {
                    let no_body = status_has_no_body(parts.status);
                    let framing = if no_body { encode::Framing::None } else { encode::Framing::Length(file.len()) };
                    keep_alive = encode_head(parts.status, &parts.headers, framing, keep_alive, http10, &mut self.out);
                    if is_head || no_body { Ok(()) } else { Box::pin(self.write_file(file, &mut sent)).await }
                }
                Err(body) => {
                    // An HTTP/1.0 client cannot take chunks: the body ends when we close.
                    keep_alive &= !(http10 && body.exact_len().is_none());
                    Box::pin(self.write_stream(parts, body, is_head, &mut keep_alive, http10, &mut sent)).await
                }
            },
        };
        let next = match written {
            Ok(()) if keep_alive => Next::KeepAlive,
            Ok(()) => Next::Close,
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "response not completed");
                Next::Close
            }
        };
        (next, sent)
    }

    /// Writes a file body after its head: file ranges go out by `sendfile`
    /// on plain TCP (read through memory otherwise); in-memory pieces join the batch.
    async fn write_file(&mut self, body: FileBody, total: &mut u64) -> Result<()> {
        let timeout = self.shard.limits.request_timeout;
        // The head (still in the batch buffer) and the file leave in full segments.
        let _cork = self.write.tcp_socket().and_then(Cork::new);
        for part in body.parts {
            match part {
                FilePart::Bytes(bytes) => {
                    self.out.put_slice(&bytes);
                    *total += bytes.len() as u64;
                }
                FilePart::Range { offset, len } => {
                    self.flush().await?;
                    let sent = match self.write.tcp_socket().filter(|_| self.shard.limits.sendfile) {
                        Some(socket) => {
                            send_file(socket, &body.file, offset, len, &mut self.write_timer, timeout).await?
                        }
                        None => Sent::Unsupported,
                    };
                    if sent == Sent::Unsupported {
                        self.write_file_through_memory(&body.file, offset, len).await?;
                    }
                    *total += len;
                }
            }
        }
        Ok(())
    }

    /// Sends `len` bytes of `file` from `offset` by reading them into a buffer
    /// (an io_uring read on the io_uring driver) and writing that, chunk by chunk.
    async fn write_file_through_memory(&mut self, file: &std::fs::File, mut offset: u64, mut len: u64) -> Result<()> {
        let file = monoio::fs::File::from_std(file.try_clone()?)?;
        let mut buf: Vec<u8> = Vec::with_capacity(FILE_READ_CHUNK.min(len as usize));
        let timeout = self.shard.limits.request_timeout;
        while len > 0 {
            let want = FILE_READ_CHUNK.min(len as usize);
            buf.clear();
            let (read, filled) = file.read_at(buf.slice_mut(0..want), offset).await;
            buf = filled.into_inner();
            let n = read?;
            if n == 0 {
                return Err(Error::new(ErrorKind::Internal, "file shrank while it was being sent"));
            }
            // The read set the vector's length to the bytes it filled.
            debug_assert_eq!(buf.len(), n);
            match self.write_timer.limit(timeout, self.write.write_all(buf)).await {
                Some((result, written)) => {
                    result?;
                    buf = written;
                }
                None => return Err(Error::new(ErrorKind::Timeout, "write stalled")),
            }
            offset += n as u64;
            len -= n as u64;
        }
        Ok(())
    }

    /// Writes a large in-memory body straight from its buffer, after the batch.
    async fn write_large(&mut self, bytes: Bytes) -> Result<()> {
        self.flush().await?;
        self.write_bytes(bytes).await
    }

    /// Answers a request with a body: the read side is lent to the body while
    /// the handler runs and the response is written, then taken back.
    async fn handle_with_body(&mut self, head: Head) -> Result<Next> {
        let limits = self.shard.limits;
        let Head { mut request, framing, keep_alive, expect_continue, accept, txn, .. } = head;
        let version = request.version();
        let http10 = version == Version::HTTP_10;
        let is_head = request.method() == Method::HEAD;
        let mut keep_alive = keep_alive;

        let shard = self.shard.clone();
        let found = Some(txn_refs(&txn));
        let mut exchange =
            shard.exchange(self.site, self.peer, RequestHead { txn: found, ..RequestHead::of(&request) });
        if let Framing::Length(n) = framing {
            if n > limits.max_upload_size {
                // Refused before a byte of the body is read (and before any 100).
                let error = Error::new(ErrorKind::PayloadTooLarge, "Content-Length exceeds max_upload_size");
                let handled = Tick::now();
                let sent = self.write_error(&error, accept.as_ref(), version);
                exchange.finish(413, 0, sent, handled);
                return Ok(Next::Close);
            }
        }

        let mut side = self.side.take().expect("read side present between requests");
        side.decoder = match framing {
            Framing::Length(n) => Decoder::length(n),
            _ => Decoder::chunked(limits.max_upload_size),
        };
        side.failure = None;
        side.body_received = 0;
        let slot = Rc::new(RefCell::new(Some(side)));
        // A `100 Continue` (the size check passed) is sent when the body is
        // first asked for, not before: see `Continue`.
        let expect = Rc::new(std::cell::Cell::new(if expect_continue { Continue::Owed } else { Continue::Settled }));
        *request.body_mut() = Body::incoming(Box::new(H1Body {
            slot: slot.clone(),
            timeout: limits.request_timeout,
            expect: expect.clone(),
        }));

        // Not `flush_while_pending!`: a client that sends the whole body
        // before reading could stall a flush of earlier answers while
        // nobody reads the body. Polled by hand to send the 100 when the
        // handler, waiting, has asked for the body.
        let mut response = {
            let mut dispatch = pin!(shard.dispatch(request, self.peer, accept.as_ref(), self.site, &mut exchange));
            loop {
                let step = std::future::poll_fn(|cx| match dispatch.as_mut().poll(cx) {
                    Poll::Ready(response) => Poll::Ready(Some(response)),
                    Poll::Pending if expect.get() == Continue::Wanted => Poll::Ready(None),
                    Poll::Pending => Poll::Pending,
                })
                .await;
                match step {
                    Some(response) => break response,
                    None => self.send_continue(&expect).await?,
                }
            }
        };
        // A body in memory or a file cannot read the rest of the request's.
        let ready_made = response.body().is_ready_made();
        if expect.get() == Continue::Owed {
            if ready_made {
                // Answered without the body: the client may never send it
                // (it was waiting for a 100), so the connection cannot be
                // reused; the response says so.
                keep_alive = false;
            } else {
                // A streamed response (an echo, say) may read the body:
                // invite it before the response is pulled.
                self.send_continue(&expect).await?;
            }
        }

        // A body that failed (too large, malformed, timed out) decides the
        // answer: the handler saw an error, the client gets the status.
        if let Some(failure) = slot.borrow_mut().as_mut().and_then(|side| side.failure.take()) {
            response = self.error_response(&failure, accept.as_ref());
            keep_alive = false;
        }
        keep_alive &= !self.shard.draining();
        // A response that will not read the rest of the request body (one
        // in memory or a file), where that rest is too long or of unknown
        // length to skip afterwards: the connection closes after it, so
        // this response says so (not keep-alive, then a close under a
        // client that may already reuse the connection).
        if keep_alive && ready_made {
            let unskippable = slot
                .borrow()
                .as_ref()
                .is_none_or(|side| !side.decoder.is_done() && side.decoder.remaining().is_none_or(|n| n > MAX_DRAIN));
            keep_alive = !unskippable;
        }

        let handled = exchange.answered_at();
        let status = response.status().as_u16();
        let (next, sent) = self.respond(response, is_head, keep_alive, http10).await;
        self.side = slot.borrow_mut().take();
        let received = self.side.as_ref().map_or(0, |side| side.body_received);
        exchange.finish(status, received, sent, handled);
        if next == Next::Close {
            return Ok(Next::Close);
        }
        // Keep the connection only if the rest of the request body can be skipped cheaply.
        let Some(side) = self.side.as_mut() else {
            return Ok(Next::Close);
        };
        if side.failure.is_some() {
            return Ok(Next::Close);
        }
        if !side.decoder.is_done() {
            if side.decoder.remaining().is_none_or(|n| n > MAX_DRAIN) {
                return Ok(Next::Close);
            }
            self.flush().await?;
            let side = self.side.as_mut().expect("checked above");
            while let Some(chunk) = side.body_chunk(limits.request_timeout).await {
                if chunk.is_err() {
                    return Ok(Next::Close);
                }
            }
        }
        Ok(Next::KeepAlive)
    }

    /// Streams a body that is not in memory: the first chunk is pulled before
    /// the head is committed, then chunks go out as they come (chunked on
    /// HTTP/1.1, close-delimited for HTTP/1.0 clients).
    async fn write_stream(
        &mut self,
        parts: http::response::Parts,
        mut body: Body,
        is_head: bool,
        keep_alive: &mut bool,
        http10: bool,
        sent: &mut u64,
    ) -> Result<()> {
        let status = parts.status;
        let no_body = status_has_no_body(status);
        // Pull the first chunk before committing to a status: if the body
        // fails at once (a malformed upload being echoed, say), the
        // client can still get a proper error response.
        let first = if is_head || no_body { None } else { body.chunk_or_panic_error().await };
        let first = match first {
            Some(Err(e)) => {
                let error = Error::new(e.kind(), format!("response body failed: {e}"));
                self.write_error(&error, None, if http10 { Version::HTTP_10 } else { Version::HTTP_11 });
                return Err(Error::new(ErrorKind::BadRequest, "response body failed before it started"));
            }
            Some(Ok(chunk)) => Some(chunk),
            None => None,
        };
        let known = body.exact_len().map(|rest| rest + first.as_ref().map_or(0, |c| c.len() as u64));
        let framing = match (no_body, known, http10) {
            (true, _, _) => encode::Framing::None,
            (false, Some(n), _) => encode::Framing::Length(n),
            (false, None, false) => encode::Framing::Chunked,
            (false, None, true) => encode::Framing::Close,
        };
        *keep_alive = encode_head(status, &parts.headers, framing, *keep_alive, http10, &mut self.out);
        if is_head || no_body {
            return Ok(());
        }
        if first.is_none() && known.is_none() {
            // The stream was empty: close the chunked body right away.
            if framing == encode::Framing::Chunked {
                self.out.put_slice(LAST_CHUNK);
            }
            return Ok(());
        }
        let mut next = first.map(Ok);
        if next.is_none() {
            next = body.chunk_or_panic_error().await;
        }
        while let Some(chunk) = next {
            let chunk = chunk.map_err(|e| Error::new(e.kind(), format!("response body failed: {e}")))?;
            let len = chunk.len() as u64;
            if framing == encode::Framing::Chunked {
                encode_chunk(&chunk, &mut self.out);
                self.flush().await?;
                *sent += len;
            } else {
                if known.is_some_and(|n| *sent + len > n) {
                    return Err(Error::new(ErrorKind::Internal, "response body longer than its length"));
                }
                self.flush().await?;
                self.write_bytes(chunk).await?;
                *sent += len;
            }
            next = body.chunk_or_panic_error().await;
        }
        match framing {
            encode::Framing::Chunked => self.out.put_slice(LAST_CHUNK),
            encode::Framing::Length(n) if *sent != n => {
                return Err(Error::new(ErrorKind::Internal, "response body shorter than its length"));
            }
            _ => {}
        }
        Ok(())
    }

    fn error_response(&self, error: &Error, accept: Option<&HeaderValue>) -> Response {
        let status = error.status().unwrap_or(StatusCode::BAD_REQUEST);
        let detail = self.shard.devel.then(|| error.to_string());
        error_response(status, accept, detail.as_deref())
    }

    /// Puts an error response for a request we could not parse into the
    /// batch; the connection closes after it. Returns the body's length.
    fn write_error(&mut self, error: &Error, accept: Option<&HeaderValue>, version: Version) -> u64 {
        let Some(status) = error.status() else { return 0 };
        tracing::debug!(peer = %self.peer, %status, error = %error, "refusing request");
        let response = self.error_response(error, accept);
        let (parts, body) = response.into_parts();
        let bytes = body.try_into_full().ok().flatten().unwrap_or_default();
        let _ = encode_head(
            status,
            &parts.headers,
            encode::Framing::Length(bytes.len() as u64),
            false,
            version == Version::HTTP_10,
            &mut self.out,
        );
        self.out.put_slice(&bytes);
        bytes.len() as u64
    }

    /// Writes the batch buffer, if it holds anything.
    async fn flush(&mut self) -> Result<()> {
        if self.out.is_empty() {
            return Ok(());
        }
        if self.out.len() > TIMED_WRITE_WHOLE {
            // A large batch goes a write at a time, each timed on its own.
            let out = std::mem::take(&mut self.out).freeze();
            return self.write_bytes(out).await;
        }
        let out = std::mem::take(&mut self.out);
        let timeout = self.shard.limits.request_timeout;
        match self.write_timer.limit(timeout, pin!(self.write.write_all(out))).await {
            Some((result, mut out)) => {
                result?;
                out.clear();
                self.out = out;
                Ok(())
            }
            None => Err(Error::new(ErrorKind::Timeout, "write stalled")),
        }
    }

    /// Writes the `100 Continue` a request was owed and marks it sent.
    async fn send_continue(&mut self, expect: &std::cell::Cell<Continue>) -> Result<()> {
        expect.set(Continue::Settled);
        self.out.put_slice(CONTINUE);
        self.flush().await
    }

    /// Writes `bytes` a system call at a time, each given `request_timeout`
    /// on its own: the timeout is the client's inactivity, so a large body
    /// to a slow but steady reader is not cut off for taking long overall.
    async fn write_bytes(&mut self, mut bytes: Bytes) -> Result<()> {
        let timeout = self.shard.limits.request_timeout;
        while !bytes.is_empty() {
            match self.write_timer.limit(timeout, self.write.write(bytes)).await {
                Some((Ok(0), _)) => return Err(Error::new(ErrorKind::Io, "the connection took no more bytes")),
                Some((Ok(n), rest)) => {
                    bytes = rest;
                    bytes.advance(n);
                }
                Some((Err(e), _)) => return Err(e.into()),
                None => return Err(Error::new(ErrorKind::Timeout, "write stalled")),
            }
        }
        Ok(())
    }

    /// Sends what is left, then closes gracefully: our side is shut for
    /// writing and what the client still sends (the rest of a refused upload,
    /// say) is read and dropped for a moment, so that closing does not reset
    /// the connection before the client has read our final response.
    async fn flush_and_close(&mut self) -> Result<()> {
        self.flush().await?;
        let _ = self.write.shutdown().await;
        let Some(side) = self.side.as_mut() else {
            return Ok(());
        };
        let deadline = Instant::now() + LINGER_TIME;
        let mut discarded = 0;
        while discarded < MAX_LINGER_BYTES {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            side.buf.clear();
            match side.fill(left.min(LINGER_READ_TIMEOUT), READ_BUF_SIZE).await {
                Ok(0) | Err(_) => break,
                Ok(n) => discarded += n,
            }
        }
        Ok(())
    }
}
