//! The persisted rack view (`rack-view.pb`): what a restarted agent serves
//! from while the coordinator is unreachable. Written atomically (write,
//! fsync, rename), so a crash leaves the old view or the new one, never a
//! torn file. Blocking I/O: callers on a runtime use `spawn_blocking`.

#![allow(
    clippy::disallowed_methods,
    reason = "synchronous storage: callers on a runtime use spawn_blocking"
)]

use std::path::Path;

use rackboot_agent_domain::view::{RackView, ViewError};

/// Persist `view` at `path` atomically. A view not built from a coordinator
/// message (the empty default) writes nothing.
pub fn save(view: &RackView, path: &Path) -> std::io::Result<()> {
    let Some(bytes) = view.encode() else {
        return Ok(());
    };
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// Load the persisted view (None when there is none yet).
pub fn load(path: &Path) -> Result<Option<RackView>, ViewError> {
    let err = |reason: String| ViewError::Persisted {
        path: path.display().to_string(),
        reason,
    };
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(err(e.to_string())),
    };
    RackView::decode(&bytes)
        .map(Some)
        .map_err(|e| err(e.to_string()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_proto::v1 as pb;

    #[test]
    fn round_trips_and_refuses_garbage() {
        let v = RackView::from_pb(pb::RackState {
            revision: 7,
            nodes: vec![pb::Node {
                number: 3,
                name: "n3".into(),
                macs: vec!["52:54:00:00:00:03".into()],
                address: "10.0.0.2".into(),
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("view.pb");
        save(&v, &p).unwrap();
        assert_eq!(load(&p).unwrap().unwrap(), v);
        assert!(load(&dir.path().join("none")).unwrap().is_none());
        std::fs::write(&p, b"\xff\xff garbage").unwrap();
        assert!(load(&p).is_err());
    }
}
