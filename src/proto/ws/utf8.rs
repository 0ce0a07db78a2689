//! Incremental UTF-8 validation of a text message arriving in fragments:
//! fails as soon as the bytes so far cannot start valid UTF-8 (RFC 6455
//! §8.1 lets an endpoint fail fast, and clients expect it).

/// Validates a byte stream fed in pieces; holds at most 3 bytes of an
/// unfinished character between pieces.
#[derive(Debug, Default, Clone)]
pub(crate) struct Utf8Stream {
    carry: [u8; 4],
    carry_len: usize,
}

/// The length of the character a valid leading byte starts.
fn char_len(lead: u8) -> usize {
    match lead {
        0xF0..=0xF4 => 4,
        0xE0..=0xEF => 3,
        0xC2..=0xDF => 2,
        _ => 1,
    }
}

impl Utf8Stream {
    /// Checks the next piece; `Err` once the stream cannot be valid UTF-8.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), ()> {
        if self.carry_len > 0 {
            let full = char_len(self.carry[0]);
            let take = (full - self.carry_len).min(data.len());
            self.carry[self.carry_len..self.carry_len + take].copy_from_slice(&data[..take]);
            self.carry_len += take;
            data = &data[take..];
            match std::str::from_utf8(&self.carry[..self.carry_len]) {
                Ok(_) => self.carry_len = 0,
                Err(e) if e.error_len().is_some() => return Err(()),
                // Still a valid prefix of one character: only if the piece ran out.
                Err(_) if data.is_empty() => return Ok(()),
                Err(_) => return Err(()),
            }
        }
        match std::str::from_utf8(data) {
            Ok(_) => Ok(()),
            Err(e) if e.error_len().is_some() => Err(()),
            Err(e) => {
                let rest = &data[e.valid_up_to()..];
                self.carry[..rest.len()].copy_from_slice(rest);
                self.carry_len = rest.len();
                Ok(())
            }
        }
    }

    /// Checks that the stream did not end inside a character.
    pub(crate) fn finish(&mut self) -> Result<(), ()> {
        let complete = self.carry_len == 0;
        self.carry_len = 0;
        if complete { Ok(()) } else { Err(()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_split_everywhere(bytes: &[u8]) -> bool {
        let whole = std::str::from_utf8(bytes).is_ok();
        for a in 0..=bytes.len() {
            for b in a..=bytes.len() {
                let mut s = Utf8Stream::default();
                let ok = s.feed(&bytes[..a]).is_ok()
                    && s.feed(&bytes[a..b]).is_ok()
                    && s.feed(&bytes[b..]).is_ok()
                    && s.finish().is_ok();
                assert_eq!(ok, whole, "{bytes:x?} split at {a}, {b}");
            }
        }
        whole
    }

    #[test]
    fn agrees_with_std_for_every_split() {
        assert!(check_split_everywhere("Hello-µ@ßöäüàá-UTF-8!!".as_bytes()));
        assert!(check_split_everywhere("κόσμε 𝄞 €".as_bytes()));
        assert!(!check_split_everywhere(b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited"));
        assert!(!check_split_everywhere(b"ab\xf4\x90\x80\x80")); // above U+10FFFF
        assert!(!check_split_everywhere(b"\xc0\xaf")); // overlong
        assert!(!check_split_everywhere(b"abc\xe2\x82")); // ends inside a character
    }

    #[test]
    fn fails_fast_on_an_impossible_prefix() {
        let mut s = Utf8Stream::default();
        assert!(s.feed(b"ok \xf4").is_ok(), "F4 can still start a character");
        assert!(s.feed(b"\x90").is_err(), "F4 90 cannot: fail before the message ends");
        let mut s = Utf8Stream::default();
        assert!(s.feed(b"\xed").is_ok());
        assert!(s.feed(b"\xa0").is_err(), "a surrogate is refused at its second byte");
    }
}
