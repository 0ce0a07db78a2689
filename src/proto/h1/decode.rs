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
                        let Some(line_len) = find_line(buf, MAX_TRAILER_SIZE - seen)? else {
                            return Ok(Decoded::NeedMore);
                        };
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
