//! The agent's U-Boot script images against U-Boot's own tool: byte for
//! byte what `mkimage -A arm64 -O linux -T script -C none` makes (with
//! `SOURCE_DATE_EPOCH=0`), and readable by `mkimage -l`.

#![allow(
    clippy::disallowed_methods,
    clippy::unwrap_used,
    reason = "a test driving a real tool through files"
)]

use std::path::PathBuf;
use std::process::Command;

use rackboot_agent_domain::uboot::{boot_script, script_image, script_text};
use rackboot_agent_domain::view::{ImageEntry, NodeEntry};
use rackboot_state::{Blake3Digest, BlobRef};

fn mkimage() -> Option<PathBuf> {
    ["/usr/bin/mkimage", "/usr/local/bin/mkimage"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

#[test]
fn same_bytes_as_mkimage() {
    let Some(mkimage) = mkimage() else {
        if std::env::var_os("RACKBOOT_REQUIRE_SYSTEM_TESTS").is_some() {
            panic!("mkimage not installed (apt-get install u-boot-tools)");
        }
        eprintln!("skipped: mkimage not installed (apt-get install u-boot-tools)");
        return;
    };
    let blob = |b: &[u8]| BlobRef {
        digest: Blake3Digest::of(b),
        size: b.len() as u64,
    };
    let node = NodeEntry {
        number: 7,
        name: "n7".into(),
        macs: vec![],
        addr: "10.0.0.8".parse().unwrap(),
        image: Some("arm:1".into()),
    };
    let image = ImageEntry {
        name: "arm:1".into(),
        kernel: blob(b"k"),
        initrd: blob(b"i"),
        cmdline: "console=ttyAMA0 quiet".into(),
        kernel_version: String::new(),
        modules: None,
        dtb: Some(blob(b"d")),
    };
    let dir = tempfile::tempdir().unwrap();
    let script = boot_script(&node, Some(&image));
    std::fs::write(dir.path().join("boot.txt"), &script).unwrap();
    let out = Command::new(&mkimage)
        .env("SOURCE_DATE_EPOCH", "0")
        .args(["-A", "arm64", "-O", "linux", "-T", "script", "-C", "none"])
        .args(["-n", "rackboot n7", "-d"])
        .arg(dir.path().join("boot.txt"))
        .arg(dir.path().join("boot.scr.uimg"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let theirs = std::fs::read(dir.path().join("boot.scr.uimg")).unwrap();
    let ours = script_image("rackboot n7", &script);
    assert_eq!(ours, theirs);
    assert_eq!(script_text(&theirs), Ok(script.as_str()));

    // And mkimage reads ours back as a valid script image.
    std::fs::write(dir.path().join("ours.uimg"), &ours).unwrap();
    let out = Command::new(&mkimage)
        .arg("-l")
        .arg(dir.path().join("ours.uimg"))
        .output()
        .unwrap();
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        listing.contains("Linux Script") && listing.contains("rackboot n7"),
        "{listing}"
    );
}
