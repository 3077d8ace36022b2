//! A [`Server`] on a virtual clock: every input at a chosen offset from a
//! fixed origin, everything it produced collected in a [`Step`].

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::Decodable;
use dhcproto::v4::Message;
use rackboot_dhcp_core::guard::Allow;
use rackboot_dhcp_core::{
    AcceptPolicy, DropReason, Event, NodeDirectory, ProbeKey, ProvisionalPool, ReplyDest, Report,
    Role, Server, Settings, Transmit,
};

use crate::support::{Reply, config};

/// An unconfigured client on the DHCP client port.
pub const CLIENT: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68));

pub struct Rig {
    pub server: Server,
    t0: Instant,
}

/// What one input produced.
#[derive(Debug, Default)]
pub struct Step {
    pub transmits: Vec<Transmit>,
    pub events: Vec<Event>,
}

impl Step {
    /// The one reply sent, decoded.
    pub fn reply(&self) -> Reply {
        assert_eq!(self.transmits.len(), 1, "expected one reply: {self:?}");
        let t = &self.transmits[0];
        let msg = Message::from_bytes(&t.bytes).expect("reply decodes");
        let dest = match t.dest {
            SocketAddr::V4(a) if *a.ip() == Ipv4Addr::BROADCAST => ReplyDest::Broadcast,
            SocketAddr::V4(a) if a.port() == 67 => ReplyDest::Relay(*a.ip()),
            SocketAddr::V4(a) => ReplyDest::Unicast(*a.ip()),
            SocketAddr::V6(_) => panic!("IPv6 destination {}", t.dest),
        };
        Reply {
            msg,
            bytes: t.bytes.clone(),
            dest,
        }
    }

    /// Why the datagram got no reply, if it was dropped.
    pub fn dropped(&self) -> Option<DropReason> {
        self.events.iter().find_map(|e| match e {
            Event::Dropped { reason, .. } => Some(reason.clone()),
            _ => None,
        })
    }

    /// The reports for the coordinator.
    pub fn reports(&self) -> Vec<Report> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Report(r) => Some(r.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn has(&self, pred: impl Fn(&Event) -> bool) -> bool {
        self.events.iter().any(pred)
    }
}

/// Authoritative, first-seen, rack 10.0.0.0/24, no pool.
pub fn settings() -> Settings {
    Settings {
        role: Role::Authoritative,
        accept: AcceptPolicy::FirstSeen,
        client_port: 68,
        allow: Allow::new(vec!["10.0.0.0/24".parse().unwrap()]),
        pool: None,
        probe_key: Some(probe_key()),
    }
}

/// The probe key of [`settings`].
pub fn probe_key() -> ProbeKey {
    ProbeKey::new([0x5a; 32])
}

/// [`settings`] with the probe policy and a provisional pool of `size`
/// addresses from 10.0.0.200 with `lease_secs` leases.
pub fn with_pool(size: u8, lease_secs: u32) -> Settings {
    Settings {
        accept: AcceptPolicy::Probe,
        pool: ProvisionalPool::new(
            Ipv4Addr::new(10, 0, 0, 200),
            Ipv4Addr::new(10, 0, 0, 199 + size),
            lease_secs,
        ),
        ..settings()
    }
}

impl Rig {
    pub fn new(settings: Settings) -> Self {
        Rig {
            server: Server::new(settings, config()),
            t0: Instant::now(),
        }
    }

    /// The instant `ms` milliseconds after the origin.
    pub fn at(&self, ms: u64) -> Instant {
        self.t0 + Duration::from_millis(ms)
    }

    /// Milliseconds from the origin to `t`.
    pub fn ms(&self, t: Instant) -> u64 {
        t.duration_since(self.t0).as_millis() as u64
    }

    pub fn send(
        &mut self,
        ms: u64,
        src: SocketAddr,
        bytes: &[u8],
        nodes: &impl NodeDirectory,
    ) -> Step {
        let now = self.at(ms);
        self.server.handle_datagram(now, src, bytes, nodes);
        self.drain()
    }

    pub fn view_changed(&mut self, ms: u64, nodes: &impl NodeDirectory) -> Step {
        let now = self.at(ms);
        self.server.handle_view_changed(now, nodes);
        self.drain()
    }

    pub fn timeout(&mut self, ms: u64) -> Step {
        let now = self.at(ms);
        self.server.handle_timeout(now);
        self.drain()
    }

    fn drain(&mut self) -> Step {
        let mut step = Step::default();
        while let Some(t) = self.server.poll_transmit() {
            step.transmits.push(t);
        }
        while let Some(e) = self.server.poll_event() {
            step.events.push(e);
        }
        step
    }
}
