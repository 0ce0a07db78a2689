//! WebSocket endpoints (RFC 6455, and RFC 8441 over HTTP/2), in Skitai's
//! three modes:
//!
//! - **per message** ([`on_message`]): a function called for each message,
//!   whose answer is sent back;
//! - **session** ([`session`]): the handler gets a [`WebSocket`] to receive
//!   messages from and send any number of messages to, at any time, also
//!   from other tasks on the shard through a [`Sender`];
//! - **room** ([`room`]): every message is relayed to every member of a
//!   named room, on every shard, through the cross-shard bus.
//!
//! ```no_run
//! use skitai::prelude::*;
//! use skitai::ws;
//!
//! Engine::new()
//!     .mount("/ws/echo", ws::on_message(|msg, _ws| async move { Some(msg) }))
//!     .mount("/ws/chat", ws::room("lobby").on_open(|ws| {
//!         let _ = ws.publish("lobby", format!("{} joined", ws.ctx().peer()));
//!     }))
//!     .run();
//! ```
//!
//! Ping, pong and close frames are handled by the connection: pings are
//! answered, the client is pinged after `ping_interval` of silence and
//! closed after `idle_timeout`, and the close handshake is completed with
//! the right status code.

mod endpoint;
pub(crate) mod link;
mod message;
pub(crate) mod rooms;

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::LocalBoxFuture;
use http::StatusCode;
use http::header::{self, HeaderValue};

pub use endpoint::{Endpoint, Mode, PerMessage, RoomRelay, SessionMode, on_message, room, session};
pub use message::{CloseFrame, Message, Overflow, SendError, Text};

use crate::http::{Request, Response, error_response};
use crate::mount::Ctx;
use crate::proto::ws::codec::Decoder;
use crate::proto::ws::conn::Timing;
use crate::proto::ws::deflate::{DeflateParams, Deflater, Inflater};
use crate::proto::ws::handshake;
use crate::shard::bus::BusError;
use crate::state::SharedState;
use link::Link;

/// Decides whether a page from `Origin` may open the WebSocket (`None`
/// when the client sent no `Origin`, as non-browser clients do).
pub type OriginCheck = Arc<dyn Fn(Option<&str>) -> bool + Send + Sync>;

/// Limits and timers of a WebSocket endpoint.
#[derive(Clone)]
pub struct Config {
    /// Largest message accepted, after decompression; larger ones close the
    /// connection with 1009. Default 16 MiB.
    pub max_message: usize,
    /// Longest silence from the client (any frame, pongs included) before
    /// the connection is closed with 1001. Default 60 s; `None`: never.
    pub idle_timeout: Option<Duration>,
    /// Silence after which the server pings the client; a live client
    /// answers, which keeps it from idling out. Default 30 s; `None`: never.
    pub ping_interval: Option<Duration>,
    /// How long the server waits for the client's close frame after its own.
    /// Default 5 s.
    pub close_timeout: Duration,
    /// Bytes of messages queued for a client that reads slowly, beyond
    /// which [`Config::overflow`] applies. Default 1 MiB.
    pub send_queue: usize,
    /// What a full send queue does. Default [`Overflow::Close`].
    pub overflow: Overflow,
    /// Subprotocols the endpoint speaks; the first the client offers is chosen.
    pub protocols: Vec<String>,
    /// Accept permessage-deflate (RFC 7692) when the client offers it.
    /// Off by default: it costs CPU and ~300 KiB of memory per connection.
    pub compression: bool,
    /// Refuses the handshake with 403 when it returns false.
    pub check_origin: Option<OriginCheck>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            max_message: 16 << 20,
            idle_timeout: Some(Duration::from_secs(60)),
            ping_interval: Some(Duration::from_secs(30)),
            close_timeout: Duration::from_secs(5),
            send_queue: 1 << 20,
            overflow: Overflow::Close,
            protocols: Vec::new(),
            compression: false,
            check_origin: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("max_message", &self.max_message)
            .field("idle_timeout", &self.idle_timeout)
            .field("ping_interval", &self.ping_interval)
            .field("close_timeout", &self.close_timeout)
            .field("send_queue", &self.send_queue)
            .field("overflow", &self.overflow)
            .field("protocols", &self.protocols)
            .field("compression", &self.compression)
            .field("check_origin", &self.check_origin.is_some())
            .finish()
    }
}

impl Config {
    fn timing(&self) -> Timing {
        Timing {
            idle_timeout: self.idle_timeout,
            ping_interval: self.ping_interval,
            close_timeout: self.close_timeout,
            write_timeout: self.idle_timeout.unwrap_or(Duration::from_secs(60)),
        }
    }
}

/// One open WebSocket, as a session handler holds it.
#[derive(Debug)]
pub struct WebSocket {
    link: Rc<Link>,
    ctx: Ctx,
    protocol: Option<String>,
}

impl WebSocket {
    /// The next message from the client; `None` once the connection is
    /// closing (the client closed, the server closed, or it was lost).
    pub async fn recv(&mut self) -> Option<Message> {
        std::future::poll_fn(|cx| self.link.poll_recv(cx)).await
    }

    /// Queues a message for the client; it goes out with the next write.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.link.send(&message.into())
    }

    /// A handle that sends to this client from other tasks on the shard.
    pub fn sender(&self) -> Sender {
        Sender { link: self.link.clone() }
    }

    /// Starts the close handshake with `code` (1000 for a normal close) and
    /// `reason`; [`WebSocket::recv`] then ends.
    pub fn close(&self, code: u16, reason: &str) {
        self.link.close(CloseFrame::new(code, reason));
    }

    /// Joins `room`: messages published to it reach this client until it
    /// leaves or disconnects. Joining twice is joining once.
    pub fn join(&self, room: &str) {
        rooms::join(&self.ctx.services, &self.link, room);
    }

    /// Leaves `room`.
    pub fn leave(&self, room: &str) {
        rooms::leave(&self.ctx.services, &self.link, room);
    }

    /// Sends `message` to every member of `room` on every shard (this
    /// client too, if it joined). The error names shards whose bus was full.
    pub fn publish(&self, room: &str, message: impl Into<Message>) -> Result<(), BusError> {
        publish(&self.ctx.services.state, room, message)
    }

    /// The context of the upgrade request: peer, path, shared state, services.
    pub fn ctx(&self) -> &Ctx {
        &self.ctx
    }

    /// The subprotocol chosen in the handshake.
    pub fn protocol(&self) -> Option<&str> {
        self.protocol.as_deref()
    }

    /// Messages dropped because the client read too slowly ([`Overflow::Drop`]).
    pub fn dropped(&self) -> u64 {
        self.link.dropped()
    }
}

/// Sends to one client from anywhere on its shard; cheap to clone.
#[derive(Debug, Clone)]
pub struct Sender {
    link: Rc<Link>,
}

impl Sender {
    /// Queues a message for the client.
    pub fn send(&self, message: impl Into<Message>) -> Result<(), SendError> {
        self.link.send(&message.into())
    }

    /// Starts the close handshake.
    pub fn close(&self, code: u16, reason: &str) {
        self.link.close(CloseFrame::new(code, reason));
    }

    /// True once the connection is closing or closed.
    pub fn is_closed(&self) -> bool {
        self.link.is_closed()
    }
}

/// Sends `message` to every member of `room` on every shard. Works from
/// any thread holding the instance's [`SharedState`] (`Ctx::state`,
/// `Server::state`).
pub fn publish(state: &SharedState, room: &str, message: impl Into<Message>) -> Result<(), BusError> {
    state.broadcast(&rooms::event_name(room), crate::state::Payload::value(message.into()))
}

/// What runs the session once the connection switched protocols.
type Start = Box<dyn FnOnce(WebSocket) -> LocalBoxFuture<'static, ()>>;
/// Called once the connection closed.
type Finish = Box<dyn FnOnce(&Ctx, &CloseFrame)>;

/// An accepted upgrade waiting for its response to be sent; the connection
/// takes it from the request's context.
pub(crate) struct Pending {
    config: Config,
    deflate: Option<DeflateParams>,
    protocol: Option<String>,
    ctx: Ctx,
    start: Start,
    finish: Option<Finish>,
}

/// An open connection's state, kept for when it closes.
pub(crate) struct Opened {
    pub(crate) link: Rc<Link>,
    pub(crate) timing: Timing,
    ctx: Ctx,
    finish: Option<Finish>,
}

impl Pending {
    /// Builds the connection's state and starts the session: the state,
    /// the decoder for the client's frames, and the session future.
    pub(crate) fn open(self) -> (Opened, Decoder, LocalBoxFuture<'static, ()>) {
        let Pending { config, deflate, protocol, ctx, start, finish } = self;
        let mut decoder = Decoder::new(config.max_message);
        let deflater = deflate.as_ref().map(Deflater::new);
        if let Some(params) = &deflate {
            decoder = decoder.with_inflater(Inflater::new(params));
        }
        let link = Rc::new(Link::new(config.send_queue, config.overflow, deflater));
        let ws = WebSocket { link: link.clone(), ctx: ctx.clone(), protocol };
        // A panic in the handler closes this connection with 1011; the shard lives.
        let on_panic = link.clone();
        let session = Box::pin(async move {
            let outcome = match std::panic::catch_unwind(AssertUnwindSafe(|| start(ws))) {
                Ok(session) => AssertUnwindSafe(session).catch_unwind().await,
                Err(panic) => Err(panic),
            };
            if outcome.is_err() {
                tracing::debug!("WebSocket handler panicked; closing with 1011");
                on_panic.close(CloseFrame::new(1011, "internal error"));
            }
        });
        (Opened { link, timing: config.timing(), ctx, finish }, decoder, session)
    }
}

impl Opened {
    /// After the connection closed: leaves its rooms, calls `on_close`.
    pub(crate) fn finish(self, outcome: &CloseFrame) {
        rooms::leave_all(&self.ctx.services, &self.link);
        if let Some(finish) = self.finish {
            if std::panic::catch_unwind(AssertUnwindSafe(|| finish(&self.ctx, outcome))).is_err() {
                tracing::debug!("WebSocket on_close hook panicked");
            }
        }
    }
}

/// Holds an accepted upgrade in a request context. Cloning a context does
/// not clone the upgrade (it belongs to one connection).
#[derive(Default)]
pub(crate) struct UpgradeSlot(pub(crate) Option<Box<Pending>>);

impl Clone for UpgradeSlot {
    fn clone(&self) -> UpgradeSlot {
        UpgradeSlot(None)
    }
}

impl std::fmt::Debug for UpgradeSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "UpgradeSlot(pending)" } else { "UpgradeSlot(None)" })
    }
}

/// The members `room` has on each shard, in shard order.
pub fn room_members(cx: &Ctx, room: &str) -> impl Future<Output = Result<Vec<usize>, BusError>> + use<> {
    let room: Arc<str> = room.into();
    cx.fan_out(move |_| crate::shard::services::ShardServices::current().map_or(0, |s| rooms::local_members(&s, &room)))
}

/// 426 naming what to upgrade to: WebSocket version 13 (RFC 6455 §4.4).
pub(crate) fn upgrade_required(accept: Option<&HeaderValue>, detail: Option<&str>) -> Response {
    let mut response = error_response(StatusCode::UPGRADE_REQUIRED, accept, detail);
    let headers = response.headers_mut();
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    headers.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
    response
}

/// True when `req` asks to open a WebSocket (valid or not).
pub fn is_upgrade(req: &Request) -> bool {
    handshake::is_upgrade_request(req)
}

/// Opens a WebSocket from any handler: checks the handshake, and returns
/// the response that switches protocols (`101`, or `200` over HTTP/2);
/// once it is sent, `session` runs with the connection. A request that is
/// not a valid upgrade gets its error response instead (400, 403, 405, or
/// 426 naming version 13), and `session` never runs.
///
/// Call it before the handler's `async` block (it needs `cx` mutably):
///
/// ```
/// use skitai::prelude::*;
/// use skitai::ws;
/// let h = handler_fn(|req: Request, cx: &mut Ctx| {
///     let response = ws::accept(&req, cx, &ws::Config::default(), |mut ws| async move {
///         while let Some(msg) = ws.recv().await {
///             let _ = ws.send(msg);
///         }
///     });
///     async move { response }
/// });
/// # let _ = h;
/// ```
pub fn accept<F, Fut>(req: &Request, cx: &mut Ctx, config: &Config, session: F) -> Response
where
    F: FnOnce(WebSocket) -> Fut + 'static,
    Fut: Future<Output = ()> + 'static,
{
    accept_with(req, cx, config, Box::new(move |ws| Box::pin(session(ws))), None)
}

/// [`accept`] with the session already boxed, and an `on_close` hook.
fn accept_with(req: &Request, cx: &mut Ctx, config: &Config, start: Start, finish: Option<Finish>) -> Response {
    let accept_header = req.headers().get(header::ACCEPT);
    let offer = match handshake::check(req) {
        Ok(offer) => offer,
        Err(refusal) => {
            let detail = cx.devel().then_some(refusal.reason);
            if refusal.status == StatusCode::UPGRADE_REQUIRED {
                return upgrade_required(accept_header, detail);
            }
            return error_response(refusal.status, accept_header, detail);
        }
    };
    if !req.body().is_empty() {
        let detail = cx.devel().then_some("an upgrade request has no body");
        return error_response(StatusCode::BAD_REQUEST, accept_header, detail);
    }
    if let Some(check) = &config.check_origin {
        if !check(offer.origin.as_ref().and_then(|o| o.to_str().ok())) {
            let detail = cx.devel().then_some("Origin not allowed");
            return error_response(StatusCode::FORBIDDEN, accept_header, detail);
        }
    }
    let protocol = offer.protocols.iter().find(|p| config.protocols.iter().any(|ours| ours == *p)).cloned();
    let deflate = if config.compression { handshake::deflate_offer(req.headers()) } else { None };

    // HTTP/1.1 switches protocols with a 101; HTTP/2 answers the CONNECT with a 200.
    let mut response = Response::new(crate::http::Body::empty());
    if let Some(accept) = offer.accept {
        *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
        let headers = response.headers_mut();
        headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    let headers = response.headers_mut();
    if let Some(p) = protocol.as_ref().and_then(|p| HeaderValue::from_str(p).ok()) {
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    if let Some(d) = deflate.as_ref().and_then(|d| HeaderValue::from_str(&d.response()).ok()) {
        headers.insert(header::SEC_WEBSOCKET_EXTENSIONS, d);
    }
    cx.upgrade.0 =
        Some(Box::new(Pending { config: config.clone(), deflate, protocol, ctx: cx.clone(), start, finish }));
    response
}
