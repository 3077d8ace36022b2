//! The replica's settings: file and flags, validated
//! ([`rackboot_coordinator_settings`]), the keys a configuration file may
//! hold ([`file_keys`], read from the settings' own definition), and the
//! Raft replica configuration made from them.

pub use rackboot_coordinator_settings::*;

use crate::raft::ReplicaConfig;

/// The replica configuration the settings describe.
pub fn replica_config(s: &Settings) -> ReplicaConfig {
    ReplicaConfig {
        id: s.id,
        peers: s.peers.clone(),
        data_dir: s.data_dir.clone(),
        tick: s.tick,
        election_ticks: s.election_ticks,
        heartbeat_ticks: s.heartbeat_ticks,
        snapshot_every: s.snapshot_every,
        join: s.join,
        upload_grace: s.upload_grace,
    }
}

/// Every top-level key a configuration file may hold, in the order
/// [`FileConfig`] declares them. Read from `FileConfig`'s serde definition
/// (the same list that refuses unknown keys), so it cannot miss one.
pub fn file_keys() -> &'static [&'static str] {
    let mut keys: &'static [&'static str] = &[];
    // The probe only records the field names and then refuses to go on.
    let _ = <FileConfig as serde::Deserialize>::deserialize(key_probe::KeyProbe(&mut keys));
    keys
}

mod key_probe {
    use serde::de::{self, Deserializer, Visitor};

    /// A deserializer that records the field names of the struct asked of
    /// it, and deserializes nothing.
    pub(super) struct KeyProbe<'a>(pub(super) &'a mut &'static [&'static str]);

    impl<'de> Deserializer<'de> for KeyProbe<'_> {
        type Error = de::value::Error;

        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
            Err(de::Error::custom("only a struct's field names are read"))
        }

        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            _visitor: V,
        ) -> Result<V::Value, Self::Error> {
            *self.0 = fields;
            Err(de::Error::custom("field names read"))
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
            bytes byte_buf option unit unit_struct newtype_struct seq tuple
            tuple_struct map enum identifier ignored_any
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_keys_are_exactly_the_keys_a_file_accepts() {
        let keys = file_keys();
        assert!(keys.len() >= 15, "{keys:?}");
        let path = std::path::Path::new("coordinator.toml");
        for key in keys {
            let text = format!("{key} = 1");
            if let Err(e) = parse_file(path, &text) {
                assert!(
                    !e.to_string().contains("unknown field"),
                    "{key} refused as unknown: {e}"
                );
            }
        }
        let unknown = parse_file(path, "no_such_key = 1");
        assert!(
            unknown.is_err_and(|e| e.to_string().contains("unknown field")),
            "an unknown key is refused"
        );
        for key in ["metrics_listen", "upload_grace_secs", "tls_ca", "plaintext"] {
            assert!(keys.contains(&key), "{key} missing from {keys:?}");
        }
    }
}
