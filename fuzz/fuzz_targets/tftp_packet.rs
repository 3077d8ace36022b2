//! TFTP packet codec: parse never panics; parse → encode → parse is stable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_tftp_core::Packet;

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Packet::parse(data) {
        let bytes = p.encode();
        let again = Packet::parse(&bytes).expect("an encoded packet parses");
        assert_eq!(p, again);
    }
});
