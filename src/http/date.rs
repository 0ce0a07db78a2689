//! The `Date` header value, formatted once per second per shard.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Tue, 24 Nov 2026 15:40:14 GMT`.
pub const DATE_LEN: usize = 29;

thread_local! {
    static CACHED: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((0, [0; DATE_LEN])) };
}

/// Returns the current time as an HTTP date, reformatted only when the second changes.
pub fn http_date() -> [u8; DATE_LEN] {
    let now = SystemTime::now();
    let secs = now.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    CACHED.with(|cell| {
        let (cached_secs, bytes) = cell.get();
        if cached_secs == secs {
            return bytes;
        }
        let mut fresh = [0u8; DATE_LEN];
        let text = httpdate::fmt_http_date(now);
        fresh.copy_from_slice(&text.as_bytes()[..DATE_LEN]);
        cell.set((secs, fresh));
        fresh
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_a_parseable_date() {
        let d = http_date();
        let s = std::str::from_utf8(&d).unwrap();
        assert!(s.ends_with(" GMT"), "{s}");
        httpdate::parse_http_date(s).unwrap();
        assert_eq!(http_date(), d, "same second, same bytes (cached)");
    }
}
