//! WebSocket frame decoder: never panics, and the messages (and the close
//! code of a violation) do not depend on how the input was split across reads.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u8, &[u8])| {
    let (step, data) = input;
    let whole = skitai::internals::ws_messages(data, data.len());
    let pieces = skitai::internals::ws_messages(data, usize::from(step));
    assert_eq!(whole, pieces, "split at every {step} bytes changed the result");
    for (opcode, payload) in &whole.0 {
        if *opcode == 1 {
            assert!(std::str::from_utf8(payload).is_ok(), "a text message that is not UTF-8");
        }
        assert!(payload.len() <= 64 << 10, "a message over the cap");
    }
});
