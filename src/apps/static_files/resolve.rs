//! From a request path to a path below the mounted root, refusing every way
//! out of it.
//!
//! The path is percent-decoded once, then split into segments. A segment that
//! is empty (`//`), `.` or `..`, or that contains `/` (from `%2F`), `\`, NUL or
//! any control character is refused, as is a path that is not UTF-8 after
//! decoding (which covers overlong encodings such as `%C0%AE`). Dot-files are
//! refused unless the mount allows them. What passes is a plain relative path;
//! the kernel then keeps symlinks inside the root (`openat2` with
//! `RESOLVE_BENEATH`, see [`super::fs`]).

/// A request path that names something below the root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelPath {
    /// Segments joined with `/`, no leading or trailing slash; empty for the root itself.
    pub(crate) path: String,
    /// The request path ended with `/` (asks for a directory).
    pub(crate) trailing_slash: bool,
}

/// Decodes and checks `raw` (the part of the request path below the mount
/// point, starting with `/` or empty). `None` when the path is refused.
pub(crate) fn resolve(raw: &str, allow_hidden: bool) -> Option<RelPath> {
    let decoded = percent_decode(raw.as_bytes())?;
    let decoded = String::from_utf8(decoded).ok()?;
    let trailing_slash = decoded.ends_with('/');
    let trimmed = decoded.strip_prefix('/').unwrap_or(&decoded);
    let body = trimmed.strip_suffix('/').unwrap_or(trimmed);
    if body.is_empty() {
        return Some(RelPath { path: String::new(), trailing_slash });
    }
    for segment in body.split('/') {
        if !segment_ok(segment, allow_hidden) {
            return None;
        }
    }
    Some(RelPath { path: body.to_owned(), trailing_slash })
}

fn segment_ok(segment: &str, allow_hidden: bool) -> bool {
    if segment.is_empty() || segment == "." || segment == ".." {
        return false;
    }
    if segment.starts_with('.') && !allow_hidden {
        return false;
    }
    !segment.chars().any(|c| c == '\\' || c.is_control())
}

/// Percent-decodes `raw`; `None` for a malformed escape or an encoded `/`
/// (which would change how the path splits into segments).
fn percent_decode(raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let b = raw[i];
        if b == b'%' {
            let hi = hex(*raw.get(i + 1)?)?;
            let lo = hex(*raw.get(i + 2)?)?;
            let byte = hi << 4 | lo;
            if byte == b'/' {
                return None;
            }
            out.push(byte);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    Some(out)
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-encodes a file name for use in a URL path segment (listings).
/// `:` is encoded too, so a name such as `javascript:x` cannot become a scheme.
pub(crate) fn encode_segment(name: &str, out: &mut String) {
    for &b in name.as_bytes() {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@".contains(&b) {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(b & 15)]));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(raw: &str) -> String {
        resolve(raw, false).unwrap_or_else(|| panic!("{raw} refused")).path
    }

    #[test]
    fn plain_paths_pass() {
        assert_eq!(ok("/a/b.txt"), "a/b.txt");
        assert_eq!(ok("/a%20b.txt"), "a b.txt");
        assert_eq!(ok("/caf%C3%A9.txt"), "café.txt");
        assert_eq!(resolve("", false).unwrap(), RelPath { path: String::new(), trailing_slash: false });
        assert_eq!(resolve("/", false).unwrap(), RelPath { path: String::new(), trailing_slash: true });
        let dir = resolve("/sub/", false).unwrap();
        assert_eq!(dir, RelPath { path: "sub".into(), trailing_slash: true });
        assert!(!resolve("/sub", false).unwrap().trailing_slash);
    }

    #[test]
    fn every_escape_is_refused() {
        for raw in [
            "/../x",
            "/a/../../x",
            "/..",
            "/./x",
            "/%2e%2e/x",
            "/%2E%2e/x",
            "/.%2e/x",
            "/a%2fb",
            "/a%2Fb",
            "/..%2fx",
            "/..\\x",
            "/%5c..%5cx",
            "/a%00b",
            "/a\u{1}b",
            "/%c0%ae%c0%ae/x",
            "/%ff",
            "/a//b",
            "//etc/passwd",
            "/%",
            "/%4",
            "/%zz",
        ] {
            assert_eq!(resolve(raw, false), None, "{raw} must be refused");
            assert_eq!(resolve(raw, true), None, "{raw} must be refused even with hidden files allowed");
        }
    }

    #[test]
    fn dot_files_only_when_allowed() {
        assert_eq!(resolve("/.env", false), None);
        assert_eq!(resolve("/.git/config", false), None);
        assert_eq!(resolve("/sub/.hidden", false), None);
        assert_eq!(resolve("/.env", true).unwrap().path, ".env");
        assert_eq!(resolve("/sub/.hidden", true).unwrap().path, "sub/.hidden");
    }

    #[test]
    fn segments_encode_for_urls() {
        let mut s = String::new();
        encode_segment("a b<c>&\"d/é.txt", &mut s);
        assert_eq!(s, "a%20b%3Cc%3E&%22d%2F%C3%A9.txt");
        let mut s = String::new();
        encode_segment("javascript:alert(1)", &mut s);
        assert_eq!(s, "javascript%3Aalert(1)");
    }
}
