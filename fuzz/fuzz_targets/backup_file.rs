//! The coordinator's backup file (`rackboot cluster backup`,
//! `--restore-state`) on arbitrary bytes: a header line and the state JSON,
//! checked for format, size and blake3 before the state is loaded. Decoding
//! returns errors, never panics; what decodes encodes and decodes again to
//! the same state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_state::backup;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = backup::decode(data) {
        let again = backup::encode(&state, 1).expect("a loaded state encodes");
        assert_eq!(backup::decode(&again).expect("an encoded backup decodes"), state);
    }
});
