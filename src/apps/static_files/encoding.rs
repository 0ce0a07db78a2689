//! Content codings: choosing one from `Accept-Encoding`, and gzip on the fly.

use std::io::Write;

use bytes::Bytes;
use http::HeaderMap;
use http::header::ACCEPT_ENCODING;

/// The codings a static file can be served in besides identity, in the
/// server's order of preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Coding {
    Brotli,
    Zstd,
    Gzip,
}

impl Coding {
    /// Every coding, most preferred first.
    pub(crate) const ALL: [Coding; 3] = [Coding::Brotli, Coding::Zstd, Coding::Gzip];

    /// The `Content-Encoding` token.
    pub(crate) fn token(self) -> &'static str {
        match self {
            Coding::Brotli => "br",
            Coding::Zstd => "zstd",
            Coding::Gzip => "gzip",
        }
    }

    /// The file name suffix of a precompressed sibling.
    pub(crate) fn suffix(self) -> &'static str {
        match self {
            Coding::Brotli => ".br",
            Coding::Zstd => ".zst",
            Coding::Gzip => ".gz",
        }
    }
}

/// The quality the client gives each coding (0 = not acceptable), from every
/// `Accept-Encoding` field. `*` covers codings not named.
pub(crate) fn accepted(headers: &HeaderMap) -> [u16; 3] {
    let mut named: [Option<u16>; 3] = [None; 3];
    let mut star: Option<u16> = None;
    for field in headers.get_all(ACCEPT_ENCODING).iter().filter_map(|v| v.to_str().ok()) {
        for item in field.split(',') {
            let mut pieces = item.split(';');
            let name = pieces.next().unwrap_or("").trim();
            let q =
                pieces.find_map(|p| p.trim().strip_prefix("q=").or(p.trim().strip_prefix("Q="))).map_or(1000, qvalue);
            let slot = match name.to_ascii_lowercase().as_str() {
                "br" => Some(0),
                "zstd" => Some(1),
                "gzip" | "x-gzip" => Some(2),
                "*" => {
                    star = Some(q);
                    None
                }
                _ => None,
            };
            if let Some(i) = slot {
                named[i] = Some(q);
            }
        }
    }
    [0, 1, 2].map(|i| named[i].or(star).unwrap_or(0))
}

/// A qvalue (`0`, `0.5`, `1.000`) in thousandths; malformed counts as 0.
fn qvalue(s: &str) -> u16 {
    let s = s.trim();
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return 0;
    }
    let mut thousandths: u16 = 0;
    for (i, b) in frac.bytes().enumerate() {
        thousandths += u16::from(b - b'0') * [100, 10, 1][i];
    }
    match int {
        "1" => 1000,
        "0" => thousandths,
        _ => 0,
    }
}

/// The best of `available` codings by the client's qualities (ties go to
/// the server's order); `None` means identity.
pub(crate) fn choose(quality: [u16; 3], available: impl Fn(Coding) -> bool) -> Option<Coding> {
    let mut best: Option<(Coding, u16)> = None;
    for (i, coding) in Coding::ALL.into_iter().enumerate() {
        let q = quality[i];
        if q > 0 && available(coding) && best.is_none_or(|(_, bq)| q > bq) {
            best = Some((coding, q));
        }
    }
    best.map(|(c, _)| c)
}

/// Compresses `data` with gzip at level 6 (a good ratio for text; it runs
/// once per file version, on the blocking pool, and the result is cached).
pub(crate) fn gzip(data: &[u8]) -> std::io::Result<Bytes> {
    let mut encoder =
        flate2::write::GzEncoder::new(Vec::with_capacity(data.len() / 3 + 64), flate2::Compression::new(6));
    encoder.write_all(data)?;
    Ok(Bytes::from(encoder.finish()?))
}

/// Types worth compressing: text, JSON, JavaScript, XML, SVG, WebAssembly.
pub(crate) fn compressible(mime: &mime_guess::Mime) -> bool {
    let essence = mime.essence_str();
    mime.type_() == mime_guess::mime::TEXT
        || matches!(
            essence,
            "application/javascript"
                | "application/json"
                | "application/xml"
                | "application/wasm"
                | "image/svg+xml"
                | "application/manifest+json"
                | "application/ld+json"
        )
        || essence.ends_with("+json")
        || essence.ends_with("+xml")
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn q(field: &str) -> [u16; 3] {
        let mut h = HeaderMap::new();
        h.insert(ACCEPT_ENCODING, HeaderValue::from_str(field).unwrap());
        accepted(&h)
    }

    #[test]
    fn qualities() {
        assert_eq!(q("gzip"), [0, 0, 1000]);
        assert_eq!(q("br, gzip;q=0.5"), [1000, 0, 500]);
        assert_eq!(q("br;q=0, gzip"), [0, 0, 1000]);
        assert_eq!(q("*"), [1000, 1000, 1000]);
        assert_eq!(q("*;q=0.1, br;q=0"), [0, 100, 100]);
        assert_eq!(q("zstd;q=0.25, x-gzip"), [0, 250, 1000]);
        assert_eq!(q("gzip;q=2"), [0, 0, 0]);
        assert_eq!(accepted(&HeaderMap::new()), [0, 0, 0]);
    }

    #[test]
    fn choice_follows_quality_then_server_order() {
        let all = |_| true;
        assert_eq!(choose(q("gzip, br"), all), Some(Coding::Brotli));
        assert_eq!(choose(q("gzip, br;q=0.5"), all), Some(Coding::Gzip));
        assert_eq!(choose(q("br;q=0, gzip"), all), Some(Coding::Gzip));
        assert_eq!(choose(q("zstd"), all), Some(Coding::Zstd));
        assert_eq!(choose(q("identity"), all), None);
        assert_eq!(choose(q("br, gzip"), |c| c == Coding::Gzip), Some(Coding::Gzip));
        assert_eq!(choose(q("br"), |c| c == Coding::Gzip), None);
    }

    #[test]
    fn gzip_round_trips() {
        let data = "hello hello hello hello ".repeat(200);
        let packed = gzip(data.as_bytes()).unwrap();
        assert!(packed.len() < data.len() / 5);
        let mut out = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut out).unwrap();
        assert_eq!(out, data);
    }

    #[test]
    fn compressible_types() {
        for t in ["text/css", "application/javascript", "application/json", "image/svg+xml", "text/plain"] {
            assert!(compressible(&t.parse().unwrap()), "{t}");
        }
        for t in ["image/png", "application/octet-stream", "application/gzip", "video/mp4"] {
            assert!(!compressible(&t.parse().unwrap()), "{t}");
        }
    }
}
