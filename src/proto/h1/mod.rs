//! HTTP/1.1 (RFC 9112): head parsing, body framing, response encoding and the
//! connection loop. Only `conn` touches a socket.

mod conn;
pub(crate) mod decode;
pub(crate) mod encode;
pub(crate) mod parse;

pub(crate) use conn::{H2cUpgrade, serve};
