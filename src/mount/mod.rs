//! Handlers, the request context, and the table that routes a path to a handler.

mod ctx;
mod handler;
mod table;

pub use ctx::Ctx;
pub use handler::{Handler, HandlerFactory, HandlerFn, PerShard, ShardInfo, Shared, handler_fn, per_shard, shared};
pub(crate) use table::{Lookup, Mount, MountSpec, MountTable, Target};
