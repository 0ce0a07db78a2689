//! skitai: a thread-per-core io_uring application engine and web server.
//!
//! Run it as a server (`skitai -c skitai.toml`) or embed it: build an
//! [`Engine`], mount [`Handler`]s, and call [`Engine::run`] to get the whole
//! command line for free.
#![deny(unreachable_pub, missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod cli;
pub mod config;
mod engine;
mod error;
pub mod http;
mod mount;
mod net;
mod proto;
mod shard;

pub use engine::{DEFAULT_CONFIG_FILE, Engine, IntoMountTarget, MountTarget, Server, ShutdownHandle};
pub use error::{Error, ErrorKind, Result};
pub use mount::{Ctx, Handler, HandlerFactory, HandlerFn, PerShard, ShardInfo, Shared, handler_fn, per_shard, shared};

/// Re-exports of the `http` crate's types used in handler signatures.
pub use ::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};

/// What most programs need: `use skitai::prelude::*;`.
pub mod prelude {
    pub use crate::http::{Body, Request, Response, ResponseExt};
    pub use crate::{Ctx, Engine, Handler, HandlerFactory, ShardInfo, StatusCode, handler_fn, per_shard, shared};
    pub use futures_util::future::LocalBoxFuture;
}

#[doc(hidden)]
pub use futures_util as __futures;
