//! The agent's IPv6 router-advertisement responder on arbitrary ICMPv6
//! messages from arbitrary sources: never panics, answers only
//! solicitations, and only with the empty advertisement.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_agent_domain::router_advert::{RouterAdvertiser, null_advertisement};

fuzz_target!(|data: &[u8]| {
    let Some((&last, rest)) = data.split_last() else {
        return;
    };
    let src = std::net::Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, u16::from(last));
    let mut r = RouterAdvertiser::new();
    let now = std::time::Instant::now();
    for chunk in rest.chunks(24) {
        r.handle_datagram(now, src, chunk);
    }
    while let Some(t) = r.poll_transmit() {
        assert_eq!(t.payload, null_advertisement());
    }
    assert!(r.stats().answered <= r.stats().solicitations);
});
