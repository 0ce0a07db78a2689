//! The cross-shard bus: one inbox per shard, written by any thread, read by
//! the shard's own runtime.
//!
//! An inbox is two lock-free queues and a waker. Control messages (drain,
//! stop) go into an unbounded queue and are never lost. Everything else
//! (broadcasts, work to run on a shard) goes into a bounded queue: when it
//! is full the message is dropped for that shard, counted in the state
//! file (`skitai status` shows it), and the sender gets a [`BusError`]
//! naming the shard. A sender pushes, then wakes; the receiver registers its
//! waker, then looks: no wake-up is lost and nobody polls in a loop.
//!
//! A shard that stops closes its inbox (senders then get an error) and runs
//! what was already queued, so nothing accepted is silently dropped.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll};

use crossbeam_queue::{ArrayQueue, SegQueue};
use futures_util::task::AtomicWaker;

use crate::mount::ShardInfo;
use crate::state::Event;
use crate::state::layout::shard as shard_line;
use crate::state::shm::StateFile;

/// Messages handled per wake-up before the bus task yields to connections.
pub(crate) const BATCH: usize = 256;

/// Engine-to-shard control messages; never dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Stop accepting, finish in-flight requests, close idle connections, exit.
    Drain,
    /// Exit now (the shutdown deadline passed).
    Stop,
}

/// Work the shard runs with its shard facts (fan-out).
pub(crate) type Job = Box<dyn FnOnce(&ShardInfo) + Send>;

/// What travels through a shard's bounded queue.
pub(crate) enum Message {
    /// An event for the shard's subscribers.
    Broadcast(Arc<Event>),
    /// A closure to run on the shard.
    Run(Job),
}

/// Messages that did not reach some shards (or, for fan-out, shards that gave no answer).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BusError {
    /// Shards whose queue was full; the message was dropped there (and counted).
    pub full: Vec<usize>,
    /// Shards that have stopped.
    pub stopped: Vec<usize>,
    /// Shards where the fan-out closure panicked.
    pub panicked: Vec<usize>,
}

impl BusError {
    /// True when every shard was reached.
    pub fn is_empty(&self) -> bool {
        self.full.is_empty() && self.stopped.is_empty() && self.panicked.is_empty()
    }
}

impl std::fmt::Display for BusError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids = |shards: &[usize]| shards.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
        let mut parts = Vec::with_capacity(3);
        if !self.full.is_empty() {
            parts.push(format!("{} (queue full)", ids(&self.full)));
        }
        if !self.stopped.is_empty() {
            parts.push(format!("{} (stopped)", ids(&self.stopped)));
        }
        if !self.panicked.is_empty() {
            parts.push(format!("{} (panicked)", ids(&self.panicked)));
        }
        write!(f, "not delivered to shard(s) {}", parts.join("; "))
    }
}

impl std::error::Error for BusError {}

struct Inbox {
    control: SegQueue<Control>,
    messages: ArrayQueue<Message>,
    waker: AtomicWaker,
    closed: AtomicBool,
    /// Senders between their `closed` check and their push (see [`Bus::close`]).
    senders: AtomicUsize,
}

/// Every shard's inbox.
pub(crate) struct Bus {
    inboxes: Box<[Inbox]>,
    stats: Arc<StateFile>,
    /// The state-file line of shard 0 (a worker process's shards start further on).
    first_line: usize,
}

impl std::fmt::Debug for Bus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bus").field("shards", &self.inboxes.len()).finish()
    }
}

impl Bus {
    /// A bus for `shards` shards, each with a queue of `capacity` messages;
    /// drops are counted in `stats` (the shard table of the state file).
    pub(crate) fn new(shards: usize, capacity: usize, stats: Arc<StateFile>) -> Bus {
        let inboxes = (0..shards)
            .map(|_| Inbox {
                control: SegQueue::new(),
                messages: ArrayQueue::new(capacity),
                waker: AtomicWaker::new(),
                closed: AtomicBool::new(false),
                senders: AtomicUsize::new(0),
            })
            .collect();
        Bus { inboxes, stats, first_line: 0 }
    }

    /// The same bus counting into the state-file lines from `first_line` on.
    pub(crate) fn with_first_line(mut self, first_line: usize) -> Bus {
        self.first_line = first_line;
        self
    }

    /// Number of shards.
    pub(crate) fn shards(&self) -> usize {
        self.inboxes.len()
    }

    /// Sends a control message to `shard`.
    pub(crate) fn control(&self, shard: usize, control: Control) {
        let inbox = &self.inboxes[shard];
        inbox.control.push(control);
        inbox.waker.wake();
    }

    /// Queues `event` for every shard (the sender's own included).
    pub(crate) fn broadcast(&self, event: Event) -> Result<(), BusError> {
        let event = Arc::new(event);
        self.to_every_shard(|_| Message::Broadcast(event.clone()))
    }

    /// Queues `make(shard)` on every shard; the error lists the shards it missed.
    pub(crate) fn to_every_shard(&self, mut make: impl FnMut(usize) -> Message) -> Result<(), BusError> {
        let mut error = BusError::default();
        for shard in 0..self.inboxes.len() {
            match self.push(shard, make(shard)) {
                Ok(()) => {}
                Err(Undelivered::Full) => error.full.push(shard),
                Err(Undelivered::Stopped) => error.stopped.push(shard),
            }
        }
        if error.is_empty() { Ok(()) } else { Err(error) }
    }

    fn push(&self, shard: usize, message: Message) -> Result<(), Undelivered> {
        let inbox = &self.inboxes[shard];
        inbox.senders.fetch_add(1, Ordering::SeqCst);
        let (result, rejected) = if inbox.closed.load(Ordering::SeqCst) {
            (Err(Undelivered::Stopped), Some(message))
        } else {
            match inbox.messages.push(message) {
                Ok(()) => (Ok(()), None),
                Err(message) => (Err(Undelivered::Full), Some(message)),
            }
        };
        inbox.senders.fetch_sub(1, Ordering::SeqCst);
        // Dropped only now: a payload's `Drop` may take time; `close` must not wait for it.
        drop(rejected);
        match result {
            Ok(()) => inbox.waker.wake(),
            Err(Undelivered::Full) => self.count(shard, shard_line::DROPPED),
            Err(Undelivered::Stopped) => {}
        }
        result
    }

    /// Resolves when `shard`'s inbox has something (control or messages).
    pub(crate) fn ready(&self, shard: usize) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(move |cx| self.poll_ready(shard, cx))
    }

    /// Registers the waker, then looks: a push after the look wakes us.
    pub(crate) fn poll_ready(&self, shard: usize, cx: &mut Context<'_>) -> Poll<()> {
        let inbox = &self.inboxes[shard];
        inbox.waker.register(cx.waker());
        if inbox.control.is_empty() && inbox.messages.is_empty() { Poll::Pending } else { Poll::Ready(()) }
    }

    /// The next control message for `shard`.
    pub(crate) fn pop_control(&self, shard: usize) -> Option<Control> {
        self.inboxes[shard].control.pop()
    }

    /// The next message for `shard`.
    pub(crate) fn pop_message(&self, shard: usize) -> Option<Message> {
        self.inboxes[shard].messages.pop()
    }

    /// Refuses new messages for `shard`; returns once no sender is midway
    /// through a push, so every accepted message is in the queue.
    pub(crate) fn close(&self, shard: usize) {
        let inbox = &self.inboxes[shard];
        inbox.closed.store(true, Ordering::SeqCst);
        let mut spins = 0u32;
        while inbox.senders.load(Ordering::SeqCst) != 0 {
            // A sender preempted mid-push (more shards than cores) needs the CPU back.
            spins += 1;
            if spins < 100 { std::hint::spin_loop() } else { std::thread::yield_now() }
        }
    }

    /// Closes `shard`'s inbox and drops what it still holds, for a shard
    /// that ended without running its queue (a failed start, a panic):
    /// fan-out waiting on it gets "stopped" instead of waiting forever, and
    /// the broadcasts are counted as dropped.
    pub(crate) fn close_and_discard(&self, shard: usize) {
        self.close(shard);
        while let Some(message) = self.pop_message(shard) {
            if let Message::Broadcast(_) = message {
                self.count(shard, shard_line::DROPPED);
            }
        }
    }

    /// Counts a broadcast `shard` has handled (for `skitai status`).
    pub(crate) fn count_received(&self, shard: usize) {
        self.count(shard, shard_line::RECEIVED);
    }

    /// Adds one to the counter at `field` of `shard`'s line in the state file.
    fn count(&self, shard: usize, field: usize) {
        self.stats
            .u64_at(self.stats.layout().shard_line(self.first_line + shard) + field)
            .fetch_add(1, Ordering::Relaxed);
    }

    /// The counter at `field` of `shard`'s line (tests).
    #[cfg(test)]
    fn counter(&self, shard: usize, field: usize) -> u64 {
        self.stats.u64_at(self.stats.layout().shard_line(self.first_line + shard) + field).load(Ordering::Relaxed)
    }
}

enum Undelivered {
    Full,
    Stopped,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Payload;
    use crate::state::layout::Layout;
    use crate::state::shm::NewFile;

    fn bus(shards: usize, capacity: usize) -> (tempfile::TempDir, Bus) {
        let dir = tempfile::tempdir().unwrap();
        let file = StateFile::create(
            &dir.path().join("b.state"),
            &NewFile {
                instance: "t",
                layout: Layout { shards, slots: 1 },
                states: &[],
                cache_keys: &[],
                started_micros: 0,
            },
        )
        .unwrap();
        (dir, Bus::new(shards, capacity, Arc::new(file)))
    }

    #[test]
    fn broadcast_reaches_each_shard_once_and_full_queues_are_named() {
        let (_dir, bus) = bus(3, 2);
        bus.broadcast(Event::new("a", Payload::Empty)).unwrap();
        // Shard 1 drains, the others stay full after the next one.
        assert!(matches!(bus.pop_message(1), Some(Message::Broadcast(e)) if e.name() == "a"));
        bus.broadcast(Event::new("b", Payload::Empty)).unwrap();
        let e = bus.broadcast(Event::new("c", Payload::Empty)).unwrap_err();
        assert_eq!(e, BusError { full: vec![0, 2], ..BusError::default() });
        assert_eq!(e.to_string(), "not delivered to shard(s) 0, 2 (queue full)");
        assert_eq!(bus.counter(0, shard_line::DROPPED), 1);
        let names: Vec<String> = std::iter::from_fn(|| bus.pop_message(0))
            .map(|m| match m {
                Message::Broadcast(e) => e.name().to_owned(),
                Message::Run(_) => "run".into(),
            })
            .collect();
        assert_eq!(names, ["a", "b"], "in order, the dropped one absent");
    }

    #[test]
    fn closed_inbox_refuses_but_keeps_what_it_accepted() {
        let (_dir, bus) = bus(2, 4);
        bus.broadcast(Event::new("kept", Payload::Empty)).unwrap();
        bus.close(1);
        let e = bus.broadcast(Event::new("late", Payload::Empty)).unwrap_err();
        assert_eq!(e.stopped, vec![1]);
        assert!(matches!(bus.pop_message(1), Some(Message::Broadcast(e)) if e.name() == "kept"));
        assert!(bus.pop_message(1).is_none());
        bus.control(1, Control::Drain);
        assert_eq!(bus.pop_control(1), Some(Control::Drain), "control still gets through");
    }

    #[test]
    fn discarding_a_dead_shards_inbox_cancels_its_work_and_counts_broadcasts() {
        let (_dir, bus) = bus(1, 4);
        let (tx, mut rx) = futures_channel::oneshot::channel::<u32>();
        let mut tx = Some(tx);
        bus.to_every_shard(|_| {
            let tx = tx.take().expect("one shard");
            Message::Run(Box::new(move |_| {
                let _ = tx.send(1);
            }))
        })
        .unwrap();
        bus.broadcast(Event::new("lost", Payload::Empty)).unwrap();
        bus.close_and_discard(0);
        assert_eq!(rx.try_recv(), Err(futures_channel::oneshot::Canceled), "the waiter learns, it does not hang");
        assert_eq!(bus.counter(0, shard_line::DROPPED), 1);
        assert!(bus.broadcast(Event::new("late", Payload::Empty)).unwrap_err().stopped == vec![0]);
    }

    #[test]
    fn a_push_from_another_thread_wakes_the_reader() {
        let (_dir, bus) = bus(1, 8);
        let bus = Arc::new(bus);
        let woken = Arc::new(AtomicBool::new(false));
        struct Flag(Arc<AtomicBool>);
        impl std::task::Wake for Flag {
            fn wake(self: Arc<Self>) {
                self.0.store(true, Ordering::SeqCst);
            }
        }
        let waker = std::task::Waker::from(Arc::new(Flag(woken.clone())));
        let mut cx = Context::from_waker(&waker);
        assert!(bus.poll_ready(0, &mut cx).is_pending());
        let sender = bus.clone();
        std::thread::spawn(move || sender.broadcast(Event::new("x", Payload::Empty)).unwrap()).join().unwrap();
        assert!(woken.load(Ordering::SeqCst), "the push woke the registered waker");
        assert!(bus.poll_ready(0, &mut cx).is_ready());
    }
}
