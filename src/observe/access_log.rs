//! The request log: one line per request, in Skitai's field order, Apache
//! `combined`, or JSON. Lines are formatted into a per-shard buffer and
//! written in batches by the log thread ([`super::output`]).

use std::cell::RefCell;
use std::net::IpAddr;
use std::time::Duration;

use base64ct::Encoding;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Uri, Version};

use super::txn::TxnIds;
use crate::config::LogFormat;

/// Skitai's `log_off`: paths whose requests are not logged.
#[derive(Debug, Clone, Default)]
pub(crate) struct LogOff {
    prefixes: Vec<Box<str>>,
    suffixes: Vec<Box<str>>,
}

impl LogOff {
    /// Rules as configured: `"*x"` is a suffix, anything else a prefix.
    pub(crate) fn new<S: AsRef<str>>(rules: &[S]) -> LogOff {
        let mut off = LogOff::default();
        for rule in rules {
            match rule.as_ref().strip_prefix('*') {
                Some(suffix) => off.suffixes.push(suffix.into()),
                None => off.prefixes.push(rule.as_ref().into()),
            }
        }
        off
    }

    /// True when a request for `path` is not to be logged.
    pub(crate) fn matches(&self, path: &str) -> bool {
        self.prefixes.iter().any(|p| path.starts_with(&**p)) || self.suffixes.iter().any(|s| path.ends_with(&**s))
    }
}

/// What the log needs from a request, taken before the request goes to its
/// handler (cheap: the values share the connection's buffer).
#[derive(Debug)]
pub(crate) struct RequestFacts {
    pub(crate) method: Method,
    /// The target as the client sent it (before a mount point was stripped).
    pub(crate) uri: Uri,
    pub(crate) version: Version,
    pub(crate) user_agent: Option<HeaderValue>,
    pub(crate) host: Option<HeaderValue>,
    pub(crate) referer: Option<HeaderValue>,
    pub(crate) forwarded_for: Option<HeaderValue>,
    pub(crate) authorization: Option<HeaderValue>,
}

impl RequestFacts {
    /// Takes the facts from a request's parts, in one pass over the fields
    /// (cheaper than five lookups; the first of each field counts).
    pub(crate) fn of(method: &Method, uri: &Uri, version: Version, headers: &HeaderMap) -> RequestFacts {
        let mut facts = RequestFacts {
            method: method.clone(),
            uri: uri.clone(),
            version,
            user_agent: None,
            host: None,
            referer: None,
            forwarded_for: None,
            authorization: None,
        };
        for (name, value) in headers {
            let slot = if name == header::USER_AGENT {
                &mut facts.user_agent
            } else if name == header::HOST {
                &mut facts.host
            } else if name == header::REFERER {
                &mut facts.referer
            } else if name == header::AUTHORIZATION {
                &mut facts.authorization
            } else if name.as_str().len() == 15 && name == "x-forwarded-for" {
                &mut facts.forwarded_for
            } else {
                continue;
            };
            if slot.is_none() {
                *slot = Some(value.clone());
            }
        }
        facts
    }
}

/// How a request ended, for its log line.
#[derive(Debug)]
pub(crate) struct Outcome<'a> {
    pub(crate) peer: IpAddr,
    pub(crate) status: u16,
    /// Request body bytes received.
    pub(crate) request_bytes: u64,
    /// Response body bytes sent.
    pub(crate) response_bytes: u64,
    pub(crate) shard: usize,
    /// From the request's head to its response being ready.
    pub(crate) handling: Duration,
    /// From the response being ready to its last byte written.
    pub(crate) delivery: Duration,
    pub(crate) txn: &'a TxnIds,
    /// Open connections on the shard.
    pub(crate) connections: usize,
}

/// Appends one log line (with its newline) to `out`.
pub(crate) fn format_line(format: LogFormat, facts: &RequestFacts, outcome: &Outcome<'_>, out: &mut Vec<u8>) {
    match format {
        LogFormat::Skitai => skitai_line(facts, outcome, out),
        LogFormat::Combined => combined_line(facts, outcome, out),
        LogFormat::Json => json_line(facts, outcome, out),
    }
}

/// `2026.11.24 15:40:14 127.0.0.1 GET / 1.1 0 200 13 W0 0 "curl/7.88.1" host - - gtxid 1000 - - 3 0`
fn skitai_line(facts: &RequestFacts, o: &Outcome<'_>, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    with_time(TimeStyle::Skitai, |t| out.extend_from_slice(t));
    out.push(b' ');
    write_ip(o.peer, out);
    out.push(b' ');
    out.extend_from_slice(facts.method.as_str().as_bytes());
    out.push(b' ');
    write_escaped(uri_bytes(&facts.uri), out);
    out.push(b' ');
    out.extend_from_slice(short_version(facts.version));
    for value in [o.request_bytes, u64::from(o.status), o.response_bytes] {
        out.push(b' ');
        out.extend_from_slice(n.format(value).as_bytes());
    }
    out.extend_from_slice(b" W");
    out.extend_from_slice(n.format(o.shard).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(o.handling.as_millis()).as_bytes());
    out.push(b' ');
    write_quoted_or_dash(facts.user_agent.as_ref(), out);
    out.push(b' ');
    write_plain_or_dash(facts.host.as_ref().map(HeaderValue::as_bytes), out);
    out.push(b' ');
    write_quoted_or_dash(facts.referer.as_ref(), out);
    out.push(b' ');
    write_plain_or_dash(first_forwarded(facts.forwarded_for.as_ref()), out);
    out.push(b' ');
    o.txn.write_gtxid(out);
    out.push(b' ');
    out.extend_from_slice(n.format(o.txn.ltxid()).as_bytes());
    let credentials = Credentials::of(facts.authorization.as_ref());
    out.push(b' ');
    write_plain_or_dash(credentials.user.as_deref(), out);
    out.push(b' ');
    write_plain_or_dash(credentials.token, out);
    out.push(b' ');
    out.extend_from_slice(n.format(o.connections).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(o.delivery.as_millis()).as_bytes());
    out.push(b'\n');
}

/// `127.0.0.1 - user [24/Nov/2026:15:40:14 +0000] "GET / HTTP/1.1" 200 13 "referer" "agent"`
fn combined_line(facts: &RequestFacts, o: &Outcome<'_>, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    write_ip(o.peer, out);
    out.extend_from_slice(b" - ");
    write_plain_or_dash(Credentials::of(facts.authorization.as_ref()).user.as_deref(), out);
    out.extend_from_slice(b" [");
    with_time(TimeStyle::Combined, |t| out.extend_from_slice(t));
    out.extend_from_slice(b"] \"");
    out.extend_from_slice(facts.method.as_str().as_bytes());
    out.push(b' ');
    write_escaped(uri_bytes(&facts.uri), out);
    out.push(b' ');
    out.extend_from_slice(long_version(facts.version));
    out.extend_from_slice(b"\" ");
    out.extend_from_slice(n.format(o.status).as_bytes());
    out.push(b' ');
    out.extend_from_slice(n.format(o.response_bytes).as_bytes());
    out.push(b' ');
    write_quoted_or_empty(facts.referer.as_ref(), out);
    out.push(b' ');
    write_quoted_or_empty(facts.user_agent.as_ref(), out);
    out.push(b'\n');
}

/// One JSON object per line; durations in milliseconds with microseconds.
fn json_line(facts: &RequestFacts, o: &Outcome<'_>, out: &mut Vec<u8>) {
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(b"{\"time\":\"");
    with_time(TimeStyle::Iso, |t| out.extend_from_slice(t));
    out.extend_from_slice(b"\",\"peer\":\"");
    write_ip(o.peer, out);
    out.extend_from_slice(b"\",\"method\":");
    json_string(facts.method.as_str().as_bytes(), out);
    out.extend_from_slice(b",\"uri\":");
    json_string(uri_bytes(&facts.uri), out);
    out.extend_from_slice(b",\"version\":\"");
    out.extend_from_slice(short_version(facts.version));
    out.extend_from_slice(b"\",\"request_bytes\":");
    out.extend_from_slice(n.format(o.request_bytes).as_bytes());
    out.extend_from_slice(b",\"status\":");
    out.extend_from_slice(n.format(o.status).as_bytes());
    out.extend_from_slice(b",\"response_bytes\":");
    out.extend_from_slice(n.format(o.response_bytes).as_bytes());
    out.extend_from_slice(b",\"shard\":");
    out.extend_from_slice(n.format(o.shard).as_bytes());
    out.extend_from_slice(b",\"handling_ms\":");
    write_millis(o.handling, out);
    out.extend_from_slice(b",\"delivery_ms\":");
    write_millis(o.delivery, out);
    let credentials = Credentials::of(facts.authorization.as_ref());
    let optional: [(&[u8], Option<&[u8]>); 6] = [
        (b"user_agent", facts.user_agent.as_ref().map(HeaderValue::as_bytes)),
        (b"host", facts.host.as_ref().map(HeaderValue::as_bytes)),
        (b"referer", facts.referer.as_ref().map(HeaderValue::as_bytes)),
        (b"forwarded_for", first_forwarded(facts.forwarded_for.as_ref())),
        (b"user", credentials.user.as_deref()),
        (b"token", credentials.token),
    ];
    for (key, value) in optional {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(key);
        out.extend_from_slice(b"\":");
        match value {
            Some(v) => json_string(v, out),
            None => out.extend_from_slice(b"null"),
        }
    }
    out.extend_from_slice(b",\"gtxid\":\"");
    let start = out.len();
    o.txn.write_gtxid(out);
    // An incoming gtxid is printable ASCII (checked on arrival), but may hold `"` or `\`.
    let gtxid: Vec<u8> = out.drain(start..).collect();
    out.pop();
    json_string(&gtxid, out);
    out.extend_from_slice(b",\"ltxid\":");
    out.extend_from_slice(n.format(o.txn.ltxid()).as_bytes());
    out.extend_from_slice(b",\"connections\":");
    out.extend_from_slice(n.format(o.connections).as_bytes());
    out.extend_from_slice(b"}\n");
}

fn uri_bytes(uri: &Uri) -> &[u8] {
    uri.path_and_query().map_or(b"/", |pq| pq.as_str().as_bytes())
}

fn short_version(v: Version) -> &'static [u8] {
    match v {
        Version::HTTP_10 => b"1.0",
        Version::HTTP_2 => b"2.0",
        Version::HTTP_3 => b"3.0",
        Version::HTTP_09 => b"0.9",
        _ => b"1.1",
    }
}

fn long_version(v: Version) -> &'static [u8] {
    match v {
        Version::HTTP_10 => b"HTTP/1.0",
        Version::HTTP_2 => b"HTTP/2.0",
        Version::HTTP_3 => b"HTTP/3.0",
        Version::HTTP_09 => b"HTTP/0.9",
        _ => b"HTTP/1.1",
    }
}

/// The client named first in `X-Forwarded-For`.
fn first_forwarded(value: Option<&HeaderValue>) -> Option<&[u8]> {
    let bytes = value?.as_bytes();
    let first = bytes.split(|&b| b == b',').next()?.trim_ascii();
    (!first.is_empty()).then_some(first)
}

/// Who the request says it is: a Basic user name, or the start of a Bearer
/// token (enough to tell tokens apart, not enough to use one).
struct Credentials<'a> {
    user: Option<Vec<u8>>,
    token: Option<&'a [u8]>,
}

/// Bytes of a bearer token shown in the log.
const TOKEN_SHOWN: usize = 8;

impl<'a> Credentials<'a> {
    fn of(value: Option<&'a HeaderValue>) -> Credentials<'a> {
        let mut c = Credentials { user: None, token: None };
        let Some(bytes) = value.map(HeaderValue::as_bytes) else { return c };
        if bytes.len() > 6 && bytes[..6].eq_ignore_ascii_case(b"basic ") {
            let mut buf = [0u8; 256];
            if let Ok(decoded) = base64ct::Base64::decode(bytes[6..].trim_ascii(), &mut buf) {
                let user = decoded.split(|&b| b == b':').next().unwrap_or_default();
                c.user = (!user.is_empty()).then(|| user.to_vec());
            }
        } else if bytes.len() > 7 && bytes[..7].eq_ignore_ascii_case(b"bearer ") {
            let token = bytes[7..].trim_ascii();
            c.token = Some(&token[..token.len().min(TOKEN_SHOWN)]);
        }
        c
    }
}

thread_local! {
    /// The last peer address written, formatted: a connection's requests all
    /// come from one address, so it is formatted once per connection at most.
    static LAST_PEER: RefCell<(Option<IpAddr>, Vec<u8>)> = const { RefCell::new((None, Vec::new())) };
}

fn write_ip(ip: IpAddr, out: &mut Vec<u8>) {
    use std::io::Write;
    LAST_PEER.with(|cell| {
        let mut last = cell.borrow_mut();
        if last.0 != Some(ip) {
            last.1.clear();
            let shown = match ip {
                IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
                v4 => v4,
            };
            let _ = write!(last.1, "{shown}");
            last.0 = Some(ip);
        }
        out.extend_from_slice(&last.1);
    });
}

/// Bytes written as they are in an unquoted field: printable ASCII but `"` and `\`.
const PLAIN: [bool; 256] = {
    let mut table = [false; 256];
    let mut b = 0x21;
    while b < 0x7f {
        table[b] = b != b'"' as usize && b != b'\\' as usize;
        b += 1;
    }
    table
};

/// True when no byte of `bytes` needs escaping (`spaces`: a space does not).
fn is_plain(bytes: &[u8], spaces: bool) -> bool {
    bytes.iter().all(|&b| PLAIN[usize::from(b)] || (spaces && b == b' '))
}

/// Copies `bytes`, writing `"`, `\`, spaces, control and non-ASCII bytes as
/// `\xHH`, so a field can neither break the line nor fake another field.
fn write_escaped(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    // Nearly always nothing to escape: one check, one copy.
    if is_plain(bytes, false) {
        out.extend_from_slice(bytes);
        return;
    }
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'"' && b != b'\\' {
            out.push(b);
        } else {
            out.extend_from_slice(&[b'\\', b'x', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]);
        }
    }
}

/// Like [`write_escaped`], keeping spaces (for quoted fields).
fn write_escaped_text(bytes: &[u8], out: &mut Vec<u8>) {
    if is_plain(bytes, true) {
        out.extend_from_slice(bytes);
        return;
    }
    for chunk in bytes.split(|&b| b == b' ').enumerate() {
        if chunk.0 > 0 {
            out.push(b' ');
        }
        write_escaped(chunk.1, out);
    }
}

fn write_quoted_or_dash(value: Option<&HeaderValue>, out: &mut Vec<u8>) {
    match value {
        Some(v) => {
            out.push(b'"');
            write_escaped_text(v.as_bytes(), out);
            out.push(b'"');
        }
        None => out.push(b'-'),
    }
}

fn write_quoted_or_empty(value: Option<&HeaderValue>, out: &mut Vec<u8>) {
    out.push(b'"');
    match value {
        Some(v) => write_escaped_text(v.as_bytes(), out),
        None => out.push(b'-'),
    }
    out.push(b'"');
}

fn write_plain_or_dash(value: Option<&[u8]>, out: &mut Vec<u8>) {
    match value {
        Some(v) if !v.is_empty() => write_escaped(v, out),
        _ => out.push(b'-'),
    }
}

/// A JSON string: bytes that are not printable ASCII are written as `\u00XX`
/// (header values are bytes, not necessarily UTF-8).
fn json_string(bytes: &[u8], out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for &b in bytes {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            0x20..=0x7e => out.push(b),
            _ => out.extend_from_slice(&[b'\\', b'u', b'0', b'0', HEX[usize::from(b >> 4)], HEX[usize::from(b & 15)]]),
        }
    }
    out.push(b'"');
}

fn write_millis(d: Duration, out: &mut Vec<u8>) {
    let micros = d.as_micros();
    let mut n = itoa::Buffer::new();
    out.extend_from_slice(n.format(micros / 1000).as_bytes());
    out.push(b'.');
    let frac = (micros % 1000) as u16;
    out.extend_from_slice(&[b'0' + (frac / 100) as u8, b'0' + (frac / 10 % 10) as u8, b'0' + (frac % 10) as u8]);
}

/// The three ways the log writes the time.
#[derive(Clone, Copy, PartialEq, Eq)]
enum TimeStyle {
    /// `2026.11.24 15:40:14` (local time)
    Skitai,
    /// `24/Nov/2026:15:40:14 +0100`
    Combined,
    /// `2026-11-24T15:40:14+01:00`
    Iso,
}

thread_local! {
    /// The last formatted time: (second, style, bytes). One format per second per shard.
    static TIME: RefCell<(u64, Option<TimeStyle>, Vec<u8>)> = const { RefCell::new((0, None, Vec::new())) };
}

/// Calls `f` with the current local time formatted in `style`; the text is
/// made once per second per thread.
fn with_time(style: TimeStyle, f: impl FnOnce(&[u8])) {
    let secs = crate::http::date::coarse_unix_secs();
    TIME.with(|cell| {
        let mut cached = cell.borrow_mut();
        if cached.0 != secs || cached.1 != Some(style) {
            cached.2.clear();
            format_time(secs, style, &mut cached.2);
            cached.0 = secs;
            cached.1 = Some(style);
        }
        f(&cached.2);
    });
}

fn format_time(secs: u64, style: TimeStyle, out: &mut Vec<u8>) {
    use std::io::Write;
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    let t = secs as libc::time_t;
    // SAFETY: `tm` is plain data that localtime_r fills in completely; both
    // pointers refer to live locals.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    let (year, month, day) = (tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday);
    let (hour, min, sec) = (tm.tm_hour, tm.tm_min, tm.tm_sec);
    let offset = tm.tm_gmtoff / 60;
    let (sign, offset) = if offset < 0 { ('-', -offset) } else { ('+', offset) };
    let _ = match style {
        TimeStyle::Skitai => write!(out, "{year:04}.{month:02}.{day:02} {hour:02}:{min:02}:{sec:02}"),
        TimeStyle::Combined => {
            let name = MONTHS[tm.tm_mon.clamp(0, 11) as usize];
            write!(
                out,
                "{day:02}/{name}/{year:04}:{hour:02}:{min:02}:{sec:02} {sign}{:02}{:02}",
                offset / 60,
                offset % 60
            )
        }
        TimeStyle::Iso => write!(
            out,
            "{year:04}-{month:02}-{day:02}T{hour:02}:{min:02}:{sec:02}{sign}{:02}:{:02}",
            offset / 60,
            offset % 60
        ),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(headers: &[(&str, &str)]) -> RequestFacts {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.insert(http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(), HeaderValue::from_str(v).unwrap());
        }
        RequestFacts::of(&Method::GET, &"/a?b=1".parse().unwrap(), Version::HTTP_11, &map)
    }

    fn outcome(txn: &TxnIds) -> Outcome<'_> {
        Outcome {
            peer: "127.0.0.1".parse().unwrap(),
            status: 200,
            request_bytes: 5,
            response_bytes: 13,
            shard: 1,
            handling: Duration::from_micros(2500),
            delivery: Duration::from_millis(0),
            txn,
            connections: 3,
        }
    }

    #[test]
    fn skitai_line_has_every_field_in_order() {
        let txn = TxnIds::new_local(1);
        let f =
            facts(&[("user-agent", "curl/7.88.1"), ("host", "example.com"), ("x-forwarded-for", "10.0.0.1, 10.0.0.2")]);
        let mut out = Vec::new();
        format_line(LogFormat::Skitai, &f, &outcome(&txn), &mut out);
        let line = String::from_utf8(out).unwrap();
        let fields: Vec<&str> = line.trim_end().split(' ').collect();
        assert_eq!(
            &fields[2..],
            &[
                "127.0.0.1",
                "GET",
                "/a?b=1",
                "1.1",
                "5",
                "200",
                "13",
                "W1",
                "2",
                "\"curl/7.88.1\"",
                "example.com",
                "-",
                "10.0.0.1",
                &txn.gtxid(),
                "1000",
                "-",
                "-",
                "3",
                "0"
            ],
            "{line}"
        );
        assert_eq!(fields[0].len(), 10, "date {line}");
    }

    #[test]
    fn combined_and_json_lines() {
        let txn = TxnIds::new_local(0);
        let f = facts(&[("user-agent", "a \"quoted\" agent"), ("authorization", "Basic dXNlcjpwYXNz")]);
        let mut out = Vec::new();
        format_line(LogFormat::Combined, &f, &outcome(&txn), &mut out);
        let line = String::from_utf8(out).unwrap();
        assert!(line.starts_with("127.0.0.1 - user ["), "{line}");
        assert!(line.ends_with("\"GET /a?b=1 HTTP/1.1\" 200 13 \"-\" \"a \\x22quoted\\x22 agent\"\n"), "{line}");

        let mut out = Vec::new();
        format_line(LogFormat::Json, &f, &outcome(&txn), &mut out);
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["status"], 200);
        assert_eq!(v["uri"], "/a?b=1");
        assert_eq!(v["user_agent"], "a \"quoted\" agent");
        assert_eq!(v["user"], "user");
        assert_eq!(v["handling_ms"], 2.5);
        assert_eq!(v["gtxid"], txn.gtxid());
        assert_eq!(v["referer"], serde_json::Value::Null);
    }

    #[test]
    fn bearer_tokens_are_cut_short() {
        let f = facts(&[("authorization", "Bearer abcdefghijklmnop")]);
        assert_eq!(Credentials::of(f.authorization.as_ref()).token, Some(&b"abcdefgh"[..]));
    }

    #[test]
    fn log_off_rules() {
        let off = LogOff::new(&["/static/", "*.css"]);
        assert!(off.matches("/static/app.js"));
        assert!(off.matches("/x/site.css"));
        assert!(!off.matches("/api/static/"));
        assert!(!off.matches("/css"));
    }
}
