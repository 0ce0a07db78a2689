//! Shard-local state shared by every connection on the shard.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::panic::AssertUnwindSafe;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

use futures_util::future::LocalBoxFuture;
use http::header::{HeaderValue, LOCATION, RETRY_AFTER};
use http::{StatusCode, Uri};
use slab::Slab;

use crate::apps::static_files::StaticFiles;
use crate::config::Limits;
use crate::http::{Request, Response, error_response};
use crate::mount::{Ctx, Handler, Lookup, MountTable, Target};
use crate::observe::metrics::Shed;
use crate::observe::{Exchange, RequestHead, Tick, TxnIds};
use crate::shard::Control;
use crate::shard::services::ShardServices;

/// Longest `Retry-After` a shed request is told, seconds.
const MAX_RETRY_AFTER_SECS: u64 = 60;

/// A live connection as the shard sees it: enough to close it when draining.
struct ConnEntry {
    fd: RawFd,
    idle: bool,
    /// Woken when draining starts (HTTP/2 connections wait for it to send GOAWAY).
    drain_waker: Option<Waker>,
}

/// What the shard's connections speak besides plain HTTP/1.1.
#[derive(Clone)]
pub(crate) struct Protocols {
    /// TLS on the main listeners.
    pub(crate) tls: Option<monoio_rustls::TlsAcceptor>,
    /// Time a client has to finish the TLS handshake.
    pub(crate) handshake_timeout: std::time::Duration,
    /// HTTP/2 settings.
    pub(crate) http2: crate::config::Http2Config,
    /// For redirect listeners: the host (default: the request's) and port of the https URLs.
    pub(crate) https_redirect: (Option<String>, u16),
}

/// Everything a connection needs from its shard. Lives in an `Rc` on the
/// shard thread; nothing here is shared with other threads.
pub(crate) struct ShardCtx {
    pub(crate) id: usize,
    pub(crate) limits: Limits,
    pub(crate) devel: bool,
    pub(crate) protocols: Protocols,
    mounts: MountTable,
    admin: AdminRoutes,
    services: Rc<ShardServices>,
    draining: Cell<bool>,
    conns: RefCell<Slab<ConnEntry>>,
    closed_waker: Cell<Option<Waker>>,
    /// Control messages received from the bus: drain, stop.
    drain_requested: Cell<bool>,
    stop_requested: Cell<bool>,
    control_waker: Cell<Option<Waker>>,
}

impl ShardCtx {
    pub(crate) fn new(
        id: usize,
        limits: Limits,
        devel: bool,
        protocols: Protocols,
        mounts: MountTable,
        admin: AdminRoutes,
        services: Rc<ShardServices>,
    ) -> ShardCtx {
        ShardCtx {
            id,
            limits,
            devel,
            protocols,
            mounts,
            admin,
            services,
            draining: Cell::new(false),
            conns: RefCell::new(Slab::with_capacity(1024)),
            closed_waker: Cell::new(None),
            drain_requested: Cell::new(false),
            stop_requested: Cell::new(false),
            control_waker: Cell::new(None),
        }
    }

    /// The shard's shared services (state, bus, subscribers).
    pub(crate) fn services(&self) -> &Rc<ShardServices> {
        &self.services
    }

    /// Records a control message from the bus and wakes whoever waits for one.
    pub(crate) fn request_control(&self, control: Control) {
        match control {
            Control::Drain => self.drain_requested.set(true),
            Control::Stop => self.stop_requested.set(true),
        }
        if let Some(waker) = self.control_waker.take() {
            waker.wake();
        }
    }

    /// Resolves with the first control message: `Stop` if one came, else `Drain`.
    pub(crate) async fn control_requested(&self) -> Control {
        std::future::poll_fn(|cx| {
            if self.stop_requested.get() {
                std::task::Poll::Ready(Control::Stop)
            } else if self.drain_requested.get() {
                std::task::Poll::Ready(Control::Drain)
            } else {
                self.control_waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Resolves once a `Stop` control message came.
    pub(crate) async fn stop_requested(&self) {
        std::future::poll_fn(|cx| {
            if self.stop_requested.get() {
                return std::task::Poll::Ready(());
            }
            self.control_waker.set(Some(cx.waker().clone()));
            std::task::Poll::Pending
        })
        .await
    }

    /// True once a graceful shutdown started.
    pub(crate) fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Records a new connection; the key identifies it until [`Self::unregister`].
    pub(crate) fn register(&self, fd: RawFd) -> usize {
        let mut conns = self.conns.borrow_mut();
        let key = conns.insert(ConnEntry { fd, idle: false, drain_waker: None });
        self.services.metrics.set_connections(conns.len());
        key
    }

    /// Forgets a closed connection and wakes the drain waiter when it was the last.
    pub(crate) fn unregister(&self, key: usize) {
        let mut conns = self.conns.borrow_mut();
        conns.remove(key);
        self.services.metrics.set_connections(conns.len());
        if conns.is_empty() {
            if let Some(waker) = self.closed_waker.take() {
                waker.wake();
            }
        }
    }

    /// Open connections on this shard.
    pub(crate) fn open_connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Marks a connection as waiting for its next request (or not).
    pub(crate) fn set_idle(&self, key: usize, idle: bool) {
        if let Some(entry) = self.conns.borrow_mut().get_mut(key) {
            entry.idle = idle;
        }
    }

    /// Starts draining: busy connections close after their current
    /// response (which says `Connection: close`), HTTP/2 connections send
    /// GOAWAY. Idle keep-alive connections are left a moment
    /// ([`Self::shut_idle`] comes later), so a client that sends its next
    /// request right now gets an answer with `Connection: close` instead of
    /// a connection closed under it.
    pub(crate) fn start_drain(&self) {
        self.draining.set(true);
        self.services.metrics.set_draining();
        for (_, entry) in self.conns.borrow_mut().iter_mut() {
            if let Some(waker) = entry.drain_waker.take() {
                waker.wake();
            }
        }
    }

    /// Shuts the connections still idle for reading: their pending read ends
    /// with EOF and they close.
    pub(crate) fn shut_idle(&self) {
        for (_, entry) in self.conns.borrow().iter() {
            // An entry without a socket (a WebSocket on an HTTP/2 stream) has fd -1.
            if entry.idle && entry.fd >= 0 {
                // SAFETY: the fd belongs to a connection that is still
                // registered, so it is open; shutdown(2) does not close it,
                // it only ends reads, which wakes the pending read with EOF.
                unsafe { libc::shutdown(entry.fd, libc::SHUT_RD) };
            }
        }
    }

    /// Resolves once draining has started (for connection `key`).
    pub(crate) async fn drain_started(&self, key: usize) {
        std::future::poll_fn(|cx| {
            if self.draining.get() {
                return std::task::Poll::Ready(());
            }
            if let Some(entry) = self.conns.borrow_mut().get_mut(key) {
                entry.drain_waker = Some(cx.waker().clone());
            }
            std::task::Poll::Pending
        })
        .await
    }

    /// Resolves once every connection on the shard has closed.
    pub(crate) async fn all_closed(&self) {
        std::future::poll_fn(|cx| {
            if self.conns.borrow().is_empty() {
                std::task::Poll::Ready(())
            } else {
                self.closed_waker.set(Some(cx.waker().clone()));
                std::task::Poll::Pending
            }
        })
        .await
    }

    /// Finds who answers `req`: a handler (the target is rewritten to the
    /// path below the mount point) or the engine itself
    /// (404, a 308 adding a slash, 400). `accept` is for error pages.
    ///
    /// `from` is 0 for a new request, or the `next` of a static mount that
    /// had nothing to serve (the lookup goes on with the next matching mount).
    pub(crate) fn route(&self, req: &mut Request, accept: Option<&HeaderValue>, from: usize, site: Site) -> Route<'_> {
        if from == 0 && req.uri().path().contains('%') {
            // `/%70rivate` is `/private` (RFC 3986 §6.2.2.2): route, and let
            // handlers and files see, the one form, so an encoded letter
            // cannot slip past a longer mount.
            if let Some(normal) = decode_unreserved(req.uri()) {
                *req.uri_mut() = normal;
            }
        }
        let table = match (site, &self.admin.listener) {
            (Site::Admin, Some(admin)) => admin,
            _ => &self.mounts,
        };
        let (mount, strip, next) = match table.lookup_from(req.uri().path(), from) {
            Lookup::Found { mount, strip, next } => (mount, strip, next),
            Lookup::AddSlash => return Route::Respond(Box::new(add_slash_redirect(req.uri()))),
            Lookup::NotFound => return Route::Respond(Box::new(error_response(StatusCode::NOT_FOUND, accept, None))),
        };
        let handler = match &mount.target {
            Target::Handler(handler) => handler,
            Target::Static(files) => return Route::Static { files, strip, next },
        };
        let slot = if site == Site::Admin { self.services.metrics.engine_slot() } else { next - 1 };
        // Below a stripped mount point the request gets a new target and the
        // original moves to the context; otherwise both need it (a clone).
        let original_uri = if strip > 0 {
            match strip_prefix(req.uri(), strip) {
                Some(uri) => std::mem::replace(req.uri_mut(), uri),
                None => return Route::Respond(Box::new(error_response(StatusCode::BAD_REQUEST, accept, None))),
            }
        } else {
            req.uri().clone()
        };
        Route::Handler { handler, mount_point: &mount.prefix, original_uri, slot }
    }

    /// The context of a request `route` gave to a handler mounted at
    /// `mount_point`. Built where it is used, not carried inside [`Route`]:
    /// every byte of a value returned and matched is copied again (and
    /// inlined, so the context is built in its final place).
    #[inline(always)]
    pub(crate) fn ctx(
        &self,
        peer: SocketAddr,
        mount_point: &Rc<str>,
        original_uri: Uri,
        version: http::Version,
        txn: &TxnIds,
    ) -> Ctx {
        Ctx {
            peer,
            shard: self.id,
            mount_point: mount_point.clone(),
            version,
            original_uri,
            devel: self.devel,
            pushes: None,
            services: self.services.clone(),
            upgrade: Default::default(),
            txn: txn.clone(),
            upstream_calls: 0,
        }
    }

    /// Calls `handler`: the returned [`Answer`] polls the handler's future,
    /// catching a panic (at the call or in any poll) so the shard keeps
    /// serving; [`Self::panic_response`] turns it into the 500.
    ///
    /// Not an `async fn`: the request goes straight into the handler's
    /// (boxed) future instead of being moved into another future first.
    pub(crate) fn call<'a>(
        &self,
        handler: &'a Rc<dyn Handler>,
        req: Request,
        cx: &'a mut Ctx,
        started: Tick,
    ) -> Answer<'a> {
        let (future, outcome) = match std::panic::catch_unwind(AssertUnwindSafe(|| handler.call(req, cx))) {
            Ok(future) => (Some(future), None),
            Err(panic) => (None, Some(Err(panic))),
        };
        Answer { future, first_poll: Some(started), busy: Duration::ZERO, at: None, outcome }
    }

    /// What a finished [`Answer`] gives: the response, or the payload of
    /// the handler's panic for [`Self::panic_response`]. Notes in `exchange`
    /// how long the handler kept the shard busy and when it returned (now,
    /// for a handler that panicked before it returned a future).
    ///
    /// # Panics
    /// If `answer` has not finished, or was settled already.
    #[inline(always)]
    pub(crate) fn settle(answer: &mut Answer<'_>, exchange: &mut Exchange<'_>) -> std::thread::Result<Response> {
        exchange.busy = Some(answer.busy);
        exchange.answered = Some(answer.at.unwrap_or_else(Tick::now));
        answer.outcome.take().expect("an Answer is settled once, after it finished")
    }

    /// The 500 for a handler that panicked (with the message under `--devel`).
    #[cold]
    pub(crate) fn panic_response(
        &self,
        panic: Box<dyn std::any::Any + Send>,
        cx: &Ctx,
        accept: Option<&HeaderValue>,
    ) -> Response {
        let message = panic_message(&*panic);
        tracing::debug!(shard = self.id, path = cx.full_path(), panic = %message, "handler panicked; answering 500");
        let detail = self.devel.then(|| format!("handler panicked: {message}"));
        error_response(StatusCode::INTERNAL_SERVER_ERROR, accept, detail.as_deref())
    }

    /// A 301 to the same path and query over https (redirect listeners).
    pub(crate) fn https_redirect(&self, req: &Request) -> Response {
        let (domain, port) = &self.protocols.https_redirect;
        let host = match domain {
            Some(d) => d.clone(),
            None => {
                let host = req.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
                strip_port(host).to_owned()
            }
        };
        let authority = if *port == 443 { host } else { format!("{host}:{port}") };
        let target = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let location = format!("https://{authority}{target}");
        let mut res = error_response(StatusCode::MOVED_PERMANENTLY, None, None);
        match HeaderValue::try_from(location) {
            Ok(value) => {
                res.headers_mut().insert(LOCATION, value);
                res
            }
            Err(_) => error_response(StatusCode::BAD_REQUEST, None, None),
        }
    }

    /// [`Self::route`] then [`Self::call`] or the static files, falling
    /// through past static mounts that have nothing to serve.
    pub(crate) async fn dispatch(
        &self,
        req: Request,
        peer: SocketAddr,
        accept: Option<&HeaderValue>,
        site: Site,
        exchange: &mut Exchange<'_>,
    ) -> Response {
        self.dispatch_with_push(req, peer, accept, false, site, exchange).await.response
    }

    /// Starts observing a request that came in on `site`; requests for the
    /// admin endpoints (on the admin listener, or under the admin mount)
    /// are not counted, shed or logged.
    pub(crate) fn exchange(&self, site: Site, peer: SocketAddr, head: RequestHead<'_>) -> Exchange<'_> {
        let admin = site == Site::Admin || self.is_admin_path(head.uri.path());
        Exchange::begin(&self.services.metrics, self.services.log.as_ref(), self.id, peer.ip(), head, !admin)
    }

    /// True when `path` is under the admin mount on the main listeners.
    fn is_admin_path(&self, path: &str) -> bool {
        let Some(point) = self.admin.mount.as_deref() else { return false };
        let point = point.strip_suffix('/').unwrap_or(point);
        path.strip_prefix(point).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    }

    /// Whether a new request may start on this shard: a 503 (with
    /// `Retry-After`) when the shard already handles `max_inflight` requests
    /// or the estimated wait of a new one is over `max_estimated_wait`.
    pub(crate) fn admit(&self, accept: Option<&HeaderValue>) -> Result<(), Box<Response>> {
        let metrics = &self.services.metrics;
        // The request asking has already entered.
        let why = if metrics.in_flight() > self.limits.max_inflight {
            Shed::Inflight
        } else if !self.limits.max_estimated_wait.is_zero() && metrics.estimated_wait() > self.limits.max_estimated_wait
        {
            Shed::Estimate
        } else {
            return Ok(());
        };
        metrics.count_shed(why);
        let retry_after = metrics.estimated_wait().as_secs().clamp(1, MAX_RETRY_AFTER_SECS);
        let detail = self.devel.then(|| format!("overloaded ({why:?}); estimated wait {:?}", metrics.estimated_wait()));
        let mut response = error_response(StatusCode::SERVICE_UNAVAILABLE, accept, detail.as_deref());
        response.headers_mut().insert(RETRY_AFTER, HeaderValue::from(retry_after));
        Err(Box::new(response))
    }

    /// [`Self::dispatch`], with server push offered to the handler when
    /// `push` is set (HTTP/2); also returns the paths it asked to push and
    /// the WebSocket it accepted.
    pub(crate) async fn dispatch_with_push(
        &self,
        mut req: Request,
        peer: SocketAddr,
        accept: Option<&HeaderValue>,
        push: bool,
        site: Site,
        exchange: &mut Exchange<'_>,
    ) -> Dispatched {
        let answered = |response| Dispatched { response, pushes: Vec::new(), websocket: None };
        if site == Site::Redirect {
            return answered(self.https_redirect(&req));
        }
        if site == Site::Main && exchange.counted() {
            if let Err(response) = self.admit(accept) {
                return answered(*response);
            }
        }
        let mut from = 0;
        loop {
            match self.route(&mut req, accept, from, site) {
                Route::Respond(response) => return answered(*response),
                Route::Handler { handler, mount_point, original_uri, slot } => {
                    exchange.slot = slot;
                    let mut cx = self.ctx(peer, mount_point, original_uri, req.version(), &exchange.txn);
                    if push {
                        cx.pushes = Some(Vec::new());
                    }
                    let mut answer = self.call(handler, req, &mut cx, exchange.started);
                    (&mut answer).await;
                    let outcome = Self::settle(&mut answer, exchange);
                    drop(answer);
                    let response = outcome.unwrap_or_else(|panic| self.panic_response(panic, &cx, accept));
                    let pushes = cx.pushes.take().unwrap_or_default();
                    return Dispatched { response, pushes, websocket: cx.upgrade.0.take() };
                }
                Route::Static { files, strip, next } => match Box::pin(files.serve(&req, strip)).await {
                    Some(response) => {
                        exchange.slot = next - 1;
                        return answered(response);
                    }
                    None => from = next,
                },
            }
        }
    }
}

/// What answering a request produced.
pub(crate) struct Dispatched {
    pub(crate) response: Response,
    /// Paths the handler asked to push (HTTP/2).
    pub(crate) pushes: Vec<String>,
    /// A WebSocket the handler accepted; it opens once the response is sent.
    pub(crate) websocket: Option<Box<crate::ws::Pending>>,
}

/// Where the admin endpoints are on a shard.
#[derive(Default)]
pub(crate) struct AdminRoutes {
    /// Their table, for connections on the admin listener.
    pub(crate) listener: Option<MountTable>,
    /// Their mount point on the main listeners, if they are mounted there.
    pub(crate) mount: Option<Rc<str>>,
}

/// Which listener a connection came in on, so which table answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    /// The site's mount table.
    Main,
    /// Every request gets a 301 to https.
    Redirect,
    /// The admin endpoints (never shed: health checks must answer under load).
    Admin,
}

/// Who answers a request.
pub(crate) enum Route<'a> {
    /// A mounted handler, its mount point, the request target as the client
    /// sent it (the request's own is now the path below the mount point),
    /// and the handler's metrics slot. [`ShardCtx::ctx`] makes its context.
    Handler { handler: &'a Rc<dyn Handler>, mount_point: &'a Rc<str>, original_uri: Uri, slot: usize },
    /// A static directory; the path below it starts at byte `strip`. If it
    /// has nothing to serve, routing goes on from mount `next`.
    Static { files: &'a Rc<StaticFiles>, strip: usize, next: usize },
    /// The engine answers at once (boxed: rare, and it would double the
    /// size of every route).
    Respond(Box<Response>),
}

/// A handler's answer in progress (see [`ShardCtx::call`]). Its polls are
/// timed: their sum is how long the handler kept the shard busy, the load
/// estimate's measure (waiting on I/O costs nothing).
///
/// Awaiting it yields `()` (again at once if polled after it finished) and
/// the outcome stays inside until [`ShardCtx::settle`] takes it: a response
/// is about 150 bytes, and every value a future resolves to is copied again
/// at each level that passes it on.
pub(crate) struct Answer<'a> {
    /// The handler's future, until it finishes.
    future: Option<LocalBoxFuture<'a, Response>>,
    /// The first poll's start: the request's start, one clock read less.
    first_poll: Option<Tick>,
    /// The time its polls took so far.
    busy: Duration,
    /// When the handler returned (the end of its last poll); `None` until
    /// then, and for a handler that panicked before it returned a future.
    at: Option<Tick>,
    /// The response, or the payload of the handler's panic, once there is one.
    outcome: Option<std::thread::Result<Response>>,
}

impl Future for Answer<'_> {
    type Output = ();

    fn poll(self: std::pin::Pin<&mut Self>, task: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        let Some(future) = this.future.as_mut() else {
            return Poll::Ready(());
        };
        let t0 = this.first_poll.take().unwrap_or_else(Tick::now);
        // The response goes straight into its slot (not out through the
        // `Result` of `catch_unwind` and on from there).
        let outcome = &mut this.outcome;
        let polled = std::panic::catch_unwind(AssertUnwindSafe(|| match future.as_mut().poll(task) {
            Poll::Ready(response) => {
                *outcome = Some(Ok(response));
                Poll::Ready(())
            }
            Poll::Pending => Poll::Pending,
        }));
        let at = Tick::now();
        this.busy += at.since(t0);
        match polled {
            Ok(Poll::Pending) => return Poll::Pending,
            Ok(Poll::Ready(())) => {}
            Err(panic) => this.outcome = Some(Err(panic)),
        }
        this.future = None;
        this.at = Some(at);
        Poll::Ready(())
    }
}

/// The text of a panic's payload (a `&str` or `String` message).
pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_owned()
    }
}

/// `host` without a `:port` suffix (IPv6 literals keep their brackets).
fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return match rest.find(']') {
            Some(i) => &host[..i + 2],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The target with percent-encoded unreserved characters (letters, digits,
/// `-._~`) decoded; `None` when there are none.
fn decode_unreserved(uri: &Uri) -> Option<Uri> {
    let path = uri.path().as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(path.len());
    let mut changed = false;
    let mut i = 0;
    while i < path.len() {
        if path[i] == b'%' && i + 2 < path.len() {
            if let (Some(hi), Some(lo)) = (hex(path[i + 1]), hex(path[i + 2])) {
                let byte = hi << 4 | lo;
                if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
                    out.push(byte);
                    changed = true;
                    i += 3;
                    continue;
                }
            }
        }
        out.push(path[i]);
        i += 1;
    }
    if !changed {
        return None;
    }
    if let Some(q) = uri.query() {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    Uri::try_from(out).ok()
}

/// The request target below the mount point: `/api/users?x` → `/users?x`.
fn strip_prefix(uri: &Uri, strip: usize) -> Option<Uri> {
    let path = &uri.path()[strip..];
    let path = if path.is_empty() { "/" } else { path };
    let target = match uri.query() {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    target.parse().ok()
}

/// 308 to the same target with a `/` after the path (RFC 9110 §15.4.9 keeps the method).
fn add_slash_redirect(uri: &Uri) -> Response {
    let location = match uri.query() {
        Some(q) => format!("{}/?{q}", uri.path()),
        None => format!("{}/", uri.path()),
    };
    let mut res = error_response(StatusCode::PERMANENT_REDIRECT, None, None);
    if let Ok(value) = HeaderValue::from_str(&location) {
        res.headers_mut().insert(LOCATION, value);
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_mount_prefix_and_keeps_query() {
        let uri: Uri = "/api/users?x=1".parse().unwrap();
        assert_eq!(strip_prefix(&uri, 4).unwrap(), "/users?x=1");
        let uri: Uri = "/api".parse().unwrap();
        assert_eq!(strip_prefix(&uri, 4).unwrap(), "/");
    }

    #[test]
    fn ports_are_stripped_from_hosts() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }

    #[test]
    fn encoded_unreserved_characters_are_decoded_for_routing() {
        let uri: Uri = "/%70rivate/a%2Fb%20c%7e?q=%70".parse().unwrap();
        assert_eq!(decode_unreserved(&uri).unwrap(), "/private/a%2Fb%20c~?q=%70");
        assert!(decode_unreserved(&"/plain/%2F".parse().unwrap()).is_none());
        assert!(decode_unreserved(&"/bad%7".parse().unwrap()).is_none());
    }

    #[test]
    fn redirect_adds_slash_before_query() {
        let res = add_slash_redirect(&"/x?a=b".parse().unwrap());
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(res.headers()[LOCATION], "/x/?a=b");
    }
}
