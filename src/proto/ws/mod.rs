//! WebSocket (RFC 6455): the frame codec. Bytes in, messages out; the
//! connection loop and the handler API build on it.

pub(crate) mod codec;
pub(crate) mod frame;
pub(crate) mod utf8;
