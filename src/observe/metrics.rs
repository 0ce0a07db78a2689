//! Per-shard metrics: plain cells on the shard (no locks, no atomics on the
//! request path), copied into a [`ShardSnapshot`] when someone reads them.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use hdrhistogram::Histogram;
use http::Version;
use serde::{Deserialize, Serialize};

/// Highest handling time a histogram records exactly (an hour, in µs); longer ones count as this.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;
/// Significant figures the histograms keep.
const HISTOGRAM_PRECISION: u8 = 2;
/// Weight of the newest request in the moving average of busy time (1/16).
const BUSY_EWMA_SHIFT: u32 = 4;

/// The protocols requests are counted by.
pub(crate) const PROTOCOLS: [&str; 3] = ["http/1.1", "h2", "h3"];
/// Status classes, `1xx` .. `5xx`.
pub(crate) const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// Why a request or connection was refused with 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Shed {
    /// The estimated wait was over `max_estimated_wait`.
    Estimate,
    /// The shard had `max_inflight` requests in hand.
    Inflight,
    /// The shard had `max_connections` open connections.
    Connections,
}

impl Shed {
    /// The label in the metrics.
    pub(crate) const NAMES: [&'static str; 3] = ["estimate", "inflight", "connections"];
}

fn protocol_index(version: Version) -> usize {
    match version {
        Version::HTTP_2 => 1,
        Version::HTTP_3 => 2,
        _ => 0,
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, HISTOGRAM_PRECISION).expect("valid histogram bounds")
}

/// The counters of one shard.
#[derive(Debug)]
pub(crate) struct ShardMetrics {
    requests: [[Cell<u64>; 5]; 3],
    request_bytes: Cell<u64>,
    response_bytes: Cell<u64>,
    accept_errors: Cell<u64>,
    shed: [Cell<u64>; 3],
    ws_opened: Cell<u64>,
    ws_open: Cell<u64>,
    ws_messages_in: Cell<u64>,
    ws_messages_out: Cell<u64>,
    /// Handling time per mount slot (the last slot: answers from the engine itself).
    histograms: RefCell<Vec<(Box<str>, Histogram<u64>)>>,
    in_flight: Cell<usize>,
    connections: Cell<usize>,
    draining: Cell<bool>,
    driver: Cell<&'static str>,
    /// Moving average of the time a request keeps the shard busy (polling its handler), ns.
    busy_ns: Cell<u64>,
}

impl ShardMetrics {
    /// Metrics for a shard with these mount prefixes (in mount-table order).
    pub(crate) fn new<'a>(mounts: impl Iterator<Item = &'a str>) -> ShardMetrics {
        let mut histograms: Vec<(Box<str>, Histogram<u64>)> = mounts.map(|m| (m.into(), new_histogram())).collect();
        histograms.push(("(engine)".into(), new_histogram()));
        ShardMetrics {
            requests: Default::default(),
            request_bytes: Cell::new(0),
            response_bytes: Cell::new(0),
            accept_errors: Cell::new(0),
            shed: Default::default(),
            ws_opened: Cell::new(0),
            ws_open: Cell::new(0),
            ws_messages_in: Cell::new(0),
            ws_messages_out: Cell::new(0),
            histograms: RefCell::new(histograms),
            in_flight: Cell::new(0),
            connections: Cell::new(0),
            draining: Cell::new(false),
            driver: Cell::new("?"),
            busy_ns: Cell::new(0),
        }
    }

    /// The slot of answers that came from no mount (404, redirects, refusals).
    pub(crate) fn engine_slot(&self) -> usize {
        self.histograms.borrow().len() - 1
    }

    /// Counts a finished request.
    pub(crate) fn record(
        &self,
        version: Version,
        status: u16,
        slot: usize,
        handling: Duration,
        request_bytes: u64,
        response_bytes: u64,
    ) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        bump(&self.requests[protocol_index(version)][class], 1);
        bump(&self.request_bytes, request_bytes);
        bump(&self.response_bytes, response_bytes);
        let mut histograms = self.histograms.borrow_mut();
        let last = histograms.len() - 1;
        histograms[slot.min(last)].1.saturating_record(handling.as_micros().max(1) as u64);
    }

    /// Counts a request or connection refused with 503.
    pub(crate) fn count_shed(&self, why: Shed) {
        bump(&self.shed[why as usize], 1);
    }

    /// Counts a failed accept.
    pub(crate) fn count_accept_error(&self) {
        bump(&self.accept_errors, 1);
    }

    /// Counts a WebSocket that opened; [`Self::websocket_closed`] when it ends.
    pub(crate) fn websocket_opened(&self) {
        bump(&self.ws_opened, 1);
        bump(&self.ws_open, 1);
    }

    /// Counts a WebSocket that closed.
    pub(crate) fn websocket_closed(&self) {
        self.ws_open.set(self.ws_open.get().saturating_sub(1));
    }

    /// Counts WebSocket messages received and sent.
    pub(crate) fn websocket_messages(&self, received: u64, sent: u64) {
        bump(&self.ws_messages_in, received);
        bump(&self.ws_messages_out, sent);
    }

    /// Records the shard's open connections (kept by the shard's connection table).
    pub(crate) fn set_connections(&self, n: usize) {
        self.connections.set(n);
    }

    /// The shard's open connections.
    pub(crate) fn connections(&self) -> usize {
        self.connections.get()
    }

    /// Records that the shard started draining.
    pub(crate) fn set_draining(&self) {
        self.draining.set(true);
    }

    /// True once the shard is draining (`/readyz` fails).
    pub(crate) fn draining(&self) -> bool {
        self.draining.get()
    }

    /// Records the shard's I/O driver.
    pub(crate) fn set_driver(&self, driver: &'static str) {
        self.driver.set(driver);
    }

    /// Requests being handled on the shard.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.get()
    }

    /// A request starts being handled.
    pub(crate) fn enter(&self) {
        self.in_flight.set(self.in_flight.get() + 1);
    }

    /// A request is no longer handled; `busy` is how long it kept the shard busy.
    pub(crate) fn leave(&self, busy: Option<Duration>) {
        self.in_flight.set(self.in_flight.get().saturating_sub(1));
        if let Some(busy) = busy {
            let sample = busy.as_nanos().min(u128::from(u64::MAX >> 8)) as u64;
            let old = self.busy_ns.get();
            // avg += (sample - avg) / 16, in integers.
            let new = old - (old >> BUSY_EWMA_SHIFT) + (sample >> BUSY_EWMA_SHIFT);
            self.busy_ns.set(new);
        }
    }

    /// The estimated wait of a new request: the requests in hand, each
    /// needing the shard for the recent average busy time before it.
    pub(crate) fn estimated_wait(&self) -> Duration {
        Duration::from_nanos(self.busy_ns.get().saturating_mul(self.in_flight.get() as u64))
    }

    /// A copy of everything, to send to whoever reads the metrics.
    pub(crate) fn snapshot(&self) -> ShardSnapshot {
        let get = |c: &Cell<u64>| c.get();
        ShardSnapshot {
            requests: self.requests.each_ref().map(|row| row.each_ref().map(get)),
            request_bytes: get(&self.request_bytes),
            response_bytes: get(&self.response_bytes),
            accept_errors: get(&self.accept_errors),
            shed: self.shed.each_ref().map(get),
            ws_opened: get(&self.ws_opened),
            ws_open: get(&self.ws_open),
            ws_messages_in: get(&self.ws_messages_in),
            ws_messages_out: get(&self.ws_messages_out),
            histograms: self.histograms.borrow().clone(),
            in_flight: self.in_flight.get(),
            estimated_wait: self.estimated_wait(),
            connections: self.connections.get(),
            driver: self.driver.get().to_owned(),
            draining: self.draining.get(),
            // Filled in by the shard's services, which know them.
            shard: 0,
            log_dropped: 0,
        }
    }
}

fn bump(cell: &Cell<u64>, by: u64) {
    cell.set(cell.get().wrapping_add(by));
}

/// One shard's metrics at one moment (also what a worker publishes for
/// the others to read, see [`super::peers`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ShardSnapshot {
    pub(crate) shard: usize,
    /// By protocol ([`PROTOCOLS`]) and status class ([`CLASSES`]).
    pub(crate) requests: [[u64; 5]; 3],
    pub(crate) request_bytes: u64,
    pub(crate) response_bytes: u64,
    pub(crate) accept_errors: u64,
    /// By reason ([`Shed::NAMES`]).
    pub(crate) shed: [u64; 3],
    pub(crate) ws_opened: u64,
    pub(crate) ws_open: u64,
    pub(crate) ws_messages_in: u64,
    pub(crate) ws_messages_out: u64,
    /// Handling time (µs) by mount.
    #[serde(with = "histograms_as_counts")]
    pub(crate) histograms: Vec<(Box<str>, Histogram<u64>)>,
    pub(crate) connections: usize,
    pub(crate) in_flight: usize,
    pub(crate) estimated_wait: Duration,
    pub(crate) driver: String,
    pub(crate) draining: bool,
    pub(crate) log_dropped: u64,
}

/// Histograms written as their recorded (value, count) pairs, and read
/// back into histograms of the same bounds.
mod histograms_as_counts {
    use hdrhistogram::Histogram;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    type Counts = Vec<(Box<str>, Vec<(u64, u64)>)>;
    type ByMount = Vec<(Box<str>, Histogram<u64>)>;

    pub(super) fn serialize<S: Serializer>(h: &ByMount, s: S) -> Result<S::Ok, S::Error> {
        let counts: Counts = h
            .iter()
            .map(|(mount, h)| {
                (mount.clone(), h.iter_recorded().map(|v| (v.value_iterated_to(), v.count_at_value())).collect())
            })
            .collect();
        counts.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<ByMount, D::Error> {
        let counts = Counts::deserialize(d)?;
        Ok(counts
            .into_iter()
            .map(|(mount, values)| {
                let mut h = super::new_histogram();
                for (value, count) in values {
                    h.saturating_record_n(value, count);
                }
                (mount, h)
            })
            .collect())
    }
}

/// Quantiles reported for handling times.
pub(crate) const QUANTILES: [f64; 4] = [0.5, 0.9, 0.99, 0.999];

/// Handling-time summary of one histogram, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Summary {
    pub(crate) count: u64,
    pub(crate) mean_ms: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p90_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) p999_ms: f64,
    pub(crate) max_ms: f64,
}

impl Summary {
    /// Summarises `h` (values in µs).
    pub(crate) fn of(h: &Histogram<u64>) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        let q = |q: f64| if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(q)) };
        Summary {
            count: h.len(),
            mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
            p50_ms: q(QUANTILES[0]),
            p90_ms: q(QUANTILES[1]),
            p99_ms: q(QUANTILES[2]),
            p999_ms: q(QUANTILES[3]),
            max_ms: if h.is_empty() { 0.0 } else { ms(h.max()) },
        }
    }
}

/// Per-mount histograms of every shard added together, in mount order.
pub(crate) fn merged_by_mount(shards: &[ShardSnapshot]) -> Vec<(Box<str>, Histogram<u64>)> {
    let mut merged: Vec<(Box<str>, Histogram<u64>)> = Vec::new();
    for shard in shards {
        for (mount, h) in &shard.histograms {
            match merged.iter_mut().find(|(m, _)| m == mount) {
                Some((_, total)) => {
                    let _ = total.add(h);
                }
                None => merged.push((mount.clone(), h.clone())),
            }
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_by_protocol_class_and_mount() {
        let m = ShardMetrics::new(["/api", "/"].into_iter());
        m.record(Version::HTTP_11, 200, 0, Duration::from_millis(3), 10, 20);
        m.record(Version::HTTP_2, 503, 1, Duration::from_millis(1), 0, 5);
        m.record(Version::HTTP_11, 404, m.engine_slot(), Duration::from_micros(10), 0, 5);
        let s = m.snapshot();
        assert_eq!(s.requests[0][1], 1);
        assert_eq!(s.requests[1][4], 1);
        assert_eq!(s.requests[0][3], 1);
        assert_eq!((s.request_bytes, s.response_bytes), (10, 30));
        assert_eq!(s.histograms[0].1.len(), 1);
        assert_eq!(&*s.histograms[2].0, "(engine)");
        let summary = Summary::of(&s.histograms[0].1);
        assert!((2.9..3.1).contains(&summary.p50_ms), "{summary:?}");
    }

    #[test]
    fn estimated_wait_follows_busy_time_and_requests_in_hand() {
        let m = ShardMetrics::new(std::iter::empty());
        for _ in 0..200 {
            m.enter();
            m.leave(Some(Duration::from_millis(100)));
        }
        assert_eq!(m.estimated_wait(), Duration::ZERO, "nothing in hand, nothing to wait for");
        for _ in 0..30 {
            m.enter();
        }
        let wait = m.estimated_wait();
        assert!(wait > Duration::from_millis(2900) && wait <= Duration::from_secs(3), "{wait:?}");
    }
}
