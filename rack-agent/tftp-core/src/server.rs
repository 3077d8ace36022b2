//! The server: listener handling, the table of transfers, timers and
//! admission.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::fmt;
use std::net::SocketAddr;
use std::time::Instant;

use bytes::Bytes;

use crate::admission::{AdmissionQueue, Pending, RequestKey};
use crate::config::Config;
use crate::event::{AbortReason, Event, Outcome, TransferSummary};
use crate::mode::{Mode, to_netascii};
use crate::options::negotiate;
use crate::packet::{ErrorCode, Packet, RawOption};
use crate::path::SafePath;
use crate::source::{FileSource, OpenError};
use crate::stats::Stats;
use crate::transfer::{Outbox, Outgoing, Step, Timing, Transfer};

/// Longest client ERROR message kept in an [`AbortReason`], in characters.
const MAX_CLIENT_MESSAGE: usize = 255;

/// Identifies one transfer, and the shell's ephemeral socket for it. Never
/// reused by a [`Server`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TransferId(u64);

impl TransferId {
    /// The raw number.
    pub fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for TransferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "t{}", self.0)
    }
}

/// Which of the shell's sockets a datagram arrived on or leaves from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Local {
    /// The listening socket (UDP 69).
    Listener,
    /// The transfer's own ephemeral socket; the shell binds it the first
    /// time a [`Transmit`] names it and drops it on [`Event::Closed`].
    Transfer(TransferId),
}

/// A datagram to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transmit {
    /// The socket to send from.
    pub local: Local,
    /// The destination.
    pub dest: SocketAddr,
    /// The encoded TFTP packet.
    pub payload: Bytes,
}

/// A sans-IO TFTP read-only server: feed it datagrams and timeouts, drain
/// transmits and events. See the crate docs for the driving loop.
#[derive(Debug)]
pub struct Server {
    config: Config,
    timing: Timing,
    transfers: HashMap<TransferId, Transfer>,
    by_request: HashMap<RequestKey, TransferId>,
    timers: BTreeSet<(Instant, TransferId)>,
    queue: AdmissionQueue,
    outbox: Outbox,
    events: VecDeque<Event>,
    stats: Stats,
    next_id: u64,
}

impl Server {
    /// Creates a server. Out-of-range settings are clamped into range; call
    /// [`Config::validate`] first to report them.
    pub fn new(config: Config) -> Server {
        let config = config.normalized();
        Server {
            timing: config.timing(),
            transfers: HashMap::new(),
            by_request: HashMap::new(),
            timers: BTreeSet::new(),
            queue: AdmissionQueue::new(config.max_queue, config.queue_stale_after),
            outbox: Outbox::default(),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_id: 1,
            config,
        }
    }

    /// The configuration in use (after clamping).
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Number of running transfers.
    pub fn active(&self) -> usize {
        self.transfers.len()
    }

    /// Number of requests waiting for a slot.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    /// The running transfers, in no particular order.
    pub fn transfers(&self) -> impl Iterator<Item = TransferSummary> + '_ {
        self.transfers.values().map(Transfer::summary)
    }

    /// Handles one datagram that arrived on `local` from `src`. Never
    /// panics; malformed input is counted in [`Stats`] and dropped.
    pub fn handle_datagram<F: FileSource + ?Sized>(
        &mut self,
        now: Instant,
        local: Local,
        src: SocketAddr,
        datagram: &[u8],
        files: &F,
    ) {
        self.stats.datagrams_received += 1;
        match local {
            Local::Listener => self.handle_listener(now, src, datagram, files),
            Local::Transfer(id) => self.handle_transfer_datagram(now, id, src, datagram),
        }
    }

    /// Fires every retransmit timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let due: Vec<TransferId> = self
            .timers
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            if let Some(Step::Closed(outcome)) =
                self.step(id, |t, out, stats| t.handle_timeout(now, out, stats))
            {
                self.close(now, id, outcome);
            }
        }
    }

    /// The earliest time [`Server::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.first().map(|&(deadline, _)| deadline)
    }

    /// The next datagram to send. Resends come first.
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        let Outgoing {
            local,
            dest,
            packet,
        } = self
            .outbox
            .urgent
            .pop_front()
            .or_else(|| self.outbox.normal.pop_front())?;
        self.stats.datagrams_sent += 1;
        Some(Transmit {
            local,
            dest,
            payload: packet.encode(),
        })
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    fn handle_listener<F: FileSource + ?Sized>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        datagram: &[u8],
        files: &F,
    ) {
        match Packet::parse(datagram) {
            Ok(Packet::Rrq {
                filename,
                mode,
                options,
            }) => self.handle_rrq(now, src, filename, mode, &options, files),
            Ok(Packet::Wrq { filename, .. }) => {
                self.stats.refused_write += 1;
                self.refuse(
                    src,
                    Some(filename),
                    ErrorCode::AccessViolation,
                    "server is read-only".to_owned(),
                );
            }
            Ok(_) => self.stats.dropped_unexpected_on_listener += 1,
            Err(err) => {
                self.stats.dropped_malformed += 1;
                // A request we recognise as one gets told what is wrong, so
                // the client fails fast instead of retrying for 16 s.
                if matches!(datagram, [0, 1 | 2, ..]) {
                    self.refuse(
                        src,
                        None,
                        ErrorCode::IllegalOperation,
                        format!("malformed request: {err}"),
                    );
                }
            }
        }
    }

    fn handle_rrq<F: FileSource + ?Sized>(
        &mut self,
        now: Instant,
        src: SocketAddr,
        filename: String,
        mode: Mode,
        options: &[RawOption],
        files: &F,
    ) {
        let path = match SafePath::parse(&filename) {
            Ok(path) => path,
            Err(err) => {
                self.stats.refused_path += 1;
                let message = format!("access violation: {err}");
                self.refuse(src, Some(filename), ErrorCode::AccessViolation, message);
                return;
            }
        };
        if mode == Mode::Mail {
            self.stats.refused_mode += 1;
            let message = "mail mode is not supported".to_owned();
            self.refuse(src, Some(filename), ErrorCode::IllegalOperation, message);
            return;
        }
        let key = (src, path);
        if let Some(&id) = self.by_request.get(&key) {
            self.stats.duplicate_requests += 1;
            let kept = self.step(id, |t, out, stats| t.handle_repeat_request(now, out, stats));
            if kept != Some(false) {
                return;
            }
            self.close(
                now,
                id,
                Outcome::Aborted {
                    reason: AbortReason::Superseded,
                },
            );
        }
        if self.queue.touch(&key, now) {
            self.stats.duplicate_requests += 1;
            return;
        }
        let (client, path) = key;
        let data = match files.open(&path, client) {
            Ok(data) if mode == Mode::Netascii => to_netascii(&data),
            Ok(data) => data,
            Err(OpenError::NotFound) => {
                self.stats.refused_not_found += 1;
                let message = "file not found".to_owned();
                self.refuse(src, Some(filename), ErrorCode::FileNotFound, message);
                return;
            }
            Err(OpenError::AccessDenied) => {
                self.stats.refused_access_denied += 1;
                let message = "access denied".to_owned();
                self.refuse(src, Some(filename), ErrorCode::AccessViolation, message);
                return;
            }
        };
        let negotiated = negotiate(options, data.len() as u64, self.config.limits());
        let pending = Pending {
            client,
            path,
            data,
            negotiated,
            last_seen: now,
        };
        if self.transfers.len() < self.config.max_active && self.queue.len() == 0 {
            self.start(now, pending);
            return;
        }
        if self.queue.push(now, pending, &mut self.stats) {
            self.stats.queued += 1;
        } else {
            self.stats.dropped_queue_full += 1;
        }
        self.admit(now);
    }

    fn handle_transfer_datagram(
        &mut self,
        now: Instant,
        id: TransferId,
        src: SocketAddr,
        datagram: &[u8],
    ) {
        let Some(transfer) = self.transfers.get(&id) else {
            self.stats.dropped_unknown_transfer += 1;
            return;
        };
        if transfer.client() != src {
            self.stats.dropped_wrong_source += 1;
            // Never answer an ERROR (RFC 1350), or two confused endpoints
            // could bounce ERROR 5 between them forever.
            if matches!(datagram, [0, 5, ..]) {
                return;
            }
            self.outbox.normal.push_back(Outgoing {
                local: Local::Transfer(id),
                dest: src,
                packet: Packet::Error {
                    code: ErrorCode::UnknownTransferId,
                    msg: "unknown transfer ID".to_owned(),
                },
            });
            return;
        }
        match Packet::parse(datagram) {
            Ok(Packet::Ack { block }) => {
                if let Some(Step::Closed(outcome)) =
                    self.step(id, |t, out, stats| t.handle_ack(now, block, out, stats))
                {
                    self.close(now, id, outcome);
                }
            }
            Ok(Packet::Error { code, msg }) => {
                let message: String = msg.chars().take(MAX_CLIENT_MESSAGE).collect();
                let outcome = Outcome::Aborted {
                    reason: AbortReason::ClientError { code, message },
                };
                self.close(now, id, outcome);
            }
            Ok(_) => self.stats.dropped_unexpected_on_transfer += 1,
            Err(_) => self.stats.dropped_malformed += 1,
        }
    }

    /// Runs `f` on a transfer and keeps the timer table in step with its
    /// deadline.
    fn step<R>(
        &mut self,
        id: TransferId,
        f: impl FnOnce(&mut Transfer, &mut Outbox, &mut Stats) -> R,
    ) -> Option<R> {
        let transfer = self.transfers.get_mut(&id)?;
        let before = transfer.deadline();
        let result = f(transfer, &mut self.outbox, &mut self.stats);
        let after = transfer.deadline();
        if before != after {
            self.timers.remove(&(before, id));
            self.timers.insert((after, id));
        }
        Some(result)
    }

    fn start(&mut self, now: Instant, pending: Pending) {
        let id = TransferId(self.next_id);
        self.next_id += 1;
        let size = pending.data.len() as u64;
        let transfer = Transfer::start(
            id,
            pending.client,
            pending.path.clone(),
            pending.data,
            pending.negotiated,
            self.timing,
            now,
            &mut self.outbox,
            &mut self.stats,
        );
        self.timers.insert((transfer.deadline(), id));
        self.by_request
            .insert((pending.client, pending.path.clone()), id);
        self.transfers.insert(id, transfer);
        self.stats.transfers_started += 1;
        self.events.push_back(Event::Started {
            id,
            client: pending.client,
            path: pending.path,
            size,
        });
    }

    /// Ends a transfer: removes every trace of it (including packets not
    /// yet polled), emits `Closed` and admits waiting requests.
    fn close(&mut self, now: Instant, id: TransferId, outcome: Outcome) {
        let Some(transfer) = self.transfers.remove(&id) else {
            return;
        };
        self.timers.remove(&(transfer.deadline(), id));
        let summary = transfer.summary();
        self.by_request
            .remove(&(summary.client, summary.path.clone()));
        let local = Local::Transfer(id);
        self.outbox.urgent.retain(|o| o.local != local);
        self.outbox.normal.retain(|o| o.local != local);
        match outcome {
            Outcome::Completed { .. } => self.stats.transfers_completed += 1,
            Outcome::Aborted { .. } => self.stats.transfers_aborted += 1,
            Outcome::TimedOut { .. } => self.stats.transfers_timed_out += 1,
        }
        self.events.push_back(Event::Closed {
            id,
            client: summary.client,
            path: summary.path,
            outcome,
        });
        self.admit(now);
    }

    /// Starts waiting requests while slots are free.
    fn admit(&mut self, now: Instant) {
        while self.transfers.len() < self.config.max_active {
            match self.queue.pop(now, &mut self.stats) {
                Some(pending) => self.start(now, pending),
                None => break,
            }
        }
    }

    fn refuse(
        &mut self,
        client: SocketAddr,
        filename: Option<String>,
        code: ErrorCode,
        message: String,
    ) {
        self.outbox.normal.push_back(Outgoing {
            local: Local::Listener,
            dest: client,
            packet: Packet::Error {
                code,
                msg: message.clone(),
            },
        });
        self.events.push_back(Event::Refused {
            client,
            filename,
            code,
            message,
        });
    }
}
