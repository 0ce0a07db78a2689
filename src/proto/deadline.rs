//! A reusable per-connection timer for exact I/O timeouts.
//!
//! A fresh `timeout()` per read would allocate and register a 512-byte timer
//! entry every time; a connection instead keeps one boxed `Sleep`. Even
//! resetting it (a wheel re-registration) was the larger part of a timed
//! read's cost, so it is reset lazily, as nginx does with its timers: a
//! wait that ends later than the timer is set leaves it be; the timer then
//! fires early, once, and the wait moves it to its real deadline.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use monoio::time::{Instant, Sleep};

use crate::observe::Tick;

/// Far enough away to never fire before it is reset.
const IDLE: Duration = Duration::from_secs(24 * 3600);

/// One timer, reused for every wait of a connection.
pub(crate) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    /// When `sleep` fires, on the coarse clock (deadlines here are seconds
    /// long; the coarse clock costs a third of a precise read); never later
    /// than the deadline of the wait in progress.
    fires: Tick,
}

impl Deadline {
    /// A timer that is not armed yet.
    pub(crate) fn new() -> Deadline {
        let fires = Tick::coarse().after(IDLE);
        Deadline { sleep: Box::pin(monoio::time::sleep(IDLE)), fires }
    }

    /// Runs `fut` for at most `timeout`; `None` if time ran out first (and
    /// `fut` was dropped, cancelling its I/O).
    ///
    /// A plain function returning a small future, not an `async fn`: the
    /// I/O future goes into it once instead of being moved into an
    /// `async fn`'s state and pinned again. On the hot paths callers pass
    /// it pinned where it was made (`pin!(...)`), which moves only a
    /// pointer: I/O futures are a few hundred bytes, copied twice a request.
    #[inline]
    pub(crate) fn limit<F: Future>(&mut self, timeout: Duration, fut: F) -> Limit<'_, F> {
        let now = Tick::coarse();
        let deadline = now.after(timeout);
        if self.fires > deadline {
            self.set(deadline, now);
        }
        Limit { fut, deadline, timer: self }
    }

    /// Sets the timer to fire at `deadline`; `now` is the coarse clock's now.
    fn set(&mut self, deadline: Tick, now: Tick) {
        self.sleep.as_mut().reset(Instant::now() + deadline.since(now));
        self.fires = deadline;
    }
}

pin_project_lite::pin_project! {
    /// A future cut short at a deadline; see [`Deadline::limit`].
    pub(crate) struct Limit<'a, F> {
        // (pin-project-lite takes no doc comments on fields.)
        // The wait being limited.
        #[pin]
        fut: F,
        // When it is cut short, on the coarse clock.
        deadline: Tick,
        // The connection's timer.
        timer: &'a mut Deadline,
    }
}

impl<F: Future> Future for Limit<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.fut.poll(cx) {
            return Poll::Ready(Some(output));
        }
        loop {
            match this.timer.sleep.as_mut().poll(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(()) if this.timer.fires >= *this.deadline => return Poll::Ready(None),
                // Set by an earlier wait with a nearer deadline: wait on.
                Poll::Ready(()) => this.timer.set(*this.deadline, Tick::coarse()),
            }
        }
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
            // Deadlines are kept on the coarse clock, a few ms behind.
            let slack = ms(15);
            let mut deadline = Deadline::new();
            // The first wait sets the timer 100 ms away and finishes at once.
            assert_eq!(deadline.limit(ms(100), async { 1 }).await, Some(1));
            // A later deadline leaves the timer at 100 ms: it fires early and
            // the wait goes on to its own end (the 200 ms sleep finishes).
            let started = Instant::now();
            assert_eq!(deadline.limit(ms(300), monoio::time::sleep(ms(200))).await, Some(()));
            assert!(started.elapsed() >= ms(200) - slack);
            // An earlier deadline than the timer's setting moves it nearer.
            let started = Instant::now();
            assert!(deadline.limit(ms(50), monoio::time::sleep(Duration::from_secs(60))).await.is_none());
            let waited = started.elapsed();
            assert!(waited >= ms(50) - slack && waited < Duration::from_secs(5), "{waited:?}");
            // Timing out after an early firing: not before the wait's own deadline.
            assert_eq!(deadline.limit(ms(100), async { 2 }).await, Some(2));
            let started = Instant::now();
            assert!(deadline.limit(ms(250), monoio::time::sleep(Duration::from_secs(60))).await.is_none());
            let waited = started.elapsed();
            assert!(waited >= ms(250) - slack && waited < Duration::from_secs(5), "{waited:?}");
        });
    }
}
