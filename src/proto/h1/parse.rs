//! HTTP/1.1 request-head parsing (RFC 9112 §2–§6), strict where ambiguity is an attack.
//!
//! [`parse_head`] takes the connection's read buffer and either finds a whole
//! head (removing it from the buffer), asks for more bytes, or fails with an
//! error whose kind decides the status (400, 414, 431, 501, 417).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Uri, Version};
use smallvec::SmallVec;

use crate::config::Limits;
use crate::error::{Error, ErrorKind, Result};

/// Upper bound of `max_headers`; the parser's header array lives on the stack
/// uninitialised, so this costs nothing until used.
pub(crate) const MAX_HEADERS_CAP: usize = 1000;

/// Header fields whose positions are kept on the stack while a head is split
/// off the buffer; requests with more spill to the heap.
const INLINE_FIELDS: usize = 24;

/// How the request body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes follow.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
}

/// A parsed request head plus what the connection needs to know about it.
#[derive(Debug)]
pub(crate) struct Head {
    /// Method, target, version and fields.
    pub(crate) request: http::Request<()>,
    /// Body framing.
    pub(crate) framing: Framing,
    /// Whether the connection may be reused after this request.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub(crate) expect_continue: bool,
}

fn bad(detail: &'static str) -> Error {
    Error::new(ErrorKind::BadRequest, detail)
}

/// A request that cannot be served, with the client's `Accept` field when
/// the head got far enough to have one (so the error page can match it).
#[derive(Debug)]
pub(crate) struct HeadError {
    pub(crate) error: Error,
    pub(crate) accept: Option<HeaderValue>,
}

#[cfg(test)]
impl HeadError {
    /// The kind of the underlying error.
    pub(crate) fn kind(&self) -> ErrorKind {
        self.error.kind()
    }
}

impl From<Error> for HeadError {
    fn from(error: Error) -> Self {
        HeadError { error, accept: None }
    }
}

/// Parses one request head from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed; on success the head's bytes
/// are split off `buf`, so what remains is the body or the next request.
pub(crate) fn parse_head(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Head>, HeadError> {
    let mut slots: [MaybeUninit<httparse::Header<'_>>; MAX_HEADERS_CAP] =
        [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let max_headers = limits.max_headers.min(MAX_HEADERS_CAP);
    let mut req = httparse::Request::new(&mut []);
    let status = req.parse_with_uninit_headers(buf, &mut slots[..max_headers]);
    let head_len = match status {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => {
            check_partial(buf, limits)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::new(ErrorKind::HeaderTooLarge, "too many header fields").into());
        }
        Err(httparse::Error::Version) if looks_like_h2_preface(buf) => {
            return Err(Error::new(ErrorKind::NotImplemented, "HTTP/2 prior knowledge is not enabled").into());
        }
        Err(_) => return Err(bad("malformed request head").into()),
    };
    if head_len > limits.max_header_size {
        return Err(Error::new(ErrorKind::HeaderTooLarge, "request head too large").into());
    }
    // httparse tolerates a bare LF as a line ending; RFC 9112 §2.2 lets us
    // reject it, and we do because proxies disagree on it (request smuggling).
    if has_bare_lf(&buf[..head_len]) {
        return Err(bad("bare LF in request head").into());
    }
    let target = req.path.ok_or_else(|| bad("missing request target"))?;
    if target.len() > limits.max_uri_size {
        return Err(Error::new(ErrorKind::UriTooLong, "request target too long").into());
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(bad("unsupported HTTP version").into()),
    };
    let method = Method::from_bytes(req.method.unwrap_or_default().as_bytes()).map_err(|_| bad("invalid method"))?;

    // Offsets into the head, so header values can become zero-copy slices of it.
    let base = buf.as_ptr() as usize;
    let target_range = offset_of(base, target.as_bytes());
    // Most requests have a handful of fields: keep their positions on the stack.
    let mut fields: SmallVec<[(HeaderName, (usize, usize)); INLINE_FIELDS]> =
        SmallVec::with_capacity(req.headers.len());
    for h in req.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| bad("invalid header name"))?;
        fields.push((name, offset_of(base, h.value)));
    }

    let head: Bytes = buf.split_to(head_len).freeze();
    let mut headers = HeaderMap::with_capacity(fields.len());
    for (name, (start, end)) in fields {
        let value = HeaderValue::from_maybe_shared(head.slice(start..end)).map_err(|_| bad("invalid header value"))?;
        headers.append(name, value);
    }
    let uri = Uri::from_maybe_shared(head.slice(target_range.0..target_range.1))
        .map_err(|_| bad("invalid request target"))?;

    let checked = body_framing(&headers, version).and_then(|framing| {
        check_host(&headers, version)?;
        let expect_continue = match headers.get(header::EXPECT) {
            None => false,
            Some(v) if v.as_bytes().eq_ignore_ascii_case(b"100-continue") => version == Version::HTTP_11,
            Some(_) => {
                return Err(Error::new(ErrorKind::ExpectationFailed, "unsupported expectation"));
            }
        };
        Ok((framing, expect_continue))
    });
    let (framing, expect_continue) = match checked {
        Ok(ok) => ok,
        // The head parsed, so the error page can honour the client's Accept.
        Err(error) => {
            return Err(HeadError { error, accept: headers.get(header::ACCEPT).cloned() });
        }
    };
    let keep_alive = wants_keep_alive(&headers, version);

    let mut request = http::Request::new(());
    *request.method_mut() = method;
    *request.uri_mut() = uri;
    *request.version_mut() = version;
    *request.headers_mut() = headers;
    Ok(Some(Head { request, framing, keep_alive, expect_continue }))
}

/// Enforces size limits on an incomplete head, so a slow or endless head is
/// refused as soon as it is too long rather than buffered.
fn check_partial(buf: &[u8], limits: &Limits) -> Result<()> {
    let line_end = memchr::memchr(b'\n', buf);
    // "METHOD " + target + " HTTP/1.1\r\n": allow room for the longest method and version.
    if line_end.is_none() && buf.len() > limits.max_uri_size + 32 {
        return Err(Error::new(ErrorKind::UriTooLong, "request target too long"));
    }
    if buf.len() > limits.max_header_size {
        if let Some(end) = line_end {
            if end > limits.max_uri_size + 32 {
                return Err(Error::new(ErrorKind::UriTooLong, "request target too long"));
            }
        }
        return Err(Error::new(ErrorKind::HeaderTooLarge, "request head too large"));
    }
    Ok(())
}

fn looks_like_h2_preface(buf: &[u8]) -> bool {
    buf.starts_with(b"PRI * HTTP/2.0")
}

fn has_bare_lf(head: &[u8]) -> bool {
    memchr::memchr_iter(b'\n', head).any(|i| i == 0 || head[i - 1] != b'\r')
}

fn offset_of(base: usize, part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base;
    (start, start + part.len())
}

/// RFC 9112 §6.1–§6.3: decide the body length, refusing every ambiguous case.
fn body_framing(headers: &HeaderMap, version: Version) -> Result<Framing> {
    let mut te = headers.get_all(header::TRANSFER_ENCODING).iter().peekable();
    let has_te = te.peek().is_some();
    let has_cl = headers.contains_key(header::CONTENT_LENGTH);
    if has_te {
        if has_cl {
            return Err(bad("both Transfer-Encoding and Content-Length"));
        }
        if version == Version::HTTP_10 {
            return Err(bad("Transfer-Encoding in an HTTP/1.0 request"));
        }
        let mut codings = Vec::new();
        for value in te {
            let text = value.to_str().map_err(|_| bad("invalid Transfer-Encoding"))?;
            for coding in text.split(',') {
                let coding = coding.trim();
                if coding.is_empty() {
                    return Err(bad("empty transfer coding"));
                }
                codings.push(coding);
            }
        }
        // has_te and no empty codings: the list is non-empty.
        let earlier = &codings[..codings.len() - 1];
        if earlier.iter().any(|c| c.eq_ignore_ascii_case("chunked")) {
            return Err(bad("chunked applied more than once"));
        }
        return match codings.as_slice() {
            [only] if only.eq_ignore_ascii_case("chunked") => Ok(Framing::Chunked),
            [.., last] if last.eq_ignore_ascii_case("chunked") => {
                Err(Error::new(ErrorKind::NotImplemented, "transfer codings other than chunked"))
            }
            _ => Err(bad("chunked is not the final transfer coding")),
        };
    }
    if !has_cl {
        return Ok(Framing::Empty);
    }
    let mut length: Option<u64> = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for part in value.as_bytes().split(|&b| b == b',') {
            let n = parse_content_length(trim_ows(part)).ok_or_else(|| bad("invalid Content-Length"))?;
            match length {
                Some(prev) if prev != n => return Err(bad("differing Content-Length values")),
                _ => length = Some(n),
            }
        }
    }
    Ok(match length {
        Some(0) | None => Framing::Empty,
        Some(n) => Framing::Length(n),
    })
}

fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// Content-Length = 1*DIGIT; no sign, no spaces inside, at most 19 digits.
fn parse_content_length(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| n.checked_mul(10)?.checked_add(u64::from(d - b'0')))
}

/// RFC 9112 §3.2: an HTTP/1.1 request carries exactly one Host field.
fn check_host(headers: &HeaderMap, version: Version) -> Result<()> {
    let mut hosts = headers.get_all(header::HOST).iter();
    match (hosts.next(), hosts.next()) {
        (Some(_), Some(_)) => Err(bad("more than one Host field")),
        (None, _) if version == Version::HTTP_11 => Err(bad("missing Host field")),
        _ => Ok(()),
    }
}

/// Persistence (RFC 9112 §9.3): 1.1 persists unless `close`; 1.0 only with `keep-alive`.
fn wants_keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut close = false;
    let mut keep_alive = false;
    for value in headers.get_all(header::CONNECTION) {
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = trim_ows(token);
            close |= token.eq_ignore_ascii_case(b"close");
            keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
        }
    }
    if close {
        return false;
    }
    version == Version::HTTP_11 || keep_alive
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits::default()
    }

    fn parse(bytes: &[u8]) -> Result<Option<Head>, HeadError> {
        let mut buf = BytesMut::from(bytes);
        parse_head(&mut buf, &limits())
    }

    fn kind_of(bytes: &[u8]) -> ErrorKind {
        parse(bytes).expect_err("should fail").kind()
    }

    const SIMPLE: &[u8] = b"GET /a/b?x=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n";

    #[test]
    fn parses_a_simple_request() {
        let head = parse(SIMPLE).unwrap().unwrap();
        assert_eq!(head.request.method(), Method::GET);
        assert_eq!(head.request.uri().path(), "/a/b");
        assert_eq!(head.request.uri().query(), Some("x=1"));
        assert_eq!(head.request.headers()["host"], "example.com");
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive);
    }

    #[test]
    fn every_split_position_needs_more_then_completes() {
        for cut in 0..SIMPLE.len() {
            let mut buf = BytesMut::from(&SIMPLE[..cut]);
            assert!(parse_head(&mut buf, &limits()).unwrap().is_none(), "cut at {cut}");
            buf.extend_from_slice(&SIMPLE[cut..]);
            let head = parse_head(&mut buf, &limits()).unwrap().expect("complete");
            assert_eq!(head.request.uri().path(), "/a/b");
            assert!(buf.is_empty());
        }
    }

    #[test]
    fn pipelined_requests_come_out_in_order() {
        let mut buf = BytesMut::new();
        for i in 0..16 {
            buf.extend_from_slice(format!("GET /{i} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        }
        for i in 0..16 {
            let head = parse_head(&mut buf, &limits()).unwrap().unwrap();
            assert_eq!(head.request.uri().path(), format!("/{i}"));
        }
        assert!(buf.is_empty());
        assert!(parse_head(&mut buf, &limits()).unwrap().is_none());
    }

    #[test]
    fn body_remains_in_buffer() {
        let mut buf = BytesMut::from(&b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET"[..]);
        let head = parse_head(&mut buf, &limits()).unwrap().unwrap();
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(&buf[..], b"helloGET");
    }

    #[test]
    fn framing_rules() {
        let chunked = parse(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
        let dup_same = parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n");
        assert_eq!(dup_same.unwrap().unwrap().framing, Framing::Length(3));
        assert_eq!(
            parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n").unwrap().unwrap().framing,
            Framing::Empty
        );
    }

    #[test]
    fn ambiguous_framing_is_400() {
        for req in [
            &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3, 4\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +3\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3x\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: identity\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert_eq!(kind_of(req), ErrorKind::BadRequest, "{}", String::from_utf8_lossy(req));
        }
        assert_eq!(
            kind_of(b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            ErrorKind::NotImplemented
        );
    }

    #[test]
    fn malformed_heads_are_400() {
        for req in [
            &b"GET / HTTP/1.1\nHost: h\n\n"[..],
            b"GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX: a\rb\r\n\r\n",
            b"GET / HTTP/1.1\r\nHo st: h\r\n\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            b"GET / HTTP/1.2\r\nHost: h\r\n\r\n",
            b"G@T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\r\nX : y\r\n\r\n",
        ] {
            assert_eq!(kind_of(req), ErrorKind::BadRequest, "{:?}", String::from_utf8_lossy(req));
        }
    }

    #[test]
    fn http10_has_no_host_requirement_and_no_keep_alive_by_default() {
        let head = parse(b"GET / HTTP/1.0\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
        let head = parse(b"GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").unwrap().unwrap();
        assert!(head.keep_alive);
        let head = parse(b"GET / HTTP/1.1\r\nHost: h\r\nConnection: upgrade, close\r\n\r\n").unwrap().unwrap();
        assert!(!head.keep_alive);
    }

    #[test]
    fn limits_map_to_431_and_414() {
        let small = Limits { max_header_size: 256, max_uri_size: 64, max_headers: 4, ..Limits::default() };
        let long_uri = format!("GET /{} HTTP/1.1\r\nHost: h\r\n\r\n", "a".repeat(100));
        let mut buf = BytesMut::from(long_uri.as_bytes());
        assert_eq!(parse_head(&mut buf, &small).unwrap_err().kind(), ErrorKind::UriTooLong);
        // An endless request line is refused before the head completes.
        let mut buf = BytesMut::from(format!("GET /{}", "a".repeat(200)).as_bytes());
        assert_eq!(parse_head(&mut buf, &small).unwrap_err().kind(), ErrorKind::UriTooLong);
        let many = "GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\nC: 3\r\nD: 4\r\n\r\n";
        let mut buf = BytesMut::from(many.as_bytes());
        assert_eq!(parse_head(&mut buf, &small).unwrap_err().kind(), ErrorKind::HeaderTooLarge);
        let big = format!("GET / HTTP/1.1\r\nHost: h\r\nX: {}\r\n", "v".repeat(300));
        let mut buf = BytesMut::from(big.as_bytes());
        assert_eq!(parse_head(&mut buf, &small).unwrap_err().kind(), ErrorKind::HeaderTooLarge);
    }

    #[test]
    fn expectations() {
        let head =
            parse(b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nExpect: 100-Continue\r\n\r\n").unwrap().unwrap();
        assert!(head.expect_continue);
        assert_eq!(kind_of(b"POST / HTTP/1.1\r\nHost: h\r\nExpect: teapot\r\n\r\n"), ErrorKind::ExpectationFailed);
    }

    #[test]
    fn truncated_input_never_panics() {
        let req = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nX-A: b\r\n\r\nabc";
        for cut in 0..req.len() {
            let _ = parse(&req[..cut]);
        }
    }
}
