//! Unit tests of the DHCP client tests' own parsing: script event blocks,
//! subnets and MAC addresses.

use std::net::Ipv4Addr;

use super::checks::in_subnet;
use super::clients::last_event;
use super::sites::mac_bytes;

#[test]
fn last_event_takes_the_last_matching_block() {
    let text = "== deconfig\ninterface=x\n== bound\nip=10.0.0.2\nrouter=10.0.0.1 10.0.0.9\n\
                == renew\nip=10.0.0.3\n== deconfig\nip=\n";
    let vars = last_event(text, &["bound", "renew"]).unwrap_or_default();
    assert_eq!(vars.get("ip").map(String::as_str), Some("10.0.0.3"));
    let vars = last_event(text, &["bound"]).unwrap_or_default();
    assert_eq!(vars.get("ip").map(String::as_str), Some("10.0.0.2"));
    assert!(last_event(text, &["BOUND"]).is_none());
}

#[test]
fn subnets() {
    let net = Ipv4Addr::new(10, 215, 2, 0);
    assert!(in_subnet(Ipv4Addr::new(10, 215, 2, 9), net, 24));
    assert!(!in_subnet(Ipv4Addr::new(10, 215, 1, 3), net, 24));
    assert!(in_subnet(Ipv4Addr::new(1, 2, 3, 4), net, 0));
    assert_eq!(
        mac_bytes("52:54:00:d1:00:0a").ok(),
        Some([0x52, 0x54, 0, 0xd1, 0, 0x0a])
    );
    assert!(mac_bytes("52:54:00").is_err());
}
