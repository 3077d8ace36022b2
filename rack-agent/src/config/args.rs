//! Command-line settings of an agent, shared by `rackboot-agent` and
//! `rackboot dev`, turned into a validated [`AgentConfig`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::config::settings::AgentConfig;
use crate::serve::net::{default_node_base, interface_network};

/// A clap parser for one of a policy enum's `names`: `--help` and errors
/// list them.
fn named<T>(names: &'static [&'static str]) -> impl clap::builder::TypedValueParser<Value = T>
where
    T: std::str::FromStr<Err = rackboot_dhcp_core::UnknownName> + Clone + Send + Sync + 'static,
{
    use clap::builder::TypedValueParser;
    clap::builder::PossibleValuesParser::new(names).try_map(|s| s.parse::<T>())
}

/// Agent network and serving flags.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Rack interface. Without it the agent serves loopback on unprivileged
    /// ports (DHCP 1067, TFTP 1069); with it, that interface's address and
    /// subnet on the standard ports (DHCP 67, TFTP 69).
    #[arg(long)]
    pub iface: Option<String>,
    /// Directory of static files served read-only over TFTP (firmware such as
    /// undionly.kpxe, ipxe.efi).
    #[arg(long)]
    pub static_root: Option<PathBuf>,
    /// The rack subnet, when the nodes are not on --iface's subnet but
    /// behind a DHCP relay (giaddr): node addresses and the subnet mask come
    /// from it; give the relay's address on it as --gateway. The agent keeps
    /// its --iface address as server identifier and next-server, and TFTP and
    /// HTTP answer both subnets.
    #[arg(long, value_name = "CIDR")]
    pub rack_subnet: Option<Ipv4Net>,
    /// Address of node slot 0 (default: the agent's address + 1; with
    /// --rack-subnet, that subnet's second host, the first being the relay).
    #[arg(long)]
    pub node_base: Option<Ipv4Addr>,
    /// Gateway handed to nodes (default: none).
    #[arg(long)]
    pub gateway: Option<Ipv4Addr>,
    /// DHCP port (default 67 with --iface, 1067 without).
    #[arg(long)]
    pub dhcp_port: Option<u16>,
    /// TFTP port (default 69 with --iface, 1069 without).
    #[arg(long)]
    pub tftp_port: Option<u16>,
    /// Speed of the rack link in Mbit/s: TFTP paces its sends to it,
    /// counting each frame as the wire does (Ethernet framing, preamble and
    /// gap included), so a storm's queue forms in the agent, where resends
    /// go first, not in a switch buffer. Set it to the slowest link between
    /// the agent and its nodes (10000 for 10 GbE); 0 turns pacing off.
    /// Default 1000.
    #[arg(long, value_name = "MBIT")]
    pub tftp_link_mbit: Option<u32>,
    /// Bytes the rack link spends on each TFTP datagram besides its UDP
    /// payload, for the pacing above. Default 66, plain Ethernet on the
    /// wire (preamble 8, header 14, FCS 4, gap 12, IPv4 20, UDP 8); 70 with
    /// an 802.1Q tag; 42 for a link shaped by Linux `tc` (tbf, htb), which
    /// counts each frame from its MAC header without FCS, preamble or gap.
    #[arg(long, value_name = "BYTES")]
    pub tftp_link_overhead: Option<u16>,
    /// HTTP port for iPXE scripts, kernels, initrds and /boot-info (default 80
    /// with --iface, 8080 without).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Do not serve HTTP: iPXE loads kernel and initrd over TFTP.
    #[arg(long)]
    pub no_http: bool,
    /// Open HTTP connections at most (default 1024); the last quarter is
    /// kept for addresses the rack's view names as nodes.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: Option<u32>,
    /// Open HTTP connections one address may hold (default 64). Raise it
    /// for a test host that emulates many clients from one address.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_per_source: Option<u32>,
    /// UDP port of the node log (syslog) receiver (default 514 with --iface,
    /// 1514 without).
    #[arg(long)]
    pub syslog_port: Option<u16>,
    /// Do not receive node logs.
    #[arg(long)]
    pub no_syslog: bool,
    /// Do not answer IPv6 router solicitations. By default, with --iface,
    /// the agent answers each with an empty router advertisement (not a
    /// router, no prefix, no DHCPv6), which ends the wait for IPv6
    /// configuration that iPXE adds to every boot on a segment without an
    /// IPv6 router (~13 s measured), and configures nothing. It stays quiet
    /// by itself while a real router advertises on the segment.
    #[arg(long)]
    pub no_ipv6_ra: bool,
    /// The operator listener, e.g. `127.0.0.1:9101`: `/metrics`
    /// (Prometheus) and `/boot-info?mac=` about any node. Plain HTTP: keep
    /// it on loopback or the management network. The boot port serves
    /// neither (boot-info there is only the asking node's own). Default:
    /// off.
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,
    /// DHCP role: `authoritative` (the rack's DHCP server; relayed requests
    /// are answered to the relay) or `proxy` (proxyDHCP beside a site DHCP
    /// server: boot information only, on 67 and 4011). Default authoritative.
    #[arg(long, value_parser = named::<rackboot_dhcp_core::DhcpMode>(rackboot_dhcp_core::DhcpMode::NAMES))]
    pub dhcp_mode: Option<rackboot_dhcp_core::DhcpMode>,
    /// proxyDHCP boot server port. Default 4011.
    #[arg(long)]
    pub proxy_boot_port: Option<u16>,
    /// Extra source subnets TFTP answers (racks behind a DHCP relay); the
    /// rack subnet is always allowed. Repeatable.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<Ipv4Net>,
    /// DHCP lease time in seconds. Default 3600.
    #[arg(long)]
    pub lease_secs: Option<u32>,
    /// When a machine the rack does not know gets its node number:
    /// `first-seen` (on its first DHCP request), `probe` (from the report of
    /// `rackboot probe` in the discovery image, with every MAC of the
    /// machine; a provisional lease until then) or `manual` (like probe,
    /// then held until `rackboot node accept`). probe and manual need
    /// --provisional-range. Default first-seen.
    #[arg(long, value_parser = named::<rackboot_dhcp_core::AcceptPolicy>(rackboot_dhcp_core::AcceptPolicy::NAMES))]
    pub accept: Option<rackboot_dhcp_core::AcceptPolicy>,
    /// Pool of short leases for machines without a number, `FIRST-LAST`
    /// (e.g. `10.0.0.200-10.0.0.239`): inside the rack subnet and outside
    /// the node addresses (node base to the end of the subnet). Its size caps
    /// how many unknown machines hold an address at once.
    #[arg(long, value_name = "FIRST-LAST")]
    pub provisional_range: Option<String>,
    /// Length of a provisional lease in seconds. Default 120.
    #[arg(long)]
    pub provisional_lease_secs: Option<u32>,
    /// Boot file for BIOS PXE clients (from the static root). Default
    /// undionly.kpxe.
    #[arg(long)]
    pub bios_boot_file: Option<String>,
    /// Boot file for x64 UEFI PXE clients. Default ipxe.efi.
    #[arg(long)]
    pub uefi_boot_file: Option<String>,
    /// Boot file for arm64 UEFI PXE clients. Default ipxe-arm64.efi. Offered
    /// only when the static root holds it; otherwise the first of
    /// ipxe-arm64.efi, grubnetaa64.efi, grubnetaa64.efi.signed it holds, or
    /// none (logged, and shown by `rackboot rack cache`).
    #[arg(long)]
    pub uefi_arm64_boot_file: Option<String>,
    /// Disk space for node log lines while the coordinator is unreachable
    /// (MiB, under `<data>/log-spool`; the oldest are dropped and counted
    /// beyond it). Default 256.
    #[arg(long)]
    pub log_spool_mib: Option<u64>,
    /// Disk space for cached image blobs (MiB, under `<data>/cache`). The
    /// least recently assigned blobs are evicted beyond it; blobs assigned
    /// to the rack never are. Default 20480 (20 GiB).
    #[arg(long, value_name = "MIB")]
    pub cache_max_mib: Option<u64>,
}

/// Flags that do not form a usable configuration.
#[derive(Debug, thiserror::Error)]
pub enum ArgsError {
    /// The interface is unusable.
    #[error("--iface {iface}: {source}")]
    Iface {
        /// Interface.
        iface: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The node base is outside the subnet.
    #[error("--node-base {base} is not inside the rack subnet {subnet}")]
    NodeBase {
        /// Given base.
        base: Ipv4Addr,
        /// Subnet.
        subnet: Ipv4Net,
    },
    /// No coordinator given.
    #[error("--coordinator: at least one URL is needed")]
    NoCoordinator,
    /// The provisional range is unusable.
    #[error("--provisional-range {range}: {reason}")]
    ProvisionalRange {
        /// As given.
        range: String,
        /// Why.
        reason: String,
    },
    /// The static root is not a directory.
    #[error("--static-root {0}: not a readable directory")]
    StaticRoot(String),
    /// The gateway is outside the rack subnet.
    #[error("--gateway {gateway} is not inside the rack subnet {subnet}")]
    Gateway {
        /// Given gateway.
        gateway: Ipv4Addr,
        /// Subnet.
        subnet: Ipv4Net,
    },
    /// A policy that needs a provisional pool has none.
    #[error(
        "--accept {0}: needs --provisional-range (machines hold a provisional lease until the probe reports)"
    )]
    NoProvisionalRange(&'static str),
}

impl ArgsError {
    /// The flag the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            ArgsError::Iface { .. } => "--iface",
            ArgsError::NodeBase { .. } => "--node-base",
            ArgsError::NoCoordinator => "--coordinator",
            ArgsError::ProvisionalRange { .. } => "--provisional-range",
            ArgsError::Gateway { .. } => "--gateway",
            ArgsError::StaticRoot(_) => "--static-root",
            ArgsError::NoProvisionalRange(_) => "--accept",
        }
    }
}

/// Every problem found in one set of settings.
#[derive(Debug)]
pub struct ArgsErrors(pub Vec<ArgsError>);

impl std::fmt::Display for ArgsErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ArgsErrors {}

/// Parse and check `FIRST-LAST`: both in `subnet`, host addresses, first ≤
/// last, and none of them the server, the gateway or a node address
/// (`node_base` to the end of the subnet).
pub fn provisional_range(
    range: &str,
    subnet: Ipv4Net,
    server: Ipv4Addr,
    gateway: Option<Ipv4Addr>,
    node_base: Ipv4Addr,
) -> Result<(Ipv4Addr, Ipv4Addr), ArgsError> {
    let bad = |reason: String| ArgsError::ProvisionalRange {
        range: range.to_string(),
        reason,
    };
    let (a, b) = range
        .split_once('-')
        .ok_or_else(|| bad("expected FIRST-LAST".into()))?;
    let first: Ipv4Addr = a.trim().parse().map_err(|e| bad(format!("{a}: {e}")))?;
    let last: Ipv4Addr = b.trim().parse().map_err(|e| bad(format!("{b}: {e}")))?;
    if u32::from(first) > u32::from(last) {
        return Err(bad("first address is above the last".into()));
    }
    for end in [first, last] {
        if !subnet.contains(&end) || end == subnet.network() || end == subnet.broadcast() {
            return Err(bad(format!(
                "{end} is not a host address of the rack subnet {subnet}"
            )));
        }
    }
    let span = u32::from(first)..=u32::from(last);
    if span.contains(&u32::from(server)) {
        return Err(bad(format!("contains the agent's own address {server}")));
    }
    if let Some(gw) = gateway
        && span.contains(&u32::from(gw))
    {
        return Err(bad(format!("contains the gateway {gw}")));
    }
    if u32::from(last) >= u32::from(node_base) {
        return Err(bad(format!(
            "overlaps the node addresses ({node_base} to the end of {subnet}); put the pool below --node-base"
        )));
    }
    Ok((first, last))
}

impl ServeArgs {
    /// Resolve into a full configuration.
    pub fn into_config(
        self,
        rack: String,
        coordinators: Vec<String>,
        data_dir: PathBuf,
    ) -> Result<AgentConfig, ArgsErrors> {
        let mut errors = Vec::new();
        if coordinators.is_empty() {
            errors.push(ArgsError::NoCoordinator);
        }
        let (server_ip, subnet, dhcp_ip, dhcp_default, tftp_default, http_default, syslog_default) =
            match &self.iface {
                Some(iface) => {
                    let (ip, net) = match interface_network(iface) {
                        Ok(x) => x,
                        Err(source) => {
                            // Nothing more can be checked without the address.
                            errors.push(ArgsError::Iface {
                                iface: iface.clone(),
                                source,
                            });
                            return Err(ArgsErrors(errors));
                        }
                    };
                    (ip, net, Ipv4Addr::UNSPECIFIED, 67, 69, 80, 514)
                }
                None => {
                    let lo = Ipv4Addr::LOCALHOST;
                    let net = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default();
                    (lo, net, lo, 1067, 1069, 8080, 1514)
                }
            };
        let iface_subnet = subnet;
        let subnet = self.rack_subnet.map(|n| n.trunc()).unwrap_or(subnet);
        let node_base = self.node_base.unwrap_or_else(|| match self.rack_subnet {
            // The first host is usually the relay (the nodes' router).
            Some(_) => default_node_base(default_node_base(subnet.network())),
            None => default_node_base(server_ip),
        });
        if !subnet.contains(&node_base) {
            errors.push(ArgsError::NodeBase {
                base: node_base,
                subnet,
            });
        }
        let accept = self
            .accept
            .unwrap_or(rackboot_dhcp_core::AcceptPolicy::FirstSeen);
        let provisional_lease_secs = self.provisional_lease_secs.unwrap_or(120);
        let provisional = match (&self.provisional_range, accept) {
            (Some(r), _) => {
                match provisional_range(r, subnet, server_ip, self.gateway, node_base) {
                    Ok((first, last)) => Some((first, last, provisional_lease_secs)),
                    Err(e) => {
                        errors.push(e);
                        None
                    }
                }
            }
            (None, rackboot_dhcp_core::AcceptPolicy::FirstSeen) => None,
            (None, rackboot_dhcp_core::AcceptPolicy::Probe) => {
                errors.push(ArgsError::NoProvisionalRange("probe"));
                None
            }
            (None, rackboot_dhcp_core::AcceptPolicy::Manual) => {
                errors.push(ArgsError::NoProvisionalRange("manual"));
                None
            }
        };
        if let Some(gw) = self.gateway
            && !subnet.contains(&gw)
        {
            errors.push(ArgsError::Gateway {
                gateway: gw,
                subnet,
            });
        }
        if !errors.is_empty() {
            return Err(ArgsErrors(errors));
        }
        let dhcp_port = self.dhcp_port.unwrap_or(dhcp_default);
        let tftp_port = self.tftp_port.unwrap_or(tftp_default);
        Ok(AgentConfig {
            rack,
            coordinators,
            data_dir,
            server_ip,
            subnet,
            node_base,
            gateway: self.gateway,
            ipv6_ra: self.iface.is_some() && !self.no_ipv6_ra,
            iface: self.iface,
            dhcp_listen: SocketAddr::from((dhcp_ip, dhcp_port)),
            dhcp_client_port: if dhcp_port == 67 { 68 } else { dhcp_port + 1 },
            dhcp_mode: self
                .dhcp_mode
                .unwrap_or(rackboot_dhcp_core::DhcpMode::Authoritative),
            allow: std::iter::once(subnet)
                .chain((iface_subnet != subnet).then_some(iface_subnet))
                .chain(self.allow.iter().copied())
                .collect(),
            proxy_boot_port: self.proxy_boot_port.unwrap_or(4011),
            tftp_listen: SocketAddr::from((server_ip, tftp_port)),
            metrics_listen: self.metrics_listen,
            http_max_connections: self.http_max_connections.unwrap_or(1024),
            http_max_per_source: self.http_max_per_source.unwrap_or(64),
            syslog_listen: (!self.no_syslog)
                .then(|| SocketAddr::from((server_ip, self.syslog_port.unwrap_or(syslog_default)))),
            http_listen: (!self.no_http)
                .then(|| SocketAddr::from((server_ip, self.http_port.unwrap_or(http_default)))),
            static_root: self.static_root,
            lease_secs: self.lease_secs.unwrap_or(3600),
            accept,
            provisional: provisional
                .filter(|_| accept != rackboot_dhcp_core::AcceptPolicy::FirstSeen),
            bios_boot_file: self
                .bios_boot_file
                .unwrap_or_else(|| "undionly.kpxe".into()),
            uefi_x64_boot_file: self.uefi_boot_file.unwrap_or_else(|| "ipxe.efi".into()),
            uefi_arm64_boot_file: self
                .uefi_arm64_boot_file
                .unwrap_or_else(|| "ipxe-arm64.efi".into()),
            tftp: rackboot_tftp_core::Config {
                rate_limit_bytes_per_sec: match self.tftp_link_mbit {
                    None => rackboot_tftp_core::Config::default().rate_limit_bytes_per_sec,
                    Some(0) => None,
                    Some(mbit) => Some(u64::from(mbit) * 125_000),
                },
                rate_limit_packet_overhead: self
                    .tftp_link_overhead
                    .map_or(rackboot_tftp_core::ETHERNET_UDP_OVERHEAD, u32::from),
                ..rackboot_tftp_core::Config::default()
            },
            log_spool_bytes: self.log_spool_mib.unwrap_or(256).saturating_mul(1 << 20),
            cache_max_bytes: self
                .cache_max_mib
                .map_or(crate::store::cache::DEFAULT_MAX_BYTES, |m| {
                    m.saturating_mul(1 << 20)
                }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(range: &str) -> Result<(Ipv4Addr, Ipv4Addr), ArgsError> {
        let subnet: Ipv4Net = "10.0.0.0/24".parse().unwrap_or_default();
        provisional_range(
            range,
            subnet,
            Ipv4Addr::new(10, 0, 0, 1),
            Some(Ipv4Addr::new(10, 0, 0, 254)),
            Ipv4Addr::new(10, 0, 0, 100),
        )
    }

    #[test]
    fn provisional_range_must_stay_clear_of_nodes_server_and_gateway() {
        assert_eq!(
            check("10.0.0.50-10.0.0.99").ok(),
            Some((Ipv4Addr::new(10, 0, 0, 50), Ipv4Addr::new(10, 0, 0, 99)))
        );
        for (bad, why) in [
            ("10.0.0.50", "FIRST-LAST"),
            ("10.0.0.60-10.0.0.50", "above"),
            ("10.0.1.2-10.0.1.3", "not a host address"),
            ("10.0.0.0-10.0.0.5", "not a host address"),
            ("10.0.0.1-10.0.0.5", "own address"),
            ("10.0.0.90-10.0.0.120", "overlaps the node addresses"),
            ("x-10.0.0.5", "x:"),
        ] {
            let e = check(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}
