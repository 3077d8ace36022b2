//! Generated per-node boot files: the iPXE script, a pxelinux config
//! (`pxelinux.cfg/01-<mac>`) and a grub config (`grub.cfg-01-<mac>`), all
//! naming the same kernel, initrd and command line.

use crate::view::{ImageEntry, NodeEntry};

/// The kernel command line a node boots with: the image's, plus who it is.
pub fn kernel_cmdline(node: &NodeEntry, im: &ImageEntry) -> String {
    format!(
        "{} rackboot.node={} rackboot.image={}",
        im.cmdline.trim(),
        node.number,
        im.name
    )
    .trim()
    .to_string()
}

/// Path of a node's pxelinux config (pxelinux looks for `01-<mac>` first).
pub fn pxelinux_config_path(mac_hyphenated: &str) -> String {
    format!("pxelinux.cfg/01-{mac_hyphenated}")
}

/// Paths of a node's grub config: grub's network boot tries
/// `$prefix/grub.cfg-01-<mac>` first; `$prefix` depends on how the grub
/// image was built, so the file is offered at the root and under `grub/`.
pub fn grub_config_paths(mac_hyphenated: &str) -> [String; 2] {
    [
        format!("grub.cfg-01-{mac_hyphenated}"),
        format!("grub/grub.cfg-01-{mac_hyphenated}"),
    ]
}

/// A pxelinux config. Paths are relative to the TFTP root (pxelinux.0 at
/// the root); `IPAPPEND 2` adds `BOOTIF=01-<mac>` for the initramfs.
pub fn pxelinux_config(node: &NodeEntry, image: Option<&ImageEntry>) -> String {
    let mut s = format!("# rackboot: node {} ({})\nPROMPT 0\n", node.name, node.addr);
    match image {
        Some(im) => {
            s.push_str("DEFAULT rackboot\nTIMEOUT 0\nLABEL rackboot\n");
            s.push_str(&format!("  MENU LABEL {} boots {}\n", node.name, im.name));
            s.push_str(&format!("  KERNEL blobs/{}\n", im.kernel.digest));
            s.push_str(&format!("  INITRD blobs/{}\n", im.initrd.digest));
            if let Some(dtb) = &im.dtb {
                // U-Boot's `pxe` targets load it; pxelinux ignores it.
                s.push_str(&format!("  FDT blobs/{}\n", dtb.digest));
            }
            s.push_str(&format!("  APPEND {}\n", kernel_cmdline(node, im)));
            s.push_str("  IPAPPEND 2\n");
        }
        None => {
            s.push_str(&format!(
                "SAY rackboot: node {} has no image assigned yet; trying the next boot device in 10 s\n",
                node.name
            ));
            s.push_str("DEFAULT wait\nTIMEOUT 100\nLABEL wait\n  LOCALBOOT -1\n");
        }
    }
    s
}

/// The grub device prefix for blob paths: HTTP when the agent serves it
/// (`(http,10.0.0.1:8080)`), else the TFTP root grub booted from (empty).
fn grub_device(base: &str) -> String {
    base.strip_prefix("http://")
        .map(|host| format!("(http,{})", host.trim_end_matches('/')))
        .unwrap_or_default()
}

/// A grub config.
pub fn grub_config(base: &str, node: &NodeEntry, image: Option<&ImageEntry>) -> String {
    let mut s = format!(
        "# rackboot: node {} ({})\nset timeout=0\n",
        node.name, node.addr
    );
    match image {
        Some(im) => {
            let dev = grub_device(base);
            s.push_str(&format!("menuentry '{} boots {}' {{\n", node.name, im.name));
            s.push_str(&format!(
                "  linux {dev}/blobs/{} {}\n",
                im.kernel.digest,
                kernel_cmdline(node, im)
            ));
            s.push_str(&format!("  initrd {dev}/blobs/{}\n", im.initrd.digest));
            s.push_str("}\n");
        }
        None => {
            s.push_str(&format!(
                "echo 'rackboot: node {} has no image assigned yet; retrying in 10 s'\nsleep 10\nconfigfile $prefix/grub.cfg-01-$net_default_mac\n",
                node.name
            ));
        }
    }
    s
}

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
            let cmdline = kernel_cmdline(node, im);
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

/// The iPXE script for a machine without a number (a provisional lease):
/// the discovery image, whose `rackboot probe` reports every MAC of the
/// machine, or — without one — a loop that asks again every 10 s (the
/// machine may be numbered meanwhile and then gets its own script).
/// `token` is the machine's probe token, handed to the image as
/// `rackboot.token=` (its probe reports are refused without it).
pub fn discovery_ipxe_script(
    base: &str,
    image: Option<&ImageEntry>,
    token: Option<rackboot_dhcp_core::ProbeToken>,
) -> String {
    let mut s = String::from("#!ipxe\n# rackboot: machine without a node number\n");
    if let Some(t) = token {
        // Also for a probe run by hand (`rackboot probe --token`).
        s.push_str(&format!(
            "# {}={t}\n",
            rackboot_dhcp_core::probe::TOKEN_PARAM
        ));
    }
    match image {
        Some(im) => {
            s.push_str(&format!(
                "echo rackboot: ${{mac}} has no node number yet; booting discovery image {}\n",
                im.name
            ));
            let token = token
                .map(|t| format!(" {}={t}", rackboot_dhcp_core::probe::TOKEN_PARAM))
                .unwrap_or_default();
            s.push_str(&format!(
                "kernel {}/blobs/{} initrd=initrd.img {} rackboot.provisional=1 rackboot.image={}{token}\n",
                base,
                im.kernel.digest,
                im.cmdline.trim(),
                im.name
            ));
            s.push_str(&format!(
                "initrd --name initrd.img {}/blobs/{}\n",
                base, im.initrd.digest
            ));
            s.push_str("boot\n");
        }
        None => {
            s.push_str("echo rackboot: ${mac} has no node number yet; retrying in 10 s\n");
            s.push_str("sleep 10\n");
            s.push_str(&format!(
                "chain --replace {base}/ipxe/${{mac:hexhyp}}.ipxe\n"
            ));
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
            modules: None,
            dtb: None,
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

        let px = pxelinux_config(&node, Some(&im));
        let cmd = "console=ttyS0 rackboot.node=4 rackboot.image=img:1";
        assert!(px.contains(&format!("  KERNEL blobs/{}\n", im.kernel.digest)));
        assert!(px.contains(&format!("  INITRD blobs/{}\n", im.initrd.digest)));
        assert!(px.contains(&format!("  APPEND {cmd}\n")), "{px}");
        assert!(px.contains("DEFAULT rackboot\n") && px.contains("IPAPPEND 2"));
        assert!(pxelinux_config(&node, None).contains("LOCALBOOT -1"));
        assert_eq!(
            pxelinux_config_path("52-54-00-00-00-04"),
            "pxelinux.cfg/01-52-54-00-00-00-04"
        );

        let g = grub_config("http://10.0.0.1:8080", &node, Some(&im));
        assert!(
            g.contains(&format!(
                "  linux (http,10.0.0.1:8080)/blobs/{} {cmd}\n",
                im.kernel.digest
            )),
            "{g}"
        );
        assert!(g.contains(&format!(
            "  initrd (http,10.0.0.1:8080)/blobs/{}\n",
            im.initrd.digest
        )));
        let g = grub_config("tftp://10.0.0.1", &node, Some(&im));
        assert!(
            g.contains(&format!("  linux /blobs/{} {cmd}\n", im.kernel.digest)),
            "{g}"
        );
        assert!(grub_config(base, &node, None).contains("sleep 10"));
    }
}
