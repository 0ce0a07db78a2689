//! Broadcast events: what `broadcast` sends and `on_broadcast` subscribers get.

use std::any::Any;
use std::sync::Arc;

use bytes::Bytes;

/// The data carried by a broadcast: nothing, bytes (text, JSON), or any
/// `Send + Sync` value shared by every shard that receives it.
#[derive(Clone, Default)]
pub enum Payload {
    /// No data.
    #[default]
    Empty,
    /// Bytes, e.g. UTF-8 text or JSON ([`Payload::json`]).
    Bytes(Bytes),
    /// A value of any `Send + Sync` type; receivers get it with [`Event::value`].
    Value(Arc<dyn Any + Send + Sync>),
}

impl std::fmt::Debug for Payload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Payload::Empty => f.write_str("Empty"),
            Payload::Bytes(b) => f.debug_tuple("Bytes").field(b).finish(),
            Payload::Value(_) => f.write_str("Value(..)"),
        }
    }
}

impl Payload {
    /// A payload holding `value`; receivers read it with [`Event::value::<T>`](Event::value).
    pub fn value<T: Any + Send + Sync>(value: T) -> Payload {
        Payload::Value(Arc::new(value))
    }

    /// `value` serialized as JSON; receivers read it with [`Event::json`].
    pub fn json<T: serde::Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        serde_json::to_vec(value).map(|v| Payload::Bytes(Bytes::from(v)))
    }
}

impl From<()> for Payload {
    fn from((): ()) -> Payload {
        Payload::Empty
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Payload {
        Payload::Bytes(b)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Payload {
        Payload::Bytes(b.into())
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Payload {
        Payload::Bytes(s.into())
    }
}

impl From<&'static str> for Payload {
    fn from(s: &'static str) -> Payload {
        Payload::Bytes(Bytes::from_static(s.as_bytes()))
    }
}

/// One broadcast as a subscriber sees it: the event name and its payload.
/// Every shard gets the same `Event` (shared, not copied).
#[derive(Debug, Clone)]
pub struct Event {
    name: Box<str>,
    payload: Payload,
}

impl Event {
    /// An event named `name` carrying `payload`.
    pub(crate) fn new(name: &str, payload: Payload) -> Event {
        Event { name: name.into(), payload }
    }

    /// The event name, e.g. `model-changed:users`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The payload.
    pub fn payload(&self) -> &Payload {
        &self.payload
    }

    /// The payload's bytes, when it is [`Payload::Bytes`].
    pub fn bytes(&self) -> Option<&Bytes> {
        match &self.payload {
            Payload::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The payload as text, when it is UTF-8 bytes.
    pub fn text(&self) -> Option<&str> {
        self.bytes().and_then(|b| std::str::from_utf8(b).ok())
    }

    /// The payload parsed as JSON into `T`; `None` when it is not bytes.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Option<Result<T, serde_json::Error>> {
        self.bytes().map(|b| serde_json::from_slice(b))
    }

    /// The payload value, when it is a [`Payload::Value`] of type `T`.
    pub fn value<T: Any>(&self) -> Option<&T> {
        match &self.payload {
            Payload::Value(v) => v.downcast_ref::<T>(),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payload_accessors() {
        let e = Event::new("a", "hi".into());
        assert_eq!((e.name(), e.text()), ("a", Some("hi")));
        assert!(e.value::<u32>().is_none());
        let e = Event::new("b", Payload::value(7u32));
        assert_eq!(e.value::<u32>(), Some(&7));
        assert_eq!(e.value::<u64>(), None, "a value of another type is not found");
        assert!(e.bytes().is_none());
        let e = Event::new("c", Payload::json(&serde_json::json!({"n": 3})).unwrap());
        let v: serde_json::Value = e.json().unwrap().unwrap();
        assert_eq!(v["n"], 3);
        assert!(Event::new("d", ().into()).json::<u8>().is_none());
    }
}
