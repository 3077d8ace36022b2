//! The coordinator's persisted state loader on arbitrary bytes: a Raft
//! snapshot's (and a backup's) state JSON returns errors, never panics; a
//! state that loads saves and loads again to the same state.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_state::State;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = serde_json::from_slice::<State>(data)
        && let Ok(again) = serde_json::to_vec(&state)
    {
        let back: State = serde_json::from_slice(&again).expect("a saved state loads");
        assert_eq!(back, state);
    }
});
