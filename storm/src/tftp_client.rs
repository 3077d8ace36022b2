//! A sans-IO TFTP client that behaves like a PXE ROM: optional tsize probe
//! (RRQ `tsize=0 blksize=B`, read the OACK, abort with ERROR 8), then the real
//! RRQ from a new port (EDK2, iPXE) or from the probe's own port (other ROMs:
//! [`ClientConfig::same_port`]), lockstep or windowed, re-ACKing after a
//! silence and giving up after the firmware's retry limit. No sockets, no
//! clock.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rackboot_tftp_core::{ErrorCode, Mode, Packet, RawOption};

/// Which of the client's two sockets a packet uses (the probe and the fetch
/// come from different ports, as EDK2 and iPXE do, unless
/// [`ClientConfig::same_port`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sock {
    /// The tsize probe's socket.
    Probe,
    /// The fetch's socket.
    Fetch,
}

/// A datagram to send.
#[derive(Debug, Clone)]
pub struct Out {
    /// From which socket.
    pub sock: Sock,
    /// To where.
    pub to: SocketAddr,
    /// Encoded packet.
    pub payload: Vec<u8>,
}

/// Client behaviour.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Requested block size.
    pub blksize: u16,
    /// Requested window size (1 = lockstep, no option sent).
    pub windowsize: u16,
    /// Ask the size first and abort, as PXE ROMs do.
    pub probe: bool,
    /// Offsets (from the first RRQ) at which the RRQ is sent again; the
    /// request fails at the last one.
    pub rrq_schedule: Vec<Duration>,
    /// Silence after which the last ACK is sent again.
    pub ack_timeout: Duration,
    /// Re-ACKs before the boot fails.
    pub ack_retries: u32,
    /// Send the real request from the probe's port, as some PXE ROMs do:
    /// everything goes through [`Sock::Probe`], and the first OACK or DATA
    /// that port receives after the probe is taken as the answer.
    pub same_port: bool,
}

impl ClientConfig {
    /// iPXE-like request timers (0.26, 0.81, 1.85, 3.88, 7.95 s, give up at
    /// 16 s) scaled by `scale`, PXE ROM style 1 s re-ACK.
    pub fn pxe_rom(scale: f64) -> Self {
        let s = |ms: u64| Duration::from_secs_f64(ms as f64 / 1000.0 * scale);
        ClientConfig {
            blksize: 1456,
            windowsize: 1,
            probe: true,
            rrq_schedule: vec![s(260), s(810), s(1850), s(3880), s(7950), s(16000)],
            ack_timeout: s(1000),
            ack_retries: 6,
            same_port: false,
        }
    }
}

#[derive(Debug, Clone)]
enum State {
    Probe {
        first: Instant,
        sent: usize,
    },
    Request {
        first: Instant,
        sent: usize,
    },
    Receive {
        tid: SocketAddr,
        /// Next expected block (wire number).
        expect: u16,
        bytes: u64,
        last_ack: Vec<u8>,
        retries: u32,
        deadline: Instant,
        blksize: usize,
        window: u16,
        in_window: u16,
    },
    Done {
        bytes: u64,
        at: Instant,
    },
    Failed {
        reason: String,
    },
}

/// One file fetch.
#[derive(Debug)]
pub struct Fetch {
    cfg: ClientConfig,
    file: String,
    server: SocketAddr,
    state: State,
    started: Instant,
    out: VecDeque<Out>,
    /// tsize learned from the probe, if any.
    pub tsize: Option<u64>,
    /// Times the client re-sent something (RRQ or ACK).
    pub resends: u32,
    /// Hasher over the received content.
    hasher: blake3::Hasher,
    /// Content not hashed yet: blake3 hashes 16 KiB at a time in parallel
    /// SIMD lanes, block by block it cannot.
    unhashed: Vec<u8>,
}

/// Bytes staged before hashing.
const HASH_STAGE: usize = 16 << 10;

/// How a fetch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchResult {
    /// Complete.
    Done {
        /// Bytes received.
        bytes: u64,
        /// Time from first RRQ to last block.
        elapsed: Duration,
        /// blake3 of the content.
        digest: String,
    },
    /// The boot failed.
    Failed(String),
}

fn rrq(file: &str, cfg: &ClientConfig, probe: bool) -> Vec<u8> {
    let mut options = Vec::new();
    if probe {
        options.push(RawOption::new("tsize", "0"));
    }
    options.push(RawOption::new("blksize", cfg.blksize.to_string()));
    if cfg.windowsize > 1 {
        options.push(RawOption::new("windowsize", cfg.windowsize.to_string()));
    }
    Packet::Rrq {
        filename: file.to_string(),
        mode: Mode::Octet,
        options,
    }
    .encode()
    .to_vec()
}

fn ack(block: u16) -> Vec<u8> {
    Packet::Ack { block }.encode().to_vec()
}

fn option<'a>(opts: &'a [RawOption], name: &str) -> Option<&'a str> {
    opts.iter()
        .find(|o| o.name == name)
        .map(|o| o.value.as_str())
}

impl Fetch {
    /// Start fetching `file` from `server` (port 69) at `now`.
    pub fn new(cfg: ClientConfig, file: &str, server: SocketAddr, now: Instant) -> Self {
        let mut f = Fetch {
            file: file.to_string(),
            server,
            state: State::Request {
                first: now,
                sent: 0,
            },
            started: now,
            out: VecDeque::new(),
            tsize: None,
            resends: 0,
            hasher: blake3::Hasher::new(),
            unhashed: Vec::with_capacity(HASH_STAGE),
            cfg,
        };
        if f.cfg.probe {
            f.state = State::Probe {
                first: now,
                sent: 1,
            };
            f.out.push_back(Out {
                sock: Sock::Probe,
                to: server,
                payload: rrq(&f.file, &f.cfg, true),
            });
        } else {
            f.state = State::Request {
                first: now,
                sent: 1,
            };
            f.out.push_back(Out {
                sock: Sock::Fetch,
                to: server,
                payload: rrq(&f.file, &f.cfg, false),
            });
        }
        f
    }

    /// Next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<Out> {
        self.out.pop_front()
    }

    /// Whether the size probe is still running (after it, nothing more
    /// is expected on the probe's socket).
    pub fn probing(&self) -> bool {
        matches!(self.state, State::Probe { .. })
    }

    /// The result, once finished.
    pub fn result(&self) -> Option<FetchResult> {
        match &self.state {
            State::Done { bytes, at } => Some(FetchResult::Done {
                bytes: *bytes,
                elapsed: at.duration_since(self.started),
                digest: {
                    let mut h = self.hasher.clone();
                    h.update(&self.unhashed);
                    h.finalize().to_hex().to_string()
                },
            }),
            State::Failed { reason } => Some(FetchResult::Failed(reason.clone())),
            _ => None,
        }
    }

    /// When `handle_timeout` must run next.
    pub fn poll_timeout(&self) -> Option<Instant> {
        match &self.state {
            State::Probe { first, sent } | State::Request { first, sent } => self
                .cfg
                .rrq_schedule
                .get(sent.saturating_sub(1))
                .map(|d| *first + *d),
            State::Receive { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }

    /// The socket of the real request.
    fn fetch_sock(&self) -> Sock {
        if self.cfg.same_port {
            Sock::Probe
        } else {
            Sock::Fetch
        }
    }

    fn fail(&mut self, reason: String) {
        self.state = State::Failed { reason };
    }

    fn start_request(&mut self, now: Instant) {
        self.state = State::Request {
            first: now,
            sent: 1,
        };
        self.out.push_back(Out {
            sock: self.fetch_sock(),
            to: self.server,
            payload: rrq(&self.file, &self.cfg, false),
        });
    }

    /// Timers.
    pub fn handle_timeout(&mut self, now: Instant) {
        match self.state.clone() {
            State::Probe { first, sent } | State::Request { first, sent } => {
                let probe = matches!(self.state, State::Probe { .. });
                let Some(due) = self.cfg.rrq_schedule.get(sent.saturating_sub(1)) else {
                    return;
                };
                if now < first + *due {
                    return;
                }
                if sent >= self.cfg.rrq_schedule.len() {
                    let what = if probe { "size probe" } else { "request" };
                    self.fail(format!(
                        "no answer to {what} for {:?} (PXE-E32: TFTP open timeout)",
                        *due
                    ));
                    return;
                }
                self.resends += 1;
                let (sock, payload) = if probe {
                    (Sock::Probe, rrq(&self.file, &self.cfg, true))
                } else {
                    (self.fetch_sock(), rrq(&self.file, &self.cfg, false))
                };
                self.out.push_back(Out {
                    sock,
                    to: self.server,
                    payload,
                });
                self.state = if probe {
                    State::Probe {
                        first,
                        sent: sent + 1,
                    }
                } else {
                    State::Request {
                        first,
                        sent: sent + 1,
                    }
                };
            }
            State::Receive {
                tid,
                last_ack,
                retries,
                deadline,
                ..
            } => {
                if now < deadline {
                    return;
                }
                if retries >= self.cfg.ack_retries {
                    let got = match &self.state {
                        State::Receive { bytes, .. } => *bytes,
                        _ => 0,
                    };
                    self.fail(format!(
                        "transfer stalled after {got} bytes (PXE-E35: TFTP read timeout)"
                    ));
                    return;
                }
                self.resends += 1;
                self.out.push_back(Out {
                    sock: self.fetch_sock(),
                    to: tid,
                    payload: last_ack,
                });
                if let State::Receive {
                    retries,
                    deadline,
                    in_window,
                    ..
                } = &mut self.state
                {
                    *retries += 1;
                    *deadline = now + self.cfg.ack_timeout;
                    *in_window = 0;
                }
            }
            _ => {}
        }
    }

    /// A datagram arrived on `sock` from `from`.
    pub fn handle_datagram(&mut self, now: Instant, sock: Sock, from: SocketAddr, bytes: &[u8]) {
        let Ok(packet) = Packet::parse(bytes) else {
            return;
        };
        let fetch = self.fetch_sock();
        // On one port, what arrives after the probe belongs to the request.
        let sock = if sock == fetch && !self.probing() {
            Sock::Fetch
        } else {
            sock
        };
        match (&self.state, sock) {
            (State::Probe { .. }, Sock::Probe) => match packet {
                Packet::Oack { options } => {
                    self.tsize = option(&options, "tsize").and_then(|v| v.parse().ok());
                    // Abort the probe from this port, then ask for real from another.
                    self.out.push_back(Out {
                        sock: Sock::Probe,
                        to: from,
                        payload: Packet::Error {
                            code: ErrorCode::OptionRefused,
                            msg: "tsize probe".into(),
                        }
                        .encode()
                        .to_vec(),
                    });
                    self.start_request(now);
                }
                Packet::Data { .. } => {
                    // A server without option support: behave like a ROM and
                    // abort, then request without the probe.
                    self.out.push_back(Out {
                        sock: Sock::Probe,
                        to: from,
                        payload: Packet::Error {
                            code: ErrorCode::NotDefined,
                            msg: "probe".into(),
                        }
                        .encode()
                        .to_vec(),
                    });
                    self.start_request(now);
                }
                Packet::Error { code, msg } => self.fail(format!("server error {code:?}: {msg}")),
                _ => {}
            },
            (State::Request { .. }, Sock::Fetch) => match packet {
                Packet::Oack { options } => {
                    let blksize = option(&options, "blksize")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(512);
                    let window = option(&options, "windowsize")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(1);
                    if self.tsize.is_none() {
                        self.tsize = option(&options, "tsize").and_then(|v| v.parse().ok());
                    }
                    let a = ack(0);
                    self.out.push_back(Out {
                        sock: fetch,
                        to: from,
                        payload: a.clone(),
                    });
                    self.state = State::Receive {
                        tid: from,
                        expect: 1,
                        bytes: 0,
                        last_ack: a,
                        retries: 0,
                        deadline: now + self.cfg.ack_timeout,
                        blksize,
                        window,
                        in_window: 0,
                    };
                }
                Packet::Data { .. } => {
                    self.state = State::Receive {
                        tid: from,
                        expect: 1,
                        bytes: 0,
                        last_ack: ack(0),
                        retries: 0,
                        deadline: now + self.cfg.ack_timeout,
                        blksize: 512,
                        window: 1,
                        in_window: 0,
                    };
                    self.handle_datagram(now, sock, from, bytes);
                }
                Packet::Error { code, msg } => self.fail(format!("server error {code:?}: {msg}")),
                _ => {}
            },
            (State::Receive { tid, .. }, Sock::Fetch) if *tid == from => {
                if let Packet::Error { code, msg } = packet {
                    self.fail(format!("server error {code:?}: {msg}"));
                    return;
                }
                let Packet::Data { block, data } = packet else {
                    return;
                };
                let mut finished = None;
                if let State::Receive {
                    expect,
                    bytes,
                    last_ack,
                    retries,
                    deadline,
                    blksize,
                    window,
                    in_window,
                    ..
                } = &mut self.state
                {
                    if block != *expect {
                        // Out of order or duplicate: a ROM re-ACKs what it has
                        // only on its own timer.
                        return;
                    }
                    self.unhashed.extend_from_slice(&data);
                    if self.unhashed.len() >= HASH_STAGE {
                        self.hasher.update(&self.unhashed);
                        self.unhashed.clear();
                    }
                    *bytes += data.len() as u64;
                    *expect = expect.wrapping_add(1);
                    *retries = 0;
                    *deadline = now + self.cfg.ack_timeout;
                    *in_window += 1;
                    let last = data.len() < *blksize;
                    if last || *in_window >= *window {
                        *last_ack = ack(block);
                        *in_window = 0;
                        self.out.push_back(Out {
                            sock: fetch,
                            to: from,
                            payload: last_ack.clone(),
                        });
                    }
                    if last {
                        finished = Some(*bytes);
                    }
                }
                if let Some(bytes) = finished {
                    self.state = State::Done { bytes, at: now };
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests;
