//! `Upgrade: h2c` (RFC 7540 §3.2): an HTTP/1.1 request asks to continue in
//! HTTP/2, and is itself answered on stream 1.
//!
//! The `h2` crate has no way to start a server connection with a request
//! already open, so the request is handed to it as the client would have
//! sent it: a HEADERS frame on stream 1 with END_STREAM, HPACK-encoded with
//! literals that touch no compression table, placed right after the
//! client's preface and first SETTINGS frame. The client itself never sends
//! stream 1 (it is implicitly open), so the two never collide, and its own
//! streams start at 3.

use bytes::{BufMut, Bytes, BytesMut};
use http::header::{self, HeaderName};

use crate::http::Request;

/// HEADERS frame type and its END_STREAM | END_HEADERS flags.
const HEADERS: u8 = 0x1;
const END_STREAM_END_HEADERS: u8 = 0x1 | 0x4;
/// SETTINGS frame type.
const SETTINGS: u8 = 0x4;

/// If `req` asks for `Upgrade: h2c` in the way RFC 7540 §3.2 requires
/// (`Connection: Upgrade, HTTP2-Settings` and one `HTTP2-Settings` field),
/// the HEADERS frame that carries it on stream 1; `None` otherwise, or if
/// the frame would exceed `max_frame_size` (the request is then answered
/// over HTTP/1.1, which is always allowed).
pub(crate) fn upgrade_frame(req: &Request, max_frame_size: usize) -> Option<Bytes> {
    let headers = req.headers();
    let wants_h2c = headers
        .get_all(header::UPGRADE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|token| token.trim().eq_ignore_ascii_case("h2c"));
    if !wants_h2c || headers.get_all("http2-settings").iter().count() != 1 {
        return None;
    }
    let connection_tokens: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .collect();
    if !connection_tokens.iter().any(|t| t == "upgrade") || !connection_tokens.iter().any(|t| t == "http2-settings") {
        return None;
    }

    let mut block = Vec::with_capacity(256);
    literal(&mut block, b":method", req.method().as_str().as_bytes());
    literal(&mut block, b":scheme", b"http");
    if let Some(host) = headers.get(header::HOST) {
        literal(&mut block, b":authority", host.as_bytes());
    }
    let path = req.uri().path_and_query().map_or("/", |pq| pq.as_str());
    literal(&mut block, b":path", path.as_bytes());
    for (name, value) in headers {
        if is_connection_specific(name, &connection_tokens) {
            continue;
        }
        if name == header::TE && !value.as_bytes().eq_ignore_ascii_case(b"trailers") {
            continue;
        }
        literal(&mut block, name.as_str().as_bytes(), value.as_bytes());
    }
    if block.len() > max_frame_size {
        return None;
    }
    let mut frame = BytesMut::with_capacity(9 + block.len());
    frame.put_uint(block.len() as u64, 3);
    frame.put_u8(HEADERS);
    frame.put_u8(END_STREAM_END_HEADERS);
    frame.put_u32(1);
    frame.put_slice(&block);
    Some(frame.freeze())
}

/// The response that switches the connection.
pub(crate) const SWITCHING: &[u8] = b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n";

/// Fields that belong to the HTTP/1.1 hop and have no place in HTTP/2.
fn is_connection_specific(name: &HeaderName, connection_tokens: &[String]) -> bool {
    matches!(
        name.as_str(),
        "connection" | "upgrade" | "http2-settings" | "host" | "keep-alive" | "proxy-connection" | "transfer-encoding"
    ) || connection_tokens.iter().any(|t| t == name.as_str())
}

/// The largest frame payload a peer may send before our SETTINGS say
/// otherwise (RFC 9113 §4.2).
const DEFAULT_MAX_FRAME_SIZE: usize = 16_384;

/// Where, in what the client sent after the 101, the injected frame goes:
/// after the preface and the first (SETTINGS) frame. `Ok(None)`: need more
/// bytes; `Err(())`: not an HTTP/2 client start.
pub(crate) fn injection_point(buf: &[u8]) -> Result<Option<usize>, ()> {
    let preface = super::PREFACE;
    let seen = buf.len().min(preface.len());
    if buf[..seen] != preface[..seen] {
        return Err(());
    }
    let rest = &buf[seen..];
    if seen < preface.len() || rest.len() < 9 {
        return Ok(None);
    }
    if rest[3] != SETTINGS {
        return Err(());
    }
    let len = (usize::from(rest[0]) << 16) | (usize::from(rest[1]) << 8) | usize::from(rest[2]);
    // A SETTINGS frame is whole 6-byte settings within the default maximum
    // frame size (RFC 9113 §6.5): a claimed 16 MiB is refused now, not
    // waited for and buffered.
    if len > DEFAULT_MAX_FRAME_SIZE || len % 6 != 0 {
        return Err(());
    }
    let end = preface.len() + 9 + len;
    Ok((buf.len() >= end).then_some(end))
}

/// An HPACK "literal header field without indexing — new name" (RFC 7541
/// §6.2.2), Huffman off: it leaves both dynamic tables as they were.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    string(out, name);
    string(out, value);
}

fn string(out: &mut Vec<u8>, s: &[u8]) {
    integer(out, s.len(), 7, 0x00);
    out.extend_from_slice(s);
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1).
fn integer(out: &mut Vec<u8>, value: usize, n: u32, flags: u8) {
    let max = (1usize << n) - 1;
    if value < max {
        out.push(flags | value as u8);
        return;
    }
    out.push(flags | max as u8);
    let mut rest = value - max;
    while rest >= 128 {
        out.push((rest % 128 + 128) as u8);
        rest /= 128;
    }
    out.push(rest as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::Body;

    fn request(fields: &[(&str, &str)]) -> Request {
        let mut req = Request::new(Body::empty());
        *req.uri_mut() = "/a?b=1".parse().unwrap();
        for (n, v) in fields {
            req.headers_mut().append(HeaderName::from_bytes(n.as_bytes()).unwrap(), v.parse().unwrap());
        }
        req
    }

    #[test]
    fn integers_follow_rfc7541() {
        let mut out = Vec::new();
        integer(&mut out, 10, 5, 0);
        assert_eq!(out, [10]);
        out.clear();
        integer(&mut out, 1337, 5, 0);
        assert_eq!(out, [31, 154, 10]);
    }

    #[test]
    fn builds_a_headers_frame_for_a_proper_upgrade() {
        let req = request(&[
            ("host", "example.com"),
            ("connection", "Upgrade, HTTP2-Settings"),
            ("upgrade", "h2c"),
            ("http2-settings", "AAMAAABkAAQAAP__"),
            ("accept", "*/*"),
        ]);
        let frame = upgrade_frame(&req, 16384).expect("an upgrade");
        let len = (usize::from(frame[0]) << 16) | (usize::from(frame[1]) << 8) | usize::from(frame[2]);
        assert_eq!(len, frame.len() - 9);
        assert_eq!(frame[3], HEADERS);
        assert_eq!(frame[4], END_STREAM_END_HEADERS);
        assert_eq!(&frame[5..9], &[0, 0, 0, 1]);
        let block = &frame[9..];
        let text = String::from_utf8_lossy(block);
        for part in [":method", "GET", ":scheme", ":authority", "example.com", ":path", "/a?b=1", "accept"] {
            assert!(text.contains(part), "{part} in {text:?}");
        }
        for gone in ["upgrade", "http2-settings", "connection", "host"] {
            assert!(!text.contains(gone), "{gone} must not be forwarded: {text:?}");
        }
    }

    #[test]
    fn no_upgrade_without_the_required_fields() {
        assert!(upgrade_frame(&request(&[("upgrade", "h2c")]), 16384).is_none());
        assert!(upgrade_frame(&request(&[("upgrade", "websocket"), ("connection", "upgrade")]), 16384).is_none());
        let missing_token = request(&[("upgrade", "h2c"), ("connection", "upgrade"), ("http2-settings", "")]);
        assert!(upgrade_frame(&missing_token, 16384).is_none());
        let ok = request(&[("upgrade", "h2c"), ("connection", "upgrade, http2-settings"), ("http2-settings", "")]);
        assert!(upgrade_frame(&ok, 16384).is_some());
        assert!(upgrade_frame(&ok, 4).is_none(), "too large for one frame");
    }

    #[test]
    fn finds_where_to_inject() {
        let mut buf = super::super::PREFACE.to_vec();
        assert_eq!(injection_point(&buf), Ok(None));
        buf.extend_from_slice(&[0, 0, 6, SETTINGS, 0, 0, 0, 0, 0]);
        assert_eq!(injection_point(&buf), Ok(None));
        buf.extend_from_slice(&[0, 3, 0, 0, 0, 100]);
        assert_eq!(injection_point(&buf), Ok(Some(24 + 9 + 6)));
        assert_eq!(injection_point(b"GET / HTTP/1.1\r\n"), Err(()));
        let mut not_settings = super::super::PREFACE.to_vec();
        not_settings.extend_from_slice(&[0, 0, 0, HEADERS, 0, 0, 0, 0, 1]);
        assert_eq!(injection_point(&not_settings), Err(()));
        // A SETTINGS frame claiming more than the default frame size, or a
        // length that is not whole settings, is refused at its header.
        for header in [[0xff, 0xff, 0xff], [0, 0x40, 0x02], [0, 0, 5]] {
            let mut buf = super::super::PREFACE.to_vec();
            buf.extend_from_slice(&header);
            buf.extend_from_slice(&[SETTINGS, 0, 0, 0, 0, 0]);
            assert_eq!(injection_point(&buf), Err(()), "{header:?}");
        }
        let mut largest = super::super::PREFACE.to_vec();
        largest.extend_from_slice(&[0, 0x3f, 0xfc, SETTINGS, 0, 0, 0, 0, 0]);
        assert_eq!(injection_point(&largest), Ok(None), "16380 bytes of settings may still come");
    }
}
