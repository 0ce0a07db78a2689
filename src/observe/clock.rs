//! The request clock: monotonic time as whole nanoseconds.
//!
//! Every request reads the clock twice (when it starts, when its handler
//! returns) and subtracts twice (handling time, busy time). With
//! [`std::time::Instant`] the subtraction is `Timespec` arithmetic with
//! carries and checks, about as costly as reading the clock; a plain
//! nanosecond count makes it one instruction.

use std::time::Duration;

/// A point on the monotonic clock (`CLOCK_MONOTONIC`), in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Tick(u64);

impl Tick {
    /// Now.
    #[inline]
    pub(crate) fn now() -> Tick {
        Tick::read(libc::CLOCK_MONOTONIC)
    }

    /// Now on the coarse clock (`CLOCK_MONOTONIC_COARSE`): cheaper still,
    /// but up to a few milliseconds behind [`Tick::now`]. Meant for
    /// deadlines of seconds; compare coarse ticks only with each other.
    #[inline]
    pub(crate) fn coarse() -> Tick {
        Tick::read(libc::CLOCK_MONOTONIC_COARSE)
    }

    /// `clock` now, as a tick.
    #[inline]
    fn read(clock: libc::clockid_t) -> Tick {
        let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec; both monotonic clocks
        // exist on every Linux we run on (COARSE since 2.6.32), so the call
        // cannot fail (it is a vDSO read).
        unsafe { libc::clock_gettime(clock, &mut ts) };
        Tick(ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64)
    }

    /// This tick plus `duration` (saturating: a tick never wraps).
    #[inline]
    pub(crate) fn after(self, duration: Duration) -> Tick {
        Tick(self.0.saturating_add(u64::try_from(duration.as_nanos()).unwrap_or(u64::MAX)))
    }

    /// The time from `earlier` to this tick; zero if `earlier` is later.
    #[inline]
    pub(crate) fn since(self, earlier: Tick) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The time from this tick to now.
    pub(crate) fn elapsed(self) -> Duration {
        Tick::now().since(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_follow_the_monotonic_clock() {
        let (tick, instant) = (Tick::now(), std::time::Instant::now());
        std::thread::sleep(Duration::from_millis(20));
        let (by_tick, by_instant) = (tick.elapsed(), instant.elapsed());
        assert!(by_tick >= Duration::from_millis(20), "{by_tick:?}");
        // Both read CLOCK_MONOTONIC: they agree to well within a millisecond.
        let apart = by_tick.abs_diff(by_instant);
        assert!(apart < Duration::from_millis(1), "tick {by_tick:?}, instant {by_instant:?}");
        assert_eq!(tick.since(Tick::now()), Duration::ZERO, "an earlier tick minus a later one is zero");
        let coarse = Tick::coarse();
        assert!(coarse <= Tick::now(), "the coarse clock is never ahead");
        assert_eq!(coarse.after(Duration::from_secs(2)).since(coarse), Duration::from_secs(2));
        assert_eq!(coarse.after(Duration::MAX), Tick(u64::MAX), "saturates");
    }
}
