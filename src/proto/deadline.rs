//! A reusable per-connection timer for exact I/O timeouts.
//!
//! A fresh `timeout()` per read would allocate and register a 512-byte timer
//! entry every time; a connection instead keeps one boxed `Sleep` and resets
//! it before each wait, which costs a wheel re-registration and nothing else.

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
}

impl Deadline {
    /// A timer that is not armed yet.
    pub(crate) fn new() -> Deadline {
        Deadline { sleep: Box::pin(monoio::time::sleep(IDLE)) }
    }

    /// Runs `fut` for at most `timeout`; `None` if time ran out first (and
    /// `fut` was dropped, cancelling its I/O).
    pub(crate) async fn limit<F: Future>(&mut self, timeout: Duration, fut: F) -> Option<F::Output> {
        self.sleep.as_mut().reset(Instant::now() + timeout);
        match select(pin!(fut), self.sleep.as_mut()).await {
            Either::Left((output, _)) => Some(output),
            Either::Right(_) => None,
        }
    }
}
