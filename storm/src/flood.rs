//! The floods a storm can add to its emulated clients: DHCPDISCOVERs from
//! random MACs (a starvation attack, or a rack of unknown machines) and
//! TFTP read requests that are never acknowledged (half-open transfers).
//! Each runs on a socket of its own, paced by `Pacer`, and reports how
//! many it sent and how long that took.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::dhcp_client::DhcpExchange;
use crate::mac::mac_bytes;
use crate::pacer::Pacer;

/// Send `count` DISCOVERs from pseudo-random locally administered MACs at
/// `rate` per second (in 1 ms batches), until done or `deadline`. Returns
/// how many were sent and how long it took.
pub(crate) async fn dhcp_flood(
    socket: UdpSocket,
    server: SocketAddr,
    count: u64,
    rate: u64,
    deadline: Instant,
) -> (u64, Duration) {
    // splitmix64: reproducible, no RNG dependency for a load generator.
    let mut state = 0x05ee_d0ff_100d_u64;
    let mut next = move || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    let mut pacer = Pacer::new(count, rate, deadline);
    while let Some(n) = pacer.batch().await {
        for _ in 0..n {
            let r = next();
            let mut mac = mac_bytes(r);
            // Locally administered unicast: never a real vendor's MAC.
            mac[0] = (mac[0] & 0xfc) | 0x02;
            let mut x = DhcpExchange::new(mac, (r >> 16) as u32, Instant::now(), 1.0);
            for pkt in x.drain() {
                let _ = socket.send_to(&pkt, server).await;
            }
        }
    }
    pacer.result()
}

/// Send `count` RRQs for `file` (tsize and blksize as PXE asks), each from
/// a fresh socket on `from` closed right after, at `rate` per second, until
/// done or `deadline`. Returns how many were sent and how long it took.
pub(crate) async fn tftp_flood(
    from: Ipv4Addr,
    server: SocketAddr,
    file: String,
    count: u64,
    rate: u64,
    deadline: Instant,
) -> (u64, Duration) {
    let mut pkt = vec![0u8, 1];
    pkt.extend_from_slice(file.as_bytes());
    pkt.extend_from_slice(b"\0octet\0blksize\x001456\0tsize\x000\0");
    let mut pacer = Pacer::new(count, rate, deadline);
    while let Some(n) = pacer.batch().await {
        for _ in 0..n {
            if let Ok(s) = UdpSocket::bind(SocketAddr::from((from, 0))).await {
                let _ = s.send_to(&pkt, server).await;
            }
        }
    }
    pacer.result()
}
