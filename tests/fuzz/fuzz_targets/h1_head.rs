//! Request-head parser: any bytes, never a panic; the heads found do not
//! depend on how the bytes were split across reads, and neither does whether
//! the stream ends refused or waiting for more. (Which refusal can: a size
//! limit seen in a prefix may come before a syntax error further on.)
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let mut whole = skitai::internals::request_heads_in_steps(data, data.len());
    assert!(whole.len() <= data.len() / 16 + 2, "a head is at least 16 bytes");
    let mut pieces = skitai::internals::request_heads_in_steps(data, usize::from(step));
    let (end_whole, end_pieces) = (whole.pop(), pieces.pop());
    assert_eq!(whole, pieces, "feeding {step} bytes at a time changed the heads found");
    let refused = |end: &Option<String>| end.as_deref().is_some_and(|e| e.starts_with("refused"));
    assert_eq!(refused(&end_whole), refused(&end_pieces), "{end_whole:?} whole, {end_pieces:?} in pieces of {step}");
});
