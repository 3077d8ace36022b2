//! Boot sessions: every time the agent serves a node its kernel, a new
//! session starts (node, MAC, image, kernel hash and version, transport,
//! time). Log lines from the node are tagged with its current session, so
//! logs stay tied to the kernel actually served.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::RwLock;

use tokio::sync::mpsc;

use crate::view::RackView;

/// One boot of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootSession {
    /// Session id: `<node>-<unix millis>`.
    pub id: String,
    /// Node number.
    pub node: u32,
    /// The node's first MAC.
    pub mac: String,
    /// Image name.
    pub image: String,
    /// Kernel blob served.
    pub kernel_blake3: String,
    /// Its version.
    pub kernel_version: String,
    /// "tftp" or "http".
    pub transport: &'static str,
    /// Start time.
    pub unix_millis: u64,
}

/// Current sessions, and a queue of new ones for the coordinator.
#[derive(Debug)]
pub struct Sessions {
    current: RwLock<HashMap<u32, BootSession>>,
    report: mpsc::Sender<BootSession>,
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Sessions {
    /// New tracker; new sessions are also sent to `report` (dropped when full).
    pub fn new(report: mpsc::Sender<BootSession>) -> Self {
        Sessions {
            current: RwLock::new(HashMap::new()),
            report,
        }
    }

    /// A file was served to `client`: if it is the kernel of that node's
    /// assigned image, a new boot session starts. Returns it.
    pub fn file_served(
        &self,
        view: &RackView,
        client: Ipv4Addr,
        path: &str,
        transport: &'static str,
    ) -> Option<BootSession> {
        let hash = path.strip_prefix("blobs/")?;
        let node = view.node_by_addr(client)?;
        let image = view.images.get(node.image.as_ref()?)?;
        if image.kernel.digest.to_string() != hash {
            return None;
        }
        let now = unix_millis();
        let session = BootSession {
            id: format!("{}-{now}", node.number),
            node: node.number,
            mac: node.macs.first().map(|m| m.to_string()).unwrap_or_default(),
            image: image.name.clone(),
            kernel_blake3: hash.to_string(),
            kernel_version: image.kernel_version.clone(),
            transport,
            unix_millis: now,
        };
        self.current
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(node.number, session.clone());
        tracing::info!(node = node.number, session = %session.id, image = %session.image, transport, "kernel served: boot session started");
        if self.report.try_send(session.clone()).is_err() {
            tracing::warn!(session = %session.id, "boot session report queue full; dropped");
        }
        Some(session)
    }

    /// The node's current session id.
    pub fn current(&self, node: u32) -> Option<String> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&node)
            .map(|s| s.id.clone())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_proto::v1 as pb;
    use rackboot_state::Blake3Digest;

    #[test]
    fn only_the_assigned_kernel_starts_a_session() {
        let k = Blake3Digest::of(b"k").to_string();
        let view = RackView::from_pb(pb::RackState {
            revision: 1,
            rack: None,
            nodes: vec![pb::Node {
                number: 5,
                name: "n5".into(),
                macs: vec!["52:54:00:00:00:05".into()],
                address: "10.0.0.6".into(),
                assigned_image: "img".into(),
                ..Default::default()
            }],
            images: vec![pb::ImageManifest {
                name: "img".into(),
                kernel: Some(pb::BlobRef {
                    blake3: k.clone(),
                    size: 1,
                }),
                initrd: Some(pb::BlobRef {
                    blake3: Blake3Digest::of(b"i").to_string(),
                    size: 1,
                }),
                kernel_version: "6.1.0-56-amd64".into(),
                ..Default::default()
            }],
        })
        .unwrap();
        let (tx, mut rx) = mpsc::channel(4);
        let s = Sessions::new(tx);
        let ip: Ipv4Addr = "10.0.0.6".parse().unwrap();
        assert!(s.file_served(&view, ip, "undionly.kpxe", "tftp").is_none());
        assert!(
            s.file_served(
                &view,
                ip,
                &format!("blobs/{}", Blake3Digest::of(b"i")),
                "http"
            )
            .is_none()
        );
        assert!(
            s.file_served(
                &view,
                "10.0.0.99".parse().unwrap(),
                &format!("blobs/{k}"),
                "http"
            )
            .is_none()
        );
        let got = s
            .file_served(&view, ip, &format!("blobs/{k}"), "http")
            .unwrap();
        assert_eq!(got.kernel_version, "6.1.0-56-amd64");
        assert_eq!(s.current(5), Some(got.id.clone()));
        assert_eq!(rx.try_recv().unwrap(), got);
    }
}
