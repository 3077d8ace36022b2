//! The DHCP [`Server`] with provisional leases on a sequence of arbitrary
//! datagrams, view changes and clock steps: never panics, every reply
//! decodes, no two machines ever hold one live provisional address, and
//! its tables stay within their bounds.
//!
//! Input: records of `[len: u8][dt: u8][len bytes]`; `dt` advances the clock
//! (100 ms steps) before the record's datagram is handled; an odd `dt`
//! first numbers the sender (a view change).
#![no_main]
use std::collections::{HashMap, HashSet};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use rackboot_dhcp_core::guard::Allow;
use rackboot_dhcp_core::server::DEFER_MAX;
use rackboot_dhcp_core::{
    AcceptPolicy, BootFiles, Mac, NodeBinding, ProvisionalPool, Role, Server, ServerConfig,
    Settings,
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
            uboot_script: "boot.scr.uimg".into(),
            ipxe_script: "ipxe/{mac}.ipxe".into(),
            http_boot_uri: None,
        },
    };
    let pooled = data.first().is_some_and(|b| b & 1 == 1);
    let settings = Settings {
        role: Role::Authoritative,
        accept: if pooled { AcceptPolicy::Probe } else { AcceptPolicy::FirstSeen },
        client_port: 68,
        allow: Allow::new(vec!["10.0.0.0/24".parse().unwrap_or_default()]),
        pool: if pooled {
            ProvisionalPool::new(Ipv4Addr::new(10, 0, 0, 200), Ipv4Addr::new(10, 0, 0, 203), 60)
        } else {
            None
        },
        probe_key: Some(rackboot_dhcp_core::ProbeKey::new([3; 32])),
    };
    let mut server = Server::new(settings, cfg);
    let mut nodes: HashMap<Mac, NodeBinding> = HashMap::new();
    nodes.insert(
        Mac([2, 0, 0, 0, 0, 1]),
        NodeBinding { number: 1, addr: Ipv4Addr::new(10, 0, 0, 2), hostname: "n1".into() },
    );
    let t0 = Instant::now();
    // The pool's seconds count from the server's first look at the clock.
    let _ = server.provisional_in_use(t0);
    let src: SocketAddr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, 68));
    let mut now = t0;
    let mut rest = data.get(1..).unwrap_or_default();
    while let [len, dt, tail @ ..] = rest {
        let len = usize::from(*len) * 2;
        now += Duration::from_millis(100 * u64::from(*dt));
        let (packet, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        if dt & 1 == 1
            && let Some(m) = packet.get(28..34)
            && let Ok(mac) = <[u8; 6]>::try_from(m)
        {
            let number = nodes.len() as u32 + 1;
            nodes.insert(
                Mac(mac),
                NodeBinding { number, addr: Ipv4Addr::new(10, 0, 0, 10), hostname: format!("n{number}") },
            );
            server.handle_view_changed(now, &nodes);
        }
        server.handle_datagram(now, src, packet, &nodes);
        if let Some(t) = server.poll_timeout()
            && t <= now
        {
            server.handle_timeout(now);
        }
        while let Some(t) = server.poll_transmit() {
            use dhcproto::{Decodable, v4::Message};
            assert!(Message::from_bytes(&t.bytes).is_ok());
        }
        while server.poll_event().is_some() {}
        assert!(server.deferred() <= DEFER_MAX);
        if let Some(pool) = server.pool() {
            let secs = now.duration_since(t0).as_secs();
            let mut live = HashSet::new();
            for (_, l) in pool.leases().filter(|(_, l)| l.expires > secs) {
                assert!(live.insert(l.addr), "two live leases on {}", l.addr);
                assert!(pool.contains(l.addr));
            }
        }
    }
});
