//! WebSocket (RFC 6455, RFC 7692, RFC 8441) on the wire: the handshake,
//! the frame codec, compression, and the connection loop. The handler API
//! is [`crate::ws`].

pub(crate) mod codec;
pub(crate) mod conn;
pub(crate) mod deflate;
pub(crate) mod frame;
pub(crate) mod handshake;
pub(crate) mod utf8;
