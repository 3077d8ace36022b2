//! Command-line settings of an agent, shared by `rackboot-agent` and
//! `rackboot dev`, turned into a validated [`AgentConfig`].

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use ipnet::Ipv4Net;

use crate::agent::{AgentConfig, default_node_base, interface_network};

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
    /// Address of node slot 0 (default: the agent's address + 1).
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
    /// HTTP port for iPXE scripts, kernels, initrds and /boot-info (default 80
    /// with --iface, 8080 without).
    #[arg(long)]
    pub http_port: Option<u16>,
    /// Do not serve HTTP: iPXE loads kernel and initrd over TFTP.
    #[arg(long)]
    pub no_http: bool,
    /// UDP port of the node log (syslog) receiver (default 514 with --iface,
    /// 1514 without).
    #[arg(long)]
    pub syslog_port: Option<u16>,
    /// Do not receive node logs.
    #[arg(long)]
    pub no_syslog: bool,
    /// DHCP role: `authoritative` (the rack's DHCP server; relayed requests
    /// are answered to the relay) or `proxy` (proxyDHCP beside a site DHCP
    /// server: boot information only, on 67 and 4011).
    #[arg(long, value_enum, default_value = "authoritative")]
    pub dhcp_mode: crate::dhcp::DhcpMode,
    /// proxyDHCP boot server port.
    #[arg(long, default_value_t = 4011)]
    pub proxy_boot_port: u16,
    /// Extra source subnets TFTP answers (racks behind a DHCP relay); the
    /// rack subnet is always allowed. Repeatable.
    #[arg(long = "allow", value_name = "CIDR")]
    pub allow: Vec<Ipv4Net>,
    /// DHCP lease time in seconds.
    #[arg(long, default_value_t = 3600)]
    pub lease_secs: u32,
    /// Boot file for BIOS PXE clients (from the static root).
    #[arg(long, default_value = "undionly.kpxe")]
    pub bios_boot_file: String,
    /// Boot file for x64 UEFI PXE clients.
    #[arg(long, default_value = "ipxe.efi")]
    pub uefi_boot_file: String,
    /// Boot file for arm64 UEFI PXE clients.
    #[arg(long, default_value = "ipxe-arm64.efi")]
    pub uefi_arm64_boot_file: String,
    /// Disk space for node log lines while the coordinator is unreachable
    /// (MiB, under `<data>/log-spool`; the oldest are dropped and counted
    /// beyond it).
    #[arg(long, default_value_t = 256)]
    pub log_spool_mib: u64,
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
}

impl ServeArgs {
    /// Resolve into a full configuration.
    pub fn into_config(
        self,
        rack: String,
        coordinators: Vec<String>,
        data_dir: PathBuf,
    ) -> Result<AgentConfig, ArgsError> {
        if coordinators.is_empty() {
            return Err(ArgsError::NoCoordinator);
        }
        let (server_ip, subnet, dhcp_ip, dhcp_default, tftp_default, http_default, syslog_default) =
            match &self.iface {
                Some(iface) => {
                    let (ip, net) =
                        interface_network(iface).map_err(|source| ArgsError::Iface {
                            iface: iface.clone(),
                            source,
                        })?;
                    (ip, net, Ipv4Addr::UNSPECIFIED, 67, 69, 80, 514)
                }
                None => {
                    let lo = Ipv4Addr::LOCALHOST;
                    let net = Ipv4Net::new(Ipv4Addr::new(127, 0, 0, 0), 8).unwrap_or_default();
                    (lo, net, lo, 1067, 1069, 8080, 1514)
                }
            };
        let node_base = self
            .node_base
            .unwrap_or_else(|| default_node_base(server_ip));
        if !subnet.contains(&node_base) {
            return Err(ArgsError::NodeBase {
                base: node_base,
                subnet,
            });
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
            iface: self.iface,
            dhcp_listen: SocketAddr::from((dhcp_ip, dhcp_port)),
            dhcp_client_port: if dhcp_port == 67 { 68 } else { dhcp_port + 1 },
            dhcp_mode: self.dhcp_mode,
            allow: std::iter::once(subnet)
                .chain(self.allow.iter().copied())
                .collect(),
            proxy_boot_port: self.proxy_boot_port,
            tftp_listen: SocketAddr::from((server_ip, tftp_port)),
            syslog_listen: (!self.no_syslog)
                .then(|| SocketAddr::from((server_ip, self.syslog_port.unwrap_or(syslog_default)))),
            http_listen: (!self.no_http)
                .then(|| SocketAddr::from((server_ip, self.http_port.unwrap_or(http_default)))),
            static_root: self.static_root,
            lease_secs: self.lease_secs,
            bios_boot_file: self.bios_boot_file,
            uefi_x64_boot_file: self.uefi_boot_file,
            uefi_arm64_boot_file: self.uefi_arm64_boot_file,
            tftp: rackboot_tftp_core::Config::default(),
            log_spool_bytes: self.log_spool_mib.saturating_mul(1 << 20),
        })
    }
}
