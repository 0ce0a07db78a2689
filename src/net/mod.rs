//! Sockets: per-shard `SO_REUSEPORT` listeners.

mod listener;

pub(crate) use listener::bind_shard_listeners;
