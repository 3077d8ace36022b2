//! Boot-info: everything a booting node needs, in one answer (the Utah notes
//! counted 26 requests per boot). Served over HTTP (`/boot-info`) and as
//! TFTP-readable files (`boot-info/<mac>.json`, `boot-info/<mac>.env`), always
//! from the agent's local view, never with a coordinator round trip.

use std::net::Ipv4Addr;

use ipnet::Ipv4Net;
use serde::Serialize;

use crate::view::{ImageEntry, NodeEntry};

/// The agent's side of the answer: where things are.
#[derive(Debug, Clone)]
pub struct Site {
    /// Rack name.
    pub rack: String,
    /// The agent's address (server, log host).
    pub server: Ipv4Addr,
    /// The rack subnet.
    pub subnet: Ipv4Net,
    /// Gateway for nodes.
    pub gateway: Option<Ipv4Addr>,
    /// Base URL nodes fetch blobs from (`http://…` or `tftp://…`).
    pub blob_base: String,
}

/// The answer.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BootInfo {
    /// Node number.
    pub node: u32,
    /// Node name.
    pub name: String,
    /// Every MAC of the node.
    pub macs: Vec<String>,
    /// The node's address.
    pub address: Ipv4Addr,
    /// Netmask of the rack subnet.
    pub netmask: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Gateway, if any.
    pub gateway: Option<Ipv4Addr>,
    /// Rack.
    pub rack: String,
    /// The agent serving this node.
    pub server: Ipv4Addr,
    /// Where to send syslog.
    pub log_host: Ipv4Addr,
    /// Assigned image.
    pub image: Option<String>,
    /// Kernel blake3.
    pub kernel_blake3: Option<String>,
    /// Kernel URL.
    pub kernel_url: Option<String>,
    /// Initrd blake3.
    pub initrd_blake3: Option<String>,
    /// Initrd URL.
    pub initrd_url: Option<String>,
    /// Kernel command line.
    pub cmdline: Option<String>,
    /// Kernel version of the assigned image.
    pub kernel_version: Option<String>,
    /// Rack state revision this answer was built from.
    pub revision: u64,
}

impl BootInfo {
    /// Build the answer for one node.
    pub fn new(site: &Site, node: &NodeEntry, image: Option<&ImageEntry>, revision: u64) -> Self {
        BootInfo {
            node: node.number,
            name: node.name.clone(),
            macs: node.macs.iter().map(|m| m.to_string()).collect(),
            address: node.addr,
            netmask: site.subnet.netmask(),
            prefix: site.subnet.prefix_len(),
            gateway: site.gateway,
            rack: site.rack.clone(),
            server: site.server,
            log_host: site.server,
            image: image.map(|i| i.name.clone()),
            kernel_blake3: image.map(|i| i.kernel.digest.to_string()),
            kernel_url: image.map(|i| format!("{}/blobs/{}", site.blob_base, i.kernel.digest)),
            initrd_blake3: image.map(|i| i.initrd.digest.to_string()),
            initrd_url: image.map(|i| format!("{}/blobs/{}", site.blob_base, i.initrd.digest)),
            cmdline: image.map(|i| i.cmdline.clone()),
            kernel_version: image.map(|i| i.kernel_version.clone()),
            revision,
        }
    }

    /// JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_else(|_| "{}".to_string())
    }

    /// Shell-sourceable `RACKBOOT_KEY='value'` lines (values single-quoted).
    pub fn to_env(&self) -> String {
        let opt = |v: &Option<String>| v.clone().unwrap_or_default();
        let pairs: Vec<(&str, String)> = vec![
            ("NODE", self.node.to_string()),
            ("NAME", self.name.clone()),
            ("MACS", self.macs.join(" ")),
            ("ADDRESS", self.address.to_string()),
            ("NETMASK", self.netmask.to_string()),
            ("PREFIX", self.prefix.to_string()),
            (
                "GATEWAY",
                self.gateway.map(|g| g.to_string()).unwrap_or_default(),
            ),
            ("RACK", self.rack.clone()),
            ("SERVER", self.server.to_string()),
            ("LOG_HOST", self.log_host.to_string()),
            ("IMAGE", opt(&self.image)),
            ("KERNEL_BLAKE3", opt(&self.kernel_blake3)),
            ("KERNEL_URL", opt(&self.kernel_url)),
            ("INITRD_BLAKE3", opt(&self.initrd_blake3)),
            ("INITRD_URL", opt(&self.initrd_url)),
            ("CMDLINE", opt(&self.cmdline)),
            ("KERNEL_VERSION", opt(&self.kernel_version)),
            ("REVISION", self.revision.to_string()),
        ];
        let mut out = String::new();
        for (k, v) in pairs {
            out.push_str(&format!("RACKBOOT_{k}='{}'\n", v.replace('\'', "'\\''")));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_state::{Blake3Digest, BlobRef};

    #[test]
    fn env_lines_are_quoted_and_complete() {
        let site = Site {
            rack: "r1".into(),
            server: "10.0.0.1".parse().unwrap(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: None,
            blob_base: "http://10.0.0.1".into(),
        };
        let node = NodeEntry {
            number: 3,
            name: "n3".into(),
            macs: vec!["52:54:00:00:00:03".parse().unwrap()],
            addr: "10.0.0.4".parse().unwrap(),
            image: Some("img".into()),
        };
        let im = ImageEntry {
            name: "img".into(),
            kernel: BlobRef {
                digest: Blake3Digest::of(b"k"),
                size: 1,
            },
            initrd: BlobRef {
                digest: Blake3Digest::of(b"i"),
                size: 1,
            },
            cmdline: "console=ttyS0 x='y'".into(),
            kernel_version: "6.1.0".into(),
        };
        let info = BootInfo::new(&site, &node, Some(&im), 9);
        let env = info.to_env();
        assert!(env.contains("RACKBOOT_NODE='3'\n"));
        assert!(env.contains("RACKBOOT_NETMASK='255.255.255.0'\n"));
        assert!(
            env.contains("RACKBOOT_CMDLINE='console=ttyS0 x='\\''y'\\'''\n"),
            "{env}"
        );
        assert!(env.contains(&format!(
            "RACKBOOT_KERNEL_URL='http://10.0.0.1/blobs/{}'",
            im.kernel.digest
        )));
        let json: serde_json::Value = serde_json::from_str(&info.to_json()).unwrap();
        assert_eq!(json["name"], "n3");
        assert_eq!(json["prefix"], 24);
    }
}
