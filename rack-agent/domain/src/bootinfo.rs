//! Boot-info: everything a booting node needs, in one answer (the Utah notes
//! counted 26 requests per boot). Served over HTTP (`/boot-info`) and as
//! TFTP-readable files (`boot-info/<mac>.json`, `boot-info/<mac>.env`), always
//! from the agent's local view, never with a coordinator round trip.

use std::collections::BTreeMap;
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
    /// Module bundle blake3 (when the image has one).
    pub modules_blake3: Option<String>,
    /// URL of the module bundle (an uncompressed tar of `lib/modules/<version>/`).
    pub modules_url: Option<String>,
    /// Served directory of the kernel's module bundle and tables
    /// (`modules/<kernel version>/`: `modules.tar`, `modules.dep`, …).
    pub modules_path: Option<String>,
    /// The boot session (kernel served) this answer belongs to.
    pub session: Option<String>,
    /// Image assigned now, when it is not the one whose kernel the node
    /// was served (it will boot it next time).
    pub assigned_image: Option<String>,
    /// Site key-values (`rackboot meta set`).
    pub meta: BTreeMap<String, String>,
    /// Rack state revision this answer was built from.
    pub revision: u64,
}

/// What a node was served and is assigned, for [`BootInfo::new`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Served<'a> {
    /// The image whose kernel the node runs (its session's), else the
    /// assigned image when it is ready to serve.
    pub image: Option<&'a ImageEntry>,
    /// The session id.
    pub session: Option<&'a str>,
    /// The image assigned now.
    pub assigned: Option<&'a str>,
}

/// Served directory of a kernel's modules.
pub fn modules_dir(kernel_version: &str) -> String {
    format!("modules/{kernel_version}")
}

impl BootInfo {
    /// Build the answer for one node.
    pub fn new(
        site: &Site,
        node: &NodeEntry,
        served: Served<'_>,
        meta: &BTreeMap<String, String>,
        revision: u64,
    ) -> Self {
        let image = served.image;
        let modules = image.and_then(|i| i.modules.map(|m| (m, i.kernel_version.as_str())));
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
            modules_blake3: modules.map(|(m, _)| m.digest.to_string()),
            modules_url: modules
                .map(|(_, v)| format!("{}/{}/modules.tar", site.blob_base, modules_dir(v))),
            modules_path: modules.map(|(_, v)| modules_dir(v)),
            session: served.session.map(str::to_string),
            assigned_image: served
                .assigned
                .filter(|a| image.is_none_or(|i| i.name != *a))
                .map(str::to_string),
            meta: meta.clone(),
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
            ("MODULES_BLAKE3", opt(&self.modules_blake3)),
            ("MODULES_URL", opt(&self.modules_url)),
            ("MODULES_PATH", opt(&self.modules_path)),
            ("SESSION", opt(&self.session)),
            ("ASSIGNED_IMAGE", opt(&self.assigned_image)),
            ("REVISION", self.revision.to_string()),
        ];
        // Keys are validated as shell-variable-safe by the coordinator and
        // again when the agent loads its view.
        let meta = self
            .meta
            .iter()
            .map(|(k, v)| (format!("META_{k}"), v.clone()));
        let mut out = String::new();
        for (k, v) in pairs
            .into_iter()
            .map(|(k, v)| (k.to_string(), v))
            .chain(meta)
        {
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
            modules: Some(BlobRef {
                digest: Blake3Digest::of(b"m"),
                size: 1,
            }),
            dtb: None,
        };
        let meta = BTreeMap::from([("SITE".to_string(), "lab 'a'".to_string())]);
        let served = Served {
            image: Some(&im),
            session: Some("3-17"),
            assigned: Some("img2"),
        };
        let info = BootInfo::new(&site, &node, served, &meta, 9);
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
        assert!(env.contains("RACKBOOT_MODULES_URL='http://10.0.0.1/modules/6.1.0/modules.tar'\n"));
        assert!(env.contains("RACKBOOT_MODULES_PATH='modules/6.1.0'\n"));
        assert!(env.contains("RACKBOOT_SESSION='3-17'\n"));
        assert!(env.contains("RACKBOOT_ASSIGNED_IMAGE='img2'\n"));
        assert!(env.contains(r"RACKBOOT_META_SITE='lab '\''a'\'''"), "{env}");
        let json: serde_json::Value = serde_json::from_str(&info.to_json()).unwrap();
        assert_eq!(json["name"], "n3");
        assert_eq!(json["meta"]["SITE"], "lab 'a'");
        assert_eq!(json["modules_path"], "modules/6.1.0");
        assert_eq!(json["prefix"], 24);
    }
}
