//! Drives a [`Server`] by hand, one datagram at a time.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::harness::{Files, lookup};
use crate::{Config, Event, Local, Mode, Packet, RawOption, SafePath, Server};

/// A decoded [`crate::Transmit`].
pub type Out = (Local, SocketAddr, Packet);

/// Drives a [`Server`] by hand, one datagram at a time, on a virtual clock.
pub struct Direct {
    pub server: Server,
    pub files: Files,
    pub base: Instant,
    pub now: Instant,
}

impl Direct {
    pub fn new(config: Config, files: Files) -> Direct {
        let base = Instant::now();
        Direct {
            server: Server::new(config),
            files,
            base,
            now: base,
        }
    }

    /// Sets the clock to `ms` milliseconds after the start.
    pub fn at_ms(&mut self, ms: u64) -> &mut Direct {
        self.now = self.base + Duration::from_millis(ms);
        self
    }

    /// Sets the clock to `us` microseconds after the start.
    pub fn at_us(&mut self, us: u64) -> &mut Direct {
        self.now = self.base + Duration::from_micros(us);
        self
    }

    /// Delivers `packet` and returns what the server sends in reply.
    pub fn send(&mut self, local: Local, src: SocketAddr, packet: &Packet) -> Vec<Out> {
        self.raw(local, src, &packet.encode())
    }

    /// Delivers raw bytes and returns what the server sends in reply.
    pub fn raw(&mut self, local: Local, src: SocketAddr, bytes: &[u8]) -> Vec<Out> {
        let files = &self.files;
        self.server
            .handle_datagram(self.now, local, src, bytes, &|p: &SafePath, _| {
                lookup(files, p)
            });
        self.transmits()
    }

    /// Sends an RRQ to the listener.
    pub fn rrq(&mut self, src: SocketAddr, filename: &str, options: &[(&str, &str)]) -> Vec<Out> {
        let rrq = Packet::Rrq {
            filename: filename.to_owned(),
            mode: Mode::Octet,
            options: options
                .iter()
                .map(|(n, v)| RawOption::new(*n, *v))
                .collect(),
        };
        self.send(Local::Listener, src, &rrq)
    }

    /// Fires timers due now and returns what the server sends.
    pub fn timeout(&mut self) -> Vec<Out> {
        self.server.handle_timeout(self.now);
        self.transmits()
    }

    /// Drains transmits.
    pub fn transmits(&mut self) -> Vec<Out> {
        std::iter::from_fn(|| self.server.poll_transmit())
            .map(|t| {
                let p = Packet::parse(&t.payload).expect("server sends valid packets");
                (t.local, t.dest, p)
            })
            .collect()
    }

    /// Drains events.
    pub fn events(&mut self) -> Vec<Event> {
        std::iter::from_fn(|| self.server.poll_event()).collect()
    }

    /// Milliseconds from the start until the next server deadline.
    pub fn next_timeout_ms(&self) -> Option<u128> {
        self.server
            .poll_timeout()
            .map(|t| (t - self.base).as_millis())
    }
}

/// A client address.
pub fn addr(last: u8, port: u16) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, last], port))
}

/// The DATA block numbers in `out`.
pub fn data_blocks(out: &[Out]) -> Vec<u16> {
    out.iter()
        .filter_map(|(_, _, p)| match p {
            Packet::Data { block, .. } => Some(*block),
            _ => None,
        })
        .collect()
}
