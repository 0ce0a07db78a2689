//! The per-request context handed to handlers.

use std::future::Future;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::SystemTime;

use http::{Uri, Version};

use crate::observe::TxnIds;
use crate::shard::bus::BusError;
use crate::shard::services::{ShardServices, Subscription};
use crate::state::{Event, Payload, SharedState, StateError};

/// What a handler knows about the request beyond the request itself, and
/// the services: shared state, broadcast, fan-out, server push.
#[derive(Debug, Clone)]
pub struct Ctx {
    pub(crate) peer: SocketAddr,
    pub(crate) shard: usize,
    pub(crate) mount_point: Rc<str>,
    pub(crate) original_uri: Uri,
    pub(crate) version: Version,
    pub(crate) devel: bool,
    /// Paths `push` recorded; `None` where push is not possible (HTTP/1.1).
    pub(crate) pushes: Option<Vec<String>>,
    pub(crate) services: Rc<ShardServices>,
    /// A WebSocket upgrade the handler accepted (`ws::accept`).
    pub(crate) upgrade: crate::ws::UpgradeSlot,
    /// The request's transaction ids.
    pub(crate) txn: TxnIds,
    /// Upstream calls made so far (each gets ltxid + its number).
    pub(crate) upstream_calls: u64,
}

impl Ctx {
    /// The client's address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// The shard answering this request.
    pub fn shard_id(&self) -> usize {
        self.shard
    }

    /// The mount point the request matched, e.g. `/api`.
    pub fn mount_point(&self) -> &str {
        &self.mount_point
    }

    /// The request target as the client sent it, before the mount point was stripped.
    pub fn original_uri(&self) -> &Uri {
        &self.original_uri
    }

    /// The full request path, mount point included.
    pub fn full_path(&self) -> &str {
        self.original_uri.path()
    }

    /// The protocol version of the request.
    pub fn version(&self) -> Version {
        self.version
    }

    /// The request's transaction ids: the global id (kept from an incoming
    /// `X-Gtxn-Id`, else made here) and this hop's local id.
    pub fn txn(&self) -> &TxnIds {
        &self.txn
    }

    /// The `X-Gtxn-Id` and `X-Ltxn-Id` fields to send with the next upstream
    /// call made for this request: the same gtxid, and ltxid + 1 per call.
    pub fn next_upstream_txn(&mut self) -> [(http::HeaderName, http::HeaderValue); 2] {
        self.upstream_calls += 1;
        self.txn.upstream_fields(self.upstream_calls)
    }

    /// Writes `message` to the app log (`[log]`: `app.log` or the console),
    /// tagged with the request's transaction ids.
    pub fn log(&self, message: impl std::fmt::Display) {
        tracing::info!(target: "app", gtxid = %self.txn, ltxid = self.txn.ltxid(), "{message}");
    }

    /// Like [`Ctx::log`], as a warning.
    pub fn log_warning(&self, message: impl std::fmt::Display) {
        tracing::warn!(target: "app", gtxid = %self.txn, ltxid = self.txn.ltxid(), "{message}");
    }

    /// True when the server runs with `--devel`.
    pub fn devel(&self) -> bool {
        self.devel
    }

    /// Asks to push the resource at `path` (an absolute path such as
    /// `/static/app.css`) with this response: on HTTP/2, when the client
    /// allows push, a PUSH_PROMISE goes out before the response and the
    /// resource is served through the mount table as a GET. Over HTTP/1.1,
    /// or when the client disabled push, nothing happens.
    pub fn push(&mut self, path: &str) {
        if let Some(pushes) = &mut self.pushes {
            if path.starts_with('/') {
                pushes.push(path.to_owned());
            }
        }
    }

    /// The instance's shared state (also usable from other threads and tasks).
    pub fn state(&self) -> &SharedState {
        &self.services.state
    }

    /// The value of the registered state `name` (0 until set), as every
    /// shard and worker process sees it.
    pub fn getgs(&self, name: &str) -> Result<i64, StateError> {
        self.services.state.getgs(name)
    }

    /// Sets the registered state `name`.
    pub fn setgs(&self, name: &str, value: i64) -> Result<(), StateError> {
        self.services.state.setgs(name, value)
    }

    /// Adds `delta` to the registered state `name` atomically; returns the new value.
    pub fn incgs(&self, name: &str, delta: i64) -> Result<i64, StateError> {
        self.services.state.incgs(name, delta)
    }

    /// Records that the registered cache key `name` changed now and
    /// broadcasts `model-changed:<name>`; returns the stored time.
    pub fn setlu(&self, name: &str) -> Result<SystemTime, StateError> {
        self.services.state.setlu(name)
    }

    /// The latest update time of the cache keys `names` (the instance's
    /// start time for keys never set).
    pub fn getlu(&self, names: &[&str]) -> Result<SystemTime, StateError> {
        self.services.state.getlu(names)
    }

    /// Sends `event` to the subscribers of every shard, this one included,
    /// each exactly once. Returns at once; the error names shards whose
    /// bus queue was full (the event was dropped there) or that stopped.
    pub fn broadcast(&self, event: &str, payload: impl Into<Payload>) -> Result<(), BusError> {
        self.services.state.broadcast(event, payload)
    }

    /// Calls `f` on this shard for every `event` broadcast while the
    /// returned [`Subscription`] lives (`.keep()` it for the shard's life).
    /// Each call adds a subscriber: subscribe once per shard (for example
    /// behind a `OnceCell` in a per-shard handler) or per long-lived
    /// connection, not once per request. For subscribers on every shard
    /// from the start, use [`Engine::on_broadcast`](crate::Engine::on_broadcast).
    pub fn subscribe(&self, event: &str, f: impl Fn(&Event) + 'static) -> Subscription {
        self.services.subscribe(event, f)
    }

    /// Runs `f` on every shard (this one included) and gathers the answers
    /// in shard order, e.g. to read per-shard counters. The error names
    /// shards that could not answer.
    pub fn fan_out<T, F>(&self, f: F) -> impl Future<Output = Result<Vec<T>, BusError>> + use<T, F>
    where
        F: Fn(&crate::ShardInfo) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let services = self.services.clone();
        async move { services.fan_out(f).await }
    }
}
