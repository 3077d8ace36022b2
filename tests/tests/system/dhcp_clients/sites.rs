//! Drivers of the DHCP servers the client tests run against: the
//! authoritative rack ([`AuthRack`]: coordinator and agent on a bridge that
//! client namespaces join), the proxyDHCP site (dnsmasq as the site's DHCP
//! server beside an agent in `--dhcp-mode proxy`, and the PXE boot server
//! request to port 4011 that only firmware sends), and the relayed rack
//! (`dhcrelay -a` in a router namespace in front of the agent).

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::run_with_timeout;
use rackboot_tests::netns::{Netns, veth_pair};

use super::clients::{CLIENT_IF, path_str};
use super::lab::Lab;

// ---- the authoritative rack ------------------------------------------------

// The authoritative rack: the agent on a bridge, one namespace per client.
const AUTH_BRIDGE: &str = "rbd-br";
const AUTH_CIDR: &str = "10.213.0.1/24";
pub(super) const AUTH_SERVER: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 1);
pub(super) const AUTH_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 213, 0, 254);
pub(super) const AUTH_MASK: Ipv4Addr = Ipv4Addr::new(255, 255, 255, 0);
/// `--lease-secs`: not the default 3600, so the option is seen to follow it.
pub(super) const AUTH_LEASE_SECS: u32 = 1800;

/// The agent (authoritative, `--gateway`, `--lease-secs`) and the
/// coordinator in one namespace, on a bridge that client namespaces join.
pub(super) struct AuthRack {
    pub(super) lab: Lab,
    pub(super) srv: Netns,
}

impl AuthRack {
    pub(super) fn start(prefix: &str) -> Result<AuthRack> {
        let srv = Netns::create(&format!("{prefix}-s"))?;
        let mut lab = Lab::new(prefix)?;
        srv.add_bridge(AUTH_BRIDGE, Some(AUTH_CIDR))?;
        let gateway = AUTH_GATEWAY.to_string();
        let lease = AUTH_LEASE_SECS.to_string();
        lab.start_rackboot(
            &srv,
            AUTH_BRIDGE,
            &["--gateway", &gateway, "--lease-secs", &lease],
        )?;
        Ok(AuthRack { lab, srv })
    }

    /// A client namespace whose [`CLIENT_IF`] (MAC `mac`) is a port of the
    /// bridge.
    pub(super) fn add_client(&self, prefix: &str, mac: &str, port: &str) -> Result<Netns> {
        let ns = Netns::create(prefix)?;
        veth_pair(&self.srv, port, None, &ns, CLIENT_IF, None)?;
        self.srv.attach_to_bridge(port, AUTH_BRIDGE)?;
        ns.ip(&["link", "set", "dev", CLIENT_IF, "address", mac])?;
        Ok(ns)
    }
}

// ---- proxyDHCP beside dnsmasq ----------------------------------------------

const PROXY_BRIDGE: &str = "rbp-br";
const PROXY_CIDR: &str = "10.214.0.1/24";
pub(super) const PROXY_SERVER: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 1);
const DNSMASQ_CIDR: &str = "10.214.0.2/24";
pub(super) const DNSMASQ_ADDR: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 2);
/// dnsmasq's range.
pub(super) const SITE_FIRST: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 100);
pub(super) const SITE_LAST: Ipv4Addr = Ipv4Addr::new(10, 214, 0, 150);
/// The agent's node base: outside dnsmasq's range, so a client address
/// from the agent could not pass for one from dnsmasq.
const PROXY_NODE_BASE: &str = "10.214.0.200";
/// What a BIOS PXE ROM sends as option 60.
pub(super) const PXE_VENDOR_CLASS: &str = "PXEClient:Arch:00000:UNDI:002001";

/// The proxyDHCP site: the agent (`--dhcp-mode proxy`) and coordinator in
/// `srv` on bridge [`PROXY_BRIDGE`], dnsmasq in `site` on a port of it.
pub(super) fn proxy_site(srv: &Netns, site: &Netns, lab: &mut Lab) -> Result<()> {
    srv.add_bridge(PROXY_BRIDGE, Some(PROXY_CIDR))?;
    veth_pair(srv, "rbp-p-site", None, site, "rbp-dn0", Some(DNSMASQ_CIDR))?;
    srv.attach_to_bridge("rbp-p-site", PROXY_BRIDGE)?;
    // A plain range: no PXE options, no boot file.
    let mut cmd = site.exec("dnsmasq");
    cmd.args([
        "--keep-in-foreground",
        "--conf-file=/dev/null",
        "--port=0",
        "--interface=rbp-dn0",
        "--bind-interfaces",
        "--dhcp-range=10.214.0.100,10.214.0.150,255.255.255.0,10m",
        "--no-ping",
        "--user=root",
        "--log-dhcp",
        "--log-facility=-",
    ])
    .arg(format!(
        "--dhcp-leasefile={}",
        path_str(&lab.path("dnsmasq.leases"))?
    ))
    .arg(format!(
        "--pid-file={}",
        path_str(&lab.path("dnsmasq.pid"))?
    ));
    lab.spawn("dnsmasq", cmd, "DHCP, IP range")?;
    lab.start_rackboot(
        srv,
        PROXY_BRIDGE,
        &["--dhcp-mode", "proxy", "--node-base", PROXY_NODE_BASE],
    )
}

/// Plugs `client`'s [`CLIENT_IF`] (MAC `mac`) into the proxy site's bridge.
pub(super) fn proxy_client(srv: &Netns, client: &Netns, mac: &str) -> Result<()> {
    veth_pair(srv, "rbp-p-cl", None, client, CLIENT_IF, None)?;
    srv.attach_to_bridge("rbp-p-cl", PROXY_BRIDGE)?;
    client.ip(&["link", "set", "dev", CLIENT_IF, "address", mac])?;
    Ok(())
}

/// Adds tap `tap` to the proxy site's bridge, for a QEMU guest.
pub(super) fn proxy_tap(srv: &Netns, tap: &str) -> Result<()> {
    srv.add_tap(tap)?;
    srv.attach_to_bridge(tap, PROXY_BRIDGE)
}

/// Sends `request` from `client` to the agent's PXE boot server port
/// ([`PROXY_SERVER`]:4011), the step only firmware does, and returns the
/// one datagram that answers it. Request and answer are kept in `dir`.
pub(super) fn pxe_boot_server_exchange(
    client: &Netns,
    dir: &Path,
    request: &[u8],
) -> Result<Vec<u8>> {
    let (req_path, resp_path) = (dir.join("pxe-4011.req"), dir.join("pxe-4011.resp"));
    std::fs::write(&req_path, request)?;
    // bash's /dev/udp connects the socket: only PROXY_SERVER:4011 can
    // answer it; dd reads exactly one datagram.
    let mut cmd = client.exec("bash");
    cmd.args([
        "-c",
        "exec 3<>\"/dev/udp/$1/$2\" && cat \"$3\" >&3 && \
         exec timeout 10 dd bs=4096 count=1 status=none <&3 >\"$4\"",
        "bash",
        "10.214.0.1",
        "4011",
        path_str(&req_path)?,
        path_str(&resp_path)?,
    ]);
    let out = run_with_timeout(cmd, Duration::from_secs(20))?;
    ensure!(out.status.success(), "no answer on port 4011: {out}");
    Ok(std::fs::read(&resp_path)?)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub(super) fn mac_bytes(mac: &str) -> Result<[u8; 6]> {
    let bytes: Vec<u8> = mac
        .split(':')
        .map(|h| u8::from_str_radix(h, 16))
        .collect::<Result<_, _>>()
        .with_context(|| format!("bad MAC {mac:?}"))?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("MAC {mac:?} is not 6 bytes"))
}

/// QEMU's e1000 iPXE option ROM, as `pxe_boot` looks for it.
pub(super) fn ipxe_rom_present() -> bool {
    [
        "/usr/lib/ipxe/qemu/efi-e1000.rom",
        "/usr/share/qemu/efi-e1000.rom",
        "/usr/lib/ipxe/qemu/pxe-e1000.rom",
        "/usr/share/qemu/pxe-e1000.rom",
    ]
    .iter()
    .any(|p| Path::new(p).is_file())
}

// ---- relay -----------------------------------------------------------------

/// The agent's link to the router.
const RELAY_AGENT_CIDR: &str = "10.215.1.2/24";
pub(super) const RELAY_AGENT_ADDR: Ipv4Addr = Ipv4Addr::new(10, 215, 1, 2);
const RELAY_UP_CIDR: &str = "10.215.1.1/24";
pub(super) const RELAY_UP_ADDR: Ipv4Addr = Ipv4Addr::new(10, 215, 1, 1);
/// The router's interface towards the agent (where the tests capture).
pub(super) const RELAY_UP_IF: &str = "rbr-up";
/// The router on the client's subnet: the relay's `giaddr`.
const RELAY_DOWN_CIDR: &str = "10.215.2.1/24";
pub(super) const RELAY_DOWN_ADDR: Ipv4Addr = Ipv4Addr::new(10, 215, 2, 1);
pub(super) const FAR_NET: Ipv4Addr = Ipv4Addr::new(10, 215, 2, 0);
pub(super) const FAR_PREFIX: u32 = 24;
/// The agent's extra flags for the relayed rack: the rack subnet behind the
/// relay, and the relay as the nodes' router.
const RELAY_AGENT_ARGS: &[&str] = &["--rack-subnet", "10.215.2.0/24", "--gateway", "10.215.2.1"];

/// The relayed rack: the agent and coordinator in `srv`, linked to the
/// `router` namespace, which forwards and runs `dhcrelay -a` towards the
/// agent; `client`'s [`CLIENT_IF`] (MAC `mac`) is on the router's other
/// subnet, the one behind the relay.
pub(super) fn relay_site(
    srv: &Netns,
    router: &Netns,
    client: &Netns,
    mac: &str,
    lab: &mut Lab,
) -> Result<()> {
    veth_pair(
        srv,
        "rbr-ag",
        Some(RELAY_AGENT_CIDR),
        router,
        RELAY_UP_IF,
        Some(RELAY_UP_CIDR),
    )?;
    veth_pair(
        router,
        "rbr-down",
        Some(RELAY_DOWN_CIDR),
        client,
        CLIENT_IF,
        None,
    )?;
    client.ip(&["link", "set", "dev", CLIENT_IF, "address", mac])?;
    srv.ip(&["route", "add", "10.215.2.0/24", "via", "10.215.1.1"])?;
    router.run("sysctl", &["-qw", "net.ipv4.ip_forward=1"])?;

    lab.start_rackboot(srv, "rbr-ag", RELAY_AGENT_ARGS)?;
    let mut cmd = router.exec("dhcrelay");
    cmd.args(["-4", "-d", "-a", "-pf"])
        .arg(lab.path("dhcrelay.pid"))
        .args(["-iu", RELAY_UP_IF, "-id", "rbr-down", "10.215.1.2"]);
    lab.spawn("dhcrelay", cmd, "Socket/fallback")
}
