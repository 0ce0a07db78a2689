//! Observability: the request log, transaction ids, per-shard metrics with
//! latency histograms, the admin endpoints (metrics, status page, health),
//! and the load estimate behind 503 shedding.

pub(crate) mod access_log;
pub(crate) mod admin;
pub(crate) mod clock;
pub(crate) mod metrics;
pub(crate) mod output;
pub(crate) mod peers;
mod txn;

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, Uri, Version};

pub use output::APP_TARGET;
pub use txn::{FIRST_LTXID, GTXN_HEADER, LTXN_HEADER, TxnIds};

use crate::config::LogFormat;
use crate::http::Request;
use access_log::{LogOff, Outcome, RequestFacts, format_line};
pub(crate) use clock::Tick;
use metrics::ShardMetrics;
use output::RequestSink;

/// A shard's request log buffer is handed to the log thread once it holds this much.
const LOG_BATCH: usize = 32 * 1024;
/// ... or at least this often.
pub(crate) const LOG_FLUSH_EVERY: Duration = Duration::from_millis(200);

/// The request log as the shards share it: format, `log_off` rules, sink.
#[derive(Debug)]
pub(crate) struct RequestLog {
    pub(crate) format: LogFormat,
    pub(crate) off: LogOff,
    pub(crate) sink: Arc<RequestSink>,
}

/// One shard's side of the request log: lines gather in a buffer that goes
/// to the log thread in batches (never a write per request).
#[derive(Debug)]
pub(crate) struct ShardLog {
    shared: Arc<RequestLog>,
    buf: RefCell<Vec<u8>>,
}

impl ShardLog {
    /// A buffer for this shard.
    pub(crate) fn new(shared: Arc<RequestLog>) -> ShardLog {
        ShardLog { shared, buf: RefCell::new(Vec::with_capacity(LOG_BATCH + 1024)) }
    }

    /// True when a request for `path` is logged.
    pub(crate) fn wants(&self, path: &str) -> bool {
        !self.shared.off.matches(path)
    }

    fn write(&self, facts: &RequestFacts, outcome: &Outcome<'_>) {
        let mut buf = self.buf.borrow_mut();
        format_line(self.shared.format, facts, outcome, &mut buf);
        if buf.len() >= LOG_BATCH {
            let full = std::mem::take(&mut *buf);
            *buf = self.shared.sink.send(full);
        }
    }

    /// Hands what the buffer holds to the log thread.
    pub(crate) fn flush(&self) {
        let mut buf = self.buf.borrow_mut();
        if !buf.is_empty() {
            let full = std::mem::take(&mut *buf);
            *buf = self.shared.sink.send(full);
        }
    }

    /// Lines dropped because the log thread fell behind.
    pub(crate) fn dropped(&self) -> u64 {
        self.shared.sink.dropped()
    }
}

/// One request under observation, from its head to its last byte: it counts
/// as in flight on the shard until dropped, and [`Exchange::finish`] logs and
/// counts it.
pub(crate) struct Exchange<'s> {
    metrics: &'s ShardMetrics,
    log: Option<&'s ShardLog>,
    shard: usize,
    peer: IpAddr,
    version: Version,
    /// Boxed: only a logged request pays for it, and the exchange stays small
    /// (it lives in every request's future).
    facts: Option<Box<RequestFacts>>,
    /// The request's transaction ids.
    pub(crate) txn: TxnIds,
    /// When the request started.
    pub(crate) started: Tick,
    /// The mount that answered (its metrics slot).
    pub(crate) slot: usize,
    /// How long the handler kept the shard busy, when a handler ran.
    pub(crate) busy: Option<Duration>,
    /// When the handler returned (the end of its last poll), when one ran.
    pub(crate) answered: Option<Tick>,
    /// Counted in the metrics (admin requests are not: scrapes would skew them).
    counted: bool,
}

impl<'s> Exchange<'s> {
    /// Starts observing a request on shard `shard`. An uncounted one (an
    /// admin request: a scrape or a health check) is neither counted, nor
    /// in flight, nor logged; it still gets transaction ids.
    pub(crate) fn begin(
        metrics: &'s ShardMetrics,
        log: Option<&'s ShardLog>,
        shard: usize,
        peer: IpAddr,
        request: RequestHead<'_>,
        counted: bool,
    ) -> Self {
        let RequestHead { method, uri, version, headers, txn } = request;
        if counted {
            metrics.enter();
        }
        let log = log.filter(|_| counted);
        let facts =
            log.filter(|l| l.wants(uri.path())).map(|_| Box::new(RequestFacts::of(method, uri, version, headers)));
        let txn = match txn {
            Some((gtxid, ltxid)) => TxnIds::of_fields(gtxid, ltxid, shard),
            None => TxnIds::of_request(headers, shard),
        };
        Exchange {
            metrics,
            log,
            started: Tick::now(),
            shard,
            peer,
            version,
            facts,
            txn,
            slot: metrics.engine_slot(),
            busy: None,
            answered: None,
            counted,
        }
    }

    /// The request is answered with `status`: `handled` is when its
    /// response was ready, the byte counts are of the bodies actually
    /// received and sent.
    #[inline(always)]
    pub(crate) fn finish(self, status: u16, request_bytes: u64, response_bytes: u64, handled: Tick) {
        // Inlined, so the exchange is not copied into a call; the log line
        // (when there is one) is written out of line.
        let handling = handled.since(self.started);
        if self.counted {
            self.metrics.record(self.version, status, self.slot, handling, request_bytes, response_bytes);
        }
        if self.facts.is_some() {
            self.log(status, request_bytes, response_bytes, handled, handling);
        }
    }

    /// Writes the access log line of a finished exchange.
    #[inline(never)]
    fn log(&self, status: u16, request_bytes: u64, response_bytes: u64, handled: Tick, handling: Duration) {
        if let (Some(log), Some(facts)) = (self.log, &self.facts) {
            let outcome = Outcome {
                peer: self.peer,
                status,
                request_bytes,
                response_bytes,
                shard: self.shard,
                handling,
                delivery: handled.elapsed(),
                txn: &self.txn,
                connections: self.metrics.connections(),
            };
            log.write(facts, &outcome);
        }
    }
}

impl Exchange<'_> {
    /// When the response was ready: when the handler returned, or now.
    pub(crate) fn answered_at(&self) -> Tick {
        self.answered.unwrap_or_else(Tick::now)
    }

    /// False for admin requests, which are not counted, shed or logged.
    pub(crate) fn counted(&self) -> bool {
        self.counted
    }
}

impl Drop for Exchange<'_> {
    fn drop(&mut self) {
        if self.counted {
            self.metrics.leave(self.busy);
        }
    }
}

/// What [`Exchange::begin`] reads of a request.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RequestHead<'a> {
    pub(crate) method: &'a Method,
    pub(crate) uri: &'a Uri,
    pub(crate) version: Version,
    pub(crate) headers: &'a HeaderMap,
    /// The transaction id fields, when the parser already found them
    /// (`None`: look them up in `headers`).
    pub(crate) txn: Option<(Option<&'a HeaderValue>, Option<&'a HeaderValue>)>,
}

impl<'a> RequestHead<'a> {
    /// The head of `req`.
    pub(crate) fn of(req: &'a Request) -> Self {
        RequestHead { method: req.method(), uri: req.uri(), version: req.version(), headers: req.headers(), txn: None }
    }
}
