//! permessage-deflate (RFC 7692): the negotiated parameters, and raw-deflate
//! compression of whole messages with context takeover or without.

use bytes::Bytes;
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

use super::codec::CloseCode;

/// What both ends agreed on (RFC 7692 §7.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeflateParams {
    /// We reset our compressor after every message.
    pub(crate) server_no_context_takeover: bool,
    /// The client resets its compressor after every message.
    pub(crate) client_no_context_takeover: bool,
    /// The client limited our window (`server_max_window_bits=N`).
    pub(crate) server_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// Reads one offer's parameters; `None` declines it (an unknown,
    /// repeated or invalid parameter, or a window we cannot honour).
    pub(crate) fn from_offer<'a>(params: impl Iterator<Item = &'a str>) -> Option<DeflateParams> {
        let mut p = DeflateParams {
            server_no_context_takeover: false,
            client_no_context_takeover: false,
            server_max_window_bits: None,
        };
        let (mut seen_snct, mut seen_cnct, mut seen_cmwb) = (false, false, false);
        for param in params {
            let (name, value) = match param.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (param, None),
            };
            // True the first time a parameter is seen.
            let once = |seen: &mut bool| !std::mem::replace(seen, true);
            match name.to_ascii_lowercase().as_str() {
                "server_no_context_takeover" if value.is_none() && once(&mut seen_snct) => {
                    p.server_no_context_takeover = true;
                }
                "client_no_context_takeover" if value.is_none() && once(&mut seen_cnct) => {
                    p.client_no_context_takeover = true;
                }
                "server_max_window_bits" if p.server_max_window_bits.is_none() => {
                    // zlib cannot make an 8-bit window (it uses 9): decline.
                    let bits = window_bits(value?)?;
                    if bits < 9 {
                        return None;
                    }
                    p.server_max_window_bits = Some(bits);
                }
                // Any client window is fine: we inflate with the largest one.
                "client_max_window_bits" if once(&mut seen_cmwb) => {
                    if let Some(v) = value {
                        window_bits(v)?;
                    }
                }
                _ => return None,
            }
        }
        Some(p)
    }

    /// The `Sec-WebSocket-Extensions` value accepting these parameters.
    pub(crate) fn response(&self) -> String {
        let mut out = String::from("permessage-deflate");
        if self.server_no_context_takeover {
            out.push_str("; server_no_context_takeover");
        }
        if self.client_no_context_takeover {
            out.push_str("; client_no_context_takeover");
        }
        if let Some(bits) = self.server_max_window_bits {
            out.push_str("; server_max_window_bits=");
            out.push_str(&bits.to_string());
        }
        out
    }
}

fn window_bits(value: &str) -> Option<u8> {
    let bits: u8 = value.parse().ok()?;
    (8..=15).contains(&bits).then_some(bits)
}

/// The four bytes a sync flush ends with; removed on the wire (§7.2.1).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// Compresses the messages we send on one connection.
pub(crate) struct Deflater {
    compress: Compress,
    reset: bool,
}

impl std::fmt::Debug for Deflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deflater").finish_non_exhaustive()
    }
}

/// Inflates the messages a client sends on one connection.
pub(crate) struct Inflater {
    decompress: Decompress,
    reset: bool,
}

impl std::fmt::Debug for Inflater {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inflater").finish_non_exhaustive()
    }
}

impl Deflater {
    /// Our compressor under `params`.
    pub(crate) fn new(params: &DeflateParams) -> Deflater {
        let bits = params.server_max_window_bits.unwrap_or(15);
        Deflater {
            compress: Compress::new_with_window_bits(Compression::fast(), false, bits),
            reset: params.server_no_context_takeover,
        }
    }

    /// The compressed form of one message's payload.
    pub(crate) fn compress(&mut self, data: &[u8]) -> Bytes {
        let mut out: Vec<u8> = Vec::with_capacity(data.len() / 2 + 64);
        let start_in = self.compress.total_in();
        loop {
            let consumed = (self.compress.total_in() - start_in) as usize;
            if out.capacity() - out.len() < 64 {
                out.reserve(out.capacity().max(256));
            }
            self.compress.compress_vec(&data[consumed..], &mut out, FlushCompress::Sync).expect("deflate never fails");
            let consumed = (self.compress.total_in() - start_in) as usize;
            // Done once all input is in and the flush left room to spare.
            if consumed == data.len() && out.len() < out.capacity() && out.ends_with(&TAIL) {
                break;
            }
        }
        out.truncate(out.len() - TAIL.len());
        if self.reset {
            self.compress.reset();
        }
        Bytes::from(out)
    }

    /// Forgets every message compressed so far, as after a message that was
    /// compressed but never sent: later messages must not refer to it.
    pub(crate) fn forget(&mut self) {
        self.compress.reset();
    }
}

impl Inflater {
    /// Our decompressor under `params` (the largest window: it reads any
    /// window the client chose).
    pub(crate) fn new(params: &DeflateParams) -> Inflater {
        Inflater { decompress: Decompress::new_with_window_bits(false, 15), reset: params.client_no_context_takeover }
    }

    /// Inflates one whole message, refusing more than `max` bytes of output
    /// (1009) and data that is not deflate (1007).
    pub(crate) fn decompress(&mut self, data: &[u8], max: usize) -> Result<Bytes, CloseCode> {
        let mut out: Vec<u8> = Vec::with_capacity((data.len() * 3).clamp(64, max.max(64)));
        for input in [data, &TAIL[..]] {
            let start_in = self.decompress.total_in();
            loop {
                let consumed = (self.decompress.total_in() - start_in) as usize;
                // Done with this input once it is all in and the output had room to spare.
                if consumed == input.len() && out.len() < out.capacity() {
                    break;
                }
                if out.len() == out.capacity() {
                    // One byte past the cap is enough to know it is exceeded.
                    out.reserve(out.len().max(1024).min(max + 1 - out.len()));
                }
                let before_out = self.decompress.total_out();
                let status = self
                    .decompress
                    .decompress_vec(&input[consumed..], &mut out, FlushDecompress::Sync)
                    .map_err(|_| CloseCode::InvalidData)?;
                if out.len() > max {
                    return Err(CloseCode::TooBig);
                }
                let stalled = self.decompress.total_out() == before_out
                    && (self.decompress.total_in() - start_in) as usize == consumed
                    && out.len() < out.capacity();
                if status == Status::StreamEnd || stalled {
                    // A final block (BFINAL), or nothing more can come out of this input.
                    break;
                }
            }
        }
        if self.reset {
            self.decompress.reset(false);
        }
        Ok(Bytes::from(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(server_reset: bool) -> DeflateParams {
        DeflateParams {
            server_no_context_takeover: server_reset,
            client_no_context_takeover: false,
            server_max_window_bits: None,
        }
    }

    #[test]
    fn round_trip_with_and_without_context_takeover() {
        for reset in [false, true] {
            let mut ours = Deflater::new(&params(reset));
            let mut theirs = Inflater::new(&params(false));
            let text = b"Hello, Hello, Hello, Hello! ".repeat(50);
            let a = ours.compress(&text);
            let b = ours.compress(&text);
            assert!(a.len() < text.len() / 5);
            if reset {
                assert_eq!(a, b, "no context takeover: every message compresses alone");
            } else {
                assert!(b.len() < a.len(), "the second message refers to the first");
            }
            assert_eq!(&theirs.decompress(&a, 1 << 20).unwrap()[..], &text[..]);
            assert_eq!(&theirs.decompress(&b, 1 << 20).unwrap()[..], &text[..]);
        }
    }

    #[test]
    fn rfc_7692_example_and_limits() {
        // §7.2.3.1: "Hello" compressed with no context takeover.
        let mut d = Inflater::new(&params(false));
        assert_eq!(&d.decompress(&[0xf2, 0x48, 0xcd, 0xc9, 0xc9, 0x07, 0x00], 100).unwrap()[..], b"Hello");
        let bomb = Deflater::new(&params(false)).compress(&vec![0u8; 1 << 20]);
        assert!(bomb.len() < 16 << 10, "1 MiB of zeros shrinks to {} bytes", bomb.len());
        assert_eq!(Inflater::new(&params(false)).decompress(&bomb, 1000), Err(CloseCode::TooBig));
        assert_eq!(Inflater::new(&params(false)).decompress(&[0xff, 0xff, 0xff], 1000), Err(CloseCode::InvalidData));
        assert_eq!(&Inflater::new(&params(false)).decompress(&[0x02, 0x00], 10).unwrap()[..], b"", "empty message");
    }

    #[test]
    fn offers() {
        let offer = |s: &str| DeflateParams::from_offer(s.split(';').map(str::trim).filter(|s| !s.is_empty()));
        assert_eq!(offer(""), Some(params(false)));
        assert_eq!(offer("server_no_context_takeover"), Some(params(true)));
        assert_eq!(offer("server_max_window_bits=10").unwrap().server_max_window_bits, Some(10));
        assert_eq!(offer("client_max_window_bits"), Some(params(false)));
        assert_eq!(offer("client_max_window_bits=9"), Some(params(false)));
        for bad in [
            "server_max_window_bits=8",
            "server_max_window_bits=16",
            "server_max_window_bits",
            "client_max_window_bits=7",
            "server_no_context_takeover; server_no_context_takeover",
            "server_no_context_takeover=1",
            "mystery",
        ] {
            assert_eq!(offer(bad), None, "{bad}");
        }
    }
}
