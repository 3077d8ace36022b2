//! The coordinator's persisted state loaders on arbitrary bytes: a Raft
//! snapshot's state (JSON) and a backup file (`rackboot cluster backup`)
//! return errors, never panic; a state that loads saves and loads again to
//! the same state.
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
    let _ = rackboot_coordinator::backup::decode(data);
});
