//! The handler traits and the adapters that turn closures and values into them.

use std::future::Future;
use std::rc::Rc;
use std::sync::Arc;

use futures_util::future::LocalBoxFuture;

use super::Ctx;
use crate::http::{Request, Response};

/// Answers requests on one shard.
///
/// A handler lives on a single shard thread, so it may hold `Rc`, `RefCell`,
/// per-shard connection pools and caches without locks. The future is boxed
/// once per request (the only allocation the dispatch itself makes).
pub trait Handler: 'static {
    /// Handles one request. `cx` carries the peer, the shard and the services.
    fn call<'a>(&'a self, req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response>;
}

/// Facts about the shard a handler is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShardInfo {
    /// Index of the shard, `0..count`.
    pub id: usize,
    /// Number of shards in this worker.
    pub count: usize,
}

/// Builds one [`Handler`] per shard; crosses threads once at start-up (and on reload).
pub trait HandlerFactory: Send + Sync + 'static {
    /// Creates the handler instance for `shard`.
    fn build(&self, shard: &ShardInfo) -> Rc<dyn Handler>;
}

/// A handler made from a closure; see [`handler_fn`].
#[derive(Clone)]
pub struct HandlerFn<F> {
    f: F,
}

impl<F> std::fmt::Debug for HandlerFn<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HandlerFn")
    }
}

/// Makes a handler from a closure returning a future.
///
/// The closure gets the request and the context; the future it returns must
/// own what it needs (copy values out of `cx` before the `async move` block).
///
/// ```
/// use skitai::prelude::*;
/// let hello = handler_fn(|_req, _cx| async { Response::text("Hello, World!") });
/// # let _ = hello;
/// ```
pub fn handler_fn<F, Fut>(f: F) -> HandlerFn<F>
where
    F: Fn(Request, &mut Ctx) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + 'static,
{
    HandlerFn { f }
}

impl<F, Fut> Handler for HandlerFn<F>
where
    F: Fn(Request, &mut Ctx) -> Fut + 'static,
    Fut: Future<Output = Response> + 'static,
{
    fn call<'a>(&'a self, req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
        // The box is allocated first so the future (the request inside it
        // is 264 bytes) can be made in place rather than on the stack and
        // then copied into the box.
        let future: Box<Fut> = Box::write(Box::new_uninit(), (self.f)(req, cx));
        Box::into_pin(future)
    }
}

impl<F, Fut> HandlerFactory for HandlerFn<F>
where
    F: Fn(Request, &mut Ctx) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response> + 'static,
{
    fn build(&self, _shard: &ShardInfo) -> Rc<dyn Handler> {
        Rc::new(self.clone())
    }
}

/// A factory calling a closure once per shard; see [`per_shard`].
pub struct PerShard<F>(F);

impl<F> std::fmt::Debug for PerShard<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PerShard")
    }
}

/// Builds a fresh handler on every shard, e.g. one holding a per-shard cache.
pub fn per_shard<F, H>(build: F) -> PerShard<F>
where
    F: Fn(&ShardInfo) -> H + Send + Sync + 'static,
    H: Handler,
{
    PerShard(build)
}

impl<F, H> HandlerFactory for PerShard<F>
where
    F: Fn(&ShardInfo) -> H + Send + Sync + 'static,
    H: Handler,
{
    fn build(&self, shard: &ShardInfo) -> Rc<dyn Handler> {
        Rc::new((self.0)(shard))
    }
}

/// A factory handing every shard the same thread-safe handler; see [`shared`].
pub struct Shared<H>(Arc<H>);

impl<H> std::fmt::Debug for Shared<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Shared")
    }
}

/// Shares one `Send + Sync` handler across all shards.
pub fn shared<H: Handler + Send + Sync>(handler: Arc<H>) -> Shared<H> {
    Shared(handler)
}

struct SharedHandler<H>(Arc<H>);

impl<H: Handler> Handler for SharedHandler<H> {
    fn call<'a>(&'a self, req: Request, cx: &'a mut Ctx) -> LocalBoxFuture<'a, Response> {
        self.0.call(req, cx)
    }
}

impl<H: Handler + Send + Sync> HandlerFactory for Shared<H> {
    fn build(&self, _shard: &ShardInfo) -> Rc<dyn Handler> {
        Rc::new(SharedHandler(self.0.clone()))
    }
}
