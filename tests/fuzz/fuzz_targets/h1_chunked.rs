//! Chunked decoder: never panics, and the decoded body does not depend on how
//! the input was split across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let whole = skitai::internals::chunked_body(data, data.len());
    let pieces = skitai::internals::chunked_body(data, usize::from(step));
    assert_eq!(whole, pieces, "split at every {step} bytes changed the result");
    if let Some(body) = whole {
        assert!(body.len() <= data.len());
    }
});
