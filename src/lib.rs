//! skitai: a thread-per-core io_uring application engine and web server.
//!
//! Run it as a server (`skitai -c skitai.toml`) or embed it: build an
//! [`Engine`], mount [`Handler`]s, and call [`Engine::run`] to get the whole
//! command line for free.
#![deny(unreachable_pub, missing_docs, missing_debug_implementations)]
#![warn(clippy::undocumented_unsafe_blocks)]

mod alloc;
mod apps;
pub mod cli;
pub mod config;
mod engine;
mod error;
pub mod http;
mod mount;
mod net;
pub mod observe;
mod proto;
mod shard;
pub mod state;
pub mod ws;

pub use alloc::Mimalloc;
pub use apps::StaticDir;
pub use engine::{DEFAULT_CONFIG_FILE, Engine, IntoMountTarget, MountTarget, ReloadHandle, Server, ShutdownHandle};
pub use error::{Error, ErrorKind, Result};
pub use mount::{Ctx, Handler, HandlerFactory, HandlerFn, PerShard, ShardInfo, Shared, handler_fn, per_shard, shared};
pub use shard::bus::BusError;
pub use shard::services::Subscription;
pub use state::{Event, Payload, SharedState, StateError};

/// Re-exports of the `http` crate's types used in handler signatures.
pub use ::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version, header};

/// Timers for handlers on a shard (`sleep`, `timeout`, `interval`), from the shard's runtime.
pub use monoio::time;

/// Spawns a task on the current shard (the future need not be `Send`).
pub use monoio::spawn;

/// Runs a blocking closure on the engine's blocking pool (`threads`) and awaits its result.
pub use monoio::spawn_blocking;

/// What most programs need: `use skitai::prelude::*;`.
pub mod prelude {
    pub use crate::http::{Body, Request, Response, ResponseExt};
    pub use crate::{
        Ctx, Engine, Handler, HandlerFactory, ShardInfo, StaticDir, StatusCode, handler_fn, per_shard, shared,
    };
    pub use futures_util::future::LocalBoxFuture;
}

#[doc(hidden)]
pub use futures_util as __futures;

/// Entry points for the fuzz targets (`tests/fuzz`) and micro-benchmarks (`perf/`);
/// not a stable API.
#[doc(hidden)]
pub mod internals {
    use bytes::BytesMut;
    use http::StatusCode;
    use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};

    use crate::config::Limits;
    use crate::proto::h1::decode::{Decoded, Decoder};
    use crate::proto::h1::encode::{Framing, encode_head};
    use crate::proto::h1::parse::parse_head;

    /// Parses `data` as a stream of pipelined request heads until it errors or needs more;
    /// returns the number of heads parsed. Must never panic.
    pub fn request_heads(data: &[u8]) -> usize {
        let limits = Limits::default();
        let mut buf = BytesMut::from(data);
        let mut count = 0;
        while let Ok(Some(_)) = parse_head(&mut buf, &limits) {
            count += 1;
        }
        count
    }

    /// Parses `data`, fed in pieces of `step` bytes (at least 1), as a stream
    /// of pipelined request heads: each head's method, target and framing,
    /// then how the stream ended (`more` bytes needed, or the refusal's
    /// status). The result must not depend on `step`. Must never panic.
    pub fn request_heads_in_steps(data: &[u8], step: usize) -> Vec<String> {
        let limits = Limits::default();
        let mut buf = BytesMut::new();
        let mut seen = Vec::new();
        let mut fed = 0;
        loop {
            match parse_head(&mut buf, &limits) {
                Ok(Some(head)) => {
                    seen.push(format!("{} {} {:?}", head.request.method(), head.request.uri(), head.framing))
                }
                Ok(None) if fed < data.len() => {
                    let end = fed.saturating_add(step.max(1)).min(data.len());
                    buf.extend_from_slice(&data[fed..end]);
                    fed = end;
                }
                Ok(None) => {
                    seen.push("more".to_owned());
                    return seen;
                }
                Err(e) => {
                    seen.push(format!("refused {:?}", e.error.status()));
                    return seen;
                }
            }
        }
    }

    /// Decodes `data` as a chunked body fed in pieces of `step` bytes; returns
    /// the body, or `None` if it is malformed or incomplete. Must never panic.
    pub fn chunked_body(data: &[u8], step: usize) -> Option<Vec<u8>> {
        let step = step.max(1);
        let mut decoder = Decoder::chunked(u64::MAX);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match decoder.decode(&mut buf).ok()? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => return Some(body),
                Decoded::NeedMore => {
                    if fed == data.len() {
                        return None;
                    }
                    let end = (fed + step).min(data.len());
                    buf.extend_from_slice(&data[fed..end]);
                    fed = end;
                }
            }
        }
    }

    /// Decodes `data` as WebSocket client frames fed in pieces of `step`
    /// bytes (messages capped at 64 KiB): each message as (opcode, payload),
    /// then the close code of a violation, if any. Must never panic.
    pub fn ws_messages(data: &[u8], step: usize) -> (Vec<(u8, Vec<u8>)>, Option<u16>) {
        use crate::proto::ws::codec::{Decoder, Message};
        let step = step.max(1);
        let mut decoder = Decoder::new(64 << 10);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for piece in data.chunks(step) {
            buf.extend_from_slice(piece);
            loop {
                match decoder.decode(&mut buf) {
                    Ok(Some(message)) => out.push(match message {
                        Message::Text(b) => (1, b.to_vec()),
                        Message::Binary(b) => (2, b.to_vec()),
                        Message::Close(c) => {
                            (8, c.map(|(code, r)| [&code.to_be_bytes()[..], r.as_bytes()].concat()).unwrap_or_default())
                        }
                        Message::Ping(b) => (9, b.to_vec()),
                        Message::Pong(b) => (10, b.to_vec()),
                    }),
                    Ok(None) => break,
                    Err(code) => return (out, Some(code as u16)),
                }
            }
        }
        (out, None)
    }

    /// Encodes the head of a 13-byte `text/plain` 200 response into `dst`.
    pub fn encode_hello_head(dst: &mut BytesMut) {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        let _ = encode_head(StatusCode::OK, &headers, Framing::Length(13), true, false, dst);
    }

    /// A mount table with handlers that are never called, for lookup benchmarks.
    pub struct MountLookup(crate::mount::MountTable);

    impl std::fmt::Debug for MountLookup {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("MountLookup")
        }
    }

    impl MountLookup {
        /// A table with `prefixes` mounted.
        pub fn new(prefixes: &[&str]) -> MountLookup {
            struct Never;
            impl crate::Handler for Never {
                fn call<'a>(
                    &'a self,
                    _req: crate::http::Request,
                    _cx: &'a mut crate::Ctx,
                ) -> futures_util::future::LocalBoxFuture<'a, crate::http::Response> {
                    unreachable!("benchmarks only look up")
                }
            }
            let mounts = prefixes
                .iter()
                .map(|p| crate::mount::Mount {
                    prefix: std::rc::Rc::from(*p),
                    target: crate::mount::Target::Handler(std::rc::Rc::new(Never)),
                })
                .collect();
            MountLookup(crate::mount::MountTable::new(mounts))
        }

        /// The length of the matched prefix, if any.
        pub fn lookup(&self, path: &str) -> Option<usize> {
            match self.0.lookup_from(path, 0) {
                crate::mount::Lookup::Found { mount, .. } => Some(mount.prefix.len()),
                _ => None,
            }
        }
    }
}
