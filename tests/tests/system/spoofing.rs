//! Off-subnet and spoofed requests get nothing (root): from a
//! client namespace that also holds an address outside the rack subnet, raw
//! datagrams (python3, so nothing normalizes them) to a real agent:
//!
//! - a TFTP RRQ from the off-subnet address: no reply;
//! - a DHCPDISCOVER unicast from the off-subnet address: no reply;
//! - a DHCPDISCOVER "relayed" with a spoofed giaddr (the off-subnet address,
//!   where a listener waits for the reflected answer): no reply;
//!
//! while the same requests from the rack subnet (a known MAC's DISCOVER
//! from 0.0.0.0, an RRQ from the rack address) are answered. The drops are
//! counted by reason (`source_not_allowed`, `relay_not_allowed`) in the
//! agent's metrics.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use rackboot_tests::daemon::run_with_timeout;
use rackboot_tests::tftplab::{CLIENT_IF, CLIENT_IP, RACK, SERVER_IP, TftpLab};
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

const OFF_SUBNET: &str = "10.77.0.9";
const KNOWN_MAC: &str = "52:54:00:5b:00:01";

const PROBE: &str = r#"
import json, socket, struct, sys, time
server, off, mac, dev = sys.argv[1], sys.argv[2], bytes.fromhex(sys.argv[3].replace(":", "")), sys.argv[4]

def wait(s, t=2.0):
    s.settimeout(t)
    try:
        return s.recvfrom(4096)[0]
    except socket.timeout:
        return None

def discover(xid, giaddr="0.0.0.0"):
    head = struct.pack("!BBBBIHH4s4s4s4s16s64s128s", 1, 1, 6, 0, xid, 0, 0x8000,
        bytes(4), bytes(4), bytes(4), socket.inet_aton(giaddr), mac + bytes(10), bytes(64), bytes(128))
    return head + b"\x63\x82\x53\x63" + b"\x35\x01\x01" + b"\xff"

def udp(bind, port=0, broadcast=False):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if broadcast:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, dev.encode())
    s.bind((bind, port))
    return s

out = {}
# TFTP from the rack subnet (control), then from off the subnet.
s = udp("0.0.0.0"); s.sendto(b"\x00\x01one\x00octet\x00", (server, 69))
r = wait(s); out["tftp_rack"] = r[:2].hex() if r else None
s = udp(off); s.sendto(b"\x00\x01one\x00octet\x00", (server, 69))
r = wait(s); out["tftp_off_subnet"] = r[:2].hex() if r else None
# DHCP: replies to clients go to port 68, broadcast; one listener sees them all.
listen = udp("0.0.0.0", 68, broadcast=True)
def xids(t=2.0):
    seen, end = [], time.time() + t
    while time.time() < end:
        r = wait(listen, max(0.01, end - time.time()))
        if r:
            seen.append(r[4:8].hex())
    return seen
# A known MAC broadcasting from 0.0.0.0 (control).
listen.sendto(discover(0x1111), ("255.255.255.255", 67))
out["dhcp_rack"] = "00001111" if "00001111" in xids() else None
# The same MAC, unicast from the off-subnet address.
c = udp(off, 68)
c.sendto(discover(0x2222), (server, 67))
out["dhcp_off_subnet"] = "00002222" if "00002222" in xids() else None
c.close()
# DHCP with a spoofed relay: the answer would go to giaddr:67.
relay = udp(off, 67)
s = udp("0.0.0.0")
s.sendto(discover(0x3333, giaddr=off), (server, 67))
r = wait(relay); out["dhcp_spoofed_relay"] = r[4:8].hex() if r else None
print(json.dumps(out))
"#;

#[test]
fn off_subnet_and_spoofed_requests_get_no_reply() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "python3"], Ok(()));
    let mut lab = TftpLab::new("rbsp")?;
    lab.add_file("one", b"served\n")?;
    lab.http_port = Some(8080);
    lab.agent_args = vec!["--metrics-listen".into(), "127.0.0.1:9101".into()];
    lab.start_coordinator()?;
    lab.start_agent()?;
    lab.cli(&["node", "add", "--rack", RACK, "--mac", KNOWN_MAC])?
        .success()?;
    lab.client
        .ip(&["addr", "add", &format!("{OFF_SUBNET}/32"), "dev", CLIENT_IF])?;
    // The agent could reach the off-subnet address: a missing answer is a
    // refusal, not a routing failure.
    lab.server.ip(&[
        "route",
        "add",
        &format!("{OFF_SUBNET}/32"),
        "via",
        CLIENT_IP,
    ])?;
    // The agent learns the node from its next view.
    let deadline = Instant::now() + Duration::from_secs(20);
    let result = loop {
        let mut cmd = lab.client.exec("python3");
        cmd.args(["-c", PROBE, SERVER_IP, OFF_SUBNET, KNOWN_MAC, CLIENT_IF]);
        let out = run_with_timeout(cmd, Duration::from_secs(60))?;
        ensure!(out.status.success(), "probe script failed:\n{out}");
        let line = out.stdout.lines().last().unwrap_or_default().to_string();
        if !line.contains("\"dhcp_rack\": null") || Instant::now() >= deadline {
            break line;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("probe: {result}");
    let field = |k: &str| -> Option<String> {
        result
            .split(&format!("\"{k}\": "))
            .nth(1)
            .and_then(|r| r.split([',', '}']).next())
            .map(|v| v.trim().trim_matches('"').to_string())
    };
    ensure!(
        field("tftp_rack").as_deref() == Some("0003"),
        "an RRQ from the rack subnet must get DATA: {result}\n{}",
        lab.report()
    );
    ensure!(
        field("dhcp_rack").as_deref() == Some("00001111"),
        "a known MAC's DISCOVER must get an OFFER: {result}\n{}",
        lab.report()
    );
    for k in ["tftp_off_subnet", "dhcp_off_subnet", "dhcp_spoofed_relay"] {
        ensure!(
            field(k).as_deref() == Some("null"),
            "{k}: must get no reply: {result}\n{}",
            lab.report()
        );
    }
    // Counted by reason, on the operator listener (not the boot port).
    let mut curl = lab.server.exec("curl");
    curl.args(["-s", "http://127.0.0.1:9101/metrics"]);
    let metrics = run_with_timeout(curl, Duration::from_secs(10))?
        .success()?
        .stdout;
    for reason in ["source_not_allowed", "relay_not_allowed"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with("rackboot_agent_dhcp_dropped") && l.contains(reason))
            .with_context(|| format!("no {reason} drop counter in /metrics"))?;
        ensure!(!line.ends_with(" 0"), "{reason} not counted: {line}");
    }
    Ok(())
}
