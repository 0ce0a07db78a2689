//! Rooms: named groups of WebSocket connections. Each shard keeps its own
//! members; a message published to a room is broadcast on the bus as the
//! event `ws-room:<name>` and every shard hands it to its local members.
//! A shard subscribes to a room's event while it has members in it.

use std::collections::HashMap;
use std::rc::{Rc, Weak};

use slab::Slab;

use super::Message;
use super::link::Link;
use crate::shard::services::{ShardServices, Subscription};
use crate::state::Event;

/// Prefix of the bus event that carries a room's messages.
const EVENT_PREFIX: &str = "ws-room:";

/// The bus event name of `room`.
pub(crate) fn event_name(room: &str) -> String {
    let mut name = String::with_capacity(EVENT_PREFIX.len() + room.len());
    name.push_str(EVENT_PREFIX);
    name.push_str(room);
    name
}

/// The rooms with members on one shard.
#[derive(Default)]
pub(crate) struct Rooms {
    rooms: HashMap<Rc<str>, Room>,
}

impl std::fmt::Debug for Rooms {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.rooms.iter().map(|(k, r)| (k, r.members.len()))).finish()
    }
}

struct Room {
    members: Slab<Weak<Link>>,
    /// The shard's subscription to the room's event; dropped with the last member.
    _subscription: Subscription,
}

/// Adds the connection behind `link` to `room` on this shard.
pub(crate) fn join(services: &Rc<ShardServices>, link: &Rc<Link>, room: &str) {
    if link.rooms.borrow().iter().any(|(name, _)| &**name == room) {
        return;
    }
    let mut rooms = services.ws_rooms.borrow_mut();
    if !rooms.rooms.contains_key(room) {
        // The shard's first member: subscribe it to the room's event.
        let name: Rc<str> = room.into();
        let weak = Rc::downgrade(services);
        let for_callback = name.clone();
        let subscription = services.subscribe(&event_name(room), move |event| {
            if let Some(services) = weak.upgrade() {
                deliver(&services, &for_callback, event);
            }
        });
        rooms.rooms.insert(name, Room { members: Slab::new(), _subscription: subscription });
    }
    let name = rooms.rooms.get_key_value(room).map(|(name, _)| name.clone()).expect("present or inserted above");
    let entry = rooms.rooms.get_mut(room).expect("present or inserted above");
    let key = entry.members.insert(Rc::downgrade(link));
    link.rooms.borrow_mut().push((name, key));
}

/// Removes the connection behind `link` from `room`.
pub(crate) fn leave(services: &ShardServices, link: &Link, room: &str) {
    let mut joined = link.rooms.borrow_mut();
    if let Some(at) = joined.iter().position(|(name, _)| &**name == room) {
        let (name, key) = joined.swap_remove(at);
        remove_member(services, &name, key);
    }
}

/// Removes the connection from every room it joined (when it closes).
pub(crate) fn leave_all(services: &ShardServices, link: &Link) {
    for (name, key) in link.rooms.take() {
        remove_member(services, &name, key);
    }
}

fn remove_member(services: &ShardServices, name: &str, key: usize) {
    let mut rooms = services.ws_rooms.borrow_mut();
    let empty = match rooms.rooms.get_mut(name) {
        Some(room) => {
            room.members.try_remove(key);
            room.members.is_empty()
        }
        None => false,
    };
    if empty {
        // Unsubscribes this shard from the room's event.
        let room = rooms.rooms.remove(name);
        drop(rooms);
        drop(room);
    }
}

/// Hands a room message that arrived on the bus to the shard's members.
fn deliver(services: &ShardServices, room: &str, event: &Event) {
    let message = match (event.value::<Message>(), event.text(), event.bytes()) {
        (Some(m), _, _) => m.clone(),
        (None, Some(text), _) => Message::text(text),
        (None, None, Some(bytes)) => Message::Binary(bytes.clone()),
        (None, None, None) => return,
    };
    let rooms = services.ws_rooms.borrow();
    let Some(room) = rooms.rooms.get(room) else { return };
    for (_, member) in &room.members {
        if let Some(link) = member.upgrade() {
            // A member whose queue is full is dealt with by its overflow policy.
            let _ = link.send(&message);
        }
    }
}

/// The number of members of `room` on this shard.
pub(crate) fn local_members(services: &ShardServices, room: &str) -> usize {
    services.ws_rooms.borrow().rooms.get(room).map_or(0, |r| r.members.len())
}
