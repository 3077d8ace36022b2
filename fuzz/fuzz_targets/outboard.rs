//! Blob outboards received from the network: `Outboard::new` on arbitrary
//! bytes and sizes never panics; whatever it accepts merges to the name it
//! was checked against, and group verification on arbitrary data never
//! panics and accepts nothing for a group index out of range.
#![no_main]
use libfuzzer_sys::fuzz_target;
use rackboot_image::outboard::{self, Outboard};

fuzz_target!(|data: &[u8]| {
    if data.len() < 40 {
        return;
    }
    let (head, rest) = data.split_at(40);
    let mut name = [0u8; 32];
    name.copy_from_slice(&head[..32]);
    let mut size_bytes = [0u8; 8];
    size_bytes.copy_from_slice(&head[32..40]);
    // Sizes up to 64 MiB (64 groups), so outboards stay small.
    let size = u64::from_le_bytes(size_bytes) % (64 << 20);
    let split = rest.len().min(usize::try_from(outboard::groups(size) * 32).unwrap_or(0));
    let (ob_bytes, payload) = rest.split_at(split);
    if let Ok(ob) = Outboard::new(size, ob_bytes, &name) {
        assert_eq!(ob.root(), name);
        assert_eq!(ob.to_bytes(), ob_bytes);
        let _ = ob.verify_group(0, payload);
        assert!(ob.verify_group(ob.groups(), payload).is_err());
    }
    // A real outboard of the payload verifies it, group by group.
    let real = Outboard::compute(payload);
    assert!(real.bad_groups(payload).is_empty());
    assert_eq!(real.root(), *blake3::hash(payload).as_bytes());
});
