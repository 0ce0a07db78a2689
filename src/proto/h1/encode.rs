//! HTTP/1.1 response heads and chunked framing, written into a batch buffer.

use std::cell::Cell;

use bytes::{BufMut, BytesMut};
use http::StatusCode;
use http::header::{self, HeaderMap};

use crate::http::date::{DATE_LEN, coarse_unix_secs, http_date_at};

/// How the response body is delimited on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Delimited by closing the connection (HTTP/1.0 clients and streams).
    Close,
    /// No body and no length fields (1xx, 204, 304).
    None,
}

/// True when `status` never carries a body (RFC 9110 §6.4.1).
pub(crate) fn status_has_no_body(status: StatusCode) -> bool {
    status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
}

/// Writes the status line, default fields, the handler's fields and framing.
///
/// Fields that describe framing or persistence (`Content-Length`,
/// `Transfer-Encoding`, `Connection`) come from the connection, never from
/// the handler, so a handler cannot desynchronise the stream; a handler's
/// `Connection: close` is honoured, though. Returns whether the connection
/// stays open after this response (what the head says).
#[must_use]
pub(crate) fn encode_head(
    status: StatusCode,
    headers: &HeaderMap,
    framing: Framing,
    mut keep_alive: bool,
    http10_client: bool,
    dst: &mut BytesMut,
) -> bool {
    dst.reserve(256);
    // The common status line and the default fields are written as whole
    // lines: a few larger copies instead of many tiny ones.
    if status == StatusCode::OK {
        dst.put_slice(b"HTTP/1.1 200 OK\r\n");
    } else {
        dst.put_slice(b"HTTP/1.1 ");
        dst.put_slice(status.as_str().as_bytes());
        dst.put_u8(b' ');
        dst.put_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        dst.put_slice(b"\r\n");
    }
    // One pass over the handler's fields; our defaults fill in what it left out.
    let mut has_server = false;
    let mut has_date = false;
    for (name, value) in headers {
        if name == header::CONNECTION {
            // Noted in this pass: no lookup in the map per response.
            keep_alive &= !value.as_bytes().eq_ignore_ascii_case(b"close");
            continue;
        }
        if name == header::CONTENT_LENGTH || name == header::TRANSFER_ENCODING {
            continue;
        }
        has_server |= name == header::SERVER;
        has_date |= name == header::DATE;
        dst.put_slice(name.as_str().as_bytes());
        dst.put_slice(b": ");
        dst.put_slice(value.as_bytes());
        dst.put_slice(b"\r\n");
    }
    match (has_server, has_date) {
        (false, false) => dst.put_slice(&server_and_date_lines()),
        (false, true) => dst.put_slice(SERVER_LINE.as_bytes()),
        (true, false) => dst.put_slice(&server_and_date_lines()[SERVER_LINE.len()..]),
        (true, true) => {}
    }
    match framing {
        Framing::Length(n) => {
            let mut line = [0u8; CONTENT_LENGTH_LINE_MAX];
            let mut digits = itoa::Buffer::new();
            let digits = digits.format(n).as_bytes();
            let end = CONTENT_LENGTH.len() + digits.len() + 2;
            line[..CONTENT_LENGTH.len()].copy_from_slice(CONTENT_LENGTH);
            line[CONTENT_LENGTH.len()..end - 2].copy_from_slice(digits);
            line[end - 2..end].copy_from_slice(b"\r\n");
            dst.put_slice(&line[..end]);
        }
        Framing::Chunked => dst.put_slice(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::None => {}
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // A WebSocket upgrade: the connection carries on in the new protocol.
        dst.put_slice(b"Connection: Upgrade\r\n\r\n");
        return keep_alive;
    }
    dst.put_slice(match (keep_alive, http10_client) {
        (false, _) => b"Connection: close\r\n\r\n",
        (true, true) => b"Connection: keep-alive\r\n\r\n",
        (true, false) => b"\r\n",
    });
    keep_alive
}

const CONTENT_LENGTH: &[u8] = b"Content-Length: ";
/// "Content-Length: " + up to 20 digits + CRLF.
const CONTENT_LENGTH_LINE_MAX: usize = 16 + 20 + 2;
/// The default `Server` field, as a whole line.
const SERVER_LINE: &str = concat!("Server: skitai/", env!("CARGO_PKG_VERSION"), "\r\n");
const DATE_PREFIX: &[u8] = b"Date: ";
const SERVER_AND_DATE_LEN: usize = SERVER_LINE.len() + DATE_PREFIX.len() + DATE_LEN + 2;

thread_local! {
    /// The two lines below for the second they were made in.
    static SERVER_AND_DATE: Cell<(u64, [u8; SERVER_AND_DATE_LEN])> =
        const { Cell::new((u64::MAX, [0; SERVER_AND_DATE_LEN])) };
}

/// `Server: skitai/<version>\r\nDate: <now>\r\n`, made once a second per shard.
fn server_and_date_lines() -> [u8; SERVER_AND_DATE_LEN] {
    let secs = coarse_unix_secs();
    SERVER_AND_DATE.with(|cached| {
        let (made_in, lines) = cached.get();
        if made_in == secs {
            return lines;
        }
        let mut lines = [0u8; SERVER_AND_DATE_LEN];
        let date_at = SERVER_LINE.len() + DATE_PREFIX.len();
        lines[..SERVER_LINE.len()].copy_from_slice(SERVER_LINE.as_bytes());
        lines[SERVER_LINE.len()..date_at].copy_from_slice(DATE_PREFIX);
        lines[date_at..date_at + DATE_LEN].copy_from_slice(&http_date_at(secs));
        lines[date_at + DATE_LEN..].copy_from_slice(b"\r\n");
        cached.set((secs, lines));
        lines
    })
}

/// Writes one chunk (size line, data, CRLF); empty data is skipped because a
/// zero-size chunk would end the body.
pub(crate) fn encode_chunk(data: &[u8], dst: &mut BytesMut) {
    if data.is_empty() {
        return;
    }
    dst.reserve(data.len() + 20);
    let mut hex = [0u8; 16];
    let digits = format_hex(data.len(), &mut hex);
    dst.put_slice(digits);
    dst.put_slice(b"\r\n");
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

/// The last chunk and an empty trailer section.
pub(crate) const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

fn format_hex(mut n: usize, out: &mut [u8; 16]) -> &[u8] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut i = out.len();
    loop {
        i -= 1;
        out[i] = DIGITS[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    &out[i..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::HeaderValue;

    fn head(framing: Framing, keep_alive: bool, http10: bool) -> String {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("999"));
        let mut dst = BytesMut::new();
        let _ = encode_head(StatusCode::OK, &h, framing, keep_alive, http10, &mut dst);
        String::from_utf8(dst.to_vec()).unwrap()
    }

    #[test]
    fn a_handlers_connection_close_is_honoured_once() {
        for (value, keeps) in [("close", false), ("Close", false), ("keep-alive", true), ("upgrade", true)] {
            let mut h = HeaderMap::new();
            h.insert(header::CONNECTION, HeaderValue::from_static(value));
            let mut dst = BytesMut::new();
            let kept = encode_head(StatusCode::OK, &h, Framing::Length(0), true, false, &mut dst);
            let s = String::from_utf8(dst.to_vec()).unwrap();
            assert_eq!(kept, keeps, "{value}: {s}");
            assert_eq!(s.to_ascii_lowercase().matches("connection:").count(), usize::from(!keeps), "{value}: {s}");
            assert_eq!(s.contains("Connection: close\r\n"), !keeps, "{value}: {s}");
        }
    }

    #[test]
    fn length_framed_head() {
        let s = head(Framing::Length(13), true, false);
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        assert!(s.contains("\r\nServer: skitai/"), "{s}");
        assert!(s.contains("\r\nDate: ") && s.contains(" GMT\r\n"));
        assert!(s.contains("\r\ncontent-type: text/plain\r\n"));
        assert!(s.contains("\r\nContent-Length: 13\r\n"));
        assert!(!s.contains("999"), "the handler's length is not trusted");
        assert!(!s.contains("Connection"));
        assert!(s.ends_with("\r\n\r\n"));
    }

    #[test]
    fn handler_server_and_date_win() {
        let mut h = HeaderMap::new();
        h.insert(header::SERVER, HeaderValue::from_static("mine"));
        h.insert(header::DATE, HeaderValue::from_static("Thu, 01 Jan 1970 00:00:00 GMT"));
        let mut dst = BytesMut::new();
        let _ = encode_head(StatusCode::OK, &h, Framing::Length(0), true, false, &mut dst);
        let s = String::from_utf8(dst.to_vec()).unwrap();
        assert_eq!(s.matches("server:").count() + s.matches("Server:").count(), 1, "{s}");
        assert_eq!(s.matches("date:").count() + s.matches("Date:").count(), 1, "{s}");
    }

    #[test]
    fn persistence_fields() {
        assert!(
            head(Framing::Chunked, false, false).contains("Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        );
        assert!(head(Framing::Length(1), true, true).contains("Connection: keep-alive\r\n"));
    }

    #[test]
    fn chunks() {
        let mut dst = BytesMut::new();
        encode_chunk(&[b'x'; 26], &mut dst);
        encode_chunk(b"", &mut dst);
        assert!(dst.starts_with(b"1a\r\nxxxx"));
        assert!(dst.ends_with(b"x\r\n"));
        assert_eq!(dst.len(), 4 + 26 + 2);
    }
}
