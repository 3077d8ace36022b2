//! A simulated network of TFTP clients around one [`Server`], driven by a
//! virtual clock (quinn-proto's `Pair`, raft-rs's `Network`): datagrams
//! travel with a fixed one-way latency plus an optional per-packet random
//! delay (which reorders them), and may be dropped or duplicated by
//! deterministic functions.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::{
    Config, ErrorCode, Event, Local, Mode, OpenError, Packet, RawOption, SafePath, Server,
};

/// Shared file table used as the [`crate::FileSource`].
pub type Files = HashMap<String, Bytes>;

/// Builds a file table.
pub fn files(list: &[(&str, Bytes)]) -> Files {
    list.iter()
        .map(|(n, d)| ((*n).to_owned(), d.clone()))
        .collect()
}

/// Deterministic content of `len` bytes.
pub fn content(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i.wrapping_mul(31) ^ (i >> 8)) as u8)
        .collect::<Vec<u8>>()
        .into()
}

/// Looks a path up in a [`Files`] table.
pub fn lookup(files: &Files, path: &SafePath) -> Result<Bytes, OpenError> {
    files.get(path.as_str()).cloned().ok_or(OpenError::NotFound)
}

/// A datagram seen by the loss function.
pub struct Wire<'a> {
    /// Client → server?
    pub to_server: bool,
    /// The parsed packet (None if unparsable).
    pub packet: Option<&'a Packet>,
    /// Index of this datagram among those in the same direction.
    pub n: u64,
}

/// Decides whether a datagram is lost.
pub type Loss = Box<dyn FnMut(&Wire<'_>) -> bool>;

/// Decides a datagram's extra one-way delay (and so reordering).
pub type Jitter = Box<dyn FnMut(&Wire<'_>) -> Duration>;

/// Decides whether a datagram is delivered twice.
pub type Duplication = Box<dyn FnMut(&Wire<'_>) -> bool>;

/// A small seeded PRNG (SplitMix64) for network models.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// True with probability `percent`/100.
    pub fn percent(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// Uniform in `0..=max`.
    pub fn duration(&mut self, max: Duration) -> Duration {
        let ns = u64::try_from(max.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.next_u64() % ns.saturating_add(1))
    }
}

/// Drops `percent`% of datagrams, by a seeded PRNG.
pub fn random_loss(seed: u64, percent: u64) -> Loss {
    let mut rng = Rng::new(seed);
    Box::new(move |_| rng.percent(percent))
}

/// Delays each datagram by a uniform random extra `0..=max`.
pub fn random_jitter(seed: u64, max: Duration) -> Jitter {
    let mut rng = Rng::new(seed);
    Box::new(move |_| rng.duration(max))
}

/// Delivers `percent`% of datagrams twice (the copy with its own delay).
pub fn random_duplication(seed: u64, percent: u64) -> Duplication {
    let mut rng = Rng::new(seed);
    Box::new(move |_| rng.percent(percent))
}

/// No loss.
pub fn no_loss() -> Loss {
    Box::new(|_| false)
}

/// Drops every `n`th datagram in each direction.
pub fn every_nth(n: u64) -> Loss {
    Box::new(move |w| w.n % n == n - 1)
}

/// Drops `percent`% of datagrams in both directions, by a seeded LCG.
pub fn lcg_loss(seed: u64, percent: u64) -> Loss {
    let mut state = seed.wrapping_mul(2) | 1;
    Box::new(move |_| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % 100 < percent
    })
}

/// How a simulated client behaves.
#[derive(Clone, Debug)]
pub struct ClientSpec {
    pub filename: String,
    pub mode: Mode,
    pub options: Vec<RawOption>,
    /// EDK2's size probe: send ERROR 8 as soon as the OACK arrives.
    pub abort_after_oack: bool,
    /// The client's own retransmit interval (RRQ or last ACK).
    pub retry_interval: Duration,
    /// Resends before the client gives up.
    pub max_retries: u32,
    /// When the client sends its RRQ (offset from the simulation start).
    pub start_at: Duration,
    /// Re-ACK every copy of an already received block, as a classic RFC
    /// 1350 receiver does: the trigger of the Sorcerer's Apprentice.
    pub ack_duplicates: bool,
}

impl ClientSpec {
    pub fn new(filename: &str, options: &[(&str, &str)]) -> ClientSpec {
        ClientSpec {
            filename: filename.to_owned(),
            mode: Mode::Octet,
            options: options
                .iter()
                .map(|(n, v)| RawOption::new(*n, *v))
                .collect(),
            abort_after_oack: false,
            retry_interval: Duration::from_secs(1),
            max_retries: 6,
            start_at: Duration::ZERO,
            ack_duplicates: false,
        }
    }
}

/// How a simulated client ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ClientResult {
    Received(Bytes),
    Error { code: ErrorCode, msg: String },
    Probed { oack: Vec<RawOption> },
    GaveUp,
}

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Requesting,
    Receiving,
    Done,
}

/// One simulated TFTP client (RFC 1350 + 2347 + 7440 receiver).
#[derive(Debug)]
pub struct SimClient {
    pub addr: SocketAddr,
    pub spec: ClientSpec,
    pub result: Option<ClientResult>,
    pub server: Option<Local>,
    phase: Phase,
    blksize: usize,
    windowsize: u64,
    expected: u64,
    in_window: u64,
    nacked: bool,
    received: Vec<u8>,
    timer: Option<Instant>,
    retries: u32,
}

/// A server-side datagram, recorded for assertions.
#[derive(Clone, Debug)]
pub struct Sent {
    pub at: Duration,
    pub local: Local,
    pub dest: SocketAddr,
    pub packet: Packet,
    pub dropped: bool,
}

#[derive(Clone)]
enum Datagram {
    ToServer {
        local: Local,
        src: SocketAddr,
        bytes: Bytes,
    },
    ToClient {
        from: Local,
        dest: SocketAddr,
        bytes: Bytes,
    },
}

/// The simulation.
pub struct Sim {
    pub server: Server,
    pub files: Files,
    pub clients: Vec<SimClient>,
    pub base: Instant,
    pub now: Instant,
    pub latency: Duration,
    pub loss: Loss,
    /// Extra per-datagram delay (none by default).
    pub jitter: Option<Jitter>,
    /// Which datagrams are delivered twice (none by default).
    pub duplication: Option<Duplication>,
    /// Whether jitter keeps each path first-in first-out: a datagram is
    /// delayed but never overtakes an earlier one between the same two
    /// endpoints (a network duplicate's second copy arrives after its
    /// original, by its own random delay, so later datagrams may come
    /// between them). Off by default: every datagram's delay is
    /// independent, so windows arrive reordered.
    pub fifo: bool,
    /// Datagrams the network delivered twice.
    pub duplicated: u64,
    last_arrival: HashMap<(bool, SocketAddr), Instant>,
    /// Everything the server sent.
    pub sent: Vec<Sent>,
    /// Every server event, with its time.
    pub events: Vec<(Duration, Event)>,
    /// Every datagram delivered to the server (parsable ones), with its
    /// time.
    pub received: Vec<(Duration, Local, SocketAddr, Packet)>,
    net: BTreeMap<(Instant, u64), Datagram>,
    seq: u64,
    counts: [u64; 2],
}

impl Sim {
    pub fn new(config: Config, files: Files) -> Sim {
        let base = Instant::now();
        Sim {
            server: Server::new(config),
            files,
            clients: Vec::new(),
            base,
            now: base,
            latency: Duration::from_micros(200),
            loss: no_loss(),
            jitter: None,
            duplication: None,
            fifo: false,
            duplicated: 0,
            last_arrival: HashMap::new(),
            sent: Vec::new(),
            events: Vec::new(),
            received: Vec::new(),
            net: BTreeMap::new(),
            seq: 0,
            counts: [0; 2],
        }
    }

    /// Adds a client at 10.0.x.y:49152+i.
    pub fn add_client(&mut self, spec: ClientSpec) -> usize {
        let i = self.clients.len();
        let addr = SocketAddr::from((
            [10, 0, (i / 250) as u8, (i % 250 + 1) as u8],
            49152 + (i % 1000) as u16,
        ));
        self.add_client_at(addr, spec)
    }

    pub fn add_client_at(&mut self, addr: SocketAddr, spec: ClientSpec) -> usize {
        self.clients.push(SimClient {
            addr,
            timer: Some(self.base + spec.start_at),
            spec,
            result: None,
            server: None,
            phase: Phase::Idle,
            blksize: 512,
            windowsize: 1,
            expected: 1,
            in_window: 0,
            nacked: false,
            received: Vec::new(),
            retries: 0,
        });
        self.clients.len() - 1
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.base
    }

    /// Runs until every client is done and the server is idle, or until
    /// `limit` of virtual time has passed.
    pub fn run(&mut self, limit: Duration) {
        let end = self.base + limit;
        loop {
            self.drain_server();
            let idle = self.clients.iter().all(|c| c.phase == Phase::Done)
                && self.net.is_empty()
                && self.server.active() == 0
                && self.server.queued() == 0;
            if idle {
                break;
            }
            let next = [
                self.net.keys().next().map(|&(t, _)| t),
                self.server.poll_timeout(),
                self.clients.iter().filter_map(|c| c.timer).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            let Some(next) = next else { break };
            if next > end {
                self.now = end;
                break;
            }
            self.now = self.now.max(next);
            self.step_once();
        }
    }

    /// Advances the clock by `d`, processing everything due on the way.
    pub fn advance(&mut self, d: Duration) {
        let end = self.now + d;
        loop {
            self.drain_server();
            let next = [
                self.net.keys().next().map(|&(t, _)| t),
                self.server.poll_timeout(),
                self.clients.iter().filter_map(|c| c.timer).min(),
            ]
            .into_iter()
            .flatten()
            .min();
            match next {
                Some(next) if next <= end => {
                    self.now = self.now.max(next);
                    self.step_once();
                }
                _ => break,
            }
        }
        self.now = end;
        self.drain_server();
    }

    fn step_once(&mut self) {
        let now = self.now;
        while let Some(entry) = self.net.first_entry() {
            if entry.key().0 > now {
                break;
            }
            match entry.remove() {
                Datagram::ToServer { local, src, bytes } => {
                    if let Ok(packet) = Packet::parse(&bytes) {
                        let at = self.elapsed();
                        self.received.push((at, local, src, packet));
                    }
                    let files = &self.files;
                    self.server
                        .handle_datagram(now, local, src, &bytes, &|p: &SafePath, _| {
                            lookup(files, p)
                        });
                }
                Datagram::ToClient { from, dest, bytes } => {
                    if let Some(i) = self.clients.iter().position(|c| c.addr == dest) {
                        self.client_receive(i, from, &bytes);
                    }
                }
            }
            self.drain_server();
        }
        if self.server.poll_timeout().is_some_and(|t| t <= now) {
            self.server.handle_timeout(now);
            self.drain_server();
        }
        for i in 0..self.clients.len() {
            if self.clients[i].timer.is_some_and(|t| t <= now) {
                self.client_timer(i);
            }
        }
    }

    /// Moves server output onto the network and records events.
    pub fn drain_server(&mut self) {
        while let Some(t) = self.server.poll_transmit() {
            let packet = Packet::parse(&t.payload).expect("server sends valid packets");
            let dropped = self.lose(false, Some(&packet));
            self.sent.push(Sent {
                at: self.elapsed(),
                local: t.local,
                dest: t.dest,
                packet,
                dropped,
            });
            if !dropped {
                let packet = self.sent.last().map(|s| s.packet.clone());
                self.deliver(
                    false,
                    packet.as_ref(),
                    Datagram::ToClient {
                        from: t.local,
                        dest: t.dest,
                        bytes: t.payload,
                    },
                );
            }
        }
        while let Some(e) = self.server.poll_event() {
            let at = self.elapsed();
            self.events.push((at, e));
        }
    }

    fn lose(&mut self, to_server: bool, packet: Option<&Packet>) -> bool {
        let n = self.counts[usize::from(to_server)];
        self.counts[usize::from(to_server)] += 1;
        (self.loss)(&Wire {
            to_server,
            packet,
            n,
        })
    }

    /// Puts a datagram on the wire: once, or twice when duplicated, each
    /// copy with its own random extra delay.
    fn deliver(&mut self, to_server: bool, packet: Option<&Packet>, d: Datagram) {
        let n = self.counts[usize::from(to_server)];
        let wire = Wire {
            to_server,
            packet,
            n,
        };
        let twice = self.duplication.as_mut().is_some_and(|f| f(&wire));
        self.duplicated += u64::from(twice);
        let path = match &d {
            Datagram::ToServer { src, .. } => (true, *src),
            Datagram::ToClient { dest, .. } => (false, *dest),
        };
        let mut first = None;
        for _ in 0..if twice { 2 } else { 1 } {
            let extra = self.jitter.as_mut().map_or(Duration::ZERO, |f| f(&wire));
            let mut at = self.now + self.latency + extra;
            if self.fifo {
                match first {
                    // A duplicate never arrives before its original.
                    Some(original) => at = original + extra,
                    None => {
                        let last = self.last_arrival.entry(path).or_insert(at);
                        at = at.max(*last);
                        *last = at;
                        first = Some(at);
                    }
                }
            }
            self.seq += 1;
            self.net.insert((at, self.seq), d.clone());
        }
    }

    fn client_send(&mut self, i: usize, local: Local, packet: Packet) {
        if self.lose(true, Some(&packet)) {
            return;
        }
        let src = self.clients[i].addr;
        let bytes = packet.encode();
        self.deliver(
            true,
            Some(&packet),
            Datagram::ToServer { local, src, bytes },
        );
    }

    fn client_timer(&mut self, i: usize) {
        let now = self.now;
        let c = &mut self.clients[i];
        let retry = c.spec.retry_interval;
        match c.phase {
            Phase::Idle => {
                c.phase = Phase::Requesting;
                c.timer = Some(now + retry);
                let rrq = Packet::Rrq {
                    filename: c.spec.filename.clone(),
                    mode: c.spec.mode,
                    options: c.spec.options.clone(),
                };
                self.client_send(i, Local::Listener, rrq);
            }
            Phase::Requesting | Phase::Receiving => {
                c.retries += 1;
                if c.retries > c.spec.max_retries {
                    c.phase = Phase::Done;
                    c.timer = None;
                    c.result = Some(ClientResult::GaveUp);
                    return;
                }
                c.timer = Some(now + retry);
                if c.phase == Phase::Requesting {
                    let rrq = Packet::Rrq {
                        filename: c.spec.filename.clone(),
                        mode: c.spec.mode,
                        options: c.spec.options.clone(),
                    };
                    self.client_send(i, Local::Listener, rrq);
                } else {
                    let local = c.server.unwrap_or(Local::Listener);
                    let block = wire(c.expected - 1);
                    c.in_window = 0;
                    self.client_send(i, local, Packet::Ack { block });
                }
            }
            Phase::Done => c.timer = None,
        }
    }

    fn client_receive(&mut self, i: usize, from: Local, bytes: &[u8]) {
        let now = self.now;
        let Ok(packet) = Packet::parse(bytes) else {
            return;
        };
        let c = &mut self.clients[i];
        if c.phase == Phase::Idle {
            return;
        }
        if from != Local::Listener {
            match c.server {
                None => c.server = Some(from),
                Some(tid) if tid != from => return,
                Some(_) => {}
            }
        }
        let retry = c.spec.retry_interval;
        match packet {
            Packet::Error { code, msg } => {
                if c.phase != Phase::Done {
                    c.phase = Phase::Done;
                    c.timer = None;
                    c.result = Some(ClientResult::Error { code, msg });
                }
            }
            Packet::Oack { options } => {
                if c.phase != Phase::Requesting {
                    return;
                }
                for o in &options {
                    let v = o.value.parse::<u64>().unwrap_or(0);
                    match o.name.as_str() {
                        "blksize" => c.blksize = v as usize,
                        "windowsize" => c.windowsize = v,
                        _ => {}
                    }
                }
                if c.spec.abort_after_oack {
                    c.phase = Phase::Done;
                    c.timer = None;
                    c.result = Some(ClientResult::Probed { oack: options });
                    let error = Packet::Error {
                        code: ErrorCode::OptionRefused,
                        msg: "size probe done".to_owned(),
                    };
                    self.client_send(i, from, error);
                    return;
                }
                c.phase = Phase::Receiving;
                c.retries = 0;
                c.timer = Some(now + retry);
                self.client_send(i, from, Packet::Ack { block: 0 });
            }
            Packet::Data { block, data } => {
                if c.phase == Phase::Done {
                    // Dally: re-ACK a resent final block.
                    if matches!(c.result, Some(ClientResult::Received(_)))
                        && block == wire(c.expected - 1)
                    {
                        self.client_send(i, from, Packet::Ack { block });
                    }
                    return;
                }
                c.phase = Phase::Receiving;
                if c.spec.ack_duplicates && c.expected > 1 && block == wire(c.expected - 1) {
                    self.client_send(i, from, Packet::Ack { block });
                    return;
                }
                if block != wire(c.expected) {
                    if !c.nacked {
                        c.nacked = true;
                        c.in_window = 0;
                        let block = wire(c.expected - 1);
                        self.client_send(i, from, Packet::Ack { block });
                    }
                    return;
                }
                c.received.extend_from_slice(&data);
                c.expected += 1;
                c.in_window += 1;
                c.nacked = false;
                c.retries = 0;
                c.timer = Some(now + retry);
                if data.len() < c.blksize {
                    c.phase = Phase::Done;
                    c.timer = None;
                    c.result = Some(ClientResult::Received(c.received.clone().into()));
                    self.client_send(i, from, Packet::Ack { block });
                } else if c.in_window >= c.windowsize {
                    c.in_window = 0;
                    self.client_send(i, from, Packet::Ack { block });
                }
            }
            Packet::Rrq { .. } | Packet::Wrq { .. } | Packet::Ack { .. } => {}
        }
    }

    /// The result of client `i`.
    pub fn result(&self, i: usize) -> Option<&ClientResult> {
        self.clients[i].result.as_ref()
    }

    /// Asserts client `i` received exactly `expected`.
    pub fn assert_received(&self, i: usize, expected: &Bytes) {
        match self.result(i) {
            Some(ClientResult::Received(got)) => {
                assert_eq!(got.len(), expected.len(), "client {i}: length");
                assert!(got == expected, "client {i}: content differs");
            }
            other => panic!("client {i}: {other:?}"),
        }
    }

    /// Closed events, in order.
    pub fn closed(&self) -> Vec<(crate::TransferId, crate::Outcome)> {
        self.events
            .iter()
            .filter_map(|(_, e)| match e {
                Event::Closed { id, outcome, .. } => Some((*id, outcome.clone())),
                _ => None,
            })
            .collect()
    }

    /// DATA packets the server sent (including dropped ones).
    pub fn data_sent(&self) -> usize {
        self.sent
            .iter()
            .filter(|s| matches!(s.packet, Packet::Data { .. }))
            .count()
    }
}

/// Wire block number.
pub fn wire(block: u64) -> u16 {
    (block % 65536) as u16
}
