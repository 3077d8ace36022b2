//! U-Boot's network boot: the per-node boot script and the legacy image
//! (`mkimage -T script`) it travels in.
//!
//! U-Boot's distro boot (`bootcmd_dhcp`) does a DHCP, fetches
//! `boot.scr.uimg` from the next-server over TFTP and `source`s it. The
//! agent answers that name per node (by the address the request comes
//! from) with a script that fetches the node's kernel, initrd and device
//! tree by TFTP and `booti`s them with the image's command line plus
//! rackboot's parameters.
//!
//! The image format is U-Boot's legacy header (`include/image.h`): 64
//! bytes, big-endian, with CRC-32s of the header and the data. A script
//! image's data is a list of part lengths ended by a zero word, then the
//! script text: byte-for-byte what `mkimage -A arm64 -O linux -T script -C
//! none` makes with `SOURCE_DATE_EPOCH=0`.

use crate::boot_config::kernel_cmdline;
use crate::view::{ImageEntry, NodeEntry};

/// The name U-Boot's distro boot asks the next-server for.
pub const BOOT_SCRIPT: &str = "boot.scr.uimg";

/// Legacy image magic (`IH_MAGIC`).
const MAGIC: u32 = 0x2705_1956;
/// Header length (`sizeof(struct legacy_img_hdr)`).
pub const HEADER_LEN: usize = 64;
/// `IH_OS_LINUX`.
const OS_LINUX: u8 = 5;
/// `IH_ARCH_ARM64`: what distributions stamp on boot scripts; `source`
/// does not check it, so the same image serves riscv64 boards.
const ARCH_ARM64: u8 = 22;
/// `IH_TYPE_SCRIPT`.
pub const TYPE_SCRIPT: u8 = 6;
/// `IH_COMP_NONE`.
const COMP_NONE: u8 = 0;
/// The image name field (`IH_NMLEN`).
const NAME_LEN: usize = 32;

/// Path of a node's boot script image by MAC (the same bytes U-Boot gets as
/// [`BOOT_SCRIPT`] from the node's address).
pub fn script_path(mac_hyphenated: &str) -> String {
    format!("uboot/{mac_hyphenated}.scr.uimg")
}

/// Wrap `script` in a legacy script image named `name` (cut to 31 bytes).
pub fn script_image(name: &str, script: &str) -> Vec<u8> {
    let text = script.as_bytes();
    let mut data = Vec::with_capacity(8 + text.len());
    // One part: its length, then the zero word that ends the list.
    data.extend_from_slice(&u32::try_from(text.len()).unwrap_or(u32::MAX).to_be_bytes());
    data.extend_from_slice(&0u32.to_be_bytes());
    data.extend_from_slice(text);

    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_be_bytes());
    // 4..8 header CRC (computed over the header with this field zero),
    // 8..12 time (0: reproducible).
    h[12..16].copy_from_slice(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes());
    // 16..20 load address, 20..24 entry point: 0 for scripts.
    h[24..28].copy_from_slice(&crc32fast::hash(&data).to_be_bytes());
    h[28] = OS_LINUX;
    h[29] = ARCH_ARM64;
    h[30] = TYPE_SCRIPT;
    h[31] = COMP_NONE;
    let name = name.as_bytes();
    let n = name.len().min(NAME_LEN - 1);
    h[32..32 + n].copy_from_slice(&name[..n]);
    let hcrc = crc32fast::hash(&h);
    h[4..8].copy_from_slice(&hcrc.to_be_bytes());

    let mut out = Vec::with_capacity(HEADER_LEN + data.len());
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

/// Why bytes are not a script image U-Boot would `source`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScriptImageError {
    /// Shorter than a header.
    #[error("{0} bytes is shorter than a legacy image header")]
    Short(usize),
    /// Wrong magic.
    #[error("not a U-Boot legacy image (magic {0:#010x})")]
    Magic(u32),
    /// Header CRC mismatch.
    #[error("header CRC mismatch")]
    HeaderCrc,
    /// Data length or CRC mismatch.
    #[error("data CRC or length mismatch")]
    DataCrc,
    /// Not `IH_TYPE_SCRIPT`.
    #[error("image type {0} is not a script")]
    NotScript(u8),
    /// The part list is malformed.
    #[error("malformed script part list")]
    Parts,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let w: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(u32::from_be_bytes(w))
}

/// The script text of a script image, checked the way U-Boot's `source`
/// checks it (magic, both CRCs, type, part list).
pub fn script_text(image: &[u8]) -> Result<&str, ScriptImageError> {
    let header = image
        .get(..HEADER_LEN)
        .ok_or(ScriptImageError::Short(image.len()))?;
    let magic = be32(header, 0).ok_or(ScriptImageError::Short(image.len()))?;
    if magic != MAGIC {
        return Err(ScriptImageError::Magic(magic));
    }
    let mut zeroed = [0u8; HEADER_LEN];
    zeroed.copy_from_slice(header);
    zeroed[4..8].fill(0);
    if be32(header, 4) != Some(crc32fast::hash(&zeroed)) {
        return Err(ScriptImageError::HeaderCrc);
    }
    let size = be32(header, 12).ok_or(ScriptImageError::DataCrc)? as usize;
    let data = image
        .get(HEADER_LEN..)
        .filter(|d| d.len() == size)
        .ok_or(ScriptImageError::DataCrc)?;
    if be32(header, 24) != Some(crc32fast::hash(data)) {
        return Err(ScriptImageError::DataCrc);
    }
    if header[30] != TYPE_SCRIPT {
        return Err(ScriptImageError::NotScript(header[30]));
    }
    let len = be32(data, 0).ok_or(ScriptImageError::Parts)? as usize;
    if be32(data, 4) != Some(0) {
        return Err(ScriptImageError::Parts);
    }
    let text = data.get(8..8 + len).ok_or(ScriptImageError::Parts)?;
    std::str::from_utf8(text).map_err(|_| ScriptImageError::Parts)
}

/// The boot script for a node: fetch the device tree (when the image has
/// one), kernel and initrd over TFTP from the server that answered DHCP
/// (`serverip`), then `booti` with the command line. Without an image it
/// says so and resets after 10 s, which runs the network boot again.
pub fn boot_script(node: &NodeEntry, image: Option<&ImageEntry>) -> String {
    let mut s = format!("# rackboot: node {} ({})\n", node.name, node.addr);
    let Some(im) = image else {
        s.push_str(&format!(
            "echo rackboot: node {} has no image assigned yet, trying again in 10 s\nsleep 10\nreset\n",
            node.name
        ));
        return s;
    };
    let cmdline = kernel_cmdline(node, im);
    if cmdline.contains('\'') {
        // U-Boot's shell cannot hold a single quote inside single quotes.
        s.push_str(&format!(
            "echo rackboot: the command line of image {} has a single quote, which a U-Boot script cannot pass\nexit\n",
            im.name
        ));
        return s;
    }
    s.push_str(&format!("echo rackboot: {} boots {}\n", node.name, im.name));
    s.push_str(&format!("setenv bootargs '{cmdline}'\n"));
    let fdt = match &im.dtb {
        Some(dtb) => {
            // Where the board's environment says a device tree goes:
            // `fdt_addr_r` (distro boot), else `fdt_addr` (QEMU's boards
            // define only that); without either, U-Boot's own tree.
            s.push_str("setenv rackboot_fdt ${fdt_addr_r}\n");
            s.push_str(
                "if test -z \"${rackboot_fdt}\"; then setenv rackboot_fdt ${fdt_addr}; fi\n",
            );
            s.push_str(&format!(
                "if test -n \"${{rackboot_fdt}}\"; then tftpboot ${{rackboot_fdt}} blobs/{} || exit; else echo rackboot: no fdt_addr_r on this board, booting with the device tree U-Boot runs with; setenv rackboot_fdt ${{fdtcontroladdr}}; fi\n",
                dtb.digest
            ));
            "${rackboot_fdt}"
        }
        // The device tree U-Boot itself runs with (QEMU's, or the board's).
        None => "${fdtcontroladdr}",
    };
    s.push_str(&format!(
        "tftpboot ${{kernel_addr_r}} blobs/{} || exit\n",
        im.kernel.digest
    ));
    // Last, so that `filesize` is the initrd's.
    s.push_str(&format!(
        "tftpboot ${{ramdisk_addr_r}} blobs/{} || exit\n",
        im.initrd.digest
    ));
    s.push_str(&format!(
        "booti ${{kernel_addr_r}} ${{ramdisk_addr_r}}:${{filesize}} {fdt}\n"
    ));
    s
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use rackboot_state::{Blake3Digest, BlobRef};

    fn node() -> NodeEntry {
        NodeEntry {
            number: 7,
            name: "n7".into(),
            macs: vec![],
            addr: "10.0.0.8".parse().unwrap(),
            image: Some("arm:1".into()),
        }
    }

    fn blob(b: &[u8]) -> BlobRef {
        BlobRef {
            digest: Blake3Digest::of(b),
            size: b.len() as u64,
        }
    }

    fn image(dtb: bool) -> ImageEntry {
        ImageEntry {
            name: "arm:1".into(),
            kernel: blob(b"k"),
            initrd: blob(b"i"),
            cmdline: "console=ttyAMA0".into(),
            kernel_version: String::new(),
            modules: None,
            dtb: dtb.then(|| blob(b"d")),
        }
    }

    #[test]
    fn image_round_trips_and_checks_like_source() {
        let img = script_image("rackboot n7", "echo hi\n");
        assert_eq!(img.len(), HEADER_LEN + 8 + 8);
        assert_eq!(script_text(&img), Ok("echo hi\n"));
        let mut bad = img.clone();
        bad[HEADER_LEN + 9] ^= 1;
        assert_eq!(script_text(&bad), Err(ScriptImageError::DataCrc));
        let mut bad = img.clone();
        bad[35] ^= 1;
        assert_eq!(script_text(&bad), Err(ScriptImageError::HeaderCrc));
        assert_eq!(script_text(&img[..10]), Err(ScriptImageError::Short(10)));
        assert_eq!(
            script_text(&img[..img.len() - 1]),
            Err(ScriptImageError::DataCrc)
        );
        // Long names are cut, never overflow the field.
        let long = script_image(&"x".repeat(100), "");
        assert_eq!(script_text(&long), Ok(""));
        assert_eq!(long[32 + 31], 0);
    }

    #[test]
    fn script_fetches_kernel_initrd_last_and_boots_with_cmdline() {
        let im = image(false);
        let s = boot_script(&node(), Some(&im));
        let k = format!(
            "tftpboot ${{kernel_addr_r}} blobs/{} || exit\n",
            im.kernel.digest
        );
        let i = format!(
            "tftpboot ${{ramdisk_addr_r}} blobs/{} || exit\n",
            im.initrd.digest
        );
        assert!(s.contains(&k), "{s}");
        assert!(s.find(&k) < s.find(&i), "initrd last, for filesize: {s}");
        assert!(
            s.contains("setenv bootargs 'console=ttyAMA0 rackboot.node=7 rackboot.image=arm:1'\n")
        );
        assert!(
            s.ends_with("booti ${kernel_addr_r} ${ramdisk_addr_r}:${filesize} ${fdtcontroladdr}\n")
        );

        let im = image(true);
        let s = boot_script(&node(), Some(&im));
        let d = format!(
            "then tftpboot ${{rackboot_fdt}} blobs/{} || exit;",
            im.dtb.as_ref().unwrap().digest
        );
        assert!(s.contains(&d), "{s}");
        assert!(s.contains("setenv rackboot_fdt ${fdt_addr_r}\n"));
        assert!(s.ends_with("${filesize} ${rackboot_fdt}\n"));
    }

    #[test]
    fn no_image_waits_and_resets_and_quotes_are_refused() {
        let s = boot_script(&node(), None);
        assert!(s.contains("no image assigned") && s.ends_with("reset\n"));
        let mut im = image(false);
        im.cmdline = "init='/bin/sh'".into();
        let s = boot_script(&node(), Some(&im));
        assert!(!s.contains("booti") && s.contains("single quote"));
    }
}
