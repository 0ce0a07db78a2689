//! Transaction ids: a global id (gtxid) that follows a request through every
//! server it touches, and a local id (ltxid) for each hop.

use std::cell::Cell;
use std::fmt;
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{HeaderMap, HeaderName, HeaderValue};

/// The request field carrying the global transaction id.
pub const GTXN_HEADER: HeaderName = HeaderName::from_static("x-gtxn-id");
/// The request field carrying the caller's local transaction id.
pub const LTXN_HEADER: HeaderName = HeaderName::from_static("x-ltxn-id");
/// The ltxid of a request that arrived without one.
pub const FIRST_LTXID: u64 = 1000;
/// Longest incoming gtxid kept; a longer (or non-printable) one is replaced.
const MAX_GTXID_LEN: usize = 128;

/// This process's part of the gtxids it makes: its start time and pid, so
/// ids never repeat across processes or restarts.
fn process_prefix() -> &'static str {
    static PREFIX: OnceLock<String> = OnceLock::new();
    PREFIX.get_or_init(|| {
        let secs = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
        format!("{secs:x}-{:x}", std::process::id())
    })
}

thread_local! {
    /// Gtxids made on this thread (a shard) so far.
    static SEQUENCE: Cell<u64> = const { Cell::new(0) };
    /// `<process>-<shard>-` for the shard on this thread, once written.
    static LOCAL_PREFIX: std::cell::RefCell<(usize, Vec<u8>)> = const { std::cell::RefCell::new((usize::MAX, Vec::new())) };
}

/// A request's transaction ids (Skitai's gtxid and ltxid).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxnIds {
    global: Global,
    ltxid: u64,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Global {
    /// Sent by the caller in `X-Gtxn-Id`.
    Incoming(HeaderValue),
    /// Made here: `<process>-<shard>-<sequence>`.
    Local { shard: usize, sequence: u64 },
}

impl TxnIds {
    /// The ids of a request: an incoming `X-Gtxn-Id` is kept and the ltxid
    /// is the incoming `X-Ltxn-Id` + 1000 (1000 without one); otherwise a new
    /// gtxid is made on `shard` and the ltxid is 1000.
    pub(crate) fn of_request(headers: &HeaderMap, shard: usize) -> TxnIds {
        TxnIds::of_fields(headers.get(GTXN_HEADER), headers.get(LTXN_HEADER), shard)
    }

    /// [`TxnIds::of_request`] from the two fields, already found.
    pub(crate) fn of_fields(gtxid: Option<&HeaderValue>, ltxid: Option<&HeaderValue>, shard: usize) -> TxnIds {
        let incoming = gtxid
            .filter(|v| !v.is_empty() && v.len() <= MAX_GTXID_LEN && v.as_bytes().iter().all(|b| b.is_ascii_graphic()));
        match incoming {
            Some(gtxid) => {
                let caller = ltxid.and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
                let ltxid = caller.map_or(FIRST_LTXID, |n| n.saturating_add(FIRST_LTXID));
                TxnIds { global: Global::Incoming(gtxid.clone()), ltxid }
            }
            None => TxnIds::new_local(shard),
        }
    }

    /// Fresh ids made on `shard`.
    pub(crate) fn new_local(shard: usize) -> TxnIds {
        let sequence = SEQUENCE.with(|s| {
            let n = s.get() + 1;
            s.set(n);
            n
        });
        TxnIds { global: Global::Local { shard, sequence }, ltxid: FIRST_LTXID }
    }

    /// The local transaction id of this hop.
    pub fn ltxid(&self) -> u64 {
        self.ltxid
    }

    /// The global transaction id as a string.
    pub fn gtxid(&self) -> String {
        self.to_string()
    }

    /// The fields for the `n`th upstream call made for this request
    /// (`n` from 1): the same gtxid, and ltxid + `n`.
    pub fn upstream_fields(&self, n: u64) -> [(HeaderName, HeaderValue); 2] {
        let gtxid = match &self.global {
            Global::Incoming(v) => v.clone(),
            Global::Local { .. } => {
                HeaderValue::from_str(&self.gtxid()).unwrap_or_else(|_| HeaderValue::from_static("-"))
            }
        };
        [(GTXN_HEADER, gtxid), (LTXN_HEADER, HeaderValue::from(self.ltxid.saturating_add(n)))]
    }

    /// Appends the gtxid to `out`.
    pub(crate) fn write_gtxid(&self, out: &mut Vec<u8>) {
        match &self.global {
            Global::Incoming(v) => out.extend_from_slice(v.as_bytes()),
            Global::Local { shard, sequence } => {
                LOCAL_PREFIX.with(|cell| {
                    let mut prefix = cell.borrow_mut();
                    if prefix.0 != *shard {
                        prefix.1.clear();
                        prefix.1.extend_from_slice(format!("{}-{shard}-", process_prefix()).as_bytes());
                        prefix.0 = *shard;
                    }
                    out.extend_from_slice(&prefix.1);
                });
                out.extend_from_slice(itoa::Buffer::new().format(*sequence).as_bytes());
            }
        }
    }
}

impl fmt::Display for TxnIds {
    /// Writes the gtxid.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.global {
            Global::Incoming(v) => f.write_str(v.to_str().unwrap_or("-")),
            Global::Local { shard, sequence } => write!(f, "{}-{shard}-{sequence}", process_prefix()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&HeaderName, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert((*k).clone(), HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn incoming_ids_are_kept_and_ltxid_moves_on_by_1000() {
        let t = TxnIds::of_request(&headers(&[(&GTXN_HEADER, "abc-1-2"), (&LTXN_HEADER, "1001")]), 0);
        assert_eq!((t.gtxid().as_str(), t.ltxid()), ("abc-1-2", 2001));
        let [(_, g), (_, l)] = t.upstream_fields(1);
        assert_eq!((g.to_str().unwrap(), l.to_str().unwrap()), ("abc-1-2", "2002"));
    }

    #[test]
    fn a_lone_gtxid_gets_ltxid_1000() {
        let t = TxnIds::of_request(&headers(&[(&GTXN_HEADER, "abc")]), 0);
        assert_eq!((t.gtxid().as_str(), t.ltxid()), ("abc", 1000));
        let t = TxnIds::of_request(&headers(&[(&GTXN_HEADER, "abc"), (&LTXN_HEADER, "x")]), 0);
        assert_eq!(t.ltxid(), 1000);
    }

    #[test]
    fn local_ids_differ_and_name_the_shard() {
        let a = TxnIds::of_request(&HeaderMap::new(), 3);
        let b = TxnIds::of_request(&headers(&[(&GTXN_HEADER, "has space")]), 3);
        assert_ne!(a.gtxid(), b.gtxid());
        assert!(a.gtxid().starts_with(process_prefix()), "{a}");
        assert!(a.gtxid().contains("-3-"), "{a}");
        assert_eq!(a.ltxid(), FIRST_LTXID);
        let mut out = Vec::new();
        a.write_gtxid(&mut out);
        assert_eq!(out, a.gtxid().as_bytes());
    }
}
