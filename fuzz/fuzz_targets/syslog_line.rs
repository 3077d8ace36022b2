//! Node log lines: parse never panics and never returns more than MAX_LINE of text.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_agent_domain::syslog::{MAX_LINE, parse};

fuzz_target!(|data: &[u8]| {
    if let Ok(r) = parse(data) {
        assert!(r.message.len() <= MAX_LINE * 3);
        assert!(r.severity.is_none_or(|s| s < 8));
    }
});
