//! Request and response bodies: empty, a single buffer, or a stream of chunks.

use std::fmt;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures_util::future::LocalBoxFuture;
use futures_util::{Stream, StreamExt};

use super::FileBody;
use crate::error::{Error, ErrorKind, Result};

/// A source of body chunks read from a connection (an HTTP/1.1 request body,
/// later an HTTP/2 stream). Implemented by the protocol modules.
pub(crate) trait BodySource {
    /// The next chunk, `None` at the end of the body.
    fn next_chunk(&mut self) -> LocalBoxFuture<'_, Option<Result<Bytes>>>;
    /// Bytes still to come, when the protocol knows.
    fn remaining(&self) -> Option<u64>;
}

/// An HTTP message body.
///
/// Cheap to create for the common cases (no allocation for [`Body::empty`] or a
/// single [`Bytes`]); streams are boxed once.
pub struct Body {
    kind: Kind,
}

enum Kind {
    Empty,
    Full(Bytes),
    Incoming(Box<dyn BodySource>),
    Stream(Pin<Box<dyn Stream<Item = Result<Bytes>>>>),
    File(FileBody),
}

impl Body {
    /// A body with no bytes.
    pub const fn empty() -> Body {
        Body { kind: Kind::Empty }
    }

    /// A body made of one buffer.
    pub fn full(bytes: impl Into<Bytes>) -> Body {
        let bytes = bytes.into();
        if bytes.is_empty() { Body::empty() } else { Body { kind: Kind::Full(bytes) } }
    }

    /// A body produced chunk by chunk; sent with chunked encoding on HTTP/1.1.
    pub fn stream<S, B, E>(stream: S) -> Body
    where
        S: Stream<Item = std::result::Result<B, E>> + 'static,
        B: Into<Bytes>,
        E: Into<Error>,
    {
        Body { kind: Kind::Stream(Box::pin(stream.map(|r| r.map(Into::into).map_err(Into::into)))) }
    }

    /// A body sent from an open file (zero-copy on plain TCP connections).
    pub fn file(file: FileBody) -> Body {
        if file.is_empty() { Body::empty() } else { Body { kind: Kind::File(file) } }
    }

    pub(crate) fn incoming(source: Box<dyn BodySource>) -> Body {
        Body { kind: Kind::Incoming(source) }
    }

    /// The exact length when it is known before sending (empty, full, or an
    /// incoming body with a Content-Length); `None` for streams.
    pub fn exact_len(&self) -> Option<u64> {
        match &self.kind {
            Kind::Empty => Some(0),
            Kind::Full(b) => Some(b.len() as u64),
            Kind::Incoming(s) => s.remaining(),
            Kind::Stream(_) => None,
            Kind::File(f) => Some(f.len()),
        }
    }

    /// True when the body is known to have no bytes.
    pub fn is_empty(&self) -> bool {
        self.exact_len() == Some(0)
    }

    /// Takes the whole body as one buffer if it already is one (no I/O needed).
    pub(crate) fn try_into_full(self) -> std::result::Result<Option<Bytes>, Body> {
        match self.kind {
            Kind::Empty => Ok(None),
            Kind::Full(b) => Ok(Some(b)),
            kind => Err(Body { kind }),
        }
    }

    /// The length of a body that is already in memory (empty or one
    /// buffer); `None` for streams, files and incoming bodies.
    pub(crate) fn in_memory_len(&self) -> Option<usize> {
        match &self.kind {
            Kind::Empty => Some(0),
            Kind::Full(b) => Some(b.len()),
            _ => None,
        }
    }

    /// True when the body is already made (empty, bytes in memory, or a
    /// file): sending it reads nothing else, such as the request's body.
    pub(crate) fn is_ready_made(&self) -> bool {
        matches!(self.kind, Kind::Empty | Kind::Full(_) | Kind::File(_))
    }

    /// True for a file body (reading ahead of need would start a disk read).
    pub(crate) fn is_file(&self) -> bool {
        matches!(self.kind, Kind::File(_))
    }

    /// Takes the body as a file body if it is one.
    pub(crate) fn try_into_file(self) -> std::result::Result<FileBody, Body> {
        match self.kind {
            Kind::File(f) => Ok(f),
            kind => Err(Body { kind }),
        }
    }

    /// The next chunk, for the protocol writers: a panic inside the body's
    /// stream becomes an error like any failed chunk (a 500 if nothing of
    /// the response went out yet, else the response ends early), instead
    /// of unwinding the connection's task with the answers queued on it.
    pub(crate) async fn chunk_or_panic_error(&mut self) -> Option<Result<Bytes>> {
        use futures_util::FutureExt;
        match std::panic::AssertUnwindSafe(self.chunk()).catch_unwind().await {
            Ok(next) => next,
            Err(panic) => Some(Err(Error::new(
                ErrorKind::Internal,
                format!("response body panicked: {}", crate::shard::panic_message(&*panic)),
            ))),
        }
    }

    /// The next chunk of the body; `None` once it is finished.
    pub async fn chunk(&mut self) -> Option<Result<Bytes>> {
        match &mut self.kind {
            Kind::Empty => None,
            Kind::Full(_) => match std::mem::replace(&mut self.kind, Kind::Empty) {
                Kind::Full(b) => Some(Ok(b)),
                _ => None,
            },
            Kind::Incoming(source) => source.next_chunk().await,
            Kind::Stream(stream) => stream.next().await,
            Kind::File(file) => file.next_chunk().await,
        }
    }

    /// Reads the whole body into memory, failing with 413 semantics past `limit` bytes.
    pub async fn collect(mut self, limit: usize) -> Result<Bytes> {
        if let Kind::Full(b) = self.kind {
            return if b.len() > limit { Err(too_large(limit)) } else { Ok(b) };
        }
        let mut all = BytesMut::new();
        while let Some(chunk) = self.chunk().await {
            let chunk = chunk?;
            if all.len() + chunk.len() > limit {
                return Err(too_large(limit));
            }
            all.extend_from_slice(&chunk);
        }
        Ok(all.freeze())
    }

    /// Turns the body into a `Stream` of chunks.
    pub fn into_stream(self) -> impl Stream<Item = Result<Bytes>> {
        futures_util::stream::unfold(self, |mut body| async move { body.chunk().await.map(|c| (c, body)) })
    }
}

fn too_large(limit: usize) -> Error {
    Error::new(ErrorKind::PayloadTooLarge, format!("body larger than {limit} bytes"))
}

impl Default for Body {
    fn default() -> Self {
        Body::empty()
    }
}

impl fmt::Debug for Body {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Empty => f.write_str("Body::Empty"),
            Kind::Full(b) => write!(f, "Body::Full({} bytes)", b.len()),
            Kind::Incoming(s) => write!(f, "Body::Incoming(remaining: {:?})", s.remaining()),
            Kind::Stream(_) => f.write_str("Body::Stream"),
            Kind::File(b) => write!(f, "Body::File({} bytes)", b.len()),
        }
    }
}

impl From<Bytes> for Body {
    fn from(b: Bytes) -> Self {
        Body::full(b)
    }
}

impl From<&'static str> for Body {
    fn from(s: &'static str) -> Self {
        Body::full(Bytes::from_static(s.as_bytes()))
    }
}

impl From<&'static [u8]> for Body {
    fn from(s: &'static [u8]) -> Self {
        Body::full(Bytes::from_static(s))
    }
}

impl From<String> for Body {
    fn from(s: String) -> Self {
        Body::full(s)
    }
}

impl From<Vec<u8>> for Body {
    fn from(v: Vec<u8>) -> Self {
        Body::full(v)
    }
}

impl From<()> for Body {
    fn from(_: ()) -> Self {
        Body::empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        futures_util::FutureExt::now_or_never(f).expect("body futures without I/O complete at once")
    }

    #[test]
    fn full_body_yields_once() {
        let mut b = Body::from("hello");
        assert_eq!(b.exact_len(), Some(5));
        assert_eq!(block_on(b.chunk()).unwrap().unwrap(), "hello");
        assert!(block_on(b.chunk()).is_none());
    }

    #[test]
    fn stream_collects_and_enforces_limit() {
        let parts = futures_util::stream::iter(vec![Ok::<_, Error>("ab"), Ok("cd")]);
        assert_eq!(block_on(Body::stream(parts).collect(10)).unwrap(), "abcd");
        let parts = futures_util::stream::iter(vec![Ok::<_, Error>("ab"), Ok("cd")]);
        let err = block_on(Body::stream(parts).collect(3)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn empty_string_is_empty_body() {
        assert!(Body::from(String::new()).is_empty());
    }
}
