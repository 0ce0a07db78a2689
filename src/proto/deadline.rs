//! A reusable per-connection timer for exact I/O timeouts.
//!
//! A fresh `timeout()` per read would allocate and register a 512-byte timer
//! entry every time; a connection instead keeps one boxed `Sleep`. Even
//! resetting it (a wheel re-registration) was the larger part of a timed
//! read's cost, so it is reset lazily, as nginx does with its timers: a
//! wait that ends later than the timer is set leaves it be; the timer then
//! fires early, once, and the wait moves it to its real deadline.

use std::future::Future;
use std::pin::{Pin, pin};
use std::time::Duration;

use futures_util::future::{Either, select};
use monoio::time::{Instant, Sleep};

/// Far enough away to never fire before it is reset.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// One timer, reused for every wait of a connection.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// When `sleep` fires; never later than the deadline of the wait in progress.
    fires: Instant,
}

impl Deadline {
    /// A timer that is not armed yet.
    pub(crate) fn new() -> Deadline {
        let fires = Instant::now() + IDLE;
        Deadline { sleep: Box::pin(monoio::time::sleep_until(fires)), fires }
    }

    /// Runs `fut` for at most `timeout`; `None` if time ran out first (and
    /// `fut` was dropped, cancelling its I/O).
    pub(crate) async fn limit<F: Future>(&mut self, timeout: Duration, fut: F) -> Option<F::Output> {
        let deadline = Instant::now() + timeout;
        if self.fires > deadline {
            self.set(deadline);
        }
        let mut fut = pin!(fut);
        loop {
            match select(fut.as_mut(), self.sleep.as_mut()).await {
                Either::Left((output, _)) => return Some(output),
                Either::Right(_) if self.fires >= deadline => return None,
                // Set by an earlier wait with a nearer deadline: wait on.
                Either::Right(_) => self.set(deadline),
            }
        }
    }

    fn set(&mut self, at: Instant) {
        self.sleep.as_mut().reset(at);
        self.fires = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run<F: Future>(fut: F) -> F::Output {
        monoio::RuntimeBuilder::<monoio::LegacyDriver>::new().enable_timer().build().expect("runtime").block_on(fut)
    }

    #[test]
    fn each_wait_ends_at_its_own_deadline() {
        run(async {
            let ms = Duration::from_millis;
            let mut deadline = Deadline::new();
            // The first wait sets the timer 100 ms away and finishes at once.
            assert_eq!(deadline.limit(ms(100), async { 1 }).await, Some(1));
            // A later deadline leaves the timer at 100 ms: it fires early and
            // the wait goes on to its own end (the 200 ms sleep finishes).
            let started = Instant::now();
            assert_eq!(deadline.limit(ms(300), monoio::time::sleep(ms(200))).await, Some(()));
            assert!(started.elapsed() >= ms(200));
            // An earlier deadline than the timer's setting moves it nearer.
            let started = Instant::now();
            assert!(deadline.limit(ms(50), monoio::time::sleep(Duration::from_secs(60))).await.is_none());
            let waited = started.elapsed();
            assert!(waited >= ms(50) && waited < Duration::from_secs(5), "{waited:?}");
            // Timing out after an early firing: not before the wait's own deadline.
            assert_eq!(deadline.limit(ms(100), async { 2 }).await, Some(2));
            let started = Instant::now();
            assert!(deadline.limit(ms(250), monoio::time::sleep(Duration::from_secs(60))).await.is_none());
            let waited = started.elapsed();
            assert!(waited >= ms(250) && waited < Duration::from_secs(5), "{waited:?}");
        });
    }
}
