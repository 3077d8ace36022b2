//! # rackboot-probe
//!
//! Run in the discovery image on a machine that holds a provisional lease:
//! reads every Ethernet MAC of the machine (`/sys/class/net`) and a short
//! inventory (CPUs, memory, DMI product, vendor, serial, UUID), sends them
//! to the rack agent in one DHCPINFORM (options 224 and 225, see
//! `rackboot_dhcp_core::probe`), and repeats it until the answer names the
//! machine's node (option 12 `n<number>`). The agent asks the coordinator
//! to number the machine with all its MACs at once, so a machine with two
//! NICs becomes one node with two MACs.
//!
//! The library is the sans-IO part (reading the system from a root path,
//! building the request, reading the answer) plus [`run`], the loop over a
//! UDP socket. Both `rackboot-probe` (a small binary for initramfs images)
//! and `rackboot probe` call [`run`].
//!
//! ## Invariants
//! - Reads the system only below the root path it is given (tests use a
//!   fake `/sys` tree); never writes to it.
//! - Bounded: at most [`rackboot_dhcp_core::probe::MAX_MACS`] MACs and
//!   [`rackboot_dhcp_core::probe::MAX_INVENTORY`] inventory entries, each
//!   within one DHCP option.
//!
//! ## Must never depend on
//! the agent, the coordinator or gRPC: it runs in a small initramfs and
//! speaks only DHCP to the rack agent.

use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode, UnknownOption};
use dhcproto::{Decodable, Encodable};
use rackboot_dhcp_core::Mac;
use rackboot_dhcp_core::ProbeToken;
use rackboot_dhcp_core::probe::{
    OPTION_INVENTORY, OPTION_MACS, OPTION_TOKEN, ProbeReport, token_from_cmdline,
};

/// Flags of `rackboot probe` and `rackboot-probe`.
#[derive(Debug, Clone, clap::Args)]
pub struct ProbeArgs {
    /// This machine's address (its provisional lease). Default: the source
    /// address the kernel picks towards the server.
    #[arg(long)]
    pub addr: Option<Ipv4Addr>,
    /// The rack agent: the DHCP server identifier of the provisional lease
    /// (udhcpc: `$serverid`). Broadcast (the default) needs a route for
    /// 255.255.255.255, which a freshly configured discovery image often
    /// lacks.
    #[arg(long, default_value = "255.255.255.255")]
    pub server: Ipv4Addr,
    /// Server port.
    #[arg(long, default_value_t = 67)]
    pub server_port: u16,
    /// Local port (68 is the DHCP client port; answers to an INFORM go there).
    #[arg(long, default_value_t = 68)]
    pub port: u16,
    /// Give up after this many seconds without a node number (a rack with
    /// `--accept manual` waits for `rackboot node accept`).
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Seconds between reports.
    #[arg(long, default_value_t = 2)]
    pub interval_secs: u64,
    /// Root of the system to read (`/`; tests point it elsewhere).
    #[arg(long, default_value = "/")]
    pub root: std::path::PathBuf,
    /// The probe token (64 hex digits) the agent handed this machine.
    /// Default: `rackboot.token=` on the kernel command line
    /// (`<root>/proc/cmdline`), where the discovery script puts it. The
    /// agent takes no report without it.
    #[arg(long)]
    pub token: Option<ProbeToken>,
}

/// Why the probe stopped without a number.
#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    /// No Ethernet interface found.
    #[error("no Ethernet interface with a MAC under {0}/sys/class/net")]
    NoMacs(String),
    /// Socket trouble.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Encoding the request failed.
    #[error("encoding the DHCPINFORM: {0}")]
    Encode(String),
    /// The token on the kernel command line is malformed.
    #[error("rackboot.token on {0}/proc/cmdline: {1}")]
    BadToken(String, rackboot_dhcp_core::probe::BadToken),
    /// No number in time.
    #[error(
        "no node number after {0} s (is the agent's --accept policy `manual`? then run `rackboot node accept MAC`)"
    )]
    Timeout(u64),
}

/// One network interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    /// Name (`eth0`).
    pub name: String,
    /// Hardware address.
    pub mac: Mac,
}

/// Ethernet interfaces under `<root>/sys/class/net`, sorted by name: those
/// of ARP type 1 with a unicast MAC (no loopback, no tunnels, no bridges'
/// zero addresses).
pub fn interfaces(root: &Path) -> Vec<Interface> {
    let dir = root.join("sys/class/net");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let read = |f: &str| std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
        if read("type").trim() != "1" {
            continue;
        }
        let Ok(mac) = read("address").trim().parse::<Mac>() else {
            continue;
        };
        if mac.is_unicast() {
            out.push(Interface { name, mac });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// A short inventory from `<root>/proc` and `<root>/sys/class/dmi/id`:
/// `cpus`, `mem_mib`, `product`, `vendor`, `serial`, `uuid`, `nics` (what
/// is readable; values trimmed to 128 bytes).
pub fn inventory(root: &Path, nics: usize) -> Vec<(String, String)> {
    let read = |p: &str| {
        std::fs::read_to_string(root.join(p))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let mut out = Vec::new();
    if let Some(cpu) = read("proc/cpuinfo") {
        let n = cpu.lines().filter(|l| l.starts_with("processor")).count();
        out.push(("cpus".to_string(), n.to_string()));
    }
    if let Some(mem) = read("proc/meminfo")
        && let Some(kib) = mem
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    {
        out.push(("mem_mib".to_string(), (kib / 1024).to_string()));
    }
    out.push(("nics".to_string(), nics.to_string()));
    for (key, file) in [
        ("product", "sys/class/dmi/id/product_name"),
        ("vendor", "sys/class/dmi/id/sys_vendor"),
        ("serial", "sys/class/dmi/id/product_serial"),
        ("uuid", "sys/class/dmi/id/product_uuid"),
    ] {
        if let Some(v) = read(file) {
            let v: String = v.chars().filter(|c| !c.is_control()).take(128).collect();
            out.push((key.to_string(), v));
        }
    }
    out
}

/// The token on `<root>/proc/cmdline` (`rackboot.token=`), if there is one.
pub fn cmdline_token(root: &Path) -> Result<Option<ProbeToken>, ProbeError> {
    let cmdline = std::fs::read_to_string(root.join("proc/cmdline")).unwrap_or_default();
    token_from_cmdline(&cmdline)
        .transpose()
        .map_err(|e| ProbeError::BadToken(root.display().to_string(), e))
}

/// The DHCPINFORM carrying the report, from `ciaddr`, asking with `chaddr`
/// (the first MAC), with the machine's probe token.
pub fn inform(
    xid: u32,
    ciaddr: Ipv4Addr,
    macs: &[Mac],
    inventory: &[(String, String)],
    token: Option<&ProbeToken>,
) -> Result<Vec<u8>, ProbeError> {
    let chaddr = macs.first().copied().unwrap_or(Mac([0; 6]));
    let mut m = blank_request()?;
    m.set_xid(xid).set_ciaddr(ciaddr).set_chaddr(&chaddr.0);
    m.set_opcode(Opcode::BootRequest);
    m.set_flags(Flags::default());
    let opts = m.opts_mut();
    opts.insert(DhcpOption::MessageType(MessageType::Inform));
    let mut client_id = vec![1];
    client_id.extend_from_slice(&chaddr.0);
    opts.insert(DhcpOption::ClientIdentifier(client_id));
    opts.insert(DhcpOption::ClassIdentifier(b"rackboot-probe".to_vec()));
    opts.insert(DhcpOption::ParameterRequestList(vec![
        OptionCode::SubnetMask,
        OptionCode::Router,
        OptionCode::Hostname,
    ]));
    opts.insert(DhcpOption::Unknown(UnknownOption::new(
        OptionCode::Unknown(OPTION_MACS),
        ProbeReport::encode_macs(macs),
    )));
    let inv = ProbeReport::encode_inventory(inventory);
    if !inv.is_empty() {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(OPTION_INVENTORY),
            inv,
        )));
    }
    if let Some(t) = token {
        opts.insert(DhcpOption::Unknown(UnknownOption::new(
            OptionCode::Unknown(OPTION_TOKEN),
            t.as_bytes().to_vec(),
        )));
    }
    m.to_vec().map_err(|e| ProbeError::Encode(e.to_string()))
}

/// An empty BOOTREQUEST, decoded from a fixed header. `Message::new*` and
/// `Message::default` draw a random `xid` from the thread RNG, whose
/// `getrandom(2)` blocks until the kernel's entropy pool is initialised —
/// for minutes in an early-boot initramfs under emulation.
fn blank_request() -> Result<Message, ProbeError> {
    let mut t = [0u8; 241];
    t[0] = 1; // BOOTREQUEST
    t[1] = 1; // Ethernet
    t[2] = 6;
    t[236..240].copy_from_slice(&[99, 130, 83, 99]);
    t[240] = 255;
    Message::from_bytes(&t).map_err(|e| ProbeError::Encode(e.to_string()))
}

/// The node name in an answer to our INFORM (`xid`, `chaddr`): option 12
/// when it is `n<digits>`. `None` for anything else (not ours, not an ACK,
/// not numbered yet).
pub fn node_name(reply: &[u8], xid: u32, chaddr: Mac) -> Option<String> {
    let m = Message::from_bytes(reply).ok()?;
    if m.xid() != xid
        || m.opcode() != Opcode::BootReply
        || m.chaddr().get(..6) != Some(&chaddr.0[..])
    {
        return None;
    }
    if m.opts().msg_type() != Some(MessageType::Ack) {
        return None;
    }
    match m.opts().get(OptionCode::Hostname) {
        Some(DhcpOption::Hostname(h))
            if h.len() > 1
                && h.starts_with('n')
                && h.bytes().skip(1).all(|b| b.is_ascii_digit()) =>
        {
            Some(h.clone())
        }
        _ => None,
    }
}

/// What the probe reported and learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Interfaces reported.
    pub interfaces: Vec<Interface>,
    /// The node name the agent answered with.
    pub node: String,
}

/// Report this machine until it is numbered (or `timeout_secs`).
pub fn run(args: &ProbeArgs) -> Result<Outcome, ProbeError> {
    let ifaces = interfaces(&args.root);
    if ifaces.is_empty() {
        return Err(ProbeError::NoMacs(args.root.display().to_string()));
    }
    let macs: Vec<Mac> = ifaces.iter().map(|i| i.mac).collect();
    let inv = inventory(&args.root, ifaces.len());
    let io = |what: &str| {
        let what = what.to_string();
        move |source| ProbeError::Io { what, source }
    };
    let sock = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, args.port))
        .map_err(io(&format!("binding UDP port {}", args.port)))?;
    sock.set_broadcast(true).map_err(io("enabling broadcast"))?;
    let server = SocketAddrV4::new(args.server, args.server_port);
    let addr = match args.addr {
        Some(a) => a,
        None => {
            source_address(server).map_err(io("finding this machine's address (give --addr)"))?
        }
    };
    let started = Instant::now();
    let interval = Duration::from_secs(args.interval_secs.max(1));
    let xid = u32::from_be_bytes([macs[0].0[2], macs[0].0[3], macs[0].0[4], macs[0].0[5]])
        ^ std::process::id();
    let token = match &args.token {
        Some(t) => Some(*t),
        None => cmdline_token(&args.root)?,
    };
    if token.is_none() {
        eprintln!(
            "rackboot-probe: no probe token (--token, or rackboot.token= on the kernel command line); the agent will not take this report"
        );
    }
    let packet = inform(xid, addr, &macs, &inv, token.as_ref())?;
    eprintln!(
        "rackboot-probe: reporting {} ({}) from {addr}",
        ifaces
            .iter()
            .map(|i| format!("{}={}", i.name, i.mac))
            .collect::<Vec<_>>()
            .join(" "),
        inv.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let mut buf = [0u8; 1500];
    while started.elapsed() < Duration::from_secs(args.timeout_secs) {
        sock.send_to(&packet, server)
            .map_err(io("sending the DHCPINFORM"))?;
        let round = Instant::now();
        while round.elapsed() < interval {
            let left = interval
                .saturating_sub(round.elapsed())
                .max(Duration::from_millis(1));
            sock.set_read_timeout(Some(left))
                .map_err(io("setting a timeout"))?;
            match sock.recv_from(&mut buf) {
                Ok((n, _)) => {
                    if let Some(node) = buf.get(..n).and_then(|b| node_name(b, xid, macs[0])) {
                        return Ok(Outcome {
                            interfaces: ifaces,
                            node,
                        });
                    }
                }
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    break;
                }
                Err(e) => {
                    return Err(ProbeError::Io {
                        what: "receiving".into(),
                        source: e,
                    });
                }
            }
        }
    }
    Err(ProbeError::Timeout(args.timeout_secs))
}

/// The address the kernel would send from towards `server`.
fn source_address(server: SocketAddrV4) -> std::io::Result<Ipv4Addr> {
    let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0))?;
    s.set_broadcast(true)?;
    s.connect(server)?;
    match s.local_addr()?.ip() {
        std::net::IpAddr::V4(a) if !a.is_unspecified() => Ok(a),
        other => Err(std::io::Error::other(format!(
            "no IPv4 source address ({other})"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(root: &Path, rel: &str, text: &str) {
        let p = root.join(rel);
        if let Some(d) = p.parent() {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("{e}"));
        }
        std::fs::write(p, text).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn reads_ethernet_macs_and_inventory_from_a_root() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let root = dir.path();
        write(root, "sys/class/net/lo/type", "772\n");
        write(root, "sys/class/net/lo/address", "00:00:00:00:00:00\n");
        write(root, "sys/class/net/eth1/type", "1\n");
        write(root, "sys/class/net/eth1/address", "52:54:00:00:00:02\n");
        write(root, "sys/class/net/eth0/type", "1\n");
        write(root, "sys/class/net/eth0/address", "52:54:00:00:00:01\n");
        write(root, "sys/class/net/br0/type", "1\n");
        write(root, "sys/class/net/br0/address", "00:00:00:00:00:00\n");
        write(root, "proc/cpuinfo", "processor\t: 0\nx\nprocessor\t: 1\n");
        write(
            root,
            "proc/meminfo",
            "MemTotal:       2048000 kB\nMemFree: 1 kB\n",
        );
        write(
            root,
            "sys/class/dmi/id/product_name",
            "Standard PC (i440FX + PIIX, 1996)\n",
        );
        let ifs = interfaces(root);
        assert_eq!(
            ifs.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
            vec!["eth0", "eth1"]
        );
        let inv = inventory(root, ifs.len());
        assert_eq!(
            inv,
            vec![
                ("cpus".into(), "2".into()),
                ("mem_mib".into(), "2000".into()),
                ("nics".into(), "2".into()),
                ("product".into(), "Standard PC (i440FX + PIIX, 1996)".into()),
            ]
        );
    }

    #[test]
    fn inform_carries_every_mac_and_the_agent_core_reads_it_back() {
        let a = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let b = Mac([0x52, 0x54, 0, 0, 0, 2]);
        let key = rackboot_dhcp_core::ProbeKey::new([4; 32]);
        let token = key.token(a, Ipv4Addr::new(10, 0, 0, 200));
        let bytes = inform(
            7,
            Ipv4Addr::new(10, 0, 0, 200),
            &[a, b],
            &[("cpus".into(), "2".into())],
            Some(&token),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let m = Message::from_bytes(&bytes).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.opts().msg_type(), Some(MessageType::Inform));
        assert_eq!(m.ciaddr(), Ipv4Addr::new(10, 0, 0, 200));
        let raw = |code: u8| match m.opts().get(OptionCode::Unknown(code)) {
            Some(DhcpOption::Unknown(u)) => Some(u.data().to_vec()),
            _ => None,
        };
        let report = ProbeReport::from_options(
            a,
            raw(OPTION_MACS).as_deref(),
            raw(OPTION_INVENTORY).as_deref(),
        );
        assert_eq!(
            report,
            Some(ProbeReport {
                macs: vec![a, b],
                inventory: vec![("cpus".into(), "2".into())],
            })
        );
        let sent = raw(OPTION_TOKEN).unwrap_or_default();
        assert!(key.verify(a, Ipv4Addr::new(10, 0, 0, 200), &sent));
    }

    #[test]
    fn token_comes_from_the_kernel_command_line() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cmdline_token(dir.path()), Ok(None)));
        std::fs::create_dir_all(dir.path().join("proc")).unwrap_or_else(|e| panic!("{e}"));
        let t = rackboot_dhcp_core::ProbeKey::new([1; 32])
            .token(Mac([2, 0, 0, 0, 0, 1]), Ipv4Addr::new(10, 0, 0, 9));
        std::fs::write(
            dir.path().join("proc/cmdline"),
            format!("console=ttyS0 rackboot.provisional=1 rackboot.token={t}\n"),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cmdline_token(dir.path()).ok().flatten(), Some(t));
        std::fs::write(dir.path().join("proc/cmdline"), "rackboot.token=nothex")
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            cmdline_token(dir.path()),
            Err(ProbeError::BadToken(..))
        ));
    }

    #[test]
    fn node_name_only_from_our_numbered_ack() {
        let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);
        let ack = |xid: u32, name: &str, ty: MessageType| {
            let mut m = Message::new_with_id(
                xid,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                Ipv4Addr::UNSPECIFIED,
                &mac.0,
            );
            m.set_opcode(Opcode::BootReply);
            m.opts_mut().insert(DhcpOption::MessageType(ty));
            if !name.is_empty() {
                m.opts_mut().insert(DhcpOption::Hostname(name.into()));
            }
            m.to_vec().unwrap_or_default()
        };
        assert_eq!(
            node_name(&ack(9, "n12", MessageType::Ack), 9, mac),
            Some("n12".into())
        );
        assert_eq!(node_name(&ack(8, "n12", MessageType::Ack), 9, mac), None);
        assert_eq!(node_name(&ack(9, "", MessageType::Ack), 9, mac), None);
        assert_eq!(node_name(&ack(9, "web1", MessageType::Ack), 9, mac), None);
        assert_eq!(node_name(&ack(9, "n12", MessageType::Nak), 9, mac), None);
        assert_eq!(node_name(b"garbage", 9, mac), None);
    }
}
