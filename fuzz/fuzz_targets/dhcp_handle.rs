//! The DHCP decision path on arbitrary datagrams: never panics; every reply
//! it builds decodes again. The same bytes as a kernel command line: the
//! probe token parser never panics and a token it reads prints back the same.
#![no_main]
use std::collections::HashMap;
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use rackboot_dhcp_core::{BootFiles, Decision, Mac, NodeBinding, ServerConfig, handle};

fuzz_target!(|data: &[u8]| {
    let cfg = ServerConfig {
        server_ip: Ipv4Addr::new(10, 0, 0, 1),
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        router: Some(Ipv4Addr::new(10, 0, 0, 254)),
        dns: vec![Ipv4Addr::new(10, 0, 0, 1)],
        domain: Some("cluster".into()),
        log_server: Some(Ipv4Addr::new(10, 0, 0, 1)),
        lease_secs: 3600,
        boot: BootFiles {
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
            uboot_script: "boot.scr.uimg".into(),
            ipxe_script: "ipxe/{mac}.ipxe".into(),
            http_boot_uri: Some("http://10.0.0.1/boot/{mac}.efi".into()),
        },
    };
    let mut nodes = HashMap::new();
    // Any MAC from the packet's chaddr position is known half the time.
    if let Some(m) = data.get(28..34) && data.first().is_some_and(|b| b & 1 == 1) {
        let mut mac = [0u8; 6];
        mac.copy_from_slice(m);
        nodes.insert(Mac(mac), NodeBinding { number: 1, addr: Ipv4Addr::new(10, 0, 0, 2), hostname: "n1".into() });
    }
    if let Decision::Reply { bytes, .. } = handle(&cfg, &nodes, data) {
        use dhcproto::{Decodable, v4::Message};
        assert!(Message::from_bytes(&bytes).is_ok());
    }
    let cmdline = String::from_utf8_lossy(data);
    if let Some(Ok(token)) = rackboot_dhcp_core::probe::token_from_cmdline(&cmdline) {
        assert_eq!(token.to_string().parse::<rackboot_dhcp_core::ProbeToken>(), Ok(token));
    }
});
