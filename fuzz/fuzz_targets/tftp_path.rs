//! TFTP file names: a SafePath never contains traversal.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_tftp_core::SafePath;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data)
        && let Ok(p) = SafePath::parse(s)
    {
        let p = p.as_str();
        assert!(!p.starts_with('/'));
        assert!(!p.contains('\\') && !p.contains('\0') && !p.contains('%'));
        assert!(p.split('/').all(|c| c != ".." && !c.is_empty()));
    }
});
