//! Generated per-node boot files.

use crate::view::{ImageEntry, NodeEntry};

/// The iPXE script for a node: its kernel, initrd and command line, or a
/// wait-and-retry loop when it has nothing to boot yet.
pub fn ipxe_script(
    base: &str,
    node: &NodeEntry,
    image: Option<&ImageEntry>,
    script_path: &str,
) -> String {
    let mut s = String::from("#!ipxe\n");
    s.push_str(&format!("# rackboot: node {} ({})\n", node.name, node.addr));
    match image {
        Some(im) => {
            let cmdline = format!(
                "{} rackboot.node={} rackboot.image={}",
                im.cmdline.trim(),
                node.number,
                im.name
            );
            s.push_str(&format!("echo rackboot: {} boots {}\n", node.name, im.name));
            s.push_str(&format!(
                "kernel {}/blobs/{} initrd=initrd.img {}\n",
                base,
                im.kernel.digest,
                cmdline.trim()
            ));
            s.push_str(&format!(
                "initrd --name initrd.img {}/blobs/{}\n",
                base, im.initrd.digest
            ));
            s.push_str("boot\n");
        }
        None => {
            s.push_str(&format!(
                "echo rackboot: node {} has no image assigned yet; retrying in 10 s\n",
                node.name
            ));
            s.push_str("sleep 10\n");
            s.push_str(&format!("chain --replace {}/{}\n", base, script_path));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_state::{Blake3Digest, BlobRef};

    #[test]
    fn script_names_kernel_initrd_and_cmdline() {
        let node = NodeEntry {
            number: 4,
            name: "n4".into(),
            macs: vec![],
            addr: "10.0.0.5".parse().unwrap(),
            image: Some("img:1".into()),
        };
        let im = ImageEntry {
            name: "img:1".into(),
            kernel: BlobRef {
                digest: Blake3Digest::of(b"k"),
                size: 1,
            },
            initrd: BlobRef {
                digest: Blake3Digest::of(b"i"),
                size: 1,
            },
            cmdline: "console=ttyS0 ".into(),
            kernel_version: String::new(),
        };
        let base = "tftp://10.0.0.1";
        let s = ipxe_script(base, &node, Some(&im), "ipxe/x.ipxe");
        assert!(s.starts_with("#!ipxe\n"));
        assert!(s.contains(&format!("kernel tftp://10.0.0.1/blobs/{} initrd=initrd.img console=ttyS0 rackboot.node=4 rackboot.image=img:1\n", im.kernel.digest)));
        assert!(s.contains(&format!(
            "initrd --name initrd.img tftp://10.0.0.1/blobs/{}\n",
            im.initrd.digest
        )));
        let wait = ipxe_script(base, &node, None, "ipxe/x.ipxe");
        assert!(wait.contains("chain --replace tftp://10.0.0.1/ipxe/x.ipxe"));
        assert!(!wait.contains("kernel"));
    }
}
