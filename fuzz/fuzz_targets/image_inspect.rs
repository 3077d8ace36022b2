//! Pushed kernels and module bundles: the bzImage header reader and the
//! bundle inspector never panic; what they accept is consistent.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_image::bundle::{MAX_TABLES_TOTAL, inspect};
use rackboot_image::kernel_release;

fuzz_target!(|data: &[u8]| {
    if let Ok(release) = kernel_release(data) {
        assert!(!release.is_empty() && !release.contains(char::is_whitespace));
    }
    if let Ok(bundle) = inspect(data) {
        assert!(!bundle.release.is_empty());
        assert!(bundle.tables.contains_key("modules.dep"));
        let total: usize = bundle.tables.values().map(Vec::len).sum();
        assert!(total as u64 <= MAX_TABLES_TOTAL);
    }
});
