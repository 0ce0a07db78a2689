//! Request body framing (RFC 9112 §6, §7.1): Content-Length and chunked decoding.
//!
//! The decoder consumes bytes from the connection's read buffer and yields body
//! data as zero-copy `Bytes` slices. Trailer fields are read, bounded and
//! discarded (we forward none of them).

use bytes::{Buf, Bytes, BytesMut};

use crate::error::{Error, ErrorKind, Result};

/// Longest chunk-size line we accept, extensions included.
const MAX_CHUNK_LINE: usize = 4096;
/// Largest trailer section we read before refusing the request.
const MAX_TRAILER_SIZE: usize = 16 * 1024;

/// What one call to [`Decoder::decode`] produced.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Decoded {
    /// Body bytes.
    Data(Bytes),
    /// The buffer holds no complete unit; read more.
    NeedMore,
    /// The body is complete; what remains in the buffer is the next request.
    End,
}

/// Position inside a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// Expecting a chunk-size line.
    Size,
    /// Inside chunk data, this many bytes left.
    Data(u64),
    /// Expecting the CRLF that ends chunk data.
    DataEnd,
    /// Reading trailer lines after the last chunk; bytes of trailer read so far.
    Trailers(usize),
}

/// Decoder state for one request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decoder {
    /// Content-Length: bytes still expected.
    Length(u64),
    /// Chunked: where we are, bytes of data seen so far, and the size limit.
    Chunked { at: ChunkPos, received: u64, limit: u64 },
    /// Finished.
    Done,
}

/// Opaque chunk position (kept public to the crate only through [`Decoder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChunkPos(Chunk);

fn bad(detail: &'static str) -> Error {
    Error::new(ErrorKind::BadRequest, detail)
}

impl Decoder {
    /// A decoder for `length` bytes.
    pub(crate) fn length(length: u64) -> Decoder {
        if length == 0 { Decoder::Done } else { Decoder::Length(length) }
    }

    /// A chunked decoder refusing bodies over `limit` bytes.
    pub(crate) fn chunked(limit: u64) -> Decoder {
        Decoder::Chunked { at: ChunkPos(Chunk::Size), received: 0, limit }
    }

    /// True once the whole body has been consumed.
    pub(crate) fn is_done(&self) -> bool {
        matches!(self, Decoder::Done)
    }

    /// Bytes still expected, when known (Content-Length bodies).
    pub(crate) fn remaining(&self) -> Option<u64> {
        match self {
            Decoder::Length(n) => Some(*n),
            Decoder::Done => Some(0),
            Decoder::Chunked { .. } => None,
        }
    }

    /// Consumes what it can from `buf`.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded> {
        match self {
            Decoder::Done => Ok(Decoded::End),
            Decoder::Length(remaining) => {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = (*remaining).min(buf.len() as u64) as usize;
                *remaining -= take as u64;
                if *remaining == 0 {
                    *self = Decoder::Done;
                }
                Ok(Decoded::Data(buf.split_to(take).freeze()))
            }
            Decoder::Chunked { at, received, limit } => loop {
                match at.0 {
                    Chunk::Size => {
                        let Some(line_len) = find_line(buf, MAX_CHUNK_LINE)? else {
                            return Ok(Decoded::NeedMore);
                        };
                        let size = parse_chunk_size(&buf[..line_len])?;
                        buf.advance(line_len + 2);
                        if size == 0 {
                            at.0 = Chunk::Trailers(0);
                            continue;
                        }
                        *received = received.checked_add(size).ok_or_else(|| bad("chunk size overflow"))?;
                        if *received > *limit {
                            return Err(Error::new(ErrorKind::PayloadTooLarge, "chunked body exceeds max_upload_size"));
                        }
                        at.0 = Chunk::Data(size);
                    }
                    Chunk::Data(left) => {
                        if buf.is_empty() {
                            return Ok(Decoded::NeedMore);
                        }
                        let take = left.min(buf.len() as u64) as usize;
                        let rest = left - take as u64;
                        at.0 = if rest == 0 { Chunk::DataEnd } else { Chunk::Data(rest) };
                        return Ok(Decoded::Data(buf.split_to(take).freeze()));
                    }
                    Chunk::DataEnd => {
                        if buf.len() < 2 {
                            return Ok(Decoded::NeedMore);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err(bad("chunk data not followed by CRLF"));
                        }
                        buf.advance(2);
                        at.0 = Chunk::Size;
                    }
                    Chunk::Trailers(seen) => {
                        // Every line, CRLF included, must fit in what is left of
                        // the section's budget (the empty last line too).
                        let room =
                            MAX_TRAILER_SIZE.checked_sub(seen + 2).ok_or_else(|| bad("trailer section too large"))?;
                        let Some(line_len) = find_line(buf, room)? else {
                            return Ok(Decoded::NeedMore);
                        };
                        if line_len > 0 {
                            check_trailer_field(&buf[..line_len])?;
                        }
                        buf.advance(line_len + 2);
                        if line_len == 0 {
                            *self = Decoder::Done;
                            return Ok(Decoded::End);
                        }
                        at.0 = Chunk::Trailers(seen + line_len + 2);
                    }
                }
            },
        }
    }
}

/// Length of the CRLF-terminated line at the front of `buf` (without the CRLF),
/// `None` if incomplete; errors on a bare LF or a line longer than `max`.
fn find_line(buf: &[u8], max: usize) -> Result<Option<usize>> {
    match memchr::memchr(b'\n', buf) {
        Some(0) => Err(bad("bare LF in chunked body")),
        Some(i) if buf[i - 1] != b'\r' => Err(bad("bare LF in chunked body")),
        Some(i) if i - 1 > max => Err(bad("chunk line too long")),
        Some(i) => Ok(Some(i - 1)),
        None if buf.len() > max + 1 => Err(bad("chunk line too long")),
        None => Ok(None),
    }
}

/// A trailer field line is held to the same rules as a header field
/// (RFC 9112 §5, §7.1.2) although it is discarded: no obs-fold, a token
/// name right before the colon, and a value without CR, NUL or other
/// control characters. A lenient reader here would let a request through
/// that a stricter proxy in front of us reads differently.
fn check_trailer_field(line: &[u8]) -> Result<()> {
    if matches!(line.first(), Some(b' ' | b'\t')) {
        return Err(bad("obs-fold in trailer"));
    }
    let colon = memchr::memchr(b':', line).ok_or_else(|| bad("trailer field without a colon"))?;
    http::HeaderName::from_bytes(&line[..colon]).map_err(|_| bad("invalid trailer field name"))?;
    http::HeaderValue::from_bytes(&line[colon + 1..]).map_err(|_| bad("invalid trailer field value"))?;
    Ok(())
}

/// chunk-size [ chunk-ext ]: 1*HEXDIG, then optional `;ext` (BWS allowed before `;`).
fn parse_chunk_size(line: &[u8]) -> Result<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad("invalid chunk size"));
    }
    let rest = &line[digits..];
    let ext = rest.iter().position(|&b| b != b' ' && b != b'\t').map(|i| &rest[i..]).unwrap_or(&[]);
    if !ext.is_empty() && (ext[0] != b';' || ext.iter().any(|&b| b < 0x20 && b != b'\t' || b == 0x7f)) {
        return Err(bad("invalid chunk extension"));
    }
    let mut size = 0u64;
    for &b in &line[..digits] {
        let v = (b as char).to_digit(16).expect("checked hex digit") as u64;
        size = size.checked_mul(16).and_then(|s| s.checked_add(v)).ok_or_else(|| bad("chunk size overflow"))?;
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` in pieces of `step` bytes and collects the body.
    fn run(input: &[u8], step: usize, limit: u64) -> Result<(Vec<u8>, BytesMut)> {
        let mut dec = Decoder::chunked(limit);
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut fed = 0;
        loop {
            match dec.decode(&mut buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::End => {
                    buf.extend_from_slice(&input[fed..]);
                    return Ok((body, buf));
                }
                Decoded::NeedMore => {
                    if fed >= input.len() {
                        return Err(bad("truncated"));
                    }
                    let end = (fed + step).min(input.len());
                    buf.extend_from_slice(&input[fed..end]);
                    fed = end;
                }
            }
        }
    }

    const BODY: &[u8] = b"5\r\nhello\r\n6;name=val\r\n world\r\n0\r\nX-Trailer: yes\r\n\r\nNEXT";

    #[test]
    fn decodes_at_every_split() {
        for step in 1..BODY.len() {
            let (body, rest) = run(BODY, step, 1 << 20).unwrap();
            assert_eq!(body, b"hello world", "step {step}");
            assert_eq!(&rest[..], b"NEXT", "the decoder stops exactly at the end of the body");
        }
    }

    #[test]
    fn upper_case_hex_and_whitespace_before_extension() {
        let (body, _) = run(b"A \t;x\r\n0123456789\r\n0\r\n\r\n", 3, 100).unwrap();
        assert_eq!(body, b"0123456789");
    }

    #[test]
    fn malformed_chunks_are_400() {
        for input in [
            &b"x\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"-5\r\nhello\r\n",
            b"11111111111111111\r\n",
            b"5 x\r\nhello\r\n",
            b"\r\n",
        ] {
            let err = run(input, input.len(), 1 << 20).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadRequest, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn malformed_trailers_are_400() {
        for trailer in [
            &b"X-A: a\rb"[..],
            b"X-A: a\0b",
            b"X-A: a\x7fb",
            b"X-A: a\x01b",
            b" folded",
            b"X-A: a\r\n\tfolded",
            b"Bad Name: x",
            b"X-A : x",
            b": x",
            b"no colon",
        ] {
            let input = [&b"1\r\na\r\n0\r\n"[..], trailer, b"\r\n\r\n"].concat();
            for step in [1, 7, input.len()] {
                let err = run(&input, step, 1 << 20).unwrap_err();
                assert_eq!(
                    err.kind(),
                    ErrorKind::BadRequest,
                    "{:?} in steps of {step}",
                    String::from_utf8_lossy(trailer)
                );
            }
        }
        // What a field may hold is accepted: obs-text, HTAB, empty values, many fields.
        let fine = b"0\r\nX-A: caf\xc3\xa9\tx\r\nX-Empty:\r\nX-B: 1\r\n\r\nNEXT";
        let (body, rest) = run(fine, 5, 100).unwrap();
        assert!(body.is_empty());
        assert_eq!(&rest[..], b"NEXT");
    }

    /// The trailer section, CRLFs included, is at most `MAX_TRAILER_SIZE`
    /// bytes however its lines are cut; a line that uses up the budget
    /// leaves no room for the next one (this once wrapped the count around).
    #[test]
    fn trailer_section_is_bounded() {
        let section = |lines: &[usize]| {
            let mut input = b"0\r\n".to_vec();
            for &len in lines {
                input.extend_from_slice(b"X:");
                input.extend(std::iter::repeat_n(b'v', len - 2));
                input.extend_from_slice(b"\r\n");
            }
            input.extend_from_slice(b"\r\n");
            input
        };
        // One line filling the budget exactly (line + CRLF + final CRLF).
        let exact = section(&[MAX_TRAILER_SIZE - 4]);
        assert!(run(&exact, 1000, 1 << 20).is_ok());
        let split = section(&[MAX_TRAILER_SIZE / 2 - 2, MAX_TRAILER_SIZE / 2 - 4]);
        assert!(run(&split, 999, 1 << 20).is_ok());
        for over in [
            section(&[MAX_TRAILER_SIZE - 3]),
            section(&[MAX_TRAILER_SIZE, 10]),
            section(&[MAX_TRAILER_SIZE - 2, 10]),
            section(&[MAX_TRAILER_SIZE - 4, 10]),
            section(&[MAX_TRAILER_SIZE / 2, MAX_TRAILER_SIZE / 2]),
        ] {
            let err = run(&over, 1000, 1 << 20).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::BadRequest);
        }
        // A line that never ends is refused once it is past the budget, not buffered on.
        let mut endless = b"0\r\nX: ".to_vec();
        endless.extend(std::iter::repeat_n(b'v', 4 * MAX_TRAILER_SIZE));
        let mut dec = Decoder::chunked(1 << 20);
        let mut buf = BytesMut::new();
        let mut refused = false;
        for piece in endless.chunks(1024) {
            buf.extend_from_slice(piece);
            match dec.decode(&mut buf) {
                Ok(Decoded::NeedMore) => assert!(buf.len() <= MAX_TRAILER_SIZE + 1024, "buffered {}", buf.len()),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::BadRequest);
                    refused = true;
                    break;
                }
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        assert!(refused);
    }

    #[test]
    fn size_limit_is_413() {
        let err = run(b"10\r\n0123456789abcdef\r\n0\r\n\r\n", 64, 8).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::PayloadTooLarge);
    }

    #[test]
    fn length_decoder_stops_at_length() {
        let mut dec = Decoder::length(5);
        let mut buf = BytesMut::from(&b"hel"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), Decoded::Data(Bytes::from_static(b"hel")));
        assert_eq!(dec.remaining(), Some(2));
        assert_eq!(dec.decode(&mut buf).unwrap(), Decoded::NeedMore);
        let mut buf2 = BytesMut::from(&b"loGET"[..]);
        assert_eq!(dec.decode(&mut buf2).unwrap(), Decoded::Data(Bytes::from_static(b"lo")));
        assert!(dec.is_done());
        assert_eq!(&buf2[..], b"GET");
        assert_eq!(dec.decode(&mut buf2).unwrap(), Decoded::End);
    }
}
