//! Real DHCP clients against the rack agent, in network namespaces (root;
//! `dhclient` from isc-dhcp-client, busybox `udhcpc`, `dhcpcd` from
//! dhcpcd-base, `dnsmasq`, `dhcrelay` from isc-dhcp-relay, `tcpdump`).
//!
//! The coordinator accepts an unknown MAC on first sight: the agent leaves
//! the first DISCOVER unanswered, reports the machine, and answers the
//! client's retransmission once the node is in its view. Every client runs
//! with retries for that, and bounded in time.
//!
//! * `dhclient_gets_its_node`, `udhcpc_gets_its_node`,
//!   `dhcpcd_gets_its_node`: each client, on a new MAC, binds the address
//!   `rackboot node list` and `node show` report for that MAC, with option 12
//!   hostname `n<number>` (the node's name), the rack's subnet mask, the
//!   router given with `--gateway`, the lease of `--lease-secs` and the agent
//!   as server identifier, and the address ends up on its interface.
//! * `client_id_does_not_change_the_node`: one machine asks with a client
//!   identifier (udhcpc, option 61 that is not its MAC), then without one
//!   (dhclient, then `udhcpc -C`); tcpdump shows which requests carried
//!   option 61, and all three runs get the same address, from the same and
//!   only node.
//! * `proxy_dhcp_beside_dnsmasq`: dnsmasq is the site DHCP server (a plain
//!   range, no PXE), the agent runs `--dhcp-mode proxy`. dhcpcd sending
//!   vendor class `PXEClient:Arch:00000:UNDI:002001` gets its address from
//!   dnsmasq (and ignores the agent's address-less offer, as a non-PXE
//!   stack must), while the agent's proxy OFFER on the wire has no `yiaddr`,
//!   next-server and boot file `undionly.kpxe` (`file`, options 66/67),
//!   option 60 `PXEClient` and option 43 "skip discovery" (6,1,8,255); the
//!   agent sends nothing else to the client. A PXE boot server REQUEST to
//!   port 4011 (written by the test: no OS client sends one) gets the
//!   proxy ACK with the same boot information and the UUID echoed.
//! * `proxy_dhcp_ipxe_guest` (QEMU, test group `qemu`): the same site with a
//!   BIOS guest whose iPXE ROM network-boots: iPXE configures the address
//!   from dnsmasq's range (router dnsmasq), takes next-server and file name
//!   (the node's iPXE script) from the agent's proxy reply, and runs that
//!   script, fetched from the agent over TFTP (node `n1`, no image yet).
//! * `relay_serves_far_subnet`: a router namespace running `dhcrelay -a`
//!   between the client's subnet and the agent's; the agent runs with
//!   `--rack-subnet` (the subnet behind the relay) and `--gateway` (the
//!   relay). The agent answers the relay at `giaddr` with option 82 echoed
//!   byte for byte; udhcpc binds the node's address on its own subnet, with
//!   the relay as router, and then pings the agent through the router.
//!
//! (busybox udhcpc is not the PXE-like client of the proxy test: it takes
//! the first offer, the agent's address-less one, and then asks for
//! 0.0.0.0 until it gives up.)
//!
//! This file holds the cases; the drivers are beside it: `lab` (temporary
//! directory, coordinator and agent, node queries, `wait_until`),
//! `clients` (udhcpc, dhclient, dhcpcd), `sites` (the authoritative rack,
//! dnsmasq and the proxy agent, dhcrelay), and `checks` (what a lease and a
//! proxy reply must say).

mod checks;
mod clients;
mod lab;
mod sites;
mod unit;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use rackboot_tests::dhcpcap::{self, ACK, BOOTREPLY, BOOTREQUEST, Capture, DhcpPacket, OFFER};
use rackboot_tests::netns::Netns;
use rackboot_tests::qemu::{QemuGuest, QemuOpts};
use rackboot_tests::testbed::normalize_mac;
use rackboot_tests::util::run_output;
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

use checks::{check_proxy_reply, ensure_has_address, in_subnet};
use clients::{CLIENT_IF, Lease, dhclient, dhcpcd, udhcpc};
use lab::{Lab, node_count, node_of, wait_node};
use sites::{
    AuthRack, DNSMASQ_ADDR, FAR_NET, FAR_PREFIX, PROXY_SERVER, PXE_VENDOR_CLASS, RELAY_AGENT_ADDR,
    RELAY_DOWN_ADDR, RELAY_UP_ADDR, RELAY_UP_IF, SITE_FIRST, SITE_LAST, ipxe_rom_present,
    mac_bytes, proxy_client, proxy_site, proxy_tap, pxe_boot_server_exchange, relay_site,
};

// ---- the authoritative rack ------------------------------------------------

type ClientFn = fn(&Netns, &str, &Path, &str) -> Result<Lease>;

/// One client on a new MAC binds its node's address and options.
fn client_gets_its_node(test: &str, prefix: &str, mac: &str, run: ClientFn) -> Result<()> {
    let rack = AuthRack::start(prefix)?;
    let client = rack.add_client(&format!("{prefix}-c"), mac, "rbd-p0")?;
    let result = (|| {
        let lease = run(&client, CLIENT_IF, rack.lab.dir(), "client")?;
        let node = rack.check_lease(&client, mac, &lease)?;
        eprintln!(
            "{}: node {} {} {} (mask {:?}, router {:?}, lease {:?} s)",
            lease.client,
            node.number,
            node.name,
            lease.ip,
            lease.mask,
            lease.router,
            lease.lease_secs
        );
        Ok(())
    })();
    rack.lab.finish(test, result)
}

#[test]
fn dhclient_gets_its_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "dhclient"], Ok(()));
    client_gets_its_node(
        "dhclient_gets_its_node",
        "rbdh",
        "52:54:00:d1:00:01",
        dhclient,
    )
}

#[test]
fn udhcpc_gets_its_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox"], Ok(()));
    client_gets_its_node(
        "udhcpc_gets_its_node",
        "rbdu",
        "52:54:00:d1:00:02",
        |ns, i, d, t| udhcpc(ns, i, d, t, &[]),
    )
}

#[test]
fn dhcpcd_gets_its_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "dhcpcd", "mount"], Ok(()));
    client_gets_its_node(
        "dhcpcd_gets_its_node",
        "rbdd",
        "52:54:00:d1:00:03",
        |ns, i, d, t| dhcpcd(ns, i, d, t, &[]),
    )
}

/// A client identifier that is not derived from the MAC (type 255).
const CLIENT_ID: [u8; 6] = [0xff, 0x00, 0xc0, 0xff, 0xee, 0x01];

#[test]
fn client_id_does_not_change_the_node() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox", "dhclient", "tcpdump"], Ok(()));
    let test = "client_id_does_not_change_the_node";
    let mac = "52:54:00:d1:00:04";
    let rack = AuthRack::start("rbdi")?;
    let client = rack.add_client("rbdi-c", mac, "rbd-p0")?;
    let result = (|| {
        let dir = rack.lab.dir();
        let id_hex: String = CLIENT_ID.iter().map(|b| format!("{b:02x}")).collect();
        let with_id = format!("0x3d:{id_hex}");
        type Run<'a> = Box<dyn Fn() -> Result<Lease> + 'a>;
        let runs: [(&str, Option<&[u8]>, Run<'_>); 3] = [
            (
                "udhcpc-with-client-id",
                Some(&CLIENT_ID),
                Box::new(|| udhcpc(&client, CLIENT_IF, dir, "udhcpc-id", &["-x", &with_id])),
            ),
            (
                "dhclient-without-client-id",
                None,
                Box::new(|| dhclient(&client, CLIENT_IF, dir, "dhclient")),
            ),
            (
                "udhcpc-C-without-client-id",
                None,
                Box::new(|| udhcpc(&client, CLIENT_IF, dir, "udhcpc-noid", &["-C"])),
            ),
        ];
        let mut leases = Vec::new();
        for (name, want_id, run) in runs {
            client.ip(&["-4", "addr", "flush", "dev", CLIENT_IF])?;
            let cap = Capture::start(&client, CLIENT_IF, dir, name)?;
            let lease = run()?;
            cap.wait_for("ACK from the agent", Duration::from_secs(10), |ps| {
                ps.iter()
                    .any(|p| p.is_from(mac) && p.op == BOOTREPLY && p.message_type() == Some(ACK))
            })?;
            let packets = cap.stop()?;
            let requests: Vec<&DhcpPacket> = packets
                .iter()
                .filter(|p| p.op == BOOTREQUEST && p.is_from(mac))
                .collect();
            ensure!(!requests.is_empty(), "{name}: no request captured");
            for r in &requests {
                ensure!(
                    r.option(61) == want_id,
                    "{name}: request with option 61 {:?}, want {want_id:?}: {r}",
                    r.option(61)
                );
            }
            let acks: Vec<&DhcpPacket> = packets
                .iter()
                .filter(|p| p.is_from(mac) && p.message_type() == Some(ACK))
                .collect();
            ensure!(
                acks.iter().all(|a| a.yiaddr == lease.ip),
                "{name}: bound {} but the agent ACKed:\n{}",
                lease.ip,
                dhcpcap::list(&packets)
            );
            let node = rack.check_lease(&client, mac, &lease)?;
            eprintln!(
                "{name}: option 61 {:?} -> node {} {}",
                want_id.map(|id| id.len()),
                node.number,
                lease.ip
            );
            leases.push((name, node, lease.ip));
        }
        let (first_name, first_node, first_ip) = leases.first().cloned().context("no run")?;
        for (name, node, ip) in &leases {
            ensure!(
                *node == first_node && *ip == first_ip,
                "{name} got node {node:?} at {ip}, {first_name} node {first_node:?} at {first_ip}"
            );
        }
        let count = node_count(&rack.lab, &rack.srv)?;
        ensure!(
            count == 1,
            "the coordinator lists {count} nodes for one machine"
        );
        Ok(())
    })();
    rack.lab.finish(test, result)
}

// ---- proxyDHCP beside dnsmasq ----------------------------------------------

#[test]
fn proxy_dhcp_beside_dnsmasq() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(
        [
            "ip", "dhcpcd", "dnsmasq", "tcpdump", "bash", "dd", "timeout"
        ],
        Ok(())
    );
    let test = "proxy_dhcp_beside_dnsmasq";
    let mac = "52:54:00:d2:00:01";
    let srv = Netns::create("rbdp-s")?;
    let site = Netns::create("rbdp-d")?;
    let client = Netns::create("rbdp-c")?;
    let mut lab = Lab::new("rbdp")?;
    let result = (|| {
        proxy_site(&srv, &site, &mut lab)?;
        proxy_client(&srv, &client, mac)?;
        let dir = lab.dir().to_path_buf();
        let pxe = ["-i", PXE_VENDOR_CLASS];

        // First sight: dnsmasq answers, the agent only reports the machine.
        let first = dhcpcd(&client, CLIENT_IF, &dir, "dhcpcd-1", &pxe)?;
        let node = wait_node(&lab, &srv, mac)?;
        eprintln!(
            "first run: {} from {:?}; node {} (rack address {})",
            first.ip, first.server_id, node.number, node.address
        );

        // Known now: the agent's proxy offer is on the wire beside dnsmasq's.
        client.ip(&["-4", "addr", "flush", "dev", CLIENT_IF])?;
        let cap = Capture::start(&client, CLIENT_IF, &dir, "proxy")?;
        let lease = dhcpcd(&client, CLIENT_IF, &dir, "dhcpcd-2", &pxe)?;
        let from_agent = |p: &DhcpPacket| *p.src.ip() == PROXY_SERVER && p.is_from(mac);
        cap.wait_for(
            "proxy OFFER from the agent and ACK from dnsmasq",
            Duration::from_secs(10),
            |ps| {
                ps.iter()
                    .any(|p| from_agent(p) && p.message_type() == Some(OFFER))
                    && ps
                        .iter()
                        .any(|p| *p.src.ip() == DNSMASQ_ADDR && p.message_type() == Some(ACK))
            },
        )?;
        let packets = cap.stop()?;
        let all = dhcpcap::list(&packets);
        let discovers: Vec<u32> = packets
            .iter()
            .filter(|p| p.is_from(mac) && p.message_type() == Some(dhcpcap::DISCOVER))
            .map(|p| p.xid)
            .collect();
        for p in packets.iter().filter(|p| from_agent(p)) {
            check_proxy_reply(p, OFFER).with_context(|| format!("captured:\n{all}"))?;
            ensure!(
                p.src.port() == 67 && p.dst.port() == 68,
                "the proxy offer went {} -> {}:\n{all}",
                p.src,
                p.dst
            );
            ensure!(
                discovers.contains(&p.xid),
                "agent reply to no DISCOVER of this client:\n{all}"
            );
        }
        // The client's address is dnsmasq's.
        ensure!(
            lease.server_id == Some(DNSMASQ_ADDR),
            "dhcpcd bound a lease from {:?}, not dnsmasq: {lease:?}\n{all}",
            lease.server_id
        );
        ensure!(
            (u32::from(SITE_FIRST)..=u32::from(SITE_LAST)).contains(&u32::from(lease.ip)),
            "dhcpcd bound {}, outside dnsmasq's range {SITE_FIRST}-{SITE_LAST}",
            lease.ip
        );
        ensure!(
            lease.ip == first.ip,
            "dnsmasq moved the client from {} to {}",
            first.ip,
            lease.ip
        );
        ensure_has_address(&client, CLIENT_IF, lease.ip)?;
        let acked = packets.iter().any(|p| {
            *p.src.ip() == DNSMASQ_ADDR && p.message_type() == Some(ACK) && p.yiaddr == lease.ip
        });
        ensure!(
            acked,
            "no ACK of {} from dnsmasq captured:\n{all}",
            lease.ip
        );
        let leases = std::fs::read_to_string(lab.path("dnsmasq.leases"))?;
        ensure!(
            leases
                .lines()
                .any(|l| normalize_mac(l).contains(mac) && l.contains(&format!(" {} ", lease.ip))),
            "dnsmasq's lease file has no {mac} {}:\n{leases}",
            lease.ip
        );

        // The PXE boot server step (port 4011), which only firmware does:
        // a REQUEST from the address dnsmasq gave gets the proxy ACK.
        let uuid = [0x5a; 16];
        let xid = 0x5043_3031;
        let req = dhcpcap::pxe_boot_server_request(mac_bytes(mac)?, lease.ip, xid, uuid);
        let resp = pxe_boot_server_exchange(&client, &dir, &req)?;
        let from = std::net::SocketAddrV4::new(PROXY_SERVER, 4011);
        let to = std::net::SocketAddrV4::new(lease.ip, 0);
        let ack = DhcpPacket::parse(&resp, from, to)
            .with_context(|| format!("the 4011 answer ({} bytes) is not DHCP", resp.len()))?;
        check_proxy_reply(&ack, ACK)?;
        ensure!(
            ack.xid == xid && ack.is_from(mac),
            "ACK for another request: {ack}"
        );
        ensure!(ack.ciaddr == lease.ip, "ACK ciaddr {}: {ack}", ack.ciaddr);
        let mut machine_id = vec![0u8];
        machine_id.extend_from_slice(&uuid);
        ensure!(
            ack.option(97) == Some(machine_id.as_slice()),
            "the proxy ACK should echo option 97: {ack}"
        );
        eprintln!(
            "dnsmasq gave {}; agent's proxy offer and 4011 ACK: next-server {}, file {}",
            lease.ip, ack.siaddr, ack.file
        );
        lab.ensure_running()
    })();
    lab.finish(test, result)
}

/// How long the guest may take to each milestone (TCG on a busy machine).
const GUEST_STEP: Duration = Duration::from_secs(90);

#[test]
fn proxy_dhcp_ipxe_guest() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "dnsmasq", "qemu-system-x86_64"], Ok(()));
    if !ipxe_rom_present() {
        rackboot_tests::skip(
            "needs QEMU's e1000 iPXE option ROM: apt-get install ipxe-qemu, \
             or run tests/scripts/install-deps.sh",
        );
        return Ok(());
    }
    let test = "proxy_dhcp_ipxe_guest";
    let mac = "52:54:00:d2:00:02";
    let script = format!("ipxe/{}.ipxe", mac.replace(':', "-"));
    let srv = Netns::create("rbdq-s")?;
    let site = Netns::create("rbdq-d")?;
    let mut lab = Lab::new("rbdq")?;
    let result = (|| {
        proxy_site(&srv, &site, &mut lab)?;
        proxy_tap(&srv, "rbp-tap")?;
        let mut guest =
            QemuGuest::spawn_in(&srv, QemuOpts::network_boot("proxy-ipxe", "rbp-tap", mac))?;
        // iPXE configures net0 with dnsmasq's lease ...
        let configured = guest.wait_for_line_matching(
            "iPXE's `net0: <address>/<mask> gw <router>` line",
            GUEST_STEP,
            |l| l.trim_start().starts_with("net0: ") && l.contains(" gw "),
        )?;
        let addr: Ipv4Addr = configured
            .trim_start()
            .trim_start_matches("net0: ")
            .split('/')
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("no address in {configured:?}"))?;
        ensure!(
            (u32::from(SITE_FIRST)..=u32::from(SITE_LAST)).contains(&u32::from(addr)),
            "iPXE configured {addr}, outside dnsmasq's range {SITE_FIRST}-{SITE_LAST}: {configured:?}"
        );
        ensure!(
            configured.contains(&format!(" gw {DNSMASQ_ADDR}")),
            "iPXE's router should be dnsmasq's: {configured:?}"
        );
        // ... and boots what the agent's proxy reply names: for iPXE (user
        // class iPXE) the node's script, from the agent over TFTP.
        guest.wait_for_line(&format!("Next server: {PROXY_SERVER}"), GUEST_STEP)?;
        guest.wait_for_line(&format!("Filename: {script}"), GUEST_STEP)?;
        let node = wait_node(&lab, &srv, mac)?;
        guest.wait_for_line(
            &format!("rackboot: node {} has no image assigned yet", node.name),
            GUEST_STEP,
        )?;
        eprintln!(
            "iPXE: {addr} from dnsmasq, script {script} from the agent for node {} ({:.1} s after QEMU started)",
            node.name,
            guest.elapsed().as_secs_f64()
        );
        lab.ensure_running()
    })();
    lab.finish(test, result)
}

// ---- relay -----------------------------------------------------------------

#[test]
fn relay_serves_far_subnet() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "busybox", "dhcrelay", "tcpdump", "sysctl"], Ok(()));
    let test = "relay_serves_far_subnet";
    let mac = "52:54:00:d3:00:01";
    let srv = Netns::create("rbdr-s")?;
    let router = Netns::create("rbdr-r")?;
    let client = Netns::create("rbdr-c")?;
    let mut lab = Lab::new("rbdr")?;
    let result = (|| {
        relay_site(&srv, &router, &client, mac, &mut lab)?;

        let dir = lab.dir().to_path_buf();
        let cap = Capture::start(&router, RELAY_UP_IF, &dir, "relay-up")?;
        let lease = udhcpc(&client, CLIENT_IF, &dir, "udhcpc", &[])?;
        let from_agent = |p: &DhcpPacket| *p.src.ip() == RELAY_AGENT_ADDR && p.is_from(mac);
        cap.wait_for(
            "the agent's ACK to the relay",
            Duration::from_secs(10),
            |ps| {
                ps.iter()
                    .any(|p| from_agent(p) && p.message_type() == Some(ACK))
            },
        )?;
        let packets = cap.stop()?;
        let all = dhcpcap::list(&packets);

        // What the relay sent: giaddr and option 82.
        let relayed: Vec<&DhcpPacket> = packets
            .iter()
            .filter(|p| p.op == BOOTREQUEST && p.is_from(mac))
            .collect();
        ensure!(!relayed.is_empty(), "nothing relayed to the agent:\n{all}");
        let mut option82 = None;
        for r in &relayed {
            ensure!(
                *r.src.ip() == RELAY_UP_ADDR
                    && r.dst == std::net::SocketAddrV4::new(RELAY_AGENT_ADDR, 67)
                    && r.giaddr == RELAY_DOWN_ADDR
                    && r.hops >= 1,
                "not a relayed request from {RELAY_UP_ADDR} with giaddr {RELAY_DOWN_ADDR}: {r}"
            );
            option82 = Some(
                r.option(82)
                    .with_context(|| format!("dhcrelay -a added no option 82: {r}"))?,
            );
        }
        let option82 = option82.context("no relayed request")?;

        // The agent answers the relay, option 82 echoed.
        let replies: Vec<&DhcpPacket> = packets.iter().filter(|p| from_agent(p)).collect();
        for want in [OFFER, ACK] {
            ensure!(
                replies.iter().any(|p| p.message_type() == Some(want)),
                "no reply of type {want} from the agent:\n{all}"
            );
        }
        for p in &replies {
            ensure!(
                p.dst == std::net::SocketAddrV4::new(RELAY_DOWN_ADDR, 67)
                    && p.giaddr == RELAY_DOWN_ADDR,
                "the agent's reply did not go to the relay at giaddr {RELAY_DOWN_ADDR}:67: {p}"
            );
            ensure!(
                p.option(82) == Some(option82),
                "option 82 not echoed (sent {option82:02x?}): {p}"
            );
            ensure!(
                p.yiaddr == lease.ip,
                "agent offered {} but the client bound {}",
                p.yiaddr,
                lease.ip
            );
        }

        // The client has its node's address.
        let node = node_of(&lab, &srv, mac)?;
        ensure!(
            lease.ip == node.address,
            "udhcpc bound {} but the coordinator gave node {} {}",
            lease.ip,
            node.number,
            node.address
        );
        ensure!(
            lease.hostname.as_deref() == Some(node.name.as_str()),
            "hostname {:?}, want {:?}",
            lease.hostname,
            node.name
        );
        ensure!(
            lease.server_id == Some(RELAY_AGENT_ADDR),
            "server identifier {:?}",
            lease.server_id
        );
        ensure_has_address(&client, CLIENT_IF, lease.ip)?;

        // ... on the client's own subnet, routed by the relay.
        ensure!(
            in_subnet(lease.ip, FAR_NET, FAR_PREFIX),
            "the relayed client got {} (mask {:?}, router {:?}), which is not on its \
             subnet {FAR_NET}/{FAR_PREFIX} behind the relay {RELAY_DOWN_ADDR}",
            lease.ip,
            lease.mask,
            lease.router
        );
        ensure!(
            lease.mask == Some(Ipv4Addr::new(255, 255, 255, 0)),
            "mask {:?}",
            lease.mask
        );
        ensure!(
            lease.router == Some(RELAY_DOWN_ADDR),
            "router {:?}, want the relay {RELAY_DOWN_ADDR}",
            lease.router
        );
        // And it works: the agent answers a ping through the router.
        let out =
            run_output(
                client
                    .exec("busybox")
                    .args(["ping", "-c", "1", "-W", "3", "10.215.1.2"]),
            )?;
        ensure!(
            out.status.success(),
            "the client at {} cannot reach the agent: {}",
            lease.ip,
            String::from_utf8_lossy(&out.stdout)
        );
        lab.ensure_running()
    })();
    lab.finish(test, result)
}
