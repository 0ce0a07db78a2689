//! The per-shard side of the shared services: broadcast subscribers and
//! fan-out, next to the instance's [`SharedState`].

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::rc::{Rc, Weak};
use std::sync::Arc;

use futures_channel::oneshot;

use super::bus::{BusError, Message};
use crate::mount::ShardInfo;
use crate::observe::ShardLog;
use crate::observe::metrics::{ShardMetrics, ShardSnapshot};
use crate::observe::peers::Peers;
use crate::state::{Event, SharedState};

thread_local! {
    /// The services of the shard this thread runs (one shard per thread).
    static CURRENT: RefCell<Weak<ShardServices>> = const { RefCell::new(Weak::new()) };
}

/// A subscriber callback on one shard.
type Callback = Rc<dyn Fn(&Event)>;

/// Subscribers of one shard by event name, each with its subscription id.
type SubscriberMap = HashMap<Box<str>, Vec<(u64, Callback)>>;

/// A subscriber for every shard, registered on the engine before start.
pub(crate) type GlobalSubscriber = (String, Arc<dyn Fn(&Event) + Send + Sync>);

/// What a shard offers its handlers beyond the request: shared state, its
/// broadcast subscribers, and fan-out to every shard.
pub(crate) struct ShardServices {
    pub(crate) info: ShardInfo,
    pub(crate) state: SharedState,
    subscribers: RefCell<SubscriberMap>,
    next_id: Cell<u64>,
    /// The WebSocket rooms with members on this shard.
    pub(crate) ws_rooms: RefCell<crate::ws::rooms::Rooms>,
    /// This shard's counters and histograms.
    pub(crate) metrics: ShardMetrics,
    /// This shard's request log buffer, when the request log is on.
    pub(crate) log: Option<ShardLog>,
    /// The other workers' metrics, with more than one worker.
    pub(crate) peers: Option<Arc<Peers>>,
}

impl std::fmt::Debug for ShardServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardServices").field("shard", &self.info.id).finish_non_exhaustive()
    }
}

impl ShardServices {
    /// Services for shard `info`, with the engine-wide subscribers installed.
    pub(crate) fn new(
        info: ShardInfo,
        state: SharedState,
        global: &[GlobalSubscriber],
        metrics: ShardMetrics,
        log: Option<ShardLog>,
        peers: Option<Arc<Peers>>,
    ) -> Rc<ShardServices> {
        let services = Rc::new(ShardServices {
            info,
            state,
            subscribers: RefCell::new(HashMap::new()),
            next_id: Cell::new(0),
            ws_rooms: RefCell::default(),
            metrics,
            log,
            peers,
        });
        for (event, f) in global {
            let f = f.clone();
            services.subscribe(event, move |e| f(e)).keep();
        }
        CURRENT.with(|current| *current.borrow_mut() = Rc::downgrade(&services));
        services
    }

    /// The services of the shard running on this thread (for fan-out
    /// closures, which get only the shard's [`ShardInfo`]).
    pub(crate) fn current() -> Option<Rc<ShardServices>> {
        CURRENT.with(|current| current.borrow().upgrade())
    }

    /// A copy of this shard's metrics.
    pub(crate) fn snapshot(&self, shard: usize) -> ShardSnapshot {
        let mut snapshot = self.metrics.snapshot();
        // Numbered across workers, so each shard of the instance has its own number.
        snapshot.shard = self.state.instance_shard(shard);
        snapshot.log_dropped = self.log.as_ref().map_or(0, ShardLog::dropped);
        snapshot
    }

    /// Calls `f` for every `event` broadcast while the returned guard lives.
    pub(crate) fn subscribe(self: &Rc<Self>, event: &str, f: impl Fn(&Event) + 'static) -> Subscription {
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        self.subscribers.borrow_mut().entry(event.into()).or_default().push((id, Rc::new(f)));
        Subscription { services: Rc::downgrade(self), event: event.into(), id }
    }

    fn unsubscribe(&self, event: &str, id: u64) {
        let mut subscribers = self.subscribers.borrow_mut();
        if let Some(list) = subscribers.get_mut(event) {
            list.retain(|(i, _)| *i != id);
            if list.is_empty() {
                subscribers.remove(event);
            }
        }
    }

    /// Calls the subscribers of `event.name()`; a panicking subscriber is
    /// logged and the others still run. Subscribers may subscribe and
    /// unsubscribe while being called.
    pub(crate) fn deliver(&self, event: &Event) {
        let callbacks: Vec<Callback> = match self.subscribers.borrow().get(event.name()) {
            Some(list) => list.iter().map(|(_, f)| f.clone()).collect(),
            None => return,
        };
        for f in callbacks {
            if std::panic::catch_unwind(AssertUnwindSafe(|| f(event))).is_err() {
                tracing::error!(shard = self.info.id, event = event.name(), "broadcast subscriber panicked");
            }
        }
    }

    /// Runs `f` on every shard (this one included) and gathers the answers in shard order.
    pub(crate) async fn fan_out<T, F>(&self, f: F) -> Result<Vec<T>, BusError>
    where
        F: Fn(&ShardInfo) -> T + Send + Sync + 'static,
        T: Send + 'static,
    {
        let f = Arc::new(f);
        let bus = self.state.bus();
        let mut answers = Vec::with_capacity(bus.shards());
        let sent = bus.to_every_shard(|_| {
            let (tx, rx) = oneshot::channel::<Option<T>>();
            answers.push(rx);
            let f = f.clone();
            Message::Run(Box::new(move |info| {
                let answer = std::panic::catch_unwind(AssertUnwindSafe(|| f(info)));
                if answer.is_err() {
                    tracing::error!(shard = info.id, "fan-out closure panicked");
                }
                let _ = tx.send(answer.ok());
            }))
        });
        let mut error = sent.err().unwrap_or_default();
        let mut out = Vec::with_capacity(answers.len());
        for (shard, rx) in answers.into_iter().enumerate() {
            match rx.await {
                Ok(Some(v)) => out.push(v),
                Ok(None) => error.panicked.push(shard),
                // Not queued (already listed), or dropped by a shard that stopped.
                Err(oneshot::Canceled) => {
                    if !error.full.contains(&shard) && !error.stopped.contains(&shard) {
                        error.stopped.push(shard);
                    }
                }
            }
        }
        if error.is_empty() { Ok(out) } else { Err(error) }
    }
}

/// A broadcast subscription on one shard; dropping it unsubscribes.
#[must_use = "dropping a Subscription unsubscribes at once; call .keep() to keep it for the shard's life"]
pub struct Subscription {
    services: Weak<ShardServices>,
    event: Box<str>,
    id: u64,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("event", &self.event).finish_non_exhaustive()
    }
}

impl Subscription {
    /// Keeps the subscription for as long as the shard runs.
    pub fn keep(mut self) {
        self.services = Weak::new();
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if let Some(services) = self.services.upgrade() {
            services.unsubscribe(&self.event, self.id);
        }
    }
}
