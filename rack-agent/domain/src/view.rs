//! The agent's local view of its rack: what it serves nodes from, with no
//! coordinator round trip. Built from the coordinator's `RackState` (validated
//! here, at the edge) and persisted (its encoding: [`RackView::encode`],
//! [`RackView::decode`]; the file is the agent's) so a restarted agent serves
//! offline.

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use prost::Message;
use rackboot_dhcp_core::{Mac, NodeBinding};
use rackboot_proto::v1 as pb;
use rackboot_state::{Blake3Digest, BlobRef};

/// The coordinator sent something that does not validate.
#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    /// A field is invalid.
    #[error("rack state from coordinator: {field}: {reason}")]
    Invalid {
        /// Field path.
        field: String,
        /// Why.
        reason: String,
    },
    /// Persisted view unreadable.
    #[error("persisted rack view {path}: {reason}")]
    Persisted {
        /// File.
        path: String,
        /// Why.
        reason: String,
    },
}

fn invalid(field: impl Into<String>, reason: impl std::fmt::Display) -> ViewError {
    ViewError::Invalid {
        field: field.into(),
        reason: reason.to_string(),
    }
}

/// One node as the agent serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeEntry {
    /// Persistent number.
    pub number: u32,
    /// Name (`n<number>`).
    pub name: String,
    /// MACs.
    pub macs: Vec<Mac>,
    /// Address.
    pub addr: Ipv4Addr,
    /// Assigned image name, if any.
    pub image: Option<String>,
}

/// One image as the agent serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageEntry {
    /// Name.
    pub name: String,
    /// Kernel blob.
    pub kernel: BlobRef,
    /// Initrd blob.
    pub initrd: BlobRef,
    /// Command line.
    pub cmdline: String,
    /// Kernel version.
    pub kernel_version: String,
    /// Kernel-module bundle for `kernel_version`, if any.
    pub modules: Option<BlobRef>,
    /// Device tree blob, if any.
    pub dtb: Option<BlobRef>,
}

impl ImageEntry {
    /// Every blob of the image.
    pub fn blobs(&self) -> impl Iterator<Item = &BlobRef> {
        [&self.kernel, &self.initrd]
            .into_iter()
            .chain(self.modules.as_ref())
            .chain(self.dtb.as_ref())
    }
}

/// Everything needed to answer the rack's nodes.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RackView {
    /// Coordinator revision this view was taken at (0 = none yet).
    pub revision: u64,
    /// Nodes by number.
    pub nodes: BTreeMap<u32, NodeEntry>,
    /// DHCP bindings by MAC (every MAC of every node).
    pub bindings: HashMap<Mac, NodeBinding>,
    /// Assigned images by name.
    pub images: BTreeMap<String, ImageEntry>,
    /// Node numbers by address.
    pub by_addr: HashMap<Ipv4Addr, u32>,
    /// Site key-values (`rackboot meta set`).
    pub meta: BTreeMap<String, String>,
    /// Image machines without a number boot (`rackboot probe`), if any.
    pub discovery_image: Option<String>,
    /// The raw message, kept for persistence.
    raw: Option<pb::RackState>,
}

fn blob(field: &str, b: Option<&pb::BlobRef>) -> Result<BlobRef, ViewError> {
    let b = b.ok_or_else(|| invalid(field, "missing"))?;
    Ok(BlobRef {
        digest: b
            .blake3
            .parse::<Blake3Digest>()
            .map_err(|e| invalid(format!("{field}.blake3"), e))?,
        size: b.size,
    })
}

impl RackView {
    /// Validate a coordinator message into a view.
    pub fn from_pb(state: pb::RackState) -> Result<Self, ViewError> {
        let mut nodes = BTreeMap::new();
        let mut bindings = HashMap::new();
        let mut by_addr = HashMap::new();
        for (i, n) in state.nodes.iter().enumerate() {
            let addr: Ipv4Addr = n
                .address
                .parse()
                .map_err(|e| invalid(format!("nodes[{i}].address"), e))?;
            let mut macs = Vec::new();
            for (j, m) in n.macs.iter().enumerate() {
                let mac: Mac = m
                    .parse()
                    .map_err(|e| invalid(format!("nodes[{i}].macs[{j}]"), e))?;
                macs.push(mac);
                bindings.insert(
                    mac,
                    NodeBinding {
                        number: n.number,
                        addr,
                        hostname: n.name.clone(),
                    },
                );
            }
            by_addr.insert(addr, n.number);
            let image = (!n.assigned_image.is_empty()).then(|| n.assigned_image.clone());
            nodes.insert(
                n.number,
                NodeEntry {
                    number: n.number,
                    name: n.name.clone(),
                    macs,
                    addr,
                    image,
                },
            );
        }
        let mut images = BTreeMap::new();
        for (i, im) in state.images.iter().enumerate() {
            images.insert(
                im.name.clone(),
                ImageEntry {
                    name: im.name.clone(),
                    kernel: blob(&format!("images[{i}].kernel"), im.kernel.as_ref())?,
                    initrd: blob(&format!("images[{i}].initrd"), im.initrd.as_ref())?,
                    cmdline: im.cmdline.clone(),
                    kernel_version: im.kernel_version.clone(),
                    modules: match &im.modules {
                        Some(m) => Some(blob(&format!("images[{i}].modules"), Some(m))?),
                        None => None,
                    },
                    dtb: match &im.dtb {
                        Some(d) => Some(blob(&format!("images[{i}].dtb"), Some(d))?),
                        None => None,
                    },
                },
            );
        }
        for (k, v) in &state.meta {
            rackboot_state::validate_meta(k, Some(v))
                .map_err(|e| invalid(format!("meta.{k}"), e))?;
        }
        Ok(RackView {
            revision: state.revision,
            nodes,
            bindings,
            images,
            by_addr,
            meta: state
                .meta
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            discovery_image: (!state.discovery_image.is_empty())
                .then(|| state.discovery_image.clone()),
            raw: Some(state),
        })
    }

    /// The node owning a MAC.
    pub fn node_by_mac(&self, mac: &Mac) -> Option<&NodeEntry> {
        self.bindings
            .get(mac)
            .and_then(|b| self.nodes.get(&b.number))
    }

    /// The node with an address.
    pub fn node_by_addr(&self, addr: Ipv4Addr) -> Option<&NodeEntry> {
        self.by_addr.get(&addr).and_then(|n| self.nodes.get(n))
    }

    /// Every blob some node of the rack needs.
    pub fn needed_blobs(&self) -> Vec<BlobRef> {
        let mut out: Vec<BlobRef> = Vec::new();
        for im in self.images.values() {
            for b in im.blobs() {
                if !out.contains(b) {
                    out.push(*b);
                }
            }
        }
        out
    }

    /// The coordinator message this view was built from, encoded: what the
    /// agent persists (None for a view not built from a message).
    pub fn encode(&self) -> Option<Vec<u8>> {
        self.raw.as_ref().map(Message::encode_to_vec)
    }

    /// A view from bytes [`RackView::encode`] made.
    pub fn decode(bytes: &[u8]) -> Result<Self, ViewError> {
        let state = pb::RackState::decode(bytes).map_err(|e| invalid("(encoding)", e))?;
        RackView::from_pb(state)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn sample() -> pb::RackState {
        pb::RackState {
            revision: 7,
            rack: None,
            meta: [("SITE".to_string(), "lab".to_string())].into(),
            nodes: vec![pb::Node {
                number: 3,
                name: "n3".into(),
                macs: vec!["52:54:00:00:00:03".into(), "52:54:00:00:01:03".into()],
                rack: "r1".into(),
                slot: 0,
                address: "10.0.0.2".into(),
                assigned_image: "img:1".into(),
                assignment_source: "default".into(),
                ..Default::default()
            }],
            discovery_image: String::new(),
            images: vec![pb::ImageManifest {
                name: "img:1".into(),
                kernel: Some(pb::BlobRef {
                    blake3: Blake3Digest::of(b"k").to_string(),
                    size: 1,
                }),
                initrd: Some(pb::BlobRef {
                    blake3: Blake3Digest::of(b"i").to_string(),
                    size: 1,
                }),
                cmdline: "console=ttyS0".into(),
                ..Default::default()
            }],
        }
    }

    #[test]
    fn builds_bindings_for_every_mac_and_round_trips() {
        let v = RackView::from_pb(sample()).unwrap();
        assert_eq!(v.bindings.len(), 2);
        let mac: Mac = "52:54:00:00:01:03".parse().unwrap();
        assert_eq!(v.node_by_mac(&mac).unwrap().number, 3);
        assert_eq!(v.needed_blobs().len(), 2);
        assert_eq!(RackView::decode(&v.encode().unwrap()).unwrap(), v);
        assert!(RackView::decode(b"\xff\xff garbage").is_err());
    }

    #[test]
    fn invalid_fields_are_named() {
        let mut s = sample();
        s.nodes[0].address = "nope".into();
        let e = RackView::from_pb(s).unwrap_err().to_string();
        assert!(e.contains("nodes[0].address"), "{e}");
        let mut s = sample();
        s.images[0].kernel = None;
        let e = RackView::from_pb(s).unwrap_err().to_string();
        assert!(e.contains("images[0].kernel"), "{e}");
        let mut s = sample();
        s.meta.insert("BAD KEY".into(), "x".into());
        let e = RackView::from_pb(s).unwrap_err().to_string();
        assert!(e.contains("meta.BAD KEY"), "{e}");
        let mut s = sample();
        s.meta.insert("OK".into(), "line\nbreak".into());
        assert!(RackView::from_pb(s).is_err());
        assert_eq!(RackView::from_pb(sample()).unwrap().meta["SITE"], "lab");
    }
}
