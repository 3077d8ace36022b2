//! The DHCP path with provisional leases (`handle_with_pool`) on a sequence
//! of arbitrary datagrams: never panics, every reply decodes, and no two
//! machines ever hold one live provisional address.
//!
//! Input: records of `[len: u8][dt: u8][len bytes]`; `dt` advances the clock
//! (seconds) before the record's datagram is handled.
#![no_main]
use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use rackboot_dhcp_core::{
    BootFiles, Decision, Mac, NodeBinding, ProvisionalPool, ServerConfig, handle_with_pool,
};

fuzz_target!(|data: &[u8]| {
    let cfg = ServerConfig {
        server_ip: Ipv4Addr::new(10, 0, 0, 1),
        subnet_mask: Ipv4Addr::new(255, 255, 255, 0),
        router: None,
        dns: vec![],
        domain: None,
        log_server: Some(Ipv4Addr::new(10, 0, 0, 1)),
        lease_secs: 3600,
        boot: BootFiles {
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_arm64: "ipxe-arm64.efi".into(),
            ipxe_script: "ipxe/{mac}.ipxe".into(),
            http_boot_uri: None,
        },
    };
    let Some(mut pool) =
        ProvisionalPool::new(Ipv4Addr::new(10, 0, 0, 200), Ipv4Addr::new(10, 0, 0, 203), 60)
    else {
        return;
    };
    let mut nodes: HashMap<Mac, NodeBinding> = HashMap::new();
    nodes.insert(
        Mac([2, 0, 0, 0, 0, 1]),
        NodeBinding { number: 1, addr: Ipv4Addr::new(10, 0, 0, 2), hostname: "n1".into() },
    );
    let mut now = 0u64;
    let mut rest = data;
    while let [len, dt, tail @ ..] = rest {
        let len = usize::from(*len) * 2;
        now += u64::from(*dt);
        let (packet, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let h = handle_with_pool(&cfg, &nodes, &mut pool, now, packet);
        if let Decision::Reply { bytes, .. } = &h.decision {
            use dhcproto::{Decodable, v4::Message};
            assert!(Message::from_bytes(bytes).is_ok());
        }
        let mut live = HashSet::new();
        for (_, l) in pool.leases().filter(|(_, l)| l.expires > now) {
            assert!(live.insert(l.addr), "two live leases on {}", l.addr);
            assert!(pool.contains(l.addr));
        }
    }
});
