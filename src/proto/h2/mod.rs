//! HTTP/2 (RFC 9113) with the `h2` crate: h2 over TLS (ALPN) and h2c by
//! prior knowledge. Every stream goes through the same mount table,
//! handlers, limits and error pages as HTTP/1.1.
//!
//! The connection task drives the `h2` connection and accepts streams;
//! each stream runs as its own task on the shard. Request bodies stream to
//! the handler with flow control (window released as the handler reads);
//! response bodies are sent as the peer's window allows. Draining or a
//! quiet connection sends GOAWAY and lets open streams finish.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::{Either, LocalBoxFuture, select};
use h2::server::SendResponse;
use h2::{RecvStream, SendStream};
use http::header::{self, HeaderValue};
use http::{Method, StatusCode, Uri, Version};
use monoio::io::{AsyncReadRent, AsyncWriteRent};

use crate::error::{Error, ErrorKind, Result};
use crate::http::date::http_date;
use crate::http::{Body, BodySource, Request, Response, SERVER_NAME, error_response};
use crate::observe::{RequestHead, Tick};
use crate::proto::ws::conn::{H2Read as WsH2Read, H2Write as WsH2Write};
use crate::shard::{ShardCtx, Site};

pub(crate) mod upgrade;

/// The first bytes of every HTTP/2 connection (RFC 9113 §3.4).
pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Most of a streamed response body taken (when already available) before
/// its status is committed.
const LOOKAHEAD: usize = 256 * 1024;

/// Largest piece of a response body handed to `h2` at once.
const MAX_DATA_CHUNK: usize = 64 * 1024;
/// Longest wait, after a GOAWAY with no stream left open, for the client to
/// acknowledge it before the connection is dropped (`keep_alive` if shorter).
const GOAWAY_GRACE: Duration = Duration::from_secs(5);

/// Serves one HTTP/2 connection until it closes.
pub(crate) async fn serve<IO>(io: IO, peer: SocketAddr, shard: Rc<ShardCtx>, key: usize)
where
    IO: AsyncReadRent + AsyncWriteRent + Unpin + 'static,
{
    let settings = &shard.protocols.http2;
    let limits = shard.limits;
    let mut builder = h2::server::Builder::new();
    builder
        .max_concurrent_streams(settings.max_concurrent_streams)
        .initial_window_size(settings.initial_window_size)
        .initial_connection_window_size(settings.initial_connection_window_size)
        .max_frame_size(settings.max_frame_size)
        .max_header_list_size(settings.max_header_list_size)
        // RFC 8441: WebSocket over HTTP/2 streams (extended CONNECT).
        .enable_connect_protocol();
    let io = monoio_compat::StreamWrapper::new(io);
    let mut conn = match monoio::time::timeout(limits.header_timeout, builder.handshake::<_, Bytes>(io)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "HTTP/2 handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "HTTP/2 handshake timed out");
            return;
        }
    };
    let active = Rc::new(Cell::new(0usize));
    let mut closing = false;
    let goaway_grace = limits.keep_alive.min(GOAWAY_GRACE);
    // One timer for the connection's life, not one per stream: it ticks every
    // `keep_alive`, and a tick that finds no open stream and no new one since
    // the last tick closes the connection.
    let mut idle_tick = Box::pin(monoio::time::sleep(limits.keep_alive));
    let mut accepted_since_tick = false;
    loop {
        let event = {
            let accept = std::pin::pin!(conn.accept());
            let stop = std::pin::pin!(async {
                if closing {
                    // The GOAWAY went out: open streams finish, then the
                    // client has a grace to acknowledge it (h2 waits for the
                    // answer to its PING), after which the connection is
                    // dropped: a client that never answers held it forever.
                    loop {
                        idle_tick.as_mut().await;
                        if active.get() == 0 {
                            return;
                        }
                        idle_tick.as_mut().reset(monoio::time::Instant::now() + goaway_grace);
                    }
                }
                let idle = async {
                    loop {
                        idle_tick.as_mut().await;
                        if active.get() == 0 && !accepted_since_tick {
                            return;
                        }
                        accepted_since_tick = false;
                        idle_tick.as_mut().reset(monoio::time::Instant::now() + limits.keep_alive);
                    }
                };
                let drain = shard.drain_started(key);
                select(std::pin::pin!(idle), std::pin::pin!(drain)).await;
            });
            match select(accept, stop).await {
                Either::Left((next, _)) => Some(next),
                Either::Right(_) => None,
            }
        };
        match event {
            Some(Some(Ok((request, respond)))) => {
                accepted_since_tick = true;
                active.set(active.get() + 1);
                let stream = Stream { shard: shard.clone(), peer, active: active.clone() };
                monoio::spawn(stream.handle(request, respond));
            }
            Some(Some(Err(e))) => {
                tracing::debug!(%peer, error = %e, "HTTP/2 connection error");
                break;
            }
            Some(None) => break,
            // The grace after the GOAWAY has passed with no stream open.
            None if closing => break,
            None => {
                // Draining or idle: GOAWAY with the last stream id; open streams finish.
                conn.graceful_shutdown();
                closing = true;
                idle_tick.as_mut().reset(monoio::time::Instant::now() + goaway_grace);
            }
        }
    }
}

/// One request/response exchange on a stream.
struct Stream {
    shard: Rc<ShardCtx>,
    peer: SocketAddr,
    active: Rc<Cell<usize>>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.active.set(self.active.get() - 1);
    }
}

impl Stream {
    async fn handle(self, request: http::Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let limits = self.shard.limits;
        let (mut parts, recv) = request.into_parts();
        let accept = parts.headers.get(header::ACCEPT).cloned();
        // Handlers see the same request as over HTTP/1.1: an origin-form
        // target and a Host field (from :authority).
        if !parts.headers.contains_key(header::HOST) {
            if let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
                parts.headers.insert(header::HOST, host);
            }
        }
        let authority = parts.uri.authority().cloned();
        let scheme = parts.uri.scheme().cloned();
        // Origin form without re-parsing: the path-and-query is shared, not copied.
        let mut origin = http::uri::Parts::default();
        origin.path_and_query = parts.uri.path_and_query().cloned();
        parts.uri = Uri::from_parts(origin).unwrap_or_else(|_| Uri::from_static("/"));
        let is_head = parts.method == Method::HEAD;

        let shard = self.shard.clone();
        let head = RequestHead {
            method: &parts.method,
            uri: &parts.uri,
            version: Version::HTTP_2,
            headers: &parts.headers,
            txn: None,
        };
        let mut exchange = shard.exchange(Site::Main, self.peer, head);
        // The same limits as over HTTP/1.1 (`max_header_list_size` bounds
        // the decoded fields' bytes; these bound the target and the count).
        let target_len = parts.uri.path_and_query().map_or(0, |p| p.as_str().len());
        let refused = if target_len > limits.max_uri_size {
            Some(StatusCode::URI_TOO_LONG)
        } else if parts.headers.len() > limits.max_headers {
            Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
        } else {
            None
        };
        if let Some(status) = refused {
            let response = error_response(status, accept.as_ref(), None);
            let handled = Tick::now();
            let sent = send(&mut respond, response, is_head).await;
            exchange.finish(status.as_u16(), 0, sent, handled);
            return;
        }
        let declared =
            parts.headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > limits.max_upload_size) {
            let response = error_response(StatusCode::PAYLOAD_TOO_LARGE, accept.as_ref(), None);
            let handled = Tick::now();
            let sent = send(&mut respond, response, is_head).await;
            exchange.finish(413, 0, sent, handled);
            if declared.is_some_and(|n| n <= LINGER_BODY_LIMIT) {
                discard_rest(recv).await;
            }
            return;
        }
        // An extended CONNECT for a WebSocket (RFC 8441): the stream's data
        // is the WebSocket's, not a request body; it is kept aside.
        let (recv, websocket_recv) =
            if parts.method == Method::CONNECT && parts.extensions.get::<h2::ext::Protocol>().is_some() {
                (None, Some(recv))
            } else {
                (Some(recv), None)
            };
        // Only a request with a body needs somewhere to report its failure.
        let failure = recv.as_ref().filter(|r| !r.is_end_stream()).map(|_| Rc::new(RefCell::new(None)));
        let received = Rc::new(Cell::new(0));
        let body = match &failure {
            None => Body::empty(),
            Some(failure) => Body::incoming(Box::new(H2Body {
                recv: recv.expect("a body only where there is a stream"),
                limit: limits.max_upload_size,
                timeout: limits.request_timeout,
                received: received.clone(),
                declared,
                failure: failure.clone(),
            })),
        };
        let push_fields = PushFields::of(&parts.headers);
        let request = Request::from_parts(parts, body);
        let dispatched =
            shard.dispatch_with_push(request, self.peer, accept.as_ref(), true, Site::Main, &mut exchange).await;
        let (mut response, pushes) = (dispatched.response, dispatched.pushes);
        if let Some(recv) = websocket_recv {
            match dispatched.websocket {
                Some(pending) if response.status() == StatusCode::OK => {
                    exchange.finish(200, 0, 0, Tick::now());
                    self.open_websocket(respond, response, recv, *pending).await;
                    return;
                }
                // A 2xx to an extended CONNECT means "tunnel open" (RFC 8441
                // §5): a resource that opened no WebSocket must not say it.
                _ if response.status().is_success() => {
                    let detail = self.shard.devel.then_some("this resource does not speak WebSocket");
                    response = error_response(StatusCode::METHOD_NOT_ALLOWED, accept.as_ref(), detail);
                }
                _ => {}
            }
        }
        if let Some(error) = failure.and_then(|f| f.borrow_mut().take()) {
            let status = error.status().unwrap_or(StatusCode::BAD_REQUEST);
            response = error_response(status, accept.as_ref(), None);
        }
        // Promises go out before the response that needs them (RFC 9113 §8.4).
        if let (false, Some(authority)) = (pushes.is_empty(), authority) {
            let scheme = scheme.unwrap_or(http::uri::Scheme::HTTPS);
            let headers = push_fields.into_map();
            for path in pushes {
                self.push(&mut respond, &scheme, &authority, &path, &headers);
            }
        }
        let handled = exchange.answered_at();
        let status = response.status().as_u16();
        let sent = send(&mut respond, response, is_head).await;
        exchange.finish(status, received.get(), sent, handled);
    }

    /// Promises `path` to the client and serves it on the promised stream,
    /// as a GET through the mount table. Does nothing if the client refuses
    /// pushes (SETTINGS_ENABLE_PUSH = 0) or the promise cannot be made.
    /// Answers an accepted WebSocket CONNECT with its 200 and runs the
    /// WebSocket on the stream until it closes.
    async fn open_websocket(
        &self,
        mut respond: SendResponse<Bytes>,
        response: Response,
        recv: RecvStream,
        pending: crate::ws::Pending,
    ) {
        let (mut parts, _) = response.into_parts();
        if !parts.headers.contains_key(header::SERVER) {
            parts.headers.insert(header::SERVER, SERVER_VALUE);
        }
        match respond.send_response(http::Response::from_parts(parts, ()), false) {
            Ok(send) => {
                // The stream counts as a connection of its own while the
                // WebSocket lives: drain closes it (1001) and waits for it.
                // Never marked idle, so its (absent) socket is never shut.
                let key = StreamKey::new(&self.shard);
                let (read, write) = (WsH2Read(recv), WsH2Write(send));
                let buf = bytes::BytesMut::new();
                crate::proto::ws::conn::serve(read, write, buf, pending, self.shard.clone(), key.0).await;
            }
            Err(e) => tracing::debug!(error = %e, "WebSocket CONNECT answer not sent"),
        }
    }

    fn push(
        &self,
        respond: &mut SendResponse<Bytes>,
        scheme: &http::uri::Scheme,
        authority: &http::uri::Authority,
        path: &str,
        headers: &http::HeaderMap,
    ) {
        let Ok(uri) = Uri::builder().scheme(scheme.clone()).authority(authority.clone()).path_and_query(path).build()
        else {
            return;
        };
        let mut promise = http::Request::new(());
        *promise.uri_mut() = uri;
        let mut pushed = match respond.push_request(promise) {
            Ok(pushed) => pushed,
            Err(e) => {
                tracing::debug!(path, error = %e, "push not sent");
                return;
            }
        };
        let mut request = Request::new(Body::empty());
        *request.uri_mut() = Uri::try_from(path).unwrap_or_else(|_| Uri::from_static("/"));
        *request.version_mut() = http::Version::HTTP_2;
        *request.headers_mut() = headers.clone();
        let shard = self.shard.clone();
        let peer = self.peer;
        self.active.set(self.active.get() + 1);
        let stream = Stream { shard, peer, active: self.active.clone() };
        monoio::spawn(async move {
            let accept = request.headers().get(header::ACCEPT).cloned();
            let shard = stream.shard.clone();
            let mut exchange = shard.exchange(Site::Main, stream.peer, RequestHead::of(&request));
            let response = shard.dispatch(request, stream.peer, accept.as_ref(), Site::Main, &mut exchange).await;
            let handled = Tick::now();
            let status = response.status().as_u16();
            let sent = send(&mut pushed, response, false).await;
            exchange.finish(status, 0, sent, handled);
            drop(stream);
        });
    }
}

/// The fields a pushed GET carries over from the request that pushed it:
/// what decides the representation (`Accept*`, `User-Agent`) and `Host`.
/// Kept as values (shared, not copied) so requests that push nothing cost
/// no header map.
/// A WebSocket stream's entry among the shard's connections; removed on drop.
struct StreamKey(usize, Rc<ShardCtx>);

impl StreamKey {
    fn new(shard: &Rc<ShardCtx>) -> StreamKey {
        StreamKey(shard.register(-1), shard.clone())
    }
}

impl Drop for StreamKey {
    fn drop(&mut self) {
        self.1.unregister(self.0);
    }
}

struct PushFields([Option<HeaderValue>; 4]);

const PUSH_FIELDS: [header::HeaderName; 4] =
    [header::HOST, header::ACCEPT_ENCODING, header::ACCEPT_LANGUAGE, header::USER_AGENT];

impl PushFields {
    fn of(from: &http::HeaderMap) -> PushFields {
        PushFields(PUSH_FIELDS.map(|name| from.get(&name).cloned()))
    }

    fn into_map(self) -> http::HeaderMap {
        let mut headers = http::HeaderMap::new();
        for (name, value) in PUSH_FIELDS.into_iter().zip(self.0) {
            if let Some(value) = value {
                headers.insert(name, value);
            }
        }
        headers
    }
}

/// Either kind of stream a response is sent on: a request's, or a pushed one.
trait Respond {
    fn send_head(&mut self, head: http::Response<()>, end: bool) -> std::result::Result<SendStream<Bytes>, h2::Error>;
    fn reset(&mut self, reason: h2::Reason);
}

impl Respond for SendResponse<Bytes> {
    fn send_head(&mut self, head: http::Response<()>, end: bool) -> std::result::Result<SendStream<Bytes>, h2::Error> {
        self.send_response(head, end)
    }

    fn reset(&mut self, reason: h2::Reason) {
        self.send_reset(reason);
    }
}

impl Respond for h2::server::SendPushedResponse<Bytes> {
    fn send_head(&mut self, head: http::Response<()>, end: bool) -> std::result::Result<SendStream<Bytes>, h2::Error> {
        self.send_response(head, end)
    }

    fn reset(&mut self, reason: h2::Reason) {
        self.send_reset(reason);
    }
}

/// Sends `response` on the stream: head, then the body as the window allows.
async fn send(respond: &mut impl Respond, response: Response, is_head: bool) -> u64 {
    let mut sent = 0;
    if let Err(e) = try_send(respond, response, is_head, &mut sent).await {
        tracing::debug!(error = %e, "HTTP/2 response not completed");
        respond.reset(h2::Reason::INTERNAL_ERROR);
    }
    sent
}

/// Sends `response`; `sent` counts the body bytes handed to the stream.
async fn try_send(respond: &mut impl Respond, response: Response, is_head: bool, sent: &mut u64) -> Result<()> {
    let (mut parts, body) = response.into_parts();
    // One look over the (few) fields instead of a lookup per name.
    let (mut has_server, mut has_date, mut connection_specific) = (false, false, false);
    for name in parts.headers.keys() {
        has_server |= name == header::SERVER;
        has_date |= name == header::DATE;
        connection_specific |= is_connection_specific(name);
    }
    if connection_specific {
        // Not allowed in HTTP/2 (RFC 9113 §8.2.2).
        for name in [header::CONNECTION, header::TRANSFER_ENCODING, header::UPGRADE, header::TE] {
            parts.headers.remove(name);
        }
        parts.headers.remove("keep-alive");
        parts.headers.remove("proxy-connection");
    }
    if !has_server {
        parts.headers.insert(header::SERVER, SERVER_VALUE);
    }
    if !has_date {
        if let Ok(date) = HeaderValue::from_bytes(&http_date()) {
            parts.headers.insert(header::DATE, date);
        }
    }
    let no_body = parts.status.is_informational()
        || parts.status == StatusCode::NO_CONTENT
        || parts.status == StatusCode::NOT_MODIFIED;
    parts.headers.remove(header::CONTENT_LENGTH);
    if !no_body {
        if let Some(len) = body.exact_len() {
            parts.headers.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        }
    }
    let head = http::Response::from_parts(parts, ());
    let skip_body = is_head || no_body;
    match body.try_into_full() {
        Ok(full) => {
            let bytes = full.filter(|_| !skip_body);
            let mut stream = respond.send_head(head, bytes.is_none()).map_err(h2_error)?;
            if let Some(bytes) = bytes {
                let len = bytes.len() as u64;
                send_data(&mut stream, bytes, true).await?;
                *sent += len;
            }
        }
        Err(mut body) => {
            // Before committing to a status, take the first chunk and every
            // further one that is ready at once (up to LOOKAHEAD): a body
            // that fails early (an upload over the limit being echoed) still
            // gets its proper error response, and nothing waits that would
            // not have waited anyway.
            let mut ready: Vec<Bytes> = Vec::new();
            let mut ended = skip_body;
            if !skip_body {
                let mut taken = 0;
                let mut next = body.chunk_or_panic_error().await;
                loop {
                    match next {
                        Some(Ok(chunk)) => {
                            taken += chunk.len();
                            ready.push(chunk);
                        }
                        Some(Err(e)) => {
                            let status = e.status().unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                            let page = error_response(status, None, None);
                            return Box::pin(try_send(respond, page, is_head, sent)).await;
                        }
                        None => {
                            ended = true;
                            break;
                        }
                    }
                    if taken >= LOOKAHEAD || body.is_file() {
                        break;
                    }
                    match futures_util::FutureExt::now_or_never(body.chunk_or_panic_error()) {
                        Some(chunk) => next = chunk,
                        None => break,
                    }
                }
            }
            let mut stream = respond.send_head(head, skip_body).map_err(h2_error)?;
            if !skip_body {
                for chunk in ready {
                    let len = chunk.len() as u64;
                    send_data(&mut stream, chunk, false).await?;
                    *sent += len;
                }
                if !ended {
                    while let Some(chunk) = body.chunk_or_panic_error().await {
                        let chunk = chunk?;
                        let len = chunk.len() as u64;
                        send_data(&mut stream, chunk, false).await?;
                        *sent += len;
                    }
                }
                stream.send_data(Bytes::new(), true).map_err(h2_error)?;
            }
        }
    }
    Ok(())
}

/// Sends `data` in pieces the peer's flow-control window allows.
pub(crate) async fn send_data(stream: &mut SendStream<Bytes>, mut data: Bytes, end: bool) -> Result<()> {
    if data.is_empty() {
        if end {
            stream.send_data(data, true).map_err(h2_error)?;
        }
        return Ok(());
    }
    while !data.is_empty() {
        stream.reserve_capacity(data.len().min(MAX_DATA_CHUNK));
        let granted = match std::future::poll_fn(|cx| stream.poll_capacity(cx)).await {
            Some(Ok(n)) => n,
            Some(Err(e)) => return Err(h2_error(e)),
            None => return Err(Error::new(ErrorKind::Internal, "stream closed by the peer")),
        };
        if granted == 0 {
            continue;
        }
        let piece = data.split_to(granted.min(data.len()));
        stream.send_data(piece, end && data.is_empty()).map_err(h2_error)?;
    }
    Ok(())
}

const SERVER_VALUE: HeaderValue = HeaderValue::from_static(SERVER_NAME);

fn is_connection_specific(name: &header::HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == header::TE
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

fn h2_error(e: h2::Error) -> Error {
    Error::new(ErrorKind::Internal, "HTTP/2 stream error").with_source(e)
}

/// The largest refused request body still read to its end after the refusal
/// (one default stream window): see [`discard_rest`].
const LINGER_BODY_LIMIT: u64 = 64 * 1024;
/// How long [`discard_rest`] waits for the rest of a refused body.
const LINGER_TIME: Duration = Duration::from_secs(2);

/// After an early final response (a 413 decided from content-length), reads
/// and discards the rest of a small request body, so a client still sending
/// it (curl, browsers) ends its upload cleanly instead of meeting a closed
/// stream. Past [`LINGER_TIME`] the stream is dropped, and h2 resets it with
/// NO_ERROR, the RFC 9113 §8.1 way to stop a client's upload.
async fn discard_rest(mut recv: RecvStream) {
    let _ = monoio::time::timeout(LINGER_TIME, async {
        while let Some(Ok(bytes)) = recv.data().await {
            let _ = recv.flow_control().release_capacity(bytes.len());
        }
    })
    .await;
}

/// A request body read from an HTTP/2 stream, releasing window as it goes.
struct H2Body {
    recv: RecvStream,
    limit: u64,
    timeout: Duration,
    /// Body bytes received so far (shared with the stream, for the log).
    received: Rc<Cell<u64>>,
    declared: Option<u64>,
    /// Set when the body failed; the response becomes this error.
    failure: Rc<RefCell<Option<Error>>>,
}

impl H2Body {
    fn fail(&mut self, kind: ErrorKind, detail: &'static str) -> Option<Result<Bytes>> {
        *self.failure.borrow_mut() = Some(Error::new(kind, detail));
        Some(Err(Error::new(kind, detail)))
    }
}

impl BodySource for H2Body {
    fn next_chunk(&mut self) -> LocalBoxFuture<'_, Option<Result<Bytes>>> {
        Box::pin(async move {
            match monoio::time::timeout(self.timeout, self.recv.data()).await {
                Err(_) => self.fail(ErrorKind::Timeout, "request body timed out"),
                Ok(None) => {
                    if self.declared.is_some_and(|n| n != self.received.get()) {
                        return self.fail(ErrorKind::BadRequest, "request body shorter than its content-length");
                    }
                    None
                }
                Ok(Some(Err(_))) => self.fail(ErrorKind::BadRequest, "request body stream failed"),
                Ok(Some(Ok(bytes))) => {
                    let _ = self.recv.flow_control().release_capacity(bytes.len());
                    self.received.set(self.received.get() + bytes.len() as u64);
                    if self.received.get() > self.limit {
                        return self.fail(ErrorKind::PayloadTooLarge, "request body exceeds max_upload_size");
                    }
                    if self.declared.is_some_and(|n| self.received.get() > n) {
                        return self.fail(ErrorKind::BadRequest, "request body longer than its content-length");
                    }
                    Some(Ok(bytes))
                }
            }
        })
    }

    fn remaining(&self) -> Option<u64> {
        self.declared.map(|n| n.saturating_sub(self.received.get()))
    }
}
