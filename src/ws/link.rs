//! The state one WebSocket connection shares between its reader, its
//! writer, its timers and the handler's session: the send queue (encoded
//! frames), the inbox of received messages and the close handshake.
//!
//! Everything runs on one shard thread, inside one task: cells, no locks.
//! Whoever changes something another part waits for calls [`Link::wake`].
//! While the connection task polls its parts (a "pass"), wake-ups are
//! skipped: the parts are polled in the order data flows (reader, session,
//! writer), so a change is seen later in the same pass. The one change
//! that flows backwards (room in a full inbox, for the reader) asks for
//! another pass instead.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use bytes::BytesMut;

use super::{CloseFrame, Message, Overflow, SendError};
use crate::proto::ws::deflate::Deflater;
use crate::proto::ws::frame::{self, MAX_CONTROL_PAYLOAD, OpCode};

/// Received messages waiting for the handler; past this the reader stops
/// reading, so a slow handler slows the client down (TCP backpressure).
const INBOX_LIMIT: usize = 16;
/// Messages shorter than this are sent uncompressed (compressing them
/// costs more than it saves).
const COMPRESS_MIN: usize = 64;

/// One connection's shared state.
pub(crate) struct Link {
    /// Encoded frames the writer has not taken yet.
    out: RefCell<BytesMut>,
    /// The pong owed, until the writer takes it: where in `out` the first
    /// unanswered ping's pong belongs (frames queued after that ping follow
    /// it), and the latest ping's payload. Only the latest ping is answered
    /// (RFC 6455 §5.5.3), so a client that floods pings and reads nothing
    /// is owed one pong, not one per ping.
    pong: RefCell<Option<(usize, Vec<u8>)>>,
    queue_limit: usize,
    overflow: Overflow,
    deflater: RefCell<Option<Deflater>>,
    inbox: RefCell<VecDeque<Message>>,
    waker: RefCell<Option<Waker>>,
    /// The connection task is polling its parts now.
    pub(crate) in_pass: Cell<bool>,
    /// Something polled earlier in this pass must be polled again.
    pub(crate) repoll: Cell<bool>,
    /// The close frame we queued (initiated or answered), if any.
    close_queued: RefCell<Option<CloseFrame>>,
    /// Our close frame reached the socket.
    pub(crate) close_written: Cell<bool>,
    /// The client's close frame, once received.
    peer_close: RefCell<Option<CloseFrame>>,
    /// The reader stopped (end of stream, error, or after the client's close).
    pub(crate) reader_done: Cell<bool>,
    /// The connection is over: stop writing, close the socket.
    pub(crate) ended: Cell<bool>,
    /// Messages dropped under [`Overflow::Drop`].
    dropped: Cell<u64>,
    /// Messages queued for the client, and handed to the session (for the metrics).
    pub(crate) counted: Cell<(u64, u64)>,
    /// The rooms this connection joined on its shard: (room, member key).
    pub(crate) rooms: RefCell<Vec<(Rc<str>, usize)>>,
}

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Link")
            .field("queued", &self.out.borrow().len())
            .field("inbox", &self.inbox.borrow().len())
            .field("closing", &self.close_queued.borrow())
            .finish_non_exhaustive()
    }
}

impl Link {
    /// A link whose send queue holds at most `queue_limit` bytes.
    pub(crate) fn new(queue_limit: usize, overflow: Overflow, deflater: Option<Deflater>) -> Link {
        Link {
            out: RefCell::new(BytesMut::new()),
            pong: RefCell::new(None),
            queue_limit,
            overflow,
            deflater: RefCell::new(deflater),
            inbox: RefCell::new(VecDeque::new()),
            waker: RefCell::new(None),
            in_pass: Cell::new(false),
            repoll: Cell::new(false),
            close_queued: RefCell::new(None),
            close_written: Cell::new(false),
            peer_close: RefCell::new(None),
            reader_done: Cell::new(false),
            ended: Cell::new(false),
            dropped: Cell::new(0),
            counted: Cell::new((0, 0)),
            rooms: RefCell::new(Vec::new()),
        }
    }

    /// Remembers the connection task's waker (the same on every poll).
    pub(crate) fn register(&self, waker: &Waker) {
        let mut slot = self.waker.borrow_mut();
        if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
            *slot = Some(waker.clone());
        }
    }

    /// Wakes the connection task (unless it is polling its parts now).
    pub(crate) fn wake(&self) {
        if self.in_pass.get() {
            return;
        }
        if let Some(w) = self.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }

    /// True once no more messages can be sent.
    pub(crate) fn is_closed(&self) -> bool {
        self.close_queued.borrow().is_some() || self.ended.get()
    }

    /// Queues a text or binary message for the client.
    pub(crate) fn send(&self, message: &Message) -> Result<(), SendError> {
        if self.is_closed() {
            return Err(SendError::Closed);
        }
        let (opcode, payload) = match message {
            Message::Text(t) => (OpCode::Text, t.as_bytes()),
            Message::Binary(b) => (OpCode::Binary, b),
        };
        let mut deflater = self.deflater.borrow_mut();
        let compressed = match deflater.as_mut() {
            Some(d) if payload.len() >= COMPRESS_MIN => Some(d.compress(payload)),
            _ => None,
        };
        let wire = compressed.as_ref().unwrap_or(payload);
        let mut out = self.out.borrow_mut();
        if !out.is_empty() && out.len() + wire.len() + 10 > self.queue_limit {
            drop(out);
            if let (Some(d), Some(_)) = (deflater.as_mut(), &compressed) {
                // The compressor took the message into its window; the client
                // never gets it, so later messages must not refer back to it.
                d.forget();
            }
            return Err(self.overflowed());
        }
        frame::encode(opcode, true, compressed.is_some(), wire, &mut out);
        drop(out);
        let (sent, received) = self.counted.get();
        self.counted.set((sent + 1, received));
        self.wake();
        Ok(())
    }

    /// The send queue is full: drop the message, or close with 1008.
    fn overflowed(&self) -> SendError {
        match self.overflow {
            Overflow::Drop => self.dropped.set(self.dropped.get() + 1),
            Overflow::Close => {
                // Frames the writer has not taken are dropped; what it took
                // goes out whole, then the close frame.
                self.out.borrow_mut().clear();
                self.close(CloseFrame::new(1008, "send queue full"));
            }
        }
        SendError::Full
    }

    /// Messages dropped because the send queue was full.
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.get()
    }

    /// Starts the close handshake with `frame` (once; later calls do nothing).
    pub(crate) fn close(&self, frame: CloseFrame) {
        if self.is_closed() {
            return;
        }
        let mut payload = [0u8; MAX_CONTROL_PAYLOAD];
        payload[..2].copy_from_slice(&frame.code.to_be_bytes());
        let reason = truncate_utf8(&frame.reason, MAX_CONTROL_PAYLOAD - 2);
        payload[2..2 + reason.len()].copy_from_slice(reason.as_bytes());
        self.push_control(OpCode::Close, &payload[..2 + reason.len()]);
        *self.close_queued.borrow_mut() = Some(frame);
        if self.inbox_full() {
            // A reader waiting for room in the inbox also waits for this (it
            // then reads on, for the client's close): it may have been
            // polled earlier in this pass.
            self.repoll.set(true);
        }
    }

    /// Answers the client's close frame: our close carries its code (an
    /// empty close for an empty one), then the connection ends.
    pub(crate) fn peer_closed(&self, frame: Option<(u16, String)>) {
        let frame = match frame {
            Some((code, reason)) => CloseFrame { code, reason },
            None => CloseFrame::new(1005, ""),
        };
        if !self.is_closed() {
            if frame.code == 1005 {
                self.push_control(OpCode::Close, &[]);
            } else {
                self.push_control(OpCode::Close, &frame.code.to_be_bytes());
            }
            *self.close_queued.borrow_mut() = Some(frame.clone());
        }
        *self.peer_close.borrow_mut() = Some(frame);
        self.wake();
    }

    /// Queues a control frame (pong, ping, close): never refused for space.
    pub(crate) fn push_control(&self, opcode: OpCode, payload: &[u8]) {
        if self.is_closed() {
            return;
        }
        if opcode == OpCode::Pong {
            let payload = payload[..payload.len().min(MAX_CONTROL_PAYLOAD)].to_vec();
            let mut pong = self.pong.borrow_mut();
            let at = pong.as_ref().map_or_else(|| self.out.borrow().len(), |(at, _)| *at);
            *pong = Some((at, payload));
            drop(pong);
            self.wake();
            return;
        }
        let mut out = self.out.borrow_mut();
        frame::encode(opcode, true, false, &payload[..payload.len().min(MAX_CONTROL_PAYLOAD)], &mut out);
        drop(out);
        self.wake();
    }

    /// Takes the queued frames into `spare` (emptied), leaving `spare`'s
    /// buffer in the queue; the flag says whether our close frame is among them.
    pub(crate) fn take_out(&self, spare: BytesMut) -> (BytesMut, bool) {
        let mut batch = std::mem::replace(&mut *self.out.borrow_mut(), spare);
        // The owed pong goes into the batch where it was first owed, unless
        // a close is on its way (nothing may follow our close frame).
        if let Some((at, payload)) = self.pong.borrow_mut().take() {
            if self.close_queued.borrow().is_none() {
                let at = at.min(batch.len());
                let tail = batch.split_off(at);
                frame::encode(OpCode::Pong, true, false, &payload, &mut batch);
                batch.unsplit(tail);
            }
        }
        let close_in_batch = self.close_queued.borrow().is_some() && !self.close_written.get();
        (batch, close_in_batch)
    }

    /// True when frames wait for the writer.
    pub(crate) fn has_out(&self) -> bool {
        !self.out.borrow().is_empty() || self.pong.borrow().is_some()
    }

    /// True once the close handshake is done (or cannot finish): the writer stops.
    pub(crate) fn finished(&self) -> bool {
        self.ended.get() || (self.close_written.get() && (self.peer_close.borrow().is_some() || self.reader_done.get()))
    }

    /// True when we started or answered a close.
    pub(crate) fn closing(&self) -> bool {
        self.close_queued.borrow().is_some()
    }

    /// Hands a received message to the session; false when we are closing
    /// (the message is dropped: nobody will read it).
    pub(crate) fn deliver(&self, message: Message) {
        if !self.closing() {
            let (sent, received) = self.counted.get();
            self.counted.set((sent, received + 1));
            self.inbox.borrow_mut().push_back(message);
            self.wake();
        }
    }

    /// True when the inbox is full (the reader waits).
    pub(crate) fn inbox_full(&self) -> bool {
        self.inbox.borrow().len() >= INBOX_LIMIT
    }

    /// The next received message; `Ready(None)` once the connection is
    /// closing and the inbox is empty.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        let mut inbox = self.inbox.borrow_mut();
        if let Some(m) = inbox.pop_front() {
            if inbox.len() + 1 == INBOX_LIMIT {
                // The reader may be waiting for room: it was polled earlier
                // in this pass (or this runs outside one).
                drop(inbox);
                self.repoll.set(true);
                self.wake();
            }
            return Poll::Ready(Some(m));
        }
        if self.closing() || self.reader_done.get() || self.ended.get() {
            return Poll::Ready(None);
        }
        drop(inbox);
        self.register(cx.waker());
        Poll::Pending
    }

    /// How the connection ended: the client's close, else ours, else 1006.
    pub(crate) fn outcome(&self) -> CloseFrame {
        if let Some(f) = self.peer_close.borrow().as_ref() {
            return f.clone();
        }
        match self.close_queued.borrow().as_ref() {
            Some(f) if self.close_written.get() => f.clone(),
            _ => CloseFrame::new(1006, "connection lost"),
        }
    }

    /// A copy of the frames waiting for the writer (tests).
    #[cfg(test)]
    pub(crate) fn queued(&self) -> BytesMut {
        BytesMut::from(&self.out.borrow()[..])
    }
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_limit_drop_and_close_policies() {
        // Two 42-byte frames fit in 100 bytes; a third does not.
        let link = Link::new(100, Overflow::Drop, None);
        for _ in 0..2 {
            link.send(&Message::binary(vec![0u8; 40])).unwrap();
        }
        assert_eq!(link.send(&Message::binary(vec![0u8; 40])), Err(SendError::Full));
        assert_eq!(link.dropped(), 1);
        assert!(!link.is_closed());

        let link = Link::new(100, Overflow::Close, None);
        link.send(&Message::binary(vec![0u8; 90])).unwrap();
        assert_eq!(link.send(&Message::binary(vec![0u8; 40])), Err(SendError::Full));
        assert!(link.is_closed());
        let q = link.queued();
        assert_eq!(
            &q[..],
            &[
                0x88, 17, 0x03, 0xf0, b's', b'e', b'n', b'd', b' ', b'q', b'u', b'e', b'u', b'e', b' ', b'f', b'u',
                b'l', b'l'
            ][..]
        );
        assert_eq!(link.send(&Message::text("late")), Err(SendError::Closed));
    }

    #[test]
    fn a_message_larger_than_the_limit_goes_out_when_the_queue_is_empty() {
        let link = Link::new(10, Overflow::Close, None);
        link.send(&Message::binary(vec![1u8; 50])).unwrap();
        assert_eq!(link.queued().len(), 52);
    }

    #[test]
    fn close_reason_is_cut_on_a_character_boundary() {
        let link = Link::new(1000, Overflow::Close, None);
        link.close(CloseFrame::new(1000, "é".repeat(100)));
        let q = link.queued();
        assert_eq!(q[1] as usize, q.len() - 2);
        assert!(q.len() - 2 <= 125);
        assert!(std::str::from_utf8(&q[4..]).is_ok());
    }

    #[test]
    fn peer_close_is_echoed_and_recv_ends() {
        let link = Link::new(1000, Overflow::Close, None);
        link.deliver(Message::text("a"));
        link.peer_closed(Some((1001, "bye".into())));
        assert_eq!(&link.queued()[..], &[0x88, 2, 0x03, 0xe9]);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert_eq!(link.poll_recv(&mut cx), Poll::Ready(Some(Message::text("a"))));
        assert_eq!(link.poll_recv(&mut cx), Poll::Ready(None));
        assert_eq!(link.outcome(), CloseFrame::new(1001, "bye"));
    }

    #[test]
    fn a_dropped_message_leaves_no_trace_in_the_compression_context() {
        use crate::proto::ws::deflate::{DeflateParams, Inflater};
        let params = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
        };
        let first = "first message, long enough to be compressed: ".repeat(2);
        let repeated = "dropped, never sent: 0123456789 abcdefghij klmnopqrst uvwxyz ".repeat(3);
        let mut x = 0x2545_f491_u32;
        let noise: String = (0..400)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                char::from(b'a' + (x % 26) as u8)
            })
            .collect();
        let link = Link::new(200, Overflow::Drop, Some(Deflater::new(&params)));
        link.send(&Message::text(first.clone())).unwrap();
        let (sent, _) = link.take_out(BytesMut::new());
        link.send(&Message::text(first.clone())).unwrap();
        // Does not fit behind the second message (noise does not compress): dropped.
        assert_eq!(link.send(&Message::text(format!("{repeated}{noise}"))), Err(SendError::Full));
        assert_eq!(link.dropped(), 1);
        let _ = link.take_out(BytesMut::new());
        // Repeats the dropped text: a compressor that kept it would refer back to it.
        link.send(&Message::text(repeated.clone())).unwrap();
        let mut client = Inflater::new(&params);
        for (wire, want) in [(&sent[..], &first), (&link.queued()[..], &repeated)] {
            assert_eq!(wire[0], 0xC1, "compressed text");
            let len = usize::from(wire[1]);
            assert_eq!(wire.len(), 2 + len);
            let got = client.decompress(&wire[2..], 1 << 20).expect("the client inflates what it got");
            assert_eq!(&got[..], want.as_bytes());
        }
    }

    #[test]
    fn closing_with_a_full_inbox_asks_for_another_pass() {
        let link = Link::new(1000, Overflow::Close, None);
        link.in_pass.set(true);
        for i in 0..INBOX_LIMIT {
            link.deliver(Message::text(i.to_string()));
        }
        assert!(link.inbox_full() && !link.repoll.get());
        // The reader (polled before the session, the drain and the timers)
        // waits for room or for the close.
        link.close(CloseFrame::new(1001, "server shutting down"));
        assert!(link.repoll.get(), "the reader must see the close in another pass");

        let link = Link::new(1000, Overflow::Close, None);
        link.in_pass.set(true);
        link.deliver(Message::text("one"));
        link.close(CloseFrame::new(1000, ""));
        assert!(!link.repoll.get(), "no reader waits on an inbox with room");
    }
}
