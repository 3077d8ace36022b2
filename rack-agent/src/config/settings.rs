//! [`AgentConfig`]: everything an agent needs to start, as validated from
//! the flags and the file.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

/// Everything an agent needs to start.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Rack name.
    pub rack: String,
    /// Coordinator URLs.
    pub coordinators: Vec<String>,
    /// Data directory (view, cache, log spool).
    pub data_dir: PathBuf,
    /// Bound of the on-disk log spool, in bytes.
    pub log_spool_bytes: u64,
    /// Bound on the blob cache's files.
    pub cache_max_bytes: u64,
    /// The agent's address on the rack network.
    pub server_ip: Ipv4Addr,
    /// The rack subnet.
    pub subnet: Ipv4Net,
    /// Address of node slot 0.
    pub node_base: Ipv4Addr,
    /// Gateway handed to nodes.
    pub gateway: Option<Ipv4Addr>,
    /// Interface to bind DHCP to (None: no device binding).
    pub iface: Option<String>,
    /// Answer IPv6 router solicitations on the interface with an empty
    /// advertisement (needs `iface`).
    pub ipv6_ra: bool,
    /// DHCP listen address.
    pub dhcp_listen: SocketAddr,
    /// Port DHCP replies go to.
    pub dhcp_client_port: u16,
    /// Authoritative server or proxyDHCP.
    pub dhcp_mode: rackboot_dhcp_core::DhcpMode,
    /// proxyDHCP boot server port (4011).
    pub proxy_boot_port: u16,
    /// Source subnets TFTP and HTTP answer (default: the rack subnet).
    pub allow: Vec<Ipv4Net>,
    /// TFTP listen address.
    pub tftp_listen: SocketAddr,
    /// HTTP listen address (None: no HTTP; nodes load everything over TFTP).
    pub http_listen: Option<SocketAddr>,
    /// Operator listener address: `/metrics` and boot-info about any node
    /// (None: not served).
    pub metrics_listen: Option<SocketAddr>,
    /// Syslog (UDP) listen address for node logs (None: not received).
    pub syslog_listen: Option<SocketAddr>,
    /// Directory of static files (firmware) to serve read-only.
    pub static_root: Option<PathBuf>,
    /// DHCP lease time.
    pub lease_secs: u32,
    /// When unknown machines are numbered.
    pub accept: rackboot_dhcp_core::AcceptPolicy,
    /// Provisional pool (first, last address) and lease length, for the
    /// probe and manual policies.
    pub provisional: Option<(Ipv4Addr, Ipv4Addr, u32)>,
    /// Boot file for BIOS PXE.
    pub bios_boot_file: String,
    /// Boot file for x64 UEFI PXE.
    pub uefi_x64_boot_file: String,
    /// Boot file for arm64 UEFI PXE.
    pub uefi_arm64_boot_file: String,
    /// TFTP engine settings.
    pub tftp: rackboot_tftp_core::Config,
    /// Open HTTP connections at most.
    pub http_max_connections: u32,
    /// Open HTTP connections per source address at most.
    pub http_max_per_source: u32,
}
