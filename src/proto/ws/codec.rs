//! WebSocket messages from frames (RFC 6455 §5.4–5.6): fragmentation,
//! interleaved control frames, close payloads, UTF-8 of text, size cap.
//! Bytes in, messages out; each violation names the close code to send.

use bytes::{Buf, Bytes, BytesMut};

use super::deflate::Inflater;
use super::frame::{self, HeaderError, OpCode};
use super::utf8::Utf8Stream;

/// Close codes the server sends (RFC 6455 §7.4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseCode {
    /// 1002: the peer broke the protocol.
    Protocol = 1002,
    /// 1007: a text message (or close reason) that is not UTF-8.
    InvalidData = 1007,
    /// 1009: a message larger than the configured cap.
    TooBig = 1009,
}

/// A whole message, or a control frame, from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Message {
    /// A text message (validated UTF-8).
    Text(Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping; the connection answers it with a pong of the same payload.
    Ping(Bytes),
    /// A pong.
    Pong(Bytes),
    /// A close frame: its code and reason, if it had any.
    Close(Option<(u16, String)>),
}

/// Whether a close code may be received (§7.4; 1004–1006 and 1015 are
/// never sent on the wire, 1016–2999 are reserved, 3000–4999 are for
/// libraries and applications).
pub(crate) fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// A text or binary message whose fragments are still arriving.
struct Partial {
    text: bool,
    /// RSV1 was set on the first frame: the payload is deflated (RFC 7692).
    compressed: bool,
    data: BytesMut,
    utf8: Utf8Stream,
}

/// Turns the bytes a client sends into messages.
pub(crate) struct Decoder {
    max_message: usize,
    partial: Option<Partial>,
    /// Set when permessage-deflate was negotiated.
    inflater: Option<Inflater>,
}

impl Decoder {
    /// A decoder refusing messages over `max_message` bytes (close 1009).
    pub(crate) fn new(max_message: usize) -> Decoder {
        Decoder { max_message, partial: None, inflater: None }
    }

    /// Accepts compressed messages (RSV1), inflated by `inflater`; the size
    /// cap then applies to the inflated message too.
    pub(crate) fn with_inflater(mut self, inflater: Inflater) -> Decoder {
        self.inflater = Some(inflater);
        self
    }

    /// The next message in `buf` (consumed), `Ok(None)` until one is
    /// complete, or the close code a violation calls for.
    pub(crate) fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Message>, CloseCode> {
        loop {
            let Some(header) = frame::parse_header(buf, self.inflater.is_some()).map_err(|e| match e {
                HeaderError::ReservedBits
                | HeaderError::ReservedOpcode
                | HeaderError::BadControlFrame
                | HeaderError::LengthTooLarge
                | HeaderError::Unmasked => CloseCode::Protocol,
            })?
            else {
                return Ok(None);
            };
            let so_far = self.partial.as_ref().map_or(0, |p| p.data.len());
            if !header.opcode.is_control()
                && header.payload_len > (self.max_message - so_far.min(self.max_message)) as u64
            {
                return Err(CloseCode::TooBig);
            }
            // Fragment sequencing is checked before the payload arrives.
            match header.opcode {
                OpCode::Continuation if self.partial.is_none() => return Err(CloseCode::Protocol),
                OpCode::Text | OpCode::Binary if self.partial.is_some() => return Err(CloseCode::Protocol),
                // RSV1 marks a compressed message on its first frame only (RFC 7692 §6).
                OpCode::Text | OpCode::Binary => {}
                _ if header.rsv1 => return Err(CloseCode::Protocol),
                _ => {}
            }
            let total = header.header_len + header.payload_len as usize;
            if buf.len() < total {
                buf.reserve(total - buf.len());
                return Ok(None);
            }
            buf.advance(header.header_len);
            let mut payload = buf.split_to(header.payload_len as usize);
            if let Some(mask) = header.mask {
                frame::apply_mask(&mut payload, mask, 0);
            }
            match header.opcode {
                OpCode::Ping => return Ok(Some(Message::Ping(payload.freeze()))),
                OpCode::Pong => return Ok(Some(Message::Pong(payload.freeze()))),
                OpCode::Close => return close_payload(&payload).map(|c| Some(Message::Close(c))),
                OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                    let partial = self.partial.get_or_insert_with(|| Partial {
                        text: header.opcode == OpCode::Text,
                        compressed: header.rsv1,
                        data: BytesMut::new(),
                        utf8: Utf8Stream::default(),
                    });
                    // Compressed text is checked once inflated.
                    if partial.text && !partial.compressed {
                        partial.utf8.feed(&payload).map_err(|()| CloseCode::InvalidData)?;
                    }
                    if !header.fin {
                        partial.data.extend_from_slice(&payload);
                        continue;
                    }
                    let mut done = self.partial.take().expect("inserted above");
                    let mut data = if done.data.is_empty() {
                        payload.freeze()
                    } else {
                        done.data.extend_from_slice(&payload);
                        done.data.freeze()
                    };
                    if done.compressed {
                        let inflater = self.inflater.as_mut().expect("RSV1 is refused without an inflater");
                        data = inflater.decompress(&data, self.max_message)?;
                        if done.text {
                            done.utf8.feed(&data).map_err(|()| CloseCode::InvalidData)?;
                        }
                    }
                    if done.text {
                        done.utf8.finish().map_err(|()| CloseCode::InvalidData)?;
                        return Ok(Some(Message::Text(data)));
                    }
                    return Ok(Some(Message::Binary(data)));
                }
            }
        }
    }
}

/// A close frame's payload: empty, or a permitted code and a UTF-8 reason.
fn close_payload(payload: &[u8]) -> Result<Option<(u16, String)>, CloseCode> {
    match payload.len() {
        0 => Ok(None),
        1 => Err(CloseCode::Protocol),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                return Err(CloseCode::Protocol);
            }
            let reason = std::str::from_utf8(&payload[2..]).map_err(|_| CloseCode::InvalidData)?;
            Ok(Some((code, reason.to_owned())))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(first: u8, payload: &[u8]) -> Vec<u8> {
        frame::tests::client_frame(first, payload, [0x37, 0xfa, 0x21, 0x3d])
    }

    fn decode_all(bytes: &[u8], max: usize) -> Result<Vec<Message>, CloseCode> {
        let mut d = Decoder::new(max);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Some(m) = d.decode(&mut buf)? {
            out.push(m);
        }
        Ok(out)
    }

    #[test]
    fn single_and_fragmented_messages_with_interleaved_ping() {
        let mut wire = client(0x81, b"Hello");
        wire.extend(client(0x01, b"Hel"));
        wire.extend(client(0x89, b"p"));
        wire.extend(client(0x00, "lo ".as_bytes()));
        wire.extend(client(0x80, "µ".as_bytes()));
        wire.extend(client(0x82, &[0, 1, 2]));
        wire.extend(client(0x88, &[0x03, 0xe8, b'b', b'y', b'e']));
        let got = decode_all(&wire, 1 << 20).unwrap();
        assert_eq!(
            got,
            [
                Message::Text(Bytes::from_static(b"Hello")),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Text(Bytes::from("Hello µ")),
                Message::Binary(Bytes::from_static(&[0, 1, 2])),
                Message::Close(Some((1000, "bye".into()))),
            ]
        );
    }

    #[test]
    fn byte_by_byte_input_gives_the_same_messages() {
        let mut wire = client(0x01, "κό".as_bytes());
        wire.extend(client(0x80, "σμε".as_bytes()));
        let mut d = Decoder::new(1 << 20);
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.extend_from_slice(&[b]);
            if let Some(m) = d.decode(&mut buf).unwrap() {
                got.push(m);
            }
        }
        assert_eq!(got, [Message::Text(Bytes::from("κόσμε"))]);
    }

    #[test]
    fn sequencing_violations_are_protocol_errors() {
        assert_eq!(decode_all(&client(0x80, b"x"), 100), Err(CloseCode::Protocol), "continuation without start");
        let mut wire = client(0x01, b"a");
        wire.extend(client(0x81, b"b"));
        assert_eq!(decode_all(&wire, 100), Err(CloseCode::Protocol), "new message inside a fragmented one");
    }

    #[test]
    fn utf8_fails_fast_inside_a_fragmented_message() {
        // The first fragment already cannot be UTF-8: refused before the message ends.
        let mut d = Decoder::new(100);
        let mut buf =
            BytesMut::from(&client(0x01, b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80")[..]);
        assert_eq!(d.decode(&mut buf), Err(CloseCode::InvalidData));
        assert_eq!(decode_all(&client(0x81, b"\xc0\xaf"), 100), Err(CloseCode::InvalidData));
        assert_eq!(decode_all(&client(0x81, b"ab\xe2\x82"), 100), Err(CloseCode::InvalidData), "ends mid-character");
        assert!(decode_all(&client(0x82, b"\xc0\xaf"), 100).is_ok(), "binary is not checked");
    }

    #[test]
    fn close_payloads() {
        let close = |p: &[u8]| decode_all(&client(0x88, p), 100);
        assert_eq!(close(b""), Ok(vec![Message::Close(None)]));
        assert_eq!(close(b"\x03"), Err(CloseCode::Protocol), "one byte");
        for code in [0u16, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535] {
            assert_eq!(close(&code.to_be_bytes()), Err(CloseCode::Protocol), "code {code}");
        }
        for code in [1000u16, 1001, 1003, 1007, 1011, 3000, 4999] {
            assert_eq!(
                close(&code.to_be_bytes()),
                Ok(vec![Message::Close(Some((code, String::new())))]),
                "code {code}"
            );
        }
        assert_eq!(close(b"\x03\xe8\xff"), Err(CloseCode::InvalidData), "reason not UTF-8");
    }

    #[test]
    fn size_cap_counts_fragments_and_is_checked_from_the_header() {
        assert_eq!(decode_all(&client(0x82, &[0; 101]), 100), Err(CloseCode::TooBig));
        assert!(decode_all(&client(0x82, &[0; 100]), 100).is_ok());
        let mut wire = client(0x02, &[0; 60]);
        wire.extend(client(0x80, &[0; 41]));
        assert_eq!(decode_all(&wire, 100), Err(CloseCode::TooBig));
        // Refused from the header alone: the payload need not arrive.
        let mut d = Decoder::new(100);
        let mut buf = BytesMut::from(&client(0x82, &[0; 1000])[..8]);
        assert_eq!(d.decode(&mut buf), Err(CloseCode::TooBig));
    }
}
