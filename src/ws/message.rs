//! What handlers send and receive: text and binary messages, close frames.

use bytes::Bytes;

/// UTF-8 text in a shared buffer: what a text message carries. Cloning it
/// is cheap (a reference count), so one message can go to many connections.
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct Text(Bytes);

impl Text {
    /// Wraps bytes the codec already validated as UTF-8.
    pub(crate) fn from_validated(bytes: Bytes) -> Text {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        Text(bytes)
    }

    /// Text from static string data, without copying.
    pub const fn from_static(s: &'static str) -> Text {
        Text(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // SAFETY: a `Text` is only made from `str` data or from bytes the
        // codec validated as UTF-8 (`from_validated`), and is never mutated.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The UTF-8 bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl std::ops::Deref for Text {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl std::fmt::Debug for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl std::fmt::Display for Text {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Text {
    fn from(s: String) -> Text {
        Text(Bytes::from(s))
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Text {
        Text(Bytes::copy_from_slice(s.as_bytes()))
    }
}

/// A whole WebSocket message. Control frames (ping, pong, close) are
/// handled by the connection and never reach handlers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message (always valid UTF-8).
    Text(Text),
    /// A binary message.
    Binary(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Text>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// The text, for a text message.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Message::Text(t) => Some(t.as_str()),
            Message::Binary(_) => None,
        }
    }

    /// The payload bytes of either kind.
    pub fn as_bytes(&self) -> &Bytes {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) => b,
        }
    }

    /// The payload length in bytes.
    pub fn len(&self) -> usize {
        self.as_bytes().len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True for a text message.
    pub fn is_text(&self) -> bool {
        matches!(self, Message::Text(_))
    }
}

impl From<String> for Message {
    fn from(s: String) -> Message {
        Message::Text(s.into())
    }
}

impl From<&str> for Message {
    fn from(s: &str) -> Message {
        Message::Text(s.into())
    }
}

impl From<Text> for Message {
    fn from(t: Text) -> Message {
        Message::Text(t)
    }
}

impl From<Bytes> for Message {
    fn from(b: Bytes) -> Message {
        Message::Binary(b)
    }
}

impl From<Vec<u8>> for Message {
    fn from(b: Vec<u8>) -> Message {
        Message::Binary(b.into())
    }
}

/// How a connection ended, or asks to end: a close code (RFC 6455 §7.4)
/// and a reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The status code: 1000 normal, 1001 going away, 1008 policy, 1009 too
    /// big, ...; 1005 when the peer's close frame had no code, 1006 when the
    /// connection ended without a close handshake.
    pub code: u16,
    /// The reason text (at most 123 bytes go on the wire).
    pub reason: String,
}

impl CloseFrame {
    /// A close frame with `code` and `reason`.
    pub fn new(code: u16, reason: impl Into<String>) -> CloseFrame {
        CloseFrame { code, reason: reason.into() }
    }
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closing or closed.
    #[error("the WebSocket is closed")]
    Closed,
    /// The send queue is full (the client reads too slowly). Under
    /// [`Overflow::Drop`] the message was dropped; under
    /// [`Overflow::Close`] the connection is being closed with 1008.
    #[error("the WebSocket send queue is full")]
    Full,
}

/// What happens when a client reads slower than messages are sent to it
/// and the send queue reaches its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Overflow {
    /// Close the connection with 1008 ("send queue full"): the client
    /// misses nothing silently (the default).
    #[default]
    Close,
    /// Drop the message that does not fit and keep the connection: for
    /// feeds where only the latest messages matter.
    Drop,
}
