//! DHCP packets as they were on the wire: `tcpdump` captures inside a test's
//! network namespace ([`Capture`]), read back from the pcap file and decoded
//! ([`DhcpPacket`]), for tests that check what a server or relay actually
//! sent (fields and options real clients do not report), and a PXE boot
//! server request ([`pxe_boot_server_request`]) for the one exchange no
//! real OS client makes.
//!
//! ```no_run
//! use std::time::Duration;
//! use rackboot_tests::dhcpcap::{Capture, OFFER};
//! use rackboot_tests::netns::Netns;
//! # fn main() -> anyhow::Result<()> {
//! let ns = Netns::create("rb-cap")?;
//! let dir = tempfile::tempdir()?;
//! let cap = Capture::start(&ns, "lo", dir.path(), "lo")?;
//! // ... run a DHCP client in `ns` ...
//! cap.wait_for("an OFFER", Duration::from_secs(5), |p| {
//!     p.iter().any(|p| p.message_type() == Some(OFFER))
//! })?;
//! let packets = cap.stop()?;
//! # drop(packets);
//! # Ok(())
//! # }
//! ```
//!
//! Everything here treats its input as untrusted: malformed frames are
//! skipped (pcap records) or reported as errors (DHCP payloads), never
//! panicked on.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use crate::netns::{Netns, NsProcess};

/// DHCP message types (option 53).
pub const DISCOVER: u8 = 1;
/// DHCPOFFER.
pub const OFFER: u8 = 2;
/// DHCPREQUEST.
pub const REQUEST: u8 = 3;
/// DHCPACK.
pub const ACK: u8 = 5;
/// DHCPNAK.
pub const NAK: u8 = 6;

/// BOOTP `op` of a request (client or relay to server).
pub const BOOTREQUEST: u8 = 1;
/// BOOTP `op` of a reply.
pub const BOOTREPLY: u8 = 2;

const MAGIC: [u8; 4] = [99, 130, 83, 99];
/// op .. file, before the magic cookie.
const FIXED_LEN: usize = 236;

/// One decoded BOOTP/DHCP message with the UDP addresses it travelled
/// between.
#[derive(Clone, PartialEq, Eq)]
pub struct DhcpPacket {
    /// IP source address and UDP source port.
    pub src: SocketAddrV4,
    /// IP destination address and UDP destination port.
    pub dst: SocketAddrV4,
    /// 1 request, 2 reply.
    pub op: u8,
    /// Relay hop count.
    pub hops: u8,
    /// Transaction id.
    pub xid: u32,
    /// Flags (bit 15: broadcast).
    pub flags: u16,
    /// Client address (a client that has one).
    pub ciaddr: Ipv4Addr,
    /// "Your" address: what a server hands out.
    pub yiaddr: Ipv4Addr,
    /// Next server (TFTP).
    pub siaddr: Ipv4Addr,
    /// Relay agent address.
    pub giaddr: Ipv4Addr,
    /// Client hardware address (first 6 bytes of `chaddr`).
    pub chaddr: [u8; 6],
    /// `sname`, up to its first NUL.
    pub sname: String,
    /// `file`, up to its first NUL.
    pub file: String,
    /// Options by code; repeated options are concatenated (RFC 3396).
    pub options: BTreeMap<u8, Vec<u8>>,
}

impl fmt::Debug for DhcpPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for DhcpPacket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} -> {} op {} type {} xid {:08x} chaddr {} ciaddr {} yiaddr {} siaddr {} giaddr {} file {:?}",
            self.src,
            self.dst,
            self.op,
            self.message_type()
                .map_or("-".to_string(), |t| t.to_string()),
            self.xid,
            self.mac(),
            self.ciaddr,
            self.yiaddr,
            self.siaddr,
            self.giaddr,
            self.file
        )?;
        for (code, value) in &self.options {
            write!(f, " {code}=")?;
            for b in value {
                write!(f, "{b:02x}")?;
            }
        }
        Ok(())
    }
}

impl DhcpPacket {
    /// Decodes a UDP payload (`src` and `dst` are recorded as given).
    pub fn parse(payload: &[u8], src: SocketAddrV4, dst: SocketAddrV4) -> Result<DhcpPacket> {
        ensure!(
            payload.len() >= FIXED_LEN + MAGIC.len(),
            "{} bytes are too short for a DHCP message",
            payload.len()
        );
        ensure!(
            payload.get(FIXED_LEN..FIXED_LEN + 4) == Some(&MAGIC[..]),
            "no DHCP magic cookie"
        );
        let b = |i: usize| payload.get(i).copied().unwrap_or(0);
        let ip = |i: usize| Ipv4Addr::new(b(i), b(i + 1), b(i + 2), b(i + 3));
        let text = |from: usize, len: usize| {
            let field = payload.get(from..from + len).unwrap_or_default();
            let end = field.iter().position(|&c| c == 0).unwrap_or(field.len());
            String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
        };
        let mut chaddr = [0u8; 6];
        for (i, c) in chaddr.iter_mut().enumerate() {
            *c = b(28 + i);
        }
        let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
        let mut rest = payload.get(FIXED_LEN + 4..).unwrap_or_default();
        while let Some((&code, tail)) = rest.split_first() {
            match code {
                0 => rest = tail,
                255 => break,
                _ => {
                    let (&len, tail) = tail
                        .split_first()
                        .with_context(|| format!("option {code} has no length byte"))?;
                    let value = tail.get(..usize::from(len)).with_context(|| {
                        format!("option {code} of length {len} runs past the end")
                    })?;
                    options.entry(code).or_default().extend_from_slice(value);
                    rest = tail.get(usize::from(len)..).unwrap_or_default();
                }
            }
        }
        Ok(DhcpPacket {
            src,
            dst,
            op: b(0),
            hops: b(3),
            xid: u32::from_be_bytes([b(4), b(5), b(6), b(7)]),
            flags: u16::from_be_bytes([b(10), b(11)]),
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            giaddr: ip(24),
            chaddr,
            sname: text(44, 64),
            file: text(108, 128),
            options,
        })
    }

    /// Option 53, if present and one byte long.
    pub fn message_type(&self) -> Option<u8> {
        match self.option(53) {
            Some([t]) => Some(*t),
            _ => None,
        }
    }

    /// The raw value of option `code`.
    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options.get(&code).map(Vec::as_slice)
    }

    /// Option `code` as text (lossy UTF-8).
    pub fn option_str(&self, code: u8) -> Option<String> {
        self.option(code)
            .map(|v| String::from_utf8_lossy(v).into_owned())
    }

    /// Option `code` as one IPv4 address (the first, for lists).
    pub fn option_ip(&self, code: u8) -> Option<Ipv4Addr> {
        match self.option(code)? {
            [a, b, c, d, ..] => Some(Ipv4Addr::new(*a, *b, *c, *d)),
            _ => None,
        }
    }

    /// `chaddr` as a lower-case `aa:bb:cc:dd:ee:ff` MAC.
    pub fn mac(&self) -> String {
        self.chaddr
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":")
    }

    /// Whether `chaddr` is `mac` (any case, `:` or `-`).
    pub fn is_from(&self, mac: &str) -> bool {
        self.mac() == mac.to_ascii_lowercase().replace('-', ":")
    }
}

/// Reads a pcap file (classic format, Ethernet or Linux cooked link type)
/// and decodes every IPv4/UDP datagram to or from ports 67, 68 or 4011 as
/// DHCP. Other frames, and DHCP payloads that do not decode, are skipped; a
/// truncated last record (a file still being written) ends the list.
pub fn read_pcap(bytes: &[u8]) -> Result<Vec<DhcpPacket>> {
    let header = bytes
        .get(..24)
        .context("pcap file shorter than its 24-byte header")?;
    let magic = [header[0], header[1], header[2], header[3]];
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => bail!("not a pcap file (magic {magic:02x?}; pcapng is not supported)"),
    };
    let u32_at = |b: &[u8], i: usize| -> Option<u32> {
        let w: [u8; 4] = b.get(i..i + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        })
    };
    let linktype = u32_at(header, 20).context("pcap header")?;
    // Bytes before the IP header, and where the EtherType is.
    let (l2_len, ethertype_at) = match linktype {
        1 => (14, 12),   // Ethernet
        113 => (16, 14), // Linux cooked (SLL)
        other => bail!("pcap link type {other} not supported (capture on one interface)"),
    };
    let mut packets = Vec::new();
    let mut at = 24;
    while let Some(incl) = u32_at(bytes, at + 8) {
        let Ok(incl) = usize::try_from(incl) else {
            break;
        };
        let Some(frame) = bytes.get(at + 16..at + 16 + incl) else {
            break;
        };
        at += 16 + incl;
        if let Some(p) = decode_frame(frame, l2_len, ethertype_at) {
            packets.push(p);
        }
    }
    Ok(packets)
}

fn decode_frame(frame: &[u8], l2_len: usize, ethertype_at: usize) -> Option<DhcpPacket> {
    if frame.get(ethertype_at..ethertype_at + 2)? != [0x08, 0x00] {
        return None;
    }
    let ip = frame.get(l2_len..)?;
    let (&vihl, _) = ip.split_first()?;
    if vihl >> 4 != 4 || *ip.get(9)? != 17 {
        return None;
    }
    // Only whole datagrams (no fragments).
    if u16::from_be_bytes([*ip.get(6)?, *ip.get(7)?]) & 0x3fff != 0 {
        return None;
    }
    let ihl = usize::from(vihl & 0x0f) * 4;
    let addr = |i: usize| -> Option<Ipv4Addr> {
        Some(Ipv4Addr::new(
            *ip.get(i)?,
            *ip.get(i + 1)?,
            *ip.get(i + 2)?,
            *ip.get(i + 3)?,
        ))
    };
    let (src_ip, dst_ip) = (addr(12)?, addr(16)?);
    let udp = ip.get(ihl..)?;
    let port =
        |i: usize| -> Option<u16> { Some(u16::from_be_bytes([*udp.get(i)?, *udp.get(i + 1)?])) };
    let (sport, dport, len) = (port(0)?, port(2)?, usize::from(port(4)?));
    let dhcp_ports = [67, 68, 4011];
    if !dhcp_ports.contains(&sport) && !dhcp_ports.contains(&dport) {
        return None;
    }
    let payload = udp.get(8..len.max(8))?;
    DhcpPacket::parse(
        payload,
        SocketAddrV4::new(src_ip, sport),
        SocketAddrV4::new(dst_ip, dport),
    )
    .ok()
}

/// A `tcpdump` writing the DHCP traffic (UDP ports 67, 68 and 4011) of one
/// interface in a namespace to a pcap file; killed on drop.
#[derive(Debug)]
pub struct Capture {
    process: NsProcess,
    pcap: PathBuf,
    log: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -U` on `ifname` in `ns`, writing `<dir>/<name>.pcap`
    /// (log in `<dir>/<name>.tcpdump.log`), and waits (up to 10 s) until it
    /// listens.
    pub fn start(ns: &Netns, ifname: &str, dir: &Path, name: &str) -> Result<Capture> {
        let pcap = dir.join(format!("{name}.pcap"));
        let log = dir.join(format!("{name}.tcpdump.log"));
        let log_file =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let mut cmd = ns.exec("tcpdump");
        // -U: every packet is written at once, so the file can be read while
        // tcpdump runs; -Z root: it keeps the rights to write there.
        cmd.args(["-U", "-n", "-s", "0", "-Z", "root", "-i", ifname, "-w"])
            .arg(&pcap)
            .args(["udp and (port 67 or port 68 or port 4011)"])
            .stdout(Stdio::null())
            .stderr(log_file);
        let mut process = ns.spawn(cmd)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("listening on") {
                break;
            }
            if let Some(status) = process.try_wait()? {
                bail!(
                    "tcpdump on {ifname} in {} exited ({status}):\n{text}",
                    ns.name()
                );
            }
            if Instant::now() >= deadline {
                bail!(
                    "tcpdump on {ifname} in {} not listening after 10 s:\n{text}",
                    ns.name()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Capture { process, pcap, log })
    }

    /// The pcap file.
    pub fn path(&self) -> &Path {
        &self.pcap
    }

    /// The DHCP packets captured so far.
    pub fn packets(&self) -> Result<Vec<DhcpPacket>> {
        match std::fs::read(&self.pcap) {
            Ok(bytes) if bytes.len() < 24 => Ok(Vec::new()),
            Ok(bytes) => {
                read_pcap(&bytes).with_context(|| format!("reading {}", self.pcap.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(e).with_context(|| format!("reading {}", self.pcap.display())),
        }
    }

    /// Waits until `done` holds for the packets captured so far; returns
    /// them. Fails after `timeout`, listing what was captured.
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        done: impl Fn(&[DhcpPacket]) -> bool,
    ) -> Result<Vec<DhcpPacket>> {
        let deadline = Instant::now() + timeout;
        loop {
            let packets = self.packets()?;
            if done(&packets) {
                return Ok(packets);
            }
            if Instant::now() >= deadline {
                bail!(
                    "capture {}: no {what} after {timeout:?}; captured:\n{}",
                    self.pcap.display(),
                    list(&packets)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops tcpdump (SIGINT, then SIGKILL after 5 s) and returns every
    /// packet it wrote. Packets the kernel had queued but tcpdump had not
    /// written yet may be lost: [`Capture::wait_for`] the ones a test needs
    /// first.
    pub fn stop(mut self) -> Result<Vec<DhcpPacket>> {
        let pid = self.process.pid().to_string();
        let _ = crate::util::run_output(Command::new("kill").args(["-INT", &pid]));
        if self.process.wait_timeout(Duration::from_secs(5))?.is_none() {
            self.process.kill()?;
        }
        self.packets()
    }

    /// tcpdump's own messages (for failure reports).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// One packet per line, for messages.
pub fn list(packets: &[DhcpPacket]) -> String {
    if packets.is_empty() {
        return "  (nothing)".to_string();
    }
    packets
        .iter()
        .map(|p| format!("  {p}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A DHCPREQUEST as a PXE client sends it to a proxyDHCP boot server (UDP
/// 4011, PXE specification §2.2.3): `ciaddr` set to the address the site
/// server gave, vendor class `PXEClient:Arch:00000:UNDI:002001`, options
/// 93 (arch 0), 94 (UNDI 2.1), 97 (`uuid`) and a parameter request list.
pub fn pxe_boot_server_request(
    mac: [u8; 6],
    ciaddr: Ipv4Addr,
    xid: u32,
    uuid: [u8; 16],
) -> Vec<u8> {
    let mut p = vec![0u8; FIXED_LEN];
    p[0] = BOOTREQUEST;
    p[1] = 1; // Ethernet
    p[2] = 6;
    p[4..8].copy_from_slice(&xid.to_be_bytes());
    p[12..16].copy_from_slice(&ciaddr.octets());
    p[28..34].copy_from_slice(&mac);
    p.extend_from_slice(&MAGIC);
    let vendor_class = b"PXEClient:Arch:00000:UNDI:002001";
    let mut opt = |code: u8, value: &[u8]| {
        p.push(code);
        p.push(u8::try_from(value.len()).unwrap_or(u8::MAX));
        p.extend_from_slice(value);
    };
    opt(53, &[REQUEST]);
    opt(60, vendor_class);
    opt(93, &[0, 0]);
    opt(94, &[1, 2, 1]);
    let mut machine_id = vec![0u8];
    machine_id.extend_from_slice(&uuid);
    opt(97, &machine_id);
    opt(55, &[1, 3, 43, 60, 66, 67, 97]);
    p.push(255);
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sock(s: &str) -> SocketAddrV4 {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    /// An Ethernet/IPv4/UDP frame around `payload`.
    fn frame(payload: &[u8], sport: u16, dport: u16) -> Vec<u8> {
        let mut f = vec![0xff; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let udp_len = u16::try_from(8 + payload.len()).unwrap_or(u16::MAX);
        let total = udp_len + 20;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            0,
            0,
            0,
            64,
            17,
            0,
            0,
        ]);
        f.extend_from_slice(&[10, 0, 0, 1, 255, 255, 255, 255]);
        f.extend_from_slice(&sport.to_be_bytes());
        f.extend_from_slice(&dport.to_be_bytes());
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(payload);
        f
    }

    fn pcap(frames: &[Vec<u8>]) -> Vec<u8> {
        let mut out = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0];
        out.extend_from_slice(&[0; 8]);
        out.extend_from_slice(&65535u32.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        for f in frames {
            out.extend_from_slice(&[0; 8]);
            let len = u32::try_from(f.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(f);
        }
        out
    }

    #[test]
    fn boot_server_request_round_trips() {
        let mac = [0x52, 0x54, 0, 1, 2, 3];
        let req = pxe_boot_server_request(mac, Ipv4Addr::new(10, 1, 2, 3), 0xdead_beef, [7; 16]);
        let p = DhcpPacket::parse(&req, sock("10.1.2.3:68"), sock("10.1.2.1:4011"))
            .unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(p.op, BOOTREQUEST);
        assert_eq!(p.xid, 0xdead_beef);
        assert_eq!(p.ciaddr, Ipv4Addr::new(10, 1, 2, 3));
        assert!(p.is_from("52-54-00-01-02-03"));
        assert_eq!(p.message_type(), Some(REQUEST));
        assert_eq!(
            p.option_str(60).as_deref(),
            Some("PXEClient:Arch:00000:UNDI:002001")
        );
        assert_eq!(p.option(97).map(<[u8]>::len), Some(17));
    }

    #[test]
    fn pcap_yields_dhcp_and_skips_the_rest() {
        let req = pxe_boot_server_request([2, 0, 0, 0, 0, 1], Ipv4Addr::UNSPECIFIED, 1, [0; 16]);
        let mut bytes = pcap(&[
            frame(&req, 68, 67),
            frame(b"not dhcp at all", 5353, 5353),
            frame(b"too short", 68, 67),
            frame(&req, 4011, 40000),
        ]);
        let packets = read_pcap(&bytes).unwrap_or_else(|e| panic!("{e:#}"));
        assert_eq!(packets.len(), 2);
        assert_eq!(packets[0].src, sock("10.0.0.1:68"));
        assert_eq!(packets[0].dst, sock("255.255.255.255:67"));
        assert_eq!(packets[1].src.port(), 4011);
        // A record cut short (tcpdump still writing) ends the list.
        bytes.truncate(bytes.len() - 10);
        assert_eq!(read_pcap(&bytes).map(|p| p.len()).ok(), Some(1));
        assert!(read_pcap(b"\x0a\x0d\x0d\x0a not pcap, pcapng").is_err());
        assert!(read_pcap(b"").is_err());
    }

    #[test]
    fn malformed_options_are_errors_not_panics() {
        let mut req =
            pxe_boot_server_request([2, 0, 0, 0, 0, 1], Ipv4Addr::UNSPECIFIED, 1, [0; 16]);
        req.truncate(FIXED_LEN + 4 + 2);
        req[FIXED_LEN + 5] = 200; // option 53 claims 200 bytes
        let a = sock("0.0.0.0:68");
        assert!(DhcpPacket::parse(&req, a, a).is_err());
        assert!(DhcpPacket::parse(&req[..100], a, a).is_err());
    }
}
