//! HTTP/1.1 response heads and chunked framing, written into a batch buffer.

use std::cell::RefCell;

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
    let mut out = HeadWriter::new(dst, 256);
    // The common status line and the default fields are written as whole
    // lines: a few larger copies instead of many tiny ones.
    if status == StatusCode::OK {
        out.put(b"HTTP/1.1 200 OK\r\n");
    } else {
        out.put(b"HTTP/1.1 ");
        out.put(status.as_str().as_bytes());
        out.put(b" ");
        out.put(status.canonical_reason().unwrap_or("Unknown").as_bytes());
        out.put(b"\r\n");
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
        out.put(name.as_str().as_bytes());
        out.put(b": ");
        out.put(value.as_bytes());
        out.put(b"\r\n");
    }
    match (has_server, has_date) {
        (false, false) => with_server_and_date_lines(|lines| out.put(lines)),
        (false, true) => out.put(SERVER_LINE.as_bytes()),
        (true, false) => with_server_and_date_lines(|lines| out.put(&lines[SERVER_LINE.len()..])),
        (true, true) => {}
    }
    match framing {
        Framing::Length(n) => {
            let mut digits = itoa::Buffer::new();
            out.put(CONTENT_LENGTH);
            out.put(digits.format(n).as_bytes());
            out.put(b"\r\n");
        }
        Framing::Chunked => out.put(b"Transfer-Encoding: chunked\r\n"),
        Framing::Close | Framing::None => {}
    }
    if status == StatusCode::SWITCHING_PROTOCOLS {
        // A WebSocket upgrade: the connection carries on in the new protocol.
        out.put(b"Connection: Upgrade\r\n\r\n");
        return keep_alive;
    }
    out.put(match (keep_alive, http10_client) {
        (false, _) => b"Connection: close\r\n\r\n",
        (true, true) => b"Connection: keep-alive\r\n\r\n",
        (true, false) => b"\r\n",
    });
    keep_alive
}

/// Appends the pieces of a response head to a buffer: one capacity check
/// per piece and one length update at the end, where `BytesMut::put_slice`
/// pays for a reserve, a bounds check and a length update on every piece
/// (a head is a dozen pieces).
struct HeadWriter<'a> {
    dst: &'a mut BytesMut,
    /// Bytes written into the spare capacity and not yet counted in `dst.len()`.
    written: usize,
    /// `dst`'s spare capacity when it was last taken.
    spare: usize,
}

impl<'a> HeadWriter<'a> {
    /// A writer appending to `dst`, with at least `expected` bytes of room ready.
    #[inline(always)]
    fn new(dst: &'a mut BytesMut, expected: usize) -> Self {
        dst.reserve(expected);
        let spare = dst.capacity() - dst.len();
        HeadWriter { dst, written: 0, spare }
    }

    /// Appends `bytes`.
    #[inline(always)]
    fn put(&mut self, bytes: &[u8]) {
        if self.spare - self.written < bytes.len() {
            self.grow(bytes.len());
        }
        // SAFETY: the pointer comes from `dst`'s spare capacity (the
        // `spare` bytes past its length, which `spare_capacity_mut` lends
        // for writing), and `written + bytes.len() <= spare` was checked (or
        // made true by `grow`) just above, so the copy stays inside that
        // slice. The source is a shared slice that cannot overlap the spare
        // capacity of a buffer we hold mutably.
        unsafe {
            let at = self.dst.spare_capacity_mut().as_mut_ptr().cast::<u8>().add(self.written);
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at, bytes.len());
        }
        self.written += bytes.len();
    }

    /// Counts what is written so far and makes room for `more` bytes (a
    /// head larger than expected: long header values).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, more: usize) {
        self.commit();
        self.dst.reserve(more + 256);
        self.spare = self.dst.capacity() - self.dst.len();
    }

    /// Counts the written bytes in the buffer's length.
    #[inline(always)]
    fn commit(&mut self) {
        // SAFETY: the `written` bytes past the length were initialised by
        // `put` and lie within the capacity.
        unsafe { self.dst.set_len(self.dst.len() + self.written) };
        self.spare -= self.written;
        self.written = 0;
    }
}

impl Drop for HeadWriter<'_> {
    fn drop(&mut self) {
        self.commit();
    }
}

const CONTENT_LENGTH: &[u8] = b"Content-Length: ";
/// The default `Server` field, as a whole line.
const SERVER_LINE: &str = concat!("Server: skitai/", env!("CARGO_PKG_VERSION"), "\r\n");
const DATE_PREFIX: &[u8] = b"Date: ";
const SERVER_AND_DATE_LEN: usize = SERVER_LINE.len() + DATE_PREFIX.len() + DATE_LEN + 2;

thread_local! {
    /// The two lines below for the second they were made in.
    static SERVER_AND_DATE: RefCell<(u64, [u8; SERVER_AND_DATE_LEN])> =
        const { RefCell::new((u64::MAX, [0; SERVER_AND_DATE_LEN])) };
}

/// Calls `write` with `Server: skitai/<version>\r\nDate: <now>\r\n`, made
/// once a second per shard (and lent, not copied, the rest of the time).
#[inline(always)]
fn with_server_and_date_lines(write: impl FnOnce(&[u8])) {
    let secs = coarse_unix_secs();
    SERVER_AND_DATE.with(|cached| {
        let mut cached = cached.borrow_mut();
        if cached.0 != secs {
            remake_server_and_date_lines(secs, &mut cached.1);
            cached.0 = secs;
        }
        write(&cached.1);
    })
}

/// Writes the `Server` and `Date` lines for the second `secs` into `lines`.
#[cold]
fn remake_server_and_date_lines(secs: u64, lines: &mut [u8; SERVER_AND_DATE_LEN]) {
    let date_at = SERVER_LINE.len() + DATE_PREFIX.len();
    lines[..SERVER_LINE.len()].copy_from_slice(SERVER_LINE.as_bytes());
    lines[SERVER_LINE.len()..date_at].copy_from_slice(DATE_PREFIX);
    lines[date_at..date_at + DATE_LEN].copy_from_slice(&http_date_at(secs));
    lines[date_at + DATE_LEN..].copy_from_slice(b"\r\n");
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
    fn a_head_larger_than_the_first_reservation_is_whole() {
        // Fields of 3 KiB in all: the writer grows past its first 256 bytes
        // several times, after bytes already in the batch buffer.
        let mut h = HeaderMap::new();
        for (i, name) in ["x-one", "x-two", "x-three"].into_iter().enumerate() {
            let value = char::from(b'a' + i as u8).to_string().repeat(1000);
            h.insert(name, HeaderValue::from_str(&value).unwrap());
        }
        let mut dst = BytesMut::from(&b"earlier response"[..]);
        let _ = encode_head(StatusCode::NOT_FOUND, &h, Framing::Length(7), true, false, &mut dst);
        let s = String::from_utf8(dst.to_vec()).unwrap();
        let head = s.strip_prefix("earlier response").expect("what was in the buffer stays first");
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"), "{head}");
        for (name, c) in [("x-one", 'a'), ("x-two", 'b'), ("x-three", 'c')] {
            assert!(head.contains(&format!("\r\n{name}: {}\r\n", c.to_string().repeat(1000))), "{name}");
        }
        assert!(head.ends_with("Content-Length: 7\r\n\r\n"), "{head}");
        assert_eq!(head.matches("\r\n").count(), 1 + 3 + 2 + 1 + 1, "status, fields, Server and Date, length, end");
    }

    #[test]
    fn the_writer_grows_inside_the_default_lines_and_after_a_split() {
        // A buffer whose front was split off and sent: growing it may
        // reclaim that space (moving the unsent bytes). 424 bytes of room
        // after the 10 unsent ones, and one field sized so that the Server
        // and Date lines are the piece that no longer fits.
        let mut dst = BytesMut::with_capacity(1024);
        dst.extend_from_slice(&[b'x'; 600]);
        drop(dst.split_to(590));
        let room = dst.capacity() - dst.len();
        let mut h = HeaderMap::new();
        h.insert("x-fill", HeaderValue::from_str(&"f".repeat(380)).unwrap());
        assert!("HTTP/1.1 200 OK\r\nx-fill: \r\n".len() + 380 <= room);
        let _ = encode_head(StatusCode::OK, &h, Framing::Length(0), true, false, &mut dst);
        assert!(dst.capacity() - 10 > room, "the writer grew the buffer");
        let s = String::from_utf8(dst.to_vec()).unwrap();
        let head = s.strip_prefix(&"x".repeat(10)).expect("the unsent bytes stay first");
        assert!(head.starts_with("HTTP/1.1 200 OK\r\nx-fill: "), "{head}");
        assert!(head.contains(&format!("{}\r\nServer: skitai/", "f".repeat(380))), "{head}");
        assert!(head.contains("\r\nDate: ") && head.ends_with(" GMT\r\nContent-Length: 0\r\n\r\n"), "{head}");
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
