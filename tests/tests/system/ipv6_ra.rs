//! The agent's answer to IPv6 router solicitations on an IPv4 rack: an
//! advertisement that says "not a router, no prefix, no DHCPv6" (it ends
//! iPXE's IPv6 wait and configures nothing), asked for by a real NDP
//! client (`rdisc6` from ndisc6) in the client namespace of a
//! [`TftpLab`]; and its silence once a real router advertises on the
//! segment (an advertisement with a router lifetime, sent from the client
//! namespace with a raw socket). Root; ndisc6, python3.

use std::time::Duration;

use anyhow::{Result, ensure};
use rackboot_tests::daemon::run_with_timeout;
use rackboot_tests::tftplab::{CLIENT_IF, TftpLab};
use rackboot_tests::{require_commands_or_skip, require_root_or_skip};

/// `rdisc6 -1 -r 2 -w 1000 <iface>` in the client namespace: one
/// solicitation (retried twice, 1 s each), the first advertisement printed.
fn rdisc6(lab: &TftpLab) -> Result<rackboot_tests::daemon::CliOutput> {
    let mut c = lab.client.exec("rdisc6");
    c.args(["-1", "-r", "2", "-w", "1000", CLIENT_IF]);
    run_with_timeout(c, Duration::from_secs(15))
}

/// A router's advertisement (lifetime 1800 s, hop limit 255) to all nodes,
/// sent from the client namespace.
fn advertise_as_a_router(lab: &TftpLab) -> Result<()> {
    let script = format!(
        r#"
import socket
s = socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_ICMPV6)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
idx = socket.if_nametoindex("{CLIENT_IF}")
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, idx)
# type 134, code 0, checksum (kernel), hop limit 64, flags 0,
# router lifetime 1800, reachable 0, retrans 0
ra = bytes([134, 0, 0, 0, 64, 0, 0x07, 0x08]) + bytes(8)
s.sendto(ra, ("ff02::1", 0, 0, idx))
"#
    );
    let mut c = lab.client.exec("python3");
    c.args(["-c", &script]);
    run_with_timeout(c, Duration::from_secs(10))?.success()?;
    Ok(())
}

#[test]
fn solicitations_get_an_empty_advertisement_until_a_real_router_speaks() -> Result<()> {
    require_root_or_skip!(Ok(()));
    require_commands_or_skip!(["ip", "rdisc6", "python3"], Ok(()));
    let mut lab = TftpLab::new("rbra")?;
    lab.start_agent()?;
    // The veth's link-local addresses pass duplicate address detection
    // (~1 s) before either side can send from them.
    let mut out = rdisc6(&lab)?;
    for _ in 0..5 {
        if out.status.success() {
            break;
        }
        std::thread::sleep(Duration::from_secs(1));
        out = rdisc6(&lab)?;
    }
    ensure!(
        out.status.success(),
        "no advertisement from the agent:\n{out}\n{}",
        lab.agent_log()
    );
    let text = out.stdout.to_lowercase();
    for want in [
        "stateful address conf.    :           no",
        "stateful other conf.      :           no",
        "router lifetime           :            0",
    ] {
        ensure!(
            text.split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .contains(&want.split_whitespace().collect::<Vec<_>>().join(" ")),
            "rdisc6 should show {want:?}:\n{}",
            out.stdout
        );
    }
    ensure!(
        !text.contains("prefix"),
        "no prefix is advertised:\n{}",
        out.stdout
    );

    // A real router on the segment: the agent says nothing more.
    advertise_as_a_router(&lab)?;
    std::thread::sleep(Duration::from_millis(300));
    let out = rdisc6(&lab)?;
    ensure!(
        !out.status.success(),
        "the agent must not answer while a router advertises:\n{out}"
    );
    ensure!(
        lab.agent_log()
            .contains("a router advertises IPv6 on the rack segment"),
        "the agent says why it is quiet:\n{}",
        lab.agent_log()
    );
    lab.agent_mut()?.ensure_running()
}
