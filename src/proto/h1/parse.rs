//! HTTP/1.1 request-head parsing (RFC 9112 §2–§6), strict where ambiguity is an attack.
//!
//! [`parse_head`] takes the connection's read buffer and either finds a whole
//! head (removing it from the buffer), asks for more bytes, or fails with an
//! error whose kind decides the status (400, 414, 431, 501, 417).

use std::mem::MaybeUninit;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Uri, Version};

use crate::config::Limits;
use crate::error::{Error, ErrorKind, Result};
use crate::http::Body;

/// Upper bound of `max_headers`; the parser's field arrays live on the stack
/// uninitialised (no cost until used), sized to keep the frame small.
pub(crate) const MAX_HEADERS_CAP: usize = crate::config::MAX_HEADERS_LIMIT;

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
    /// Method, target, version and fields; the body is empty until the
    /// connection attaches the incoming one.
    pub(crate) request: http::Request<Body>,
    /// Body framing.
    pub(crate) framing: Framing,
    /// Whether the connection may be reused after this request.
    pub(crate) keep_alive: bool,
    /// `Expect: 100-continue` was sent.
    pub(crate) expect_continue: bool,
    /// The `Accept` field, kept for error pages.
    pub(crate) accept: Option<HeaderValue>,
    /// The `X-Gtxn-Id` and `X-Ltxn-Id` fields (transaction ids), found in
    /// the same pass, so no lookup is needed for them.
    pub(crate) txn: TxnFields,
    /// An `Upgrade` field is present (h2c or WebSocket may be asked).
    pub(crate) upgrade: bool,
}

/// The `X-Gtxn-Id` and `X-Ltxn-Id` fields of a request, boxed: most
/// requests have neither, and every byte of [`Head`] is moved a few times.
pub(crate) type TxnFields = Option<Box<(Option<HeaderValue>, Option<HeaderValue>)>>;

/// The two transaction id fields of `txn`, as the exchange takes them.
pub(crate) fn txn_refs(txn: &TxnFields) -> (Option<&HeaderValue>, Option<&HeaderValue>) {
    txn.as_deref().map_or((None, None), |(g, l)| (g.as_ref(), l.as_ref()))
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
        // The preface's first line cut short ("PRI * HTTP/2"): the same
        // answer as for the whole line, once it is here.
        Err(httparse::Error::Version) if H2_PREFACE_LINE.starts_with(buf) => return Ok(None),
        Err(_) => return Err(bad("malformed request head").into()),
    };
    let target = req.path.ok_or_else(|| bad("missing request target"))?;
    let method = req.method.unwrap_or_default();
    check_sizes(method.len(), Some(target.len()), head_len, limits)?;
    // httparse tolerates a bare LF as a line ending; RFC 9112 §2.2 lets us
    // reject it, and we do because proxies disagree on it (request smuggling).
    if has_bare_lf(&buf[..head_len]) {
        return Err(bad("bare LF in request head").into());
    }
    let version = match req.version {
        Some(0) => Version::HTTP_10,
        Some(1) => Version::HTTP_11,
        _ => return Err(bad("unsupported HTTP version").into()),
    };
    let method = match method.as_bytes() {
        // The method of most requests, without the general parser's work.
        b"GET" => Method::GET,
        other => Method::from_bytes(other).map_err(|_| bad("invalid method"))?,
    };

    // One pass over the fields: remember where each one is (so values become
    // zero-copy slices of the head) and note the few that decide framing and
    // persistence, instead of looking them up in the map afterwards.
    let base = buf.as_ptr() as usize;
    let target_range = offset_of(base, target.as_bytes());
    let target_is_root = target == "/";
    let count = req.headers.len();
    let mut positions: [MaybeUninit<FieldPos>; MAX_HEADERS_CAP] = [const { MaybeUninit::uninit() }; MAX_HEADERS_CAP];
    let mut facts = Facts::default();
    for (i, h) in req.headers.iter().enumerate() {
        let name = h.name.as_bytes();
        let known = facts.note(i, name, h.value);
        positions[i].write(FieldPos { name: offset_of(base, name), value: offset_of(base, h.value), known });
    }

    let head: Bytes = buf.split_to(head_len).freeze();
    // The fields go straight into the request's own map: no second map to
    // build, move and drop.
    let mut request = http::Request::new(Body::empty());
    let headers = request.headers_mut();
    headers.reserve(count);
    let mut accept = None;
    let mut txn: TxnFields = None;
    for (i, slot) in positions[..count].iter().enumerate() {
        // SAFETY: the loop above wrote positions[0..count], one per parsed field.
        let pos = unsafe { slot.assume_init_ref() };
        let name = match pos.known {
            // Recognised already (`Facts::note`): no second look at the name.
            Some(known) => known.name(),
            None => HeaderName::from_bytes(&head[pos.name.0..pos.name.1]).map_err(|_| bad("invalid header name"))?,
        };
        // SAFETY: httparse accepted every byte of this value (its value map
        // is HTAB, SP..=0x7E and 0x80..=0xFF: no control character and no
        // DEL), exactly the bytes a `HeaderValue` may hold; checking them a
        // second time cost about 130 instructions per request.
        let value = unsafe { HeaderValue::from_maybe_shared_unchecked(head.slice(pos.value.0..pos.value.1)) };
        if facts.accept == Some(i) {
            accept = Some(value.clone());
        } else if facts.gtxn == Some(i) {
            txn.get_or_insert_default().0 = Some(value.clone());
        } else if facts.ltxn == Some(i) {
            txn.get_or_insert_default().1 = Some(value.clone());
        }
        headers.append(name, value);
    }
    // A new request's target is already "/": a request for "/" (front pages,
    // health checks) keeps it, without a shared slice of the head that the
    // parser would drop again (it answers "/" with a static `Uri`).
    if !target_is_root {
        *request.uri_mut() = Uri::from_maybe_shared(head.slice(target_range.0..target_range.1))
            .map_err(|e| HeadError { error: bad("invalid request target").with_source(e), accept: accept.clone() })?;
    }
    let (framing, expect_continue) =
        facts.decide(version).map_err(|error| HeadError { error, accept: accept.clone() })?;
    let keep_alive = !facts.close && (version == Version::HTTP_11 || facts.keep_alive);

    *request.method_mut() = method;
    *request.version_mut() = version;
    Ok(Some(Head { request, framing, keep_alive, expect_continue, accept, txn, upgrade: facts.upgrade }))
}

/// Where a field's name and value sit in the head.
struct FieldPos {
    name: (usize, usize),
    value: (usize, usize),
    /// The name, when [`Facts::note`] recognised it.
    known: Option<Known>,
}

/// A field name [`Facts::note`] recognised (one byte in [`FieldPos`], which
/// the parser keeps an array of).
#[derive(Clone, Copy)]
enum Known {
    Host,
    Expect,
    Accept,
    Upgrade,
    Connection,
    ContentLength,
    TransferEncoding,
}

impl Known {
    /// The name as the map's constant.
    fn name(self) -> HeaderName {
        match self {
            Known::Host => header::HOST,
            Known::Expect => header::EXPECT,
            Known::Accept => header::ACCEPT,
            Known::Upgrade => header::UPGRADE,
            Known::Connection => header::CONNECTION,
            Known::ContentLength => header::CONTENT_LENGTH,
            Known::TransferEncoding => header::TRANSFER_ENCODING,
        }
    }
}

/// What the fields say about framing and persistence, gathered in one pass.
#[derive(Default)]
struct Facts {
    hosts: u8,
    content_length: Option<u64>,
    has_content_length: bool,
    /// The first problem found in a Content-Length field.
    content_length_error: Option<&'static str>,
    transfer_encoding: TransferCoding,
    chunked_seen: bool,
    close: bool,
    keep_alive: bool,
    expect: Option<bool>,
    /// Index of the `Accept` field, for error pages.
    accept: Option<usize>,
    /// Indexes of the first `X-Gtxn-Id` and `X-Ltxn-Id` fields.
    gtxn: Option<usize>,
    ltxn: Option<usize>,
    /// An `Upgrade` field is present.
    upgrade: bool,
}

/// The transfer codings seen so far.
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum TransferCoding {
    #[default]
    Absent,
    /// The last coding is `chunked`, applied once.
    Chunked,
    /// `chunked` is not (yet) last; another coding came after it or none was chunked.
    NotFinalChunked,
    /// `chunked` appeared more than once.
    ChunkedTwice,
    /// Final `chunked` after codings we do not implement (`gzip, chunked`).
    Unsupported,
    /// An empty list element.
    Empty,
}

impl Facts {
    /// Records what field `index` says; errors are kept for [`Facts::decide`],
    /// which reports them once the `Accept` field is known too. Returns the
    /// field's name when it is one of those looked for.
    fn note(&mut self, index: usize, name: &[u8], value: &[u8]) -> Option<Known> {
        match name.len() {
            4 if name.eq_ignore_ascii_case(b"host") => {
                self.hosts = self.hosts.saturating_add(1);
                return Some(Known::Host);
            }
            6 if name.eq_ignore_ascii_case(b"expect") => {
                self.expect = Some(trim_ows(value).eq_ignore_ascii_case(b"100-continue"));
                return Some(Known::Expect);
            }
            6 if name.eq_ignore_ascii_case(b"accept") => {
                self.accept = Some(index);
                return Some(Known::Accept);
            }
            7 if name.eq_ignore_ascii_case(b"upgrade") => {
                self.upgrade = true;
                return Some(Known::Upgrade);
            }
            9 if self.gtxn.is_none() && name.eq_ignore_ascii_case(b"x-gtxn-id") => self.gtxn = Some(index),
            9 if self.ltxn.is_none() && name.eq_ignore_ascii_case(b"x-ltxn-id") => self.ltxn = Some(index),
            10 if name.eq_ignore_ascii_case(b"connection") => {
                for token in value.split(|&b| b == b',') {
                    let token = trim_ows(token);
                    self.close |= token.eq_ignore_ascii_case(b"close");
                    self.keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
                }
                return Some(Known::Connection);
            }
            14 if name.eq_ignore_ascii_case(b"content-length") => {
                self.has_content_length = true;
                for part in value.split(|&b| b == b',') {
                    let problem = match (parse_content_length(trim_ows(part)), self.content_length) {
                        (None, _) => Some("invalid Content-Length"),
                        (Some(n), Some(prev)) if prev != n => Some("differing Content-Length values"),
                        (Some(n), _) => {
                            self.content_length = Some(n);
                            None
                        }
                    };
                    if self.content_length_error.is_none() {
                        self.content_length_error = problem;
                    }
                }
                return Some(Known::ContentLength);
            }
            17 if name.eq_ignore_ascii_case(b"transfer-encoding") => {
                for coding in value.split(|&b| b == b',') {
                    let coding = trim_ows(coding);
                    let chunked = coding.eq_ignore_ascii_case(b"chunked");
                    use TransferCoding::*;
                    let twice = chunked && self.chunked_seen;
                    self.chunked_seen |= chunked;
                    self.transfer_encoding = match (self.transfer_encoding, chunked) {
                        (Empty | ChunkedTwice, _) => self.transfer_encoding,
                        _ if coding.is_empty() => Empty,
                        (Chunked | Unsupported, true) => ChunkedTwice,
                        (NotFinalChunked, true) if twice => ChunkedTwice,
                        (Absent, true) => Chunked,
                        (NotFinalChunked, true) => Unsupported,
                        (_, false) => NotFinalChunked,
                    };
                }
                return Some(Known::TransferEncoding);
            }
            _ => {}
        }
        None
    }

    /// RFC 9112 §6.1–§6.3 and §3.2: the body framing, refusing every ambiguous case,
    /// and whether the client waits for `100 Continue`.
    fn decide(&self, version: Version) -> Result<(Framing, bool)> {
        if let Some(problem) = self.content_length_error {
            return Err(bad(problem));
        }
        if self.hosts > 1 {
            return Err(bad("more than one Host field"));
        }
        if self.hosts == 0 && version == Version::HTTP_11 {
            return Err(bad("missing Host field"));
        }
        let framing = match self.transfer_encoding {
            TransferCoding::Absent => match self.content_length {
                Some(0) | None => Framing::Empty,
                Some(n) => Framing::Length(n),
            },
            _ if self.has_content_length => return Err(bad("both Transfer-Encoding and Content-Length")),
            _ if version == Version::HTTP_10 => return Err(bad("Transfer-Encoding in an HTTP/1.0 request")),
            TransferCoding::Chunked => Framing::Chunked,
            TransferCoding::Unsupported => {
                return Err(Error::new(ErrorKind::NotImplemented, "transfer codings other than chunked"));
            }
            TransferCoding::ChunkedTwice => return Err(bad("chunked applied more than once")),
            TransferCoding::NotFinalChunked => return Err(bad("chunked is not the final transfer coding")),
            TransferCoding::Empty => return Err(bad("empty transfer coding")),
        };
        let expect_continue = match self.expect {
            None => false,
            Some(true) => version == Version::HTTP_11,
            Some(false) => return Err(Error::new(ErrorKind::ExpectationFailed, "unsupported expectation")),
        };
        Ok((framing, expect_continue))
    }
}

/// Longest method read before answering 501: longer than any registered
/// method (`UPDATEREDIRECTREF` has 17 bytes) with room to spare.
const MAX_METHOD_LEN: usize = 32;

/// The size limits, in one order for a complete head and for one still
/// arriving, so that the answer does not depend on how the bytes came in:
/// a method longer than any we could implement (501), a target over
/// `max_uri_size` (414), a head over `max_header_size` (431). `target` is
/// `None` while the method has not ended.
fn check_sizes(method: usize, target: Option<usize>, head: usize, limits: &Limits) -> Result<()> {
    if method > MAX_METHOD_LEN {
        return Err(Error::new(ErrorKind::NotImplemented, "method too long"));
    }
    if target.is_some_and(|t| t > limits.max_uri_size) {
        return Err(Error::new(ErrorKind::UriTooLong, "request target too long"));
    }
    if head > limits.max_header_size {
        return Err(Error::new(ErrorKind::HeaderTooLarge, "request head too large"));
    }
    Ok(())
}

/// Enforces the size limits on an incomplete head, so that a slow or
/// endless head is refused as soon as it is too long rather than buffered.
/// The method and target are found as httparse finds them (after any empty
/// lines, each ended by a space; what has arrived of them so far counts).
fn check_partial(buf: &[u8], limits: &Limits) -> Result<()> {
    let start = buf.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(buf.len());
    let line = &buf[start..];
    let line = &line[..memchr::memchr2(b'\r', b'\n', line).unwrap_or(line.len())];
    let (method, target) = match memchr::memchr(b' ', line) {
        None => (line.len(), None),
        Some(space) => {
            let rest = &line[space + 1..];
            (space, Some(memchr::memchr(b' ', rest).unwrap_or(rest.len())))
        }
    };
    check_sizes(method, target, buf.len(), limits)
}

/// The first line of the HTTP/2 connection preface (RFC 9113 §3.4).
const H2_PREFACE_LINE: &[u8] = b"PRI * HTTP/2.0";

fn looks_like_h2_preface(buf: &[u8]) -> bool {
    buf.starts_with(H2_PREFACE_LINE)
}

/// True when a line of `head` (a head httparse accepted) ends in a bare LF.
///
/// httparse takes a CR only as the first half of a CRLF (a CR anywhere else
/// fails the parse: see `lone_cr_is_refused`), so every CR here has its LF,
/// and a bare LF is an LF more than there are CRs. Counting both in one
/// branch-free pass, in blocks small enough for byte counters, vectorises:
/// about 4 ns for a short head, against 16 for a search per line.
fn has_bare_lf(head: &[u8]) -> bool {
    let (mut lf, mut cr) = (0usize, 0usize);
    for block in head.chunks(128) {
        let (mut block_lf, mut block_cr) = (0u8, 0u8);
        for &b in block {
            block_lf += u8::from(b == b'\n');
            block_cr += u8::from(b == b'\r');
        }
        lf += usize::from(block_lf);
        cr += usize::from(block_cr);
    }
    lf != cr
}

fn offset_of(base: usize, part: &[u8]) -> (usize, usize) {
    let start = part.as_ptr() as usize - base;
    (start, start + part.len())
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
    fn targets_of_root_and_near_it() {
        // "/" keeps the request's own default target; anything else is parsed.
        for (target, path, query) in [
            ("/", "/", None),
            ("/?", "/", Some("")),
            ("/?a=1", "/", Some("a=1")),
            ("//", "//", None),
            ("/a", "/a", None),
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            let head = parse(raw.as_bytes()).unwrap().unwrap();
            assert_eq!(head.request.uri().path(), path, "{target}");
            assert_eq!(head.request.uri().query(), query, "{target}");
            assert_eq!(head.request.uri().to_string(), target, "{target}");
        }
        // An absolute-form target is parsed as one (no shortcut).
        let head = parse(b"GET http://h/ HTTP/1.1\r\nHost: h\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.request.uri().host(), Some("h"));
        assert_eq!(head.request.uri().path(), "/");
    }

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
    fn names_are_lower_case_whether_recognised_or_not() {
        let head = parse(b"GET / HTTP/1.1\r\nHOST: h\r\nConnection: Keep-Alive\r\nACCEPT: a\r\nX-Thing: t\r\n\r\n")
            .unwrap()
            .unwrap();
        let names: Vec<&str> = head.request.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["host", "connection", "accept", "x-thing"]);
        assert_eq!(head.request.headers()[http::header::HOST], "h");
        assert_eq!(head.accept.as_ref().map(|v| v.as_bytes()), Some(&b"a"[..]));
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

    /// What a connection makes of `buf` so far: every complete request
    /// (target and body) goes to `out`; `open` holds the one whose body is
    /// still arriving. Uses the real decoder for the bodies.
    fn drive(
        buf: &mut BytesMut,
        open: &mut Option<(String, crate::proto::h1::decode::Decoder, Vec<u8>)>,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> std::result::Result<(), ErrorKind> {
        use crate::proto::h1::decode::{Decoded, Decoder};
        loop {
            match open {
                Some((_, decoder, body)) => match decoder.decode(buf).map_err(|e| e.kind())? {
                    Decoded::Data(bytes) => body.extend_from_slice(&bytes),
                    Decoded::End => {
                        let (target, _, body) = open.take().expect("open request");
                        out.push((target, body));
                    }
                    Decoded::NeedMore => return Ok(()),
                },
                None => match parse_head(buf, &limits()).map_err(|e| e.kind())? {
                    None => return Ok(()),
                    Some(head) => {
                        let decoder = match head.framing {
                            Framing::Empty => Decoder::length(0),
                            Framing::Length(n) => Decoder::length(n),
                            Framing::Chunked => Decoder::chunked(1 << 20),
                        };
                        *open = Some((head.request.uri().to_string(), decoder, Vec::new()));
                    }
                },
            }
        }
    }

    /// A pipelined batch of a chunked upload (with a trailer), a
    /// Content-Length upload and a GET, cut in two at every byte: the
    /// same three requests with the same bodies come out every time.
    #[test]
    fn pipelined_batch_with_bodies_at_every_split() {
        let batch: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n\
            3\r\nabc\r\n2;x=y\r\nde\r\n0\r\nX-T: 1\r\n\r\n\
            PUT /b HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\n\r\nwxyz\
            GET /c?q HTTP/1.1\r\nHost: h\r\n\r\n";
        let expected = vec![
            ("/a".to_owned(), b"abcde".to_vec()),
            ("/b".to_owned(), b"wxyz".to_vec()),
            ("/c?q".to_owned(), vec![]),
        ];
        for cut in 0..=batch.len() {
            let (mut buf, mut open, mut out) = (BytesMut::from(&batch[..cut]), None, Vec::new());
            drive(&mut buf, &mut open, &mut out).unwrap_or_else(|e| panic!("cut at {cut}: {e:?}"));
            buf.extend_from_slice(&batch[cut..]);
            drive(&mut buf, &mut open, &mut out).unwrap_or_else(|e| panic!("cut at {cut}: {e:?}"));
            assert_eq!(out, expected, "cut at {cut}");
            assert!(open.is_none() && buf.is_empty(), "cut at {cut}");
        }
    }

    /// A malformed request gives the same error however it arrives: cut in
    /// two at every byte, the first part is refused with that error or needs
    /// more, and the whole then is refused with it.
    #[test]
    fn malformed_requests_fail_alike_at_every_split() {
        for (req, want) in [
            (
                &b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc"[..],
                ErrorKind::BadRequest,
            ),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
                ErrorKind::BadRequest,
            ),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", ErrorKind::NotImplemented),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\r\n b\r\n\r\n", ErrorKind::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: h\nX: a\r\n\r\n", ErrorKind::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: h\r\nX: a\0b\r\n\r\n", ErrorKind::BadRequest),
            (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", ErrorKind::BadRequest),
            (b"GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n", ErrorKind::BadRequest),
            (b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", ErrorKind::BadRequest),
            (
                b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX A: 1\r\n\r\n",
                ErrorKind::BadRequest,
            ),
            (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", ErrorKind::NotImplemented),
        ] {
            let shown = String::from_utf8_lossy(req);
            let (mut buf, mut open, mut out) = (BytesMut::from(req), None, Vec::new());
            assert_eq!(drive(&mut buf, &mut open, &mut out), Err(want), "{shown:?} whole");
            for cut in 0..req.len() {
                let (mut buf, mut open, mut out) = (BytesMut::from(&req[..cut]), None, Vec::new());
                match drive(&mut buf, &mut open, &mut out) {
                    Err(kind) => assert_eq!(kind, want, "{shown:?} cut at {cut}"),
                    Ok(()) => {
                        buf.extend_from_slice(&req[cut..]);
                        assert_eq!(drive(&mut buf, &mut open, &mut out), Err(want), "{shown:?} cut at {cut}");
                    }
                }
                assert!(out.is_empty(), "{shown:?} cut at {cut}: a request came out of it");
            }
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
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked, gzip, chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked,,\r\n\r\n",
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

    /// `has_bare_lf` counts on httparse refusing any CR that does not start
    /// a CRLF. A CR and an LF, each inserted anywhere in a head (so the two
    /// counts still match), never yield a head with a bare LF or a lone CR.
    #[test]
    fn lone_cr_is_refused() {
        for cr_at in 0..=SIMPLE.len() {
            for lf_at in 0..=SIMPLE.len() + 1 {
                let mut bytes = SIMPLE.to_vec();
                bytes.insert(cr_at, b'\r');
                bytes.insert(lf_at, b'\n');
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(_)) = parse_head(&mut buf, &limits()) {
                    let head = &bytes[..bytes.len() - buf.len()];
                    let line_ends_are_crlf = head.iter().enumerate().all(|(i, &b)| match b {
                        b'\r' => head.get(i + 1) == Some(&b'\n'),
                        b'\n' => i > 0 && head[i - 1] == b'\r',
                        _ => true,
                    });
                    assert!(line_ends_are_crlf, "accepted {:?}", String::from_utf8_lossy(head));
                }
            }
        }
        assert!(!has_bare_lf(SIMPLE));
        assert!(has_bare_lf(b"GET / HTTP/1.1\r\nHost: h\n\r\n"));
        let long = [&b"GET / HTTP/1.1\r\n"[..], &b"X-Long: abcdefghijklmnopqrstuvwxyz\r\n".repeat(20), b"\n"].concat();
        assert!(long.len() > 256 && has_bare_lf(&long));
    }

    /// The blocked count agrees with a plain count at every length around
    /// its 128-byte blocks, wherever the bare LF sits.
    #[test]
    fn bare_lf_count_matches_a_plain_count() {
        let naive = |h: &[u8]| h.iter().filter(|&&b| b == b'\n').count() != h.iter().filter(|&&b| b == b'\r').count();
        // Blocks of nothing but line ends fill the per-block byte counters.
        for len in [127, 128, 129, 255, 256, 257, 1000] {
            for (name, bytes) in
                [("CRLF", b"\r\n".repeat(len / 2 + 1)), ("LF", vec![b'\n'; len]), ("CR", vec![b'\r'; len])]
            {
                let bytes = &bytes[..len];
                assert_eq!(has_bare_lf(bytes), naive(bytes), "{len} bytes of {name}");
            }
        }
        let line = b"X-Field: value\r\n";
        for lines in [0, 1, 2, 3, 126, 127, 128, 129, 255, 300] {
            let crlf = line.repeat(lines);
            for extra in 0..=17 {
                let clean = [&crlf[..], &b"a".repeat(extra), b"\r\n"].concat();
                assert!(!has_bare_lf(&clean), "{lines} lines + {extra}");
                for at in [0, clean.len() / 2, clean.len() - 1, clean.len()] {
                    let mut bare = clean.clone();
                    bare.insert(at, b'\n');
                    assert!(has_bare_lf(&bare), "{lines} lines + {extra}, LF at {at}");
                }
            }
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
        // A method longer than any we could implement: 501.
        let mut buf = BytesMut::from(format!("{} / HTTP/1.1\r\nHost: h\r\n\r\n", "M".repeat(40)).as_bytes());
        assert_eq!(parse_head(&mut buf, &small).unwrap_err().kind(), ErrorKind::NotImplemented);
    }

    /// The size limits give the same answer whether the head is whole or
    /// arrives a byte at a time: the method and target are measured, not
    /// estimated from the request line (a long method with a target just
    /// under the limit is served), and the target is judged before the head.
    #[test]
    fn size_limits_do_not_depend_on_how_the_head_arrives() {
        let small = Limits { max_header_size: 256, max_uri_size: 64, max_headers: 8, ..Limits::default() };
        let target = |n: usize| format!("/{}", "t".repeat(n - 1));
        let cases = [
            // A 30-byte method and a 64-byte target: within every limit.
            (format!("{} {} HTTP/1.1\r\nHost: h\r\n\r\n", "M".repeat(30), target(64)), None),
            (format!("GET {} HTTP/1.1\r\nHost: h\r\n\r\n", target(65)), Some(ErrorKind::UriTooLong)),
            // Both the target and the head too long: the target decides.
            (
                format!("GET {} HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", target(65), "v".repeat(300)),
                Some(ErrorKind::UriTooLong),
            ),
            (
                format!("GET {} HTTP/1.1\r\nHost: h\r\nX: {}\r\n\r\n", target(64), "v".repeat(300)),
                Some(ErrorKind::HeaderTooLarge),
            ),
            (format!("{} / HTTP/1.1\r\nHost: h\r\n\r\n", "M".repeat(33)), Some(ErrorKind::NotImplemented)),
            // Empty lines before the request line are skipped, as httparse does.
            (format!("\r\n\r\nGET {} HTTP/1.1\r\nHost: h\r\n\r\n", target(65)), Some(ErrorKind::UriTooLong)),
        ];
        for (raw, want) in cases {
            let bytes = raw.as_bytes();
            let whole = parse_head(&mut BytesMut::from(bytes), &small).map(|h| h.is_some()).map_err(|e| e.kind());
            assert_eq!(whole, want.map_or(Ok(true), Err), "{raw:?} whole");
            let mut buf = BytesMut::new();
            let mut got = Ok(false);
            for &b in bytes {
                buf.extend_from_slice(&[b]);
                got = parse_head(&mut buf, &small).map(|h| h.is_some()).map_err(|e| e.kind());
                if got != Ok(false) {
                    break;
                }
            }
            assert_eq!(got, whole, "{raw:?} a byte at a time");
        }
    }

    #[test]
    fn framing_errors_keep_the_accept_field() {
        let err = parse(b"POST / HTTP/1.1\r\nHost: h\r\nAccept: text/html\r\nContent-Length: 3x\r\n\r\n").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::BadRequest);
        assert_eq!(err.accept.as_ref().map(|v| v.as_bytes()), Some(&b"text/html"[..]));
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
