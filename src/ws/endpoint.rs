//! Mountable WebSocket endpoints: a mode (per message, session, room),
//! the endpoint's [`Config`], and `on_open` / `on_close` hooks.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use http::header;

use super::{CloseFrame, Config, Message, Overflow, WebSocket, accept_with};
use crate::http::{Request, Response};
use crate::mount::{Ctx, Handler, HandlerFactory, ShardInfo};

/// How an endpoint talks once a connection is open.
pub trait Mode: Send + Sync + 'static {
    /// Runs one connection's session.
    fn run(&self, ws: WebSocket) -> LocalBoxFuture<'static, ()>;
}

/// Per-message mode; see [`on_message`].
#[derive(Clone)]
pub struct PerMessage<F>(F);

/// Session mode; see [`session`].
#[derive(Clone)]
pub struct SessionMode<F>(F);

impl<F> std::fmt::Debug for PerMessage<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PerMessage")
    }
}

impl<F> std::fmt::Debug for SessionMode<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionMode")
    }
}

/// Room mode; see [`room`].
#[derive(Debug, Clone)]
pub struct RoomRelay(Arc<str>);

impl<F, Fut> Mode for PerMessage<F>
where
    F: Fn(Message, &WebSocket) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Option<Message>> + 'static,
{
    fn run(&self, mut ws: WebSocket) -> LocalBoxFuture<'static, ()> {
        let f = self.0.clone();
        Box::pin(async move {
            while let Some(message) = ws.recv().await {
                let reply = f(message, &ws).await;
                if let Some(reply) = reply {
                    // A full queue under `Overflow::Drop` loses this reply only.
                    let _ = ws.send(reply);
                }
            }
        })
    }
}

impl<F, Fut> Mode for SessionMode<F>
where
    F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    fn run(&self, ws: WebSocket) -> LocalBoxFuture<'static, ()> {
        Box::pin((self.0)(ws))
    }
}

impl Mode for RoomRelay {
    fn run(&self, mut ws: WebSocket) -> LocalBoxFuture<'static, ()> {
        let room = self.0.clone();
        Box::pin(async move {
            ws.join(&room);
            while let Some(message) = ws.recv().await {
                if let Err(e) = ws.publish(&room, message) {
                    tracing::debug!(room = &*room, error = %e, "room message not delivered everywhere");
                }
            }
        })
    }
}

type OnOpen = Arc<dyn Fn(&WebSocket) + Send + Sync>;
type OnClose = Arc<dyn Fn(&Ctx, &CloseFrame) + Send + Sync>;

/// A WebSocket endpoint to mount: `Engine::mount("/ws", ws::on_message(..))`.
/// Requests that are not WebSocket upgrades get `426 Upgrade Required`.
pub struct Endpoint<M> {
    mode: Arc<M>,
    config: Config,
    on_open: Option<OnOpen>,
    on_close: Option<OnClose>,
}

impl<M> std::fmt::Debug for Endpoint<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("config", &self.config).finish_non_exhaustive()
    }
}

/// Per-message mode: `f` is called for each message from the client, and
/// the message it returns (if any) is sent back. Messages of one
/// connection are handled in order, one at a time.
///
/// ```
/// use skitai::ws::{self, Message};
/// let upper = ws::on_message(|msg: Message, _ws: &ws::WebSocket| {
///     let reply = msg.as_text().map(|t| Message::text(t.to_uppercase()));
///     async move { reply }
/// });
/// # let _ = upper;
/// ```
pub fn on_message<F, Fut>(f: F) -> Endpoint<PerMessage<F>>
where
    F: Fn(Message, &WebSocket) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Option<Message>> + 'static,
{
    Endpoint::new(PerMessage(f))
}

/// Session mode: `f` gets the [`WebSocket`] and runs as long as it likes,
/// receiving with `recv()` and sending any number of messages, also from
/// other tasks through `ws.sender()`. When `f` returns, the connection is
/// closed with 1000.
///
/// ```
/// use skitai::ws;
/// let ticker = ws::session(|mut ws: ws::WebSocket| async move {
///     let _ = ws.send("hello");
///     while let Some(msg) = ws.recv().await {
///         let _ = ws.send(msg.clone());
///         let _ = ws.send(msg);
///     }
/// });
/// # let _ = ticker;
/// ```
pub fn session<F, Fut>(f: F) -> Endpoint<SessionMode<F>>
where
    F: Fn(WebSocket) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + 'static,
{
    Endpoint::new(SessionMode(f))
}

/// Room mode: every connection joins `name`, and every message a member
/// sends reaches every member, on every shard.
pub fn room(name: &str) -> Endpoint<RoomRelay> {
    Endpoint::new(RoomRelay(name.into()))
}

impl<M: Mode> Endpoint<M> {
    fn new(mode: M) -> Endpoint<M> {
        Endpoint { mode: Arc::new(mode), config: Config::default(), on_open: None, on_close: None }
    }

    /// Replaces the whole configuration.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Largest message accepted (close 1009 beyond).
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.config.max_message = bytes;
        self
    }

    /// Longest client silence before the connection closes (`None`: never).
    pub fn idle_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.config.idle_timeout = timeout;
        self
    }

    /// Silence after which the client is pinged (`None`: never).
    pub fn ping_interval(mut self, interval: Option<Duration>) -> Self {
        self.config.ping_interval = interval;
        self
    }

    /// Bytes queued for a slow client, and what happens beyond.
    pub fn send_queue(mut self, bytes: usize, overflow: Overflow) -> Self {
        self.config.send_queue = bytes;
        self.config.overflow = overflow;
        self
    }

    /// Subprotocols the endpoint speaks.
    pub fn protocols<I, S>(mut self, protocols: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.protocols = protocols.into_iter().map(Into::into).collect();
        self
    }

    /// Accept permessage-deflate compression when the client offers it.
    pub fn compression(mut self, on: bool) -> Self {
        self.config.compression = on;
        self
    }

    /// Refuse handshakes (403) whose `Origin` `check` rejects.
    pub fn check_origin(mut self, check: impl Fn(Option<&str>) -> bool + Send + Sync + 'static) -> Self {
        self.config.check_origin = Some(Arc::new(check));
        self
    }

    /// Called when a connection opens, before the mode runs (to greet,
    /// join rooms, count).
    pub fn on_open(mut self, f: impl Fn(&WebSocket) + Send + Sync + 'static) -> Self {
        self.on_open = Some(Arc::new(f));
        self
    }

    /// Called once a connection has closed, with how it closed.
    pub fn on_close(mut self, f: impl Fn(&Ctx, &CloseFrame) + Send + Sync + 'static) -> Self {
        self.on_close = Some(Arc::new(f));
        self
    }
}

impl<M: Mode> HandlerFactory for Endpoint<M> {
    fn build(&self, _shard: &ShardInfo) -> Rc<dyn Handler> {
        Rc::new(EndpointHandler {
            mode: self.mode.clone(),
            config: self.config.clone(),
            on_open: self.on_open.clone(),
            on_close: self.on_close.clone(),
        })
    }
}

/// An endpoint on one shard.
struct EndpointHandler<M> {
    mode: Arc<M>,
    config: Config,
    on_open: Option<OnOpen>,
    on_close: Option<OnClose>,
}

impl<M: Mode> Handler for EndpointHandler<M> {
    fn call<'a>(&'a self, req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
        let response = if super::is_upgrade(&req) {
            let mode = self.mode.clone();
            let on_open = self.on_open.clone();
            let start = Box::new(move |ws: WebSocket| {
                if let Some(f) = on_open {
                    f(&ws);
                }
                mode.run(ws)
            });
            let finish = self.on_close.clone().map(|f| Box::new(move |cx: &Ctx, c: &CloseFrame| f(cx, c)) as _);
            accept_with(&req, cx, &self.config, start, finish)
        } else {
            let detail = cx.devel().then_some("this endpoint speaks WebSocket");
            super::upgrade_required(req.headers().get(header::ACCEPT), detail)
        };
        Box::pin(std::future::ready(response))
    }
}
