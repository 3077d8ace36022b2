//! Domain newtypes parsed from API strings: never panic; valid values print back.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_state::{Blake3Digest, ImageName, Mac, RackName};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(m) = s.parse::<Mac>() {
        assert_eq!(m.to_string().parse::<Mac>().ok(), Some(m));
    }
    if let Ok(d) = s.parse::<Blake3Digest>() {
        assert_eq!(d.to_string(), s);
    }
    if let Ok(n) = s.parse::<ImageName>() {
        assert_eq!(n.as_str(), s);
    }
    let _ = s.parse::<RackName>();
});
