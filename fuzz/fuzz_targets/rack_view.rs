//! The agent's persisted rack view loader on arbitrary bytes: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;
use prost::Message;
use rackboot_agent_domain::view::RackView;
use rackboot_proto::v1::RackState;

fuzz_target!(|data: &[u8]| {
    if let Ok(state) = RackState::decode(data) {
        let _ = RackView::from_pb(state);
    }
});
