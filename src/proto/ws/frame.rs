//! WebSocket frames (RFC 6455 §5.2): header parsing and encoding, masking.
//! Bytes in, frames out; no socket here.

use bytes::{BufMut, BytesMut};

/// Frame opcodes (RFC 6455 §5.2); others are reserved and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    /// Close, ping and pong.
    pub(crate) fn is_control(self) -> bool {
        self as u8 & 0x8 != 0
    }
}

/// Largest payload of a control frame (§5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    pub(crate) fin: bool,
    /// RSV1: "compressed" under permessage-deflate.
    pub(crate) rsv1: bool,
    pub(crate) opcode: OpCode,
    pub(crate) mask: Option<[u8; 4]>,
    pub(crate) payload_len: u64,
    /// Bytes the header itself took.
    pub(crate) header_len: usize,
}

/// Why a frame header is refused; each maps to close code 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// RSV2/RSV3 set, or RSV1 without a negotiated extension.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode,
    /// A control frame with FIN clear or a payload over 125 bytes.
    BadControlFrame,
    /// The 64-bit length has its most significant bit set.
    LengthTooLarge,
    /// A client frame without a mask (§5.1).
    Unmasked,
}

/// Parses the header at the start of `buf`; `Ok(None)` until it is complete.
/// `allow_rsv1` is set when permessage-deflate was negotiated.
pub(crate) fn parse_header(buf: &[u8], allow_rsv1: bool) -> Result<Option<Header>, HeaderError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    let fin = b0 & 0x80 != 0;
    let rsv1 = b0 & 0x40 != 0;
    if b0 & 0x30 != 0 || (rsv1 && !allow_rsv1) {
        return Err(HeaderError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(HeaderError::ReservedOpcode)?;
    if b1 & 0x80 == 0 {
        return Err(HeaderError::Unmasked);
    }
    let (payload_len, mut at) = match b1 & 0x7F {
        126 => {
            if buf.len() < 4 {
                return Ok(None);
            }
            (u64::from(u16::from_be_bytes([buf[2], buf[3]])), 4)
        }
        127 => {
            if buf.len() < 10 {
                return Ok(None);
            }
            let len = u64::from_be_bytes(buf[2..10].try_into().expect("8 bytes"));
            if len >> 63 != 0 {
                return Err(HeaderError::LengthTooLarge);
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() && (!fin || payload_len > MAX_CONTROL_PAYLOAD as u64) {
        return Err(HeaderError::BadControlFrame);
    }
    if rsv1 && opcode.is_control() {
        // RFC 7692 §6: control frames are never compressed.
        return Err(HeaderError::ReservedBits);
    }
    if buf.len() < at + 4 {
        return Ok(None);
    }
    let mask = [buf[at], buf[at + 1], buf[at + 2], buf[at + 3]];
    at += 4;
    Ok(Some(Header { fin, rsv1, opcode, mask: Some(mask), payload_len, header_len: at }))
}

/// XORs `data` with `mask`, starting `offset` bytes into the payload.
pub(crate) fn apply_mask(data: &mut [u8], mask: [u8; 4], offset: usize) {
    let mut key = mask;
    key.rotate_left(offset % 4);
    let word = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = data.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let v = u64::from_ne_bytes(chunk.try_into().expect("8 bytes")) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= key[i % 4];
    }
}

/// Appends a server frame (never masked) with `payload` to `dst`.
#[cfg_attr(not(test), allow(dead_code))] // used by the WebSocket connection loop, next
pub(crate) fn encode(opcode: OpCode, fin: bool, rsv1: bool, payload: &[u8], dst: &mut BytesMut) {
    let len = payload.len();
    dst.reserve(10 + len);
    dst.put_u8((u8::from(fin) << 7) | (u8::from(rsv1) << 6) | opcode as u8);
    if len < 126 {
        dst.put_u8(len as u8);
    } else if len <= 0xFFFF {
        dst.put_u8(126);
        dst.put_u16(len as u16);
    } else {
        dst.put_u8(127);
        dst.put_u64(len as u64);
    }
    dst.put_slice(payload);
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A masked client frame, as a browser sends it.
    pub(crate) fn client_frame(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let mut body = payload.to_vec();
        apply_mask(&mut body, mask, 0);
        out.extend_from_slice(&body);
        out
    }

    #[test]
    fn header_lengths_and_incomplete_input() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let frame = client_frame(0x82, &vec![7u8; len], [1, 2, 3, 4]);
            let h = parse_header(&frame, false).unwrap().unwrap();
            assert_eq!((h.payload_len, h.opcode, h.fin), (len as u64, OpCode::Binary, true));
            assert_eq!(h.header_len + len, frame.len());
            for cut in 0..h.header_len {
                assert_eq!(parse_header(&frame[..cut], false), Ok(None), "len {len}, cut at {cut}");
            }
        }
    }

    #[test]
    fn refusals() {
        let m = [0, 0, 0, 0];
        assert_eq!(parse_header(&[0x82, 0x00], false), Err(HeaderError::Unmasked));
        assert_eq!(parse_header(&client_frame(0xA2, b"", m), false), Err(HeaderError::ReservedBits), "RSV2");
        assert_eq!(parse_header(&client_frame(0x92, b"", m), false), Err(HeaderError::ReservedBits), "RSV3");
        assert_eq!(
            parse_header(&client_frame(0xC2, b"", m), false),
            Err(HeaderError::ReservedBits),
            "RSV1 unnegotiated"
        );
        assert!(parse_header(&client_frame(0xC2, b"", m), true).unwrap().unwrap().rsv1);
        assert_eq!(parse_header(&client_frame(0xC9, b"", m), true), Err(HeaderError::ReservedBits), "compressed ping");
        for op in [0x3, 0x7, 0xB, 0xF] {
            assert_eq!(parse_header(&client_frame(0x80 | op, b"", m), false), Err(HeaderError::ReservedOpcode));
        }
        assert_eq!(parse_header(&client_frame(0x09, b"", m), false), Err(HeaderError::BadControlFrame), "ping w/o FIN");
        assert_eq!(
            parse_header(&client_frame(0x89, &[0; 126], m), false),
            Err(HeaderError::BadControlFrame),
            "126-byte ping"
        );
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse_header(&huge, false), Err(HeaderError::LengthTooLarge));
    }

    #[test]
    fn masking_is_an_involution_at_any_offset() {
        let data: Vec<u8> = (0..=255).collect();
        let mask = [0xA1, 0x02, 0xF3, 0x44];
        for offset in 0..8 {
            let mut masked = data.clone();
            apply_mask(&mut masked, mask, offset);
            for (i, (&m, &d)) in masked.iter().zip(&data).enumerate() {
                assert_eq!(m, d ^ mask[(i + offset) % 4], "byte {i}, offset {offset}");
            }
            apply_mask(&mut masked, mask, offset);
            assert_eq!(masked, data);
        }
    }

    #[test]
    fn encode_uses_the_shortest_length() {
        for (len, header) in [(0usize, 2usize), (125, 2), (126, 4), (65535, 4), (65536, 10)] {
            let mut out = BytesMut::new();
            encode(OpCode::Text, true, false, &vec![b'a'; len], &mut out);
            assert_eq!(out.len(), header + len);
            assert_eq!(out[0], 0x81);
        }
    }
}
