//! Sockets: per-shard `SO_REUSEPORT` listeners, TLS, and zero-copy file sending.

mod listener;
mod sendfile;
pub(crate) mod tls;

pub(crate) use listener::bind_shard_listeners;
pub(crate) use sendfile::{Cork, Sent, ZeroCopyWrite, send_file};
