//! The agent's configuration file, in two layers: [`AgentFile`] is what the
//! TOML says (serde, unknown keys refused); laid under the command-line
//! flags ([`Layered`]) it is validated into an
//! [`AgentConfig`] by
//! [`ServeArgs::into_config`]. A flag
//! given on the command line wins over the file. Every problem names the
//! file (or the command line), the key and what is wrong.
//!
//! ```toml
//! rack = "r1"                                  # default r1
//! coordinators = ["http://10.1.0.1:50051", "http://10.1.0.2:50051"]
//! data_dir = "/var/lib/rackboot-agent"
//! iface = "eth1"                               # rack interface (default: loopback dev mode)
//! static_root = "/usr/lib/ipxe"                # firmware served over TFTP/HTTP
//! log_spool_mib = 256
//! cache_max_mib = 20480                        # image blob cache bound (LRU; assigned blobs kept)
//! log_level = "info"                           # tracing filter; SIGHUP applies a change
//! metrics_listen = "127.0.0.1:9101"            # operator listener: /metrics, /boot-info?mac= (off the rack network)
//! tls_ca = "/etc/rackboot/ca.pem"              # mutual TLS to the coordinators (all three)
//! tls_cert = "/etc/rackboot/agent-r1.pem"
//! tls_key = "/etc/rackboot/agent-r1.key"
//! # plaintext = true                           # no TLS: a lab only (refused with tls_*)
//!
//! [network]
//! node_base = "10.0.0.100"                     # address of slot 0
//! gateway = "10.0.0.254"
//! rack_subnet = "10.50.0.0/24"                 # nodes behind a DHCP relay
//! allow = ["10.60.0.0/16"]                     # extra TFTP/HTTP source subnets
//! ipv6_ra = true                               # empty router advertisements (iPXE's IPv6 wait)
//!
//! [dhcp]
//! mode = "authoritative"                       # or "proxy"
//! port = 67
//! proxy_boot_port = 4011
//! lease_secs = 3600
//! accept = "probe"                             # first-seen | probe | manual
//! provisional_range = "10.0.0.50-10.0.0.99"
//! provisional_lease_secs = 120
//! bios_boot_file = "undionly.kpxe"
//! uefi_boot_file = "ipxe.efi"
//! uefi_arm64_boot_file = "ipxe-arm64.efi"
//!
//! [tftp]
//! port = 69
//! link_mbit = 1000                             # rack link speed TFTP paces to (0: off)
//! link_overhead = 66                           # link bytes per datagram besides its UDP payload
//!
//! [http]
//! enabled = true
//! port = 80
//! max_connections = 1024                       # the last quarter kept for the rack's nodes
//! max_per_source = 64                          # open connections per address
//!
//! [syslog]
//! enabled = true
//! port = 514
//! ```

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;
use rackboot_config::{ConfigError, Origin};
use serde::Deserialize;

use crate::config::args::ServeArgs;
use crate::config::settings::AgentConfig;
use rackboot_dhcp_core::{AcceptPolicy, DhcpMode};

/// The configuration file as written. Every key is optional.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentFile {
    /// Rack name.
    pub rack: Option<String>,
    /// Coordinator URLs, tried in order.
    pub coordinators: Option<Vec<String>>,
    /// Data directory.
    pub data_dir: Option<PathBuf>,
    /// Rack interface.
    pub iface: Option<String>,
    /// Static root directory.
    pub static_root: Option<PathBuf>,
    /// Log spool bound (MiB).
    pub log_spool_mib: Option<u64>,
    /// Blob cache bound (MiB).
    pub cache_max_mib: Option<u64>,
    /// `tracing` filter (`info`, `rackboot_agent=debug,info`, …).
    pub log_level: Option<String>,
    /// Address of the metrics listener.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// `plain` or `json`.
    pub log_format: Option<String>,
    /// Cluster CA certificate: with `tls_cert` and `tls_key`, the agent
    /// talks to the coordinators over mutual TLS (`https://` URLs).
    pub tls_ca: Option<PathBuf>,
    /// The agent's certificate (`rackboot certs issue agent --rack R`).
    pub tls_cert: Option<PathBuf>,
    /// Its key.
    pub tls_key: Option<PathBuf>,
    /// Talk to the coordinators without TLS (`http://` URLs): a lab only.
    /// Without TLS files the agent refuses to start unless this is true.
    pub plaintext: Option<bool>,
    /// `[network]`.
    #[serde(default)]
    pub network: NetworkSection,
    /// `[dhcp]`.
    #[serde(default)]
    pub dhcp: DhcpSection,
    /// `[tftp]`.
    #[serde(default)]
    pub tftp: TftpSection,
    /// `[http]`.
    #[serde(default)]
    pub http: HttpSection,
    /// `[syslog]`.
    #[serde(default)]
    pub syslog: ServiceSection,
}

/// `[network]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkSection {
    /// Address of slot 0.
    pub node_base: Option<Ipv4Addr>,
    /// Gateway handed to nodes.
    pub gateway: Option<Ipv4Addr>,
    /// Nodes' subnet behind a relay.
    pub rack_subnet: Option<Ipv4Net>,
    /// Extra source subnets.
    #[serde(default)]
    pub allow: Vec<Ipv4Net>,
    /// Answer IPv6 router solicitations with an empty advertisement
    /// (default true; false is `--no-ipv6-ra`).
    pub ipv6_ra: Option<bool>,
}

/// `[dhcp]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DhcpSection {
    /// `authoritative` or `proxy`.
    pub mode: Option<String>,
    /// Server port.
    pub port: Option<u16>,
    /// proxyDHCP boot server port.
    pub proxy_boot_port: Option<u16>,
    /// Lease time.
    pub lease_secs: Option<u32>,
    /// `first-seen`, `probe` or `manual`.
    pub accept: Option<String>,
    /// `FIRST-LAST`.
    pub provisional_range: Option<String>,
    /// Provisional lease time.
    pub provisional_lease_secs: Option<u32>,
    /// BIOS boot file.
    pub bios_boot_file: Option<String>,
    /// x64 UEFI boot file.
    pub uefi_boot_file: Option<String>,
    /// arm64 UEFI boot file.
    pub uefi_arm64_boot_file: Option<String>,
}

/// `[tftp]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TftpSection {
    /// Port.
    pub port: Option<u16>,
    /// Rack link speed (Mbit/s) TFTP paces to; 0 = no pacing.
    pub link_mbit: Option<u32>,
    /// Link bytes per datagram besides its UDP payload (pacing).
    pub link_overhead: Option<u16>,
}

/// `[http]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    /// Serve it (default true).
    pub enabled: Option<bool>,
    /// Port.
    pub port: Option<u16>,
    /// Open connections at most.
    pub max_connections: Option<u32>,
    /// Open connections per source address at most.
    pub max_per_source: Option<u32>,
}

/// A service that can be switched off.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSection {
    /// Serve it (default true).
    pub enabled: Option<bool>,
    /// Port.
    pub port: Option<u16>,
}

/// The flags `rackboot-agent` itself takes besides [`ServeArgs`].
#[derive(Debug, Default, Clone)]
pub struct MainFlags {
    /// `--rack`.
    pub rack: Option<String>,
    /// `--coordinator` (empty: not given).
    pub coordinators: Vec<String>,
    /// `--data`.
    pub data: Option<PathBuf>,
    /// `--log-level`.
    pub log_level: Option<String>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--tls-ca`.
    pub tls_ca: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--plaintext`.
    pub plaintext: bool,
}

/// Flags laid over a file: what [`ServeArgs::into_config`] needs, and where
/// each value came from.
#[derive(Debug, Clone)]
pub struct Layered {
    /// Rack.
    pub rack: String,
    /// Coordinators.
    pub coordinators: Vec<String>,
    /// Data directory.
    pub data: PathBuf,
    /// Serving settings.
    pub serve: ServeArgs,
    /// `tracing` filter.
    pub log_level: String,
    /// `plain` or `json`.
    pub log_format: String,
    /// Mutual TLS to the coordinators, if configured.
    pub tls: Option<rackboot_proto::tls::TlsFiles>,
    /// Plaintext to the coordinators, explicitly asked for.
    pub plaintext: bool,
    /// The file, if any.
    pub file: Option<PathBuf>,
    /// Flags whose value came from the file, with the file's key.
    pub from_file: BTreeMap<&'static str, &'static str>,
}

/// Default rack name.
pub const DEFAULT_RACK: &str = "r1";
/// Default coordinator URL.
pub const DEFAULT_COORDINATOR: &str = "http://127.0.0.1:50051";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./rackboot-agent-data";

fn enum_value<T: std::str::FromStr<Err = rackboot_dhcp_core::UnknownName>>(
    path: &Path,
    key: &str,
    text: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match text.parse::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            errors.push(Origin::File(path).err(
                key,
                format!("'{text}' is not one of {}", e.allowed.join(", ")),
            ));
            None
        }
    }
}

impl AgentFile {
    /// Lay `flags` and `serve` (the command line) over this file read from
    /// `path`. Values the flags leave unset come from the file.
    pub fn layer(
        self,
        path: &Path,
        flags: MainFlags,
        mut serve: ServeArgs,
    ) -> Result<Layered, Vec<ConfigError>> {
        let mut from: BTreeMap<&'static str, &'static str> = BTreeMap::new();
        let mut errors = Vec::new();
        macro_rules! fill {
            ($field:expr, $value:expr, $flag:literal, $key:literal) => {
                if $field.is_none()
                    && let Some(v) = $value
                {
                    $field = Some(v);
                    from.insert($flag, $key);
                }
            };
        }
        fill!(serve.iface, self.iface, "--iface", "iface");
        fill!(
            serve.static_root,
            self.static_root,
            "--static-root",
            "static_root"
        );
        fill!(
            serve.log_spool_mib,
            self.log_spool_mib,
            "--log-spool-mib",
            "log_spool_mib"
        );
        fill!(
            serve.metrics_listen,
            self.metrics_listen,
            "--metrics-listen",
            "metrics_listen"
        );
        fill!(
            serve.cache_max_mib,
            self.cache_max_mib,
            "--cache-max-mib",
            "cache_max_mib"
        );
        let n = self.network;
        fill!(
            serve.node_base,
            n.node_base,
            "--node-base",
            "network.node_base"
        );
        fill!(serve.gateway, n.gateway, "--gateway", "network.gateway");
        fill!(
            serve.rack_subnet,
            n.rack_subnet,
            "--rack-subnet",
            "network.rack_subnet"
        );
        if serve.allow.is_empty() && !n.allow.is_empty() {
            serve.allow = n.allow;
            from.insert("--allow", "network.allow");
        }
        let d = self.dhcp;
        let mode = d
            .mode
            .and_then(|m| enum_value::<DhcpMode>(path, "dhcp.mode", &m, &mut errors));
        fill!(serve.dhcp_mode, mode, "--dhcp-mode", "dhcp.mode");
        fill!(serve.dhcp_port, d.port, "--dhcp-port", "dhcp.port");
        fill!(
            serve.proxy_boot_port,
            d.proxy_boot_port,
            "--proxy-boot-port",
            "dhcp.proxy_boot_port"
        );
        fill!(
            serve.lease_secs,
            d.lease_secs,
            "--lease-secs",
            "dhcp.lease_secs"
        );
        let accept = d
            .accept
            .and_then(|a| enum_value::<AcceptPolicy>(path, "dhcp.accept", &a, &mut errors));
        fill!(serve.accept, accept, "--accept", "dhcp.accept");
        fill!(
            serve.provisional_range,
            d.provisional_range,
            "--provisional-range",
            "dhcp.provisional_range"
        );
        fill!(
            serve.provisional_lease_secs,
            d.provisional_lease_secs,
            "--provisional-lease-secs",
            "dhcp.provisional_lease_secs"
        );
        fill!(
            serve.bios_boot_file,
            d.bios_boot_file,
            "--bios-boot-file",
            "dhcp.bios_boot_file"
        );
        fill!(
            serve.uefi_boot_file,
            d.uefi_boot_file,
            "--uefi-boot-file",
            "dhcp.uefi_boot_file"
        );
        fill!(
            serve.uefi_arm64_boot_file,
            d.uefi_arm64_boot_file,
            "--uefi-arm64-boot-file",
            "dhcp.uefi_arm64_boot_file"
        );
        fill!(serve.tftp_port, self.tftp.port, "--tftp-port", "tftp.port");
        fill!(
            serve.tftp_link_mbit,
            self.tftp.link_mbit,
            "--tftp-link-mbit",
            "tftp.link_mbit"
        );
        fill!(
            serve.tftp_link_overhead,
            self.tftp.link_overhead,
            "--tftp-link-overhead",
            "tftp.link_overhead"
        );
        fill!(serve.http_port, self.http.port, "--http-port", "http.port");
        fill!(
            serve.http_max_connections,
            self.http.max_connections.filter(|n| *n > 0),
            "--http-max-connections",
            "http.max_connections"
        );
        fill!(
            serve.http_max_per_source,
            self.http.max_per_source.filter(|n| *n > 0),
            "--http-max-per-source",
            "http.max_per_source"
        );
        if !serve.no_http && self.http.enabled == Some(false) {
            serve.no_http = true;
            from.insert("--no-http", "http.enabled");
        }
        fill!(
            serve.syslog_port,
            self.syslog.port,
            "--syslog-port",
            "syslog.port"
        );
        if !serve.no_syslog && self.syslog.enabled == Some(false) {
            serve.no_syslog = true;
            from.insert("--no-syslog", "syslog.enabled");
        }
        if !serve.no_ipv6_ra && n.ipv6_ra == Some(false) {
            serve.no_ipv6_ra = true;
            from.insert("--no-ipv6-ra", "network.ipv6_ra");
        }
        let mut rack = flags.rack;
        fill!(rack, self.rack, "--rack", "rack");
        let mut data = flags.data;
        fill!(data, self.data_dir, "--data", "data_dir");
        let mut log_level = flags.log_level;
        fill!(log_level, self.log_level, "--log-level", "log_level");
        let mut log_format = flags.log_format;
        fill!(log_format, self.log_format, "--log-format", "log_format");
        let mut tls_ca = flags.tls_ca;
        fill!(tls_ca, self.tls_ca, "--tls-ca", "tls_ca");
        let mut tls_cert = flags.tls_cert;
        fill!(tls_cert, self.tls_cert, "--tls-cert", "tls_cert");
        let mut tls_key = flags.tls_key;
        fill!(tls_key, self.tls_key, "--tls-key", "tls_key");
        let plaintext = flags.plaintext || self.plaintext == Some(true);
        if !flags.plaintext && self.plaintext == Some(true) {
            from.insert("--plaintext", "plaintext");
        }
        let mut coordinators = flags.coordinators;
        if coordinators.is_empty()
            && let Some(c) = self.coordinators
        {
            coordinators = c;
            from.insert("--coordinator", "coordinators");
        }
        if let Some(f) = &log_format
            && f != "plain"
            && f != "json"
        {
            errors.push(origin_of(&from, "--log-format", path).err(
                key_of(&from, "--log-format"),
                format!("'{f}' is not one of plain, json"),
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut l = Layered::new(rack, coordinators, data, serve, log_level, log_format);
        l.plaintext = plaintext;
        l.tls = match rackboot_proto::tls::TlsFiles::from_parts(tls_ca, tls_cert, tls_key) {
            Ok(t) => t,
            Err(p) => {
                return Err(vec![
                    origin_of(&from, "--tls-ca", path).err(key_of(&from, "--tls-ca"), p),
                ]);
            }
        };
        Ok(l.with_file(path, from))
    }
}

fn origin_of<'a>(
    from: &BTreeMap<&'static str, &'static str>,
    flag: &str,
    path: &'a Path,
) -> Origin<'a> {
    if from.contains_key(flag) {
        Origin::File(path)
    } else {
        Origin::Flag
    }
}

fn key_of<'a>(from: &BTreeMap<&'static str, &'static str>, flag: &'a str) -> &'a str {
    from.get(flag).copied().unwrap_or(flag)
}

impl Layered {
    /// Command-line values only (no file), defaults filled in.
    pub fn new(
        rack: Option<String>,
        coordinators: Vec<String>,
        data: Option<PathBuf>,
        serve: ServeArgs,
        log_level: Option<String>,
        log_format: Option<String>,
    ) -> Layered {
        Layered {
            rack: rack.unwrap_or_else(|| DEFAULT_RACK.to_string()),
            coordinators: if coordinators.is_empty() {
                vec![DEFAULT_COORDINATOR.to_string()]
            } else {
                coordinators
            },
            data: data.unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            serve,
            log_level: log_level.unwrap_or_else(|| "info".to_string()),
            log_format: log_format.unwrap_or_else(|| "plain".to_string()),
            tls: None,
            plaintext: false,
            file: None,
            from_file: BTreeMap::new(),
        }
    }

    fn with_file(mut self, path: &Path, from: BTreeMap<&'static str, &'static str>) -> Layered {
        self.file = Some(path.to_path_buf());
        self.from_file = from;
        self
    }

    /// Validate into the agent's configuration; every problem names the
    /// file key (when the value came from the file) or the flag.
    pub fn resolve(&self) -> Result<AgentConfig, Vec<ConfigError>> {
        let filter_ok = tracing_subscriber::EnvFilter::try_new(&self.log_level);
        let mut errors = Vec::new();
        if let Err(e) = filter_ok {
            errors.push(self.error("--log-level", format!("'{}': {e}", self.log_level)));
        }
        match (&self.tls, self.plaintext) {
            (Some(_), true) => errors.push(self.error(
                "--plaintext",
                "plaintext contradicts tls_ca/tls_cert/tls_key: choose one".to_string(),
            )),
            (None, false) => errors.push(self.transport_error(
                "no TLS configured: set tls_ca, tls_cert and tls_key (`rackboot certs issue agent \
                 --rack R`), or ask for plaintext explicitly (--plaintext / plaintext = true; a \
                 lab only)",
            )),
            _ => {}
        }
        if let Some(t) = &self.tls {
            for (flag, path) in [
                ("--tls-ca", &t.ca),
                ("--tls-cert", &t.cert),
                ("--tls-key", &t.key),
            ] {
                if !path.is_file() {
                    errors.push(
                        self.error(flag, format!("{} is not a readable file", path.display())),
                    );
                }
            }
        }
        match self.serve.clone().into_config(
            self.rack.clone(),
            self.coordinators.clone(),
            self.data.clone(),
        ) {
            Ok(cfg) if errors.is_empty() => Ok(cfg),
            Ok(_) => Err(errors),
            Err(e) => {
                for a in e.0 {
                    errors.push(self.error(a.flag(), a.to_string()));
                }
                Err(errors)
            }
        }
    }

    /// Neither TLS nor plaintext: named as the file's `tls_ca` when there is
    /// a file (that is where it belongs), else as `--tls-ca`.
    fn transport_error(&self, problem: &str) -> ConfigError {
        match &self.file {
            Some(p) => Origin::File(p).err("tls_ca", problem),
            None => Origin::Flag.err("--tls-ca", problem),
        }
    }

    fn error(&self, flag: &str, problem: String) -> ConfigError {
        let origin = match &self.file {
            Some(p) if self.from_file.contains_key(flag) => Origin::File(p),
            _ => Origin::Flag,
        };
        origin.err(key_of(&self.from_file, flag), problem)
    }
}

/// Read `path` and lay the command line over it (or, without a file, just
/// the command line).
pub fn load(
    path: Option<&Path>,
    flags: MainFlags,
    serve: ServeArgs,
) -> Result<Layered, Vec<ConfigError>> {
    match path {
        Some(p) => {
            let file: AgentFile = rackboot_config::load_toml(p).map_err(|e| vec![e])?;
            file.layer(p, flags, serve)
        }
        None => {
            let tls = rackboot_proto::tls::TlsFiles::from_parts(
                flags.tls_ca,
                flags.tls_cert,
                flags.tls_key,
            )
            .map_err(|p| vec![Origin::Flag.err("--tls-ca", p)])?;
            let mut l = Layered::new(
                flags.rack,
                flags.coordinators,
                flags.data,
                serve,
                flags.log_level,
                flags.log_format,
            );
            l.tls = tls;
            l.plaintext = flags.plaintext;
            Ok(l)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn layered(text: &str, serve: ServeArgs) -> Result<Layered, Vec<ConfigError>> {
        let p = Path::new("/etc/rackboot/agent.toml");
        let file: AgentFile = rackboot_config::parse_toml(p, text).map_err(|e| vec![e])?;
        file.layer(p, MainFlags::default(), serve)
    }

    fn serve() -> ServeArgs {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            serve: ServeArgs,
        }
        Cli::parse_from(["agent"]).serve
    }

    #[test]
    fn file_values_fill_what_flags_leave_unset() {
        let mut flags = serve();
        flags.lease_secs = Some(60);
        let l = layered(
            "rack = \"r7\"\ncoordinators = [\"http://c1:50051\"]\nplaintext = true\n[dhcp]\nlease_secs = 1800\naccept = \"probe\"\n\
             provisional_range = \"127.0.0.50-127.0.0.60\"\n[network]\nnode_base = \"127.0.1.0\"\n[http]\nenabled = false\n",
            flags,
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(l.rack, "r7");
        assert_eq!(l.coordinators, vec!["http://c1:50051".to_string()]);
        assert!(l.serve.no_http);
        let cfg = l.resolve().unwrap_or_else(|e| panic!("{e:?}"));
        assert_eq!(cfg.lease_secs, 60, "the flag wins");
        assert_eq!(cfg.accept, AcceptPolicy::Probe);
        assert!(cfg.http_listen.is_none());
    }

    #[test]
    fn errors_name_the_file_and_key() {
        let e = layered("[dhcp]\nlese_secs = 5\n", serve())
            .err()
            .unwrap_or_default();
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].key, "dhcp.lese_secs");
        assert!(
            e[0].to_string().contains("/etc/rackboot/agent.toml"),
            "{}",
            e[0]
        );

        let e = layered("[dhcp]\naccept = \"sometimes\"\nmode = \"both\"\n", serve())
            .err()
            .unwrap_or_default();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(keys, vec!["dhcp.mode", "dhcp.accept"]);

        // Semantic problems: every one, each under its file key.
        let l = layered(
            "log_level = \"info,[\"\n[dhcp]\naccept = \"manual\"\n[network]\nnode_base = \"10.9.9.9\"\n",
            serve(),
        )
        .unwrap_or_else(|e| panic!("{e:?}"));
        let e = l.resolve().err().unwrap_or_default();
        let keys: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            vec!["log_level", "tls_ca", "network.node_base", "dhcp.accept"],
            "{e:?}"
        );
        assert!(e.iter().all(|e| e.source_name.contains("agent.toml")));
    }

    #[test]
    fn tftp_link_speed_sets_the_pacing() {
        let rate = |text: &str, flag: Option<u32>| {
            let mut args = serve();
            args.tftp_link_mbit = flag;
            let l = layered(&format!("plaintext = true\n{text}"), args).unwrap();
            l.resolve().unwrap().tftp.rate_limit_bytes_per_sec
        };
        assert_eq!(rate("", None), Some(125_000_000), "1 GbE by default");
        assert_eq!(
            rate("[tftp]\nlink_mbit = 10000\n", None),
            Some(1_250_000_000)
        );
        assert_eq!(rate("[tftp]\nlink_mbit = 0\n", None), None, "0: no pacing");
        assert_eq!(
            rate("[tftp]\nlink_mbit = 10000\n", Some(100)),
            Some(12_500_000),
            "the flag wins"
        );
    }

    #[test]
    fn tftp_link_overhead_sets_what_each_datagram_costs() {
        let overhead = |text: &str, flag: Option<u16>| {
            let mut args = serve();
            args.tftp_link_overhead = flag;
            let l = layered(&format!("plaintext = true\n{text}"), args).unwrap();
            l.resolve().unwrap().tftp.rate_limit_packet_overhead
        };
        assert_eq!(overhead("", None), 66, "Ethernet on the wire by default");
        assert_eq!(overhead("[tftp]\nlink_overhead = 42\n", None), 42);
        assert_eq!(
            overhead("[tftp]\nlink_overhead = 42\n", Some(70)),
            70,
            "the flag wins"
        );
        let bad = "plaintext = true\n[tftp]\nlink_overhead = -1\n";
        assert!(
            layered(bad, serve()).is_err(),
            "a negative overhead is refused"
        );
    }

    #[test]
    fn plaintext_only_when_asked_for() {
        // Neither TLS nor plaintext: refused, naming the file's key.
        let e = layered("", serve())
            .unwrap()
            .resolve()
            .err()
            .unwrap_or_default();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].key, "tls_ca");
        assert!(e[0].problem.contains("--plaintext"), "{}", e[0]);
        // Asked for in the file, or on the command line.
        assert!(
            layered("plaintext = true\n", serve())
                .unwrap()
                .resolve()
                .is_ok()
        );
        let p = Path::new("/etc/rackboot/agent.toml");
        let file: AgentFile = rackboot_config::parse_toml(p, "").unwrap();
        let flags = MainFlags {
            plaintext: true,
            ..MainFlags::default()
        };
        assert!(file.layer(p, flags, serve()).unwrap().resolve().is_ok());
        // Both: a contradiction.
        let e = layered(
            "plaintext = true\ntls_ca = \"/a\"\ntls_cert = \"/b\"\ntls_key = \"/c\"\n",
            serve(),
        )
        .unwrap()
        .resolve()
        .err()
        .unwrap_or_default();
        assert!(e.iter().any(|e| e.key == "plaintext"), "{e:?}");
    }
}
