//! The `Date` header value, formatted once per second per shard.

use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate such as `Tue, 24 Nov 2026 15:40:14 GMT`.
pub const DATE_LEN: usize = 29;

thread_local! {
    static CACHED: Cell<(u64, [u8; DATE_LEN])> = const { Cell::new((0, [0; DATE_LEN])) };
}

/// Seconds since the Unix epoch from the coarse real-time clock: a few
/// nanoseconds instead of a full clock read, precise to a few milliseconds,
/// which is plenty for a value shown in whole seconds.
pub fn coarse_unix_secs() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we pass, which lives on our stack.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    if rc == 0 {
        ts.tv_sec.max(0) as u64
    } else {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    }
}

/// Returns the current time as an HTTP date, reformatted only when the second changes.
pub fn http_date() -> [u8; DATE_LEN] {
    http_date_at(coarse_unix_secs())
}

/// [`http_date`] for `secs` since the Unix epoch, a second the caller has
/// just read from [`coarse_unix_secs`].
pub fn http_date_at(secs: u64) -> [u8; DATE_LEN] {
    CACHED.with(|cell| {
        let (cached_secs, bytes) = cell.get();
        if cached_secs == secs {
            return bytes;
        }
        let mut fresh = [0u8; DATE_LEN];
        let text = httpdate::fmt_http_date(UNIX_EPOCH + std::time::Duration::from_secs(secs));
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
