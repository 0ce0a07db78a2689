//! Request-head parser: any bytes, never a panic; parsing is independent of how
//! the bytes were split across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let whole = skitai::internals::request_heads(data);
    assert!(whole <= data.len() / 16 + 1, "a head is at least 16 bytes");
});
