//! What the DHCP client cases demand, shared between them: of a lease from
//! the authoritative rack ([`AuthRack::check_lease`]), of a proxyDHCP reply
//! ([`check_proxy_reply`]), and of the client's interface afterwards.

use std::net::Ipv4Addr;

use anyhow::{Result, ensure};
use rackboot_tests::dhcpcap::{BOOTREPLY, DhcpPacket};
use rackboot_tests::netns::Netns;

use super::clients::{CLIENT_IF, Lease};
use super::lab::{Node, node_of};
use super::sites::{AUTH_GATEWAY, AUTH_LEASE_SECS, AUTH_MASK, AUTH_SERVER, AuthRack, PROXY_SERVER};

/// The agent's default BIOS boot file.
const BIOS_BOOT_FILE: &str = "undionly.kpxe";
/// Option 43 of proxy replies: PXE_DISCOVERY_CONTROL = 8 (boot the file in
/// this reply, no boot server discovery), end.
const PXE_SKIP_DISCOVERY: [u8; 4] = [6, 1, 8, 255];

impl AuthRack {
    /// Everything a lease from the agent must say for the node with `mac`:
    /// its address (and on the interface), name, mask, router, lease time,
    /// server identifier.
    pub(super) fn check_lease(&self, client_ns: &Netns, mac: &str, lease: &Lease) -> Result<Node> {
        let node = node_of(&self.lab, &self.srv, mac)?;
        let who = format!("{} (MAC {mac}, vars {:?})", lease.client, lease.vars);
        ensure!(
            lease.ip == node.address,
            "{who}: bound {} but the coordinator gave node {} {}",
            lease.ip,
            node.number,
            node.address
        );
        ensure!(
            node.name == format!("n{}", node.number),
            "node {} is named {:?}",
            node.number,
            node.name
        );
        ensure!(
            lease.hostname.as_deref() == Some(node.name.as_str()),
            "{who}: hostname {:?}, want {:?}",
            lease.hostname,
            node.name
        );
        ensure!(
            lease.mask == Some(AUTH_MASK),
            "{who}: mask {:?}",
            lease.mask
        );
        ensure!(
            lease.router == Some(AUTH_GATEWAY),
            "{who}: router {:?}, want {AUTH_GATEWAY}",
            lease.router
        );
        ensure!(
            lease.lease_secs == Some(AUTH_LEASE_SECS),
            "{who}: lease {:?} s, want {AUTH_LEASE_SECS}",
            lease.lease_secs
        );
        ensure!(
            lease.server_id == Some(AUTH_SERVER),
            "{who}: server identifier {:?}",
            lease.server_id
        );
        ensure_has_address(client_ns, CLIENT_IF, lease.ip)?;
        Ok(node)
    }
}

/// Checks the boot information of a proxy reply: no address, next-server
/// and boot file, option 43/60/54/66/67.
pub(super) fn check_proxy_reply(p: &DhcpPacket, want_type: u8) -> Result<()> {
    ensure!(p.op == BOOTREPLY, "not a BOOTREPLY: {p}");
    ensure!(
        p.message_type() == Some(want_type),
        "message type {:?}, want {want_type}: {p}",
        p.message_type()
    );
    ensure!(
        p.yiaddr.is_unspecified(),
        "a proxyDHCP reply must not hand out an address: {p}"
    );
    ensure!(p.siaddr == PROXY_SERVER, "next-server {}: {p}", p.siaddr);
    ensure!(p.file == BIOS_BOOT_FILE, "file {:?}: {p}", p.file);
    ensure!(
        p.option_str(67).as_deref() == Some(BIOS_BOOT_FILE),
        "option 67 {:?}: {p}",
        p.option_str(67)
    );
    ensure!(
        p.option_str(66).as_deref() == Some("10.214.0.1"),
        "option 66 {:?}: {p}",
        p.option_str(66)
    );
    ensure!(
        p.option_str(60).as_deref() == Some("PXEClient"),
        "option 60 {:?}: {p}",
        p.option_str(60)
    );
    ensure!(
        p.option(43) == Some(&PXE_SKIP_DISCOVERY[..]),
        "option 43 {:?}, want {PXE_SKIP_DISCOVERY:?}: {p}",
        p.option(43)
    );
    ensure!(
        p.option_ip(54) == Some(PROXY_SERVER),
        "option 54 {:?}: {p}",
        p.option_ip(54)
    );
    for code in [1, 3, 51] {
        ensure!(
            p.option(code).is_none(),
            "a proxy reply carries address configuration (option {code}): {p}"
        );
    }
    Ok(())
}

/// Fails unless `ifname` in `ns` has address `ip`.
pub(super) fn ensure_has_address(ns: &Netns, ifname: &str, ip: Ipv4Addr) -> Result<()> {
    let addrs = ns.ip(&["-4", "-o", "addr", "show", "dev", ifname])?;
    ensure!(
        addrs.contains(&format!("inet {ip}/")),
        "{ifname} in {} does not have {ip}:\n{addrs}",
        ns.name()
    );
    Ok(())
}

/// Whether `ip` lies in `net`/`prefix`.
pub(super) fn in_subnet(ip: Ipv4Addr, net: Ipv4Addr, prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(net) & mask
}
