//! Validators and conditional requests (RFC 9110 §8.8, §13).

use std::time::{SystemTime, UNIX_EPOCH};

use http::header::{self, HeaderMap};
use http::{Method, StatusCode};

/// 9999-12-31T23:59:59Z, the last instant an HTTP date can express.
const LATEST_HTTP_DATE: std::time::Duration = std::time::Duration::from_secs(253_402_300_799);

/// What a representation is validated by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validators {
    /// The strong entity tag, quotes included: `"ino-len-mtime"`.
    pub(crate) etag: String,
    /// Last modification, whole seconds since the epoch.
    pub(crate) modified_secs: u64,
}

impl Validators {
    /// Strong validators from a file's inode, length and modification time
    /// (nanoseconds, so two writes in one second still change the tag).
    pub(crate) fn new(ino: u64, len: u64, modified: SystemTime) -> Validators {
        // HTTP dates end at year 9999; a file stamped later is treated as from then.
        let since = modified.duration_since(UNIX_EPOCH).unwrap_or_default().min(LATEST_HTTP_DATE);
        let etag = format!("\"{ino:x}-{len:x}-{:x}{:08x}\"", since.as_secs(), since.subsec_nanos());
        Validators { etag, modified_secs: since.as_secs() }
    }

    /// The same file in another representation (a compressed sibling): a distinct tag.
    pub(crate) fn with_suffix(&self, suffix: &str) -> Validators {
        let inner = self.etag.trim_end_matches('"');
        Validators { etag: format!("{inner}-{suffix}\""), modified_secs: self.modified_secs }
    }

    /// `Last-Modified` as an HTTP date.
    pub(crate) fn last_modified(&self) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(self.modified_secs))
    }
}

/// The outcome of the preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Precondition {
    /// Go on and serve the representation (ranges may still apply).
    Proceed,
    /// 304 Not Modified.
    NotModified,
    /// 412 Precondition Failed.
    Failed,
}

impl Precondition {
    /// The status to answer with, for the two outcomes that stop the request.
    pub(crate) fn status(self) -> Option<StatusCode> {
        match self {
            Precondition::Proceed => None,
            Precondition::NotModified => Some(StatusCode::NOT_MODIFIED),
            Precondition::Failed => Some(StatusCode::PRECONDITION_FAILED),
        }
    }
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and
/// `If-Modified-Since` in the order of RFC 9110 §13.2.2.
pub(crate) fn evaluate(method: &Method, headers: &HeaderMap, v: &Validators) -> Precondition {
    let get_or_head = method == Method::GET || method == Method::HEAD;
    // Step 1/2: If-Match, else If-Unmodified-Since.
    if headers.contains_key(header::IF_MATCH) {
        if !any_tag_matches(headers, header::IF_MATCH, &v.etag, true) {
            return Precondition::Failed;
        }
    } else if let Some(since) = date_field(headers, header::IF_UNMODIFIED_SINCE) {
        if v.modified_secs > since {
            return Precondition::Failed;
        }
    }
    // Step 3/4: If-None-Match, else If-Modified-Since (GET/HEAD only).
    if headers.contains_key(header::IF_NONE_MATCH) {
        if any_tag_matches(headers, header::IF_NONE_MATCH, &v.etag, false) {
            return if get_or_head { Precondition::NotModified } else { Precondition::Failed };
        }
    } else if get_or_head {
        if let Some(since) = date_field(headers, header::IF_MODIFIED_SINCE) {
            if v.modified_secs <= since {
                return Precondition::NotModified;
            }
        }
    }
    Precondition::Proceed
}

/// `If-Range` (RFC 9110 §13.1.5): true when the range may be served. An
/// entity tag must match strongly; a date must equal `Last-Modified` exactly
/// and be a strong validator, i.e. at least a second in the past (§8.8.2.2):
/// a file modified within the current second could change again unseen.
pub(crate) fn if_range_allows(headers: &HeaderMap, v: &Validators) -> bool {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    if_range_allows_at(headers, v, now)
}

fn if_range_allows_at(headers: &HeaderMap, v: &Validators, now_secs: u64) -> bool {
    let Some(value) = headers.get(header::IF_RANGE).and_then(|h| h.to_str().ok()) else {
        return true;
    };
    let value = value.trim();
    if value.starts_with('"') || value.starts_with("W/") {
        return !value.starts_with("W/") && value == v.etag;
    }
    httpdate::parse_http_date(value)
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .is_some_and(|d| d.as_secs() == v.modified_secs && v.modified_secs < now_secs)
}

/// True when any tag listed in the (possibly repeated) field `name` matches
/// `etag`, or the field is `*`. Strong comparison refuses weak tags.
fn any_tag_matches(headers: &HeaderMap, name: header::HeaderName, etag: &str, strong: bool) -> bool {
    headers.get_all(name).iter().filter_map(|h| h.to_str().ok()).any(|list| {
        list.split(',').map(str::trim).filter(|t| !t.is_empty()).any(|tag| {
            if tag == "*" {
                return true;
            }
            match tag.strip_prefix("W/") {
                Some(weak) => !strong && weak == etag,
                None => tag == etag,
            }
        })
    })
}

/// A date field as whole seconds since the epoch; an invalid date counts as absent.
fn date_field(headers: &HeaderMap, name: header::HeaderName) -> Option<u64> {
    let value = headers.get(name)?.to_str().ok()?;
    let time = httpdate::parse_http_date(value.trim()).ok()?;
    Some(time.duration_since(UNIX_EPOCH).ok()?.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;
    use std::time::Duration;

    fn v() -> Validators {
        Validators::new(0x10, 100, UNIX_EPOCH + Duration::from_secs(1_700_000_000))
    }

    fn eval(method: Method, fields: &[(&str, &str)]) -> Precondition {
        let mut h = HeaderMap::new();
        for (n, val) in fields {
            h.append(header::HeaderName::from_bytes(n.as_bytes()).unwrap(), HeaderValue::from_str(val).unwrap());
        }
        evaluate(&method, &h, &v())
    }

    fn date(secs: u64) -> String {
        httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
    }

    #[test]
    fn etag_is_strong_and_suffixed_variants_differ() {
        let v = v();
        assert!(v.etag.starts_with('"') && v.etag.ends_with('"'));
        let gz = v.with_suffix("gz");
        assert_ne!(gz.etag, v.etag);
        assert!(gz.etag.ends_with("-gz\""));
        assert_eq!(v.last_modified(), date(1_700_000_000));
        let far = Validators::new(1, 1, UNIX_EPOCH + Duration::from_secs(400_000_000_000));
        assert!(far.last_modified().contains("9999"), "dates past year 9999 are clamped, not a panic");
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let tag = v().etag;
        assert_eq!(eval(Method::GET, &[("if-match", &tag)]), Precondition::Proceed);
        assert_eq!(eval(Method::GET, &[("if-match", "*")]), Precondition::Proceed);
        assert_eq!(eval(Method::GET, &[("if-match", &format!("\"x\", {tag}"))]), Precondition::Proceed);
        assert_eq!(eval(Method::GET, &[("if-match", &format!("W/{tag}"))]), Precondition::Failed);
        assert_eq!(eval(Method::GET, &[("if-match", "\"other\"")]), Precondition::Failed);
    }

    #[test]
    fn if_unmodified_since() {
        assert_eq!(eval(Method::GET, &[("if-unmodified-since", &date(1_600_000_000))]), Precondition::Failed);
        assert_eq!(eval(Method::GET, &[("if-unmodified-since", &date(1_700_000_000))]), Precondition::Proceed);
        assert_eq!(eval(Method::GET, &[("if-unmodified-since", "garbage")]), Precondition::Proceed);
        // If-Match present: If-Unmodified-Since is not evaluated.
        let tag = v().etag;
        assert_eq!(eval(Method::GET, &[("if-match", &tag), ("if-unmodified-since", &date(1))]), Precondition::Proceed);
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let tag = v().etag;
        assert_eq!(eval(Method::GET, &[("if-none-match", &tag)]), Precondition::NotModified);
        assert_eq!(eval(Method::HEAD, &[("if-none-match", &format!("W/{tag}"))]), Precondition::NotModified);
        assert_eq!(eval(Method::GET, &[("if-none-match", &format!("\"a\" , {tag}"))]), Precondition::NotModified);
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "\"a\""), ("if-none-match", &tag)]),
            Precondition::NotModified
        );
        assert_eq!(eval(Method::GET, &[("if-none-match", "*")]), Precondition::NotModified);
        assert_eq!(eval(Method::GET, &[("if-none-match", "\"a\"")]), Precondition::Proceed);
        assert_eq!(eval(Method::POST, &[("if-none-match", "*")]), Precondition::Failed);
    }

    #[test]
    fn if_modified_since_and_precedence() {
        assert_eq!(eval(Method::GET, &[("if-modified-since", &date(1_700_000_000))]), Precondition::NotModified);
        assert_eq!(eval(Method::GET, &[("if-modified-since", &date(1_800_000_000))]), Precondition::NotModified);
        assert_eq!(eval(Method::GET, &[("if-modified-since", &date(1_600_000_000))]), Precondition::Proceed);
        assert_eq!(eval(Method::GET, &[("if-modified-since", "not a date")]), Precondition::Proceed);
        // A non-matching If-None-Match wins over a recent If-Modified-Since.
        assert_eq!(
            eval(Method::GET, &[("if-none-match", "\"a\""), ("if-modified-since", &date(1_800_000_000))]),
            Precondition::Proceed
        );
        // If-Match failure comes first.
        let tag = v().etag;
        assert_eq!(eval(Method::GET, &[("if-match", "\"a\""), ("if-none-match", &tag)]), Precondition::Failed);
    }

    #[test]
    fn if_range() {
        let v = v();
        let mut h = HeaderMap::new();
        assert!(if_range_allows(&h, &v));
        h.insert(header::IF_RANGE, HeaderValue::from_str(&v.etag).unwrap());
        assert!(if_range_allows(&h, &v));
        h.insert(header::IF_RANGE, HeaderValue::from_str(&format!("W/{}", v.etag)).unwrap());
        assert!(!if_range_allows(&h, &v));
        h.insert(header::IF_RANGE, HeaderValue::from_static("\"stale\""));
        assert!(!if_range_allows(&h, &v));
        h.insert(header::IF_RANGE, HeaderValue::from_str(&v.last_modified()).unwrap());
        assert!(if_range_allows(&h, &v));
        h.insert(header::IF_RANGE, HeaderValue::from_str(&date(1_700_000_001)).unwrap());
        assert!(!if_range_allows(&h, &v));
        // The exact date of a file modified this very second is too weak.
        h.insert(header::IF_RANGE, HeaderValue::from_str(&v.last_modified()).unwrap());
        assert!(if_range_allows_at(&h, &v, 1_700_000_001));
        assert!(!if_range_allows_at(&h, &v, 1_700_000_000));
    }
}
