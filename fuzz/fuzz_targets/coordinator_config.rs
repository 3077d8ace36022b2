//! The coordinator's configuration file on arbitrary text: the TOML parse,
//! the layering under the (empty) command line, the validation and the
//! TLS/plaintext choice return errors, never panic; settings that validate
//! name this replica among its voters.
#![no_main]
use std::path::Path;

use libfuzzer_sys::fuzz_target;
use rackboot_coordinator_settings::{FileConfig, Overrides, parse_file, resolve};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("fuzz.toml");
    let Ok(file): Result<FileConfig, _> = parse_file(path, text) else {
        return;
    };
    if let Ok(settings) = resolve(Some((path, file)), &Overrides::default()) {
        assert!(settings.peers.contains_key(&settings.id), "{settings:?}");
        assert!(settings.election_ticks > settings.heartbeat_ticks);
        let _ = settings.transport(Some(path));
    }
});
