//! Request-head parser: any bytes, never a panic; the heads found and how the
//! stream ends do not depend on how the bytes were split across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let whole = skitai::internals::request_heads_in_steps(data, data.len());
    assert!(whole.len() <= data.len() / 16 + 2, "a head is at least 16 bytes");
    let pieces = skitai::internals::request_heads_in_steps(data, usize::from(step));
    assert_eq!(whole, pieces, "feeding {step} bytes at a time changed the result");
});
