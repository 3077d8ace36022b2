//! The server: listener handling, the table of transfers, timers,
//! admission, the send scheduler and the bandwidth cap.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::admission::{AdmissionQueue, Pending, Touched};
use crate::bucket::{ThrottleMeter, TokenBucket, later};
use crate::config::Config;
use crate::config::Timing;
use crate::event::{AbortReason, Event, Outcome, TransferSummary};
pub use crate::id::{Local, TransferId};
use crate::mode::{Mode, to_netascii};
use crate::options::negotiate;
use crate::packet::{ErrorCode, Packet, RawOption};
use crate::path::SafePath;
use crate::scheduler::{Outgoing, Scheduler};
use crate::snapshot::{Load, QueuedSummary, Snapshot};
use crate::source::{Content, FileSource, OpenError};
use crate::stats::Stats;
use crate::transfer::{Step, Transfer};
use crate::{MAX_FILE_SIZE, MAX_NETASCII_SIZE};

/// Longest client ERROR message kept in an [`AbortReason`], in characters.
const MAX_CLIENT_MESSAGE: usize = 255;

/// A request's signature: its path, mode and options as asked. Two
/// requests from one address and port with the same signature are one
/// request sent twice.
fn request_sig(path: &SafePath, mode: Mode, options: &[RawOption]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    path.as_str().hash(&mut h);
    mode.hash(&mut h);
    for o in options {
        o.name.hash(&mut h);
        o.value.hash(&mut h);
    }
    h.finish()
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

/// A sans-IO TFTP read-only server for one link: feed it datagrams and
/// timeouts, drain transmits and events. See the crate docs for the driving
/// loop.
///
/// The server's clock is the latest `now` it was given (it never runs
/// backwards); [`Server::poll_transmit`] sends "at" that time, so call
/// [`Server::handle_timeout`] with the current time before draining
/// transmits after a sleep.
#[derive(Debug)]
pub struct Server {
    config: Config,
    timing: Timing,
    overhead: u64,
    transfers: HashMap<TransferId, Transfer>,
    /// The live transfer of each client address and port, with the
    /// signature of the request that started it.
    by_client: HashMap<SocketAddr, (TransferId, u64)>,
    /// Transfers that replaced an exchange of their address and port whose
    /// abort may still arrive: its first ERROR is that abort's.
    after_probe: std::collections::HashSet<TransferId>,
    /// Transfers running per source address (for `max_per_source`).
    per_source: HashMap<std::net::IpAddr, usize>,
    timers: BTreeSet<(Instant, TransferId)>,
    queue: AdmissionQueue,
    sched: Scheduler,
    bucket: Option<TokenBucket>,
    meter: ThrottleMeter,
    events: VecDeque<Event>,
    stats: Stats,
    next_id: u64,
    now: Option<Instant>,
    /// Draining for shutdown: no new request is taken, and transfers still
    /// running at this deadline are aborted.
    drain_until: Option<Instant>,
}

impl Server {
    /// Creates a server. Out-of-range settings are clamped into range; call
    /// [`Config::validate`] first to report them.
    pub fn new(config: Config) -> Server {
        let config = config.normalized();
        Server {
            timing: config.timing(),
            overhead: u64::from(config.rate_limit_packet_overhead),
            transfers: HashMap::new(),
            by_client: HashMap::new(),
            after_probe: std::collections::HashSet::new(),
            per_source: HashMap::new(),
            timers: BTreeSet::new(),
            queue: AdmissionQueue::new(config.max_queue, config.queue_stale_after),
            sched: Scheduler::default(),
            bucket: config
                .rate_limit_bytes_per_sec
                .map(|rate| TokenBucket::new(rate, config.rate_limit_burst)),
            meter: ThrottleMeter::new(config.tick),
            events: VecDeque::new(),
            stats: Stats::default(),
            next_id: 1,
            now: None,
            drain_until: None,
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
        self.transfers.iter().map(|(&id, t)| {
            let mut summary = t.summary();
            summary.waiting = self.sched.priority(id);
            summary
        })
    }

    /// The load signal (O(1)); see [`Load::pressure`].
    pub fn load(&self) -> Load {
        let oldest_queued = self
            .queue
            .oldest()
            .zip(self.now)
            .map(|(first, now)| now.saturating_duration_since(first));
        let send_delay = self.send_delay();
        let throttled_fraction = self.meter.fraction();
        let deadline = self.config.queue_first_answer_deadline.as_secs_f64();
        let waited = oldest_queued.map_or(0.0, |d| {
            if deadline > 0.0 {
                (d.as_secs_f64() / deadline).min(1.0)
            } else {
                1.0
            }
        });
        Load {
            active: self.transfers.len(),
            over_cap: self.transfers.len().saturating_sub(self.config.max_active),
            queued: self.queue.len(),
            oldest_queued,
            backlog_transfers: self.sched.len(),
            backlog_retry: self.sched.retry_len(),
            backlog_packets: self.sched.packets(),
            backlog_bytes: self.sched.bytes(),
            send_delay,
            throttled: self.throttled(),
            throttled_fraction,
            admission_paused: send_delay > self.config.admission_pause_backlog,
            pressure: (0.5 * throttled_fraction + 0.5 * waited).clamp(0.0, 1.0),
        }
    }

    /// Everything, for a state dump (O(active + queued)).
    pub fn snapshot(&self) -> Snapshot {
        let mut transfers: Vec<_> = self.transfers().collect();
        transfers.sort_by_key(|t| t.id);
        let queue = self
            .queue
            .iter()
            .map(|p| QueuedSummary {
                client: p.client,
                path: p.path.clone(),
                size: p.data.len(),
                waited: self.now.map_or(Duration::ZERO, |now| {
                    now.saturating_duration_since(p.first_seen)
                }),
                repeats: p.repeats,
            })
            .collect();
        Snapshot {
            at: self.now,
            load: self.load(),
            rate_limit: self.bucket.as_ref().map(TokenBucket::rate),
            credit: self.bucket.as_ref().map(TokenBucket::credit_bytes),
            transfers,
            queue,
            stats: self.stats.clone(),
        }
    }

    /// The state dump as text: one line per transfer and waiting request,
    /// plus the load and the counters.
    pub fn dump(&self) -> String {
        self.snapshot().to_string()
    }

    /// Begins a graceful shutdown: from now on no new request is taken
    /// (counted in [`Stats::dropped_draining`]); running transfers and
    /// requests already queued run to their end, for at most `period`, after
    /// which [`Server::handle_timeout`] aborts what is left
    /// ([`AbortReason::Shutdown`]). A second call never extends the
    /// deadline.
    pub fn handle_drain(&mut self, now: Instant, period: Duration) {
        let now = self.advance(now);
        let until = now + period;
        self.drain_until = Some(self.drain_until.map_or(until, |d| d.min(until)));
    }

    /// Draining, and nothing left to finish: the shell may stop.
    pub fn is_drained(&self) -> bool {
        self.drain_until.is_some() && self.transfers.is_empty() && self.queue.len() == 0
    }

    /// Draining for shutdown (see [`Server::handle_drain`]).
    pub fn is_draining(&self) -> bool {
        self.drain_until.is_some()
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
        let now = self.advance(now);
        self.stats.datagrams_received += 1;
        match local {
            Local::Listener => self.handle_listener(now, src, datagram, files),
            Local::Transfer(id) => self.handle_transfer_datagram(now, id, src, datagram),
        }
    }

    /// Advances the clock to `now`: fires every retransmit timer due,
    /// promotes windows that waited a tick, refills the bandwidth cap and
    /// admits waiting requests that may start.
    pub fn handle_timeout(&mut self, now: Instant) {
        let now = self.advance(now);
        let due: Vec<TransferId> = self
            .timers
            .iter()
            .take_while(|(deadline, _)| *deadline <= now)
            .map(|&(_, id)| id)
            .collect();
        for id in due {
            if let Some(Step::Closed(outcome)) = self.step(now, id, |t, _| t.handle_timeout(now)) {
                self.close(now, id, outcome);
            }
        }
        if self.drain_until.is_some_and(|d| d <= now) {
            self.abort_all(now);
            return;
        }
        let promoted = self.sched.promote_aged(now, self.config.tick);
        self.stats.promoted += promoted as u64;
        self.admit(now);
    }

    /// The earliest time [`Server::handle_timeout`] must be called: a
    /// retransmit timer, the bandwidth cap having credit again for waiting
    /// packets, a waiting window reaching a tick, or a waiting request that
    /// may be admitted.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let mut next = self.timers.first().map(|&(deadline, _)| deadline);
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        if self.sched.len() > 0 {
            consider(self.bucket.as_ref().and_then(TokenBucket::ready_at));
            consider(self.sched.aging_deadline(self.config.tick));
        }
        consider(self.admission_due());
        if !self.is_drained() {
            consider(self.drain_until);
        }
        next
    }

    /// The next datagram to send: ERROR replies, then windows of transfers
    /// whose client missed data, then one window per transfer in
    /// round-robin turn. `None` when nothing waits or the bandwidth cap is
    /// used up (then [`Server::poll_timeout`] says when it has credit).
    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        if let Some(Outgoing {
            local,
            dest,
            packet,
        }) = self.sched.control.pop_front()
        {
            return Some(self.emit(local, dest, packet.encode()));
        }
        let now = self.now?;
        loop {
            let id = self.sched.first()?;
            if self.bucket.as_ref().is_some_and(|b| !b.can_send()) {
                self.stats.throttle_stalls += 1;
                return None;
            }
            let Some(dest) = self.transfers.get(&id).map(Transfer::client) else {
                self.sched.remove(id);
                continue;
            };
            match self.step(now, id, |t, stats| t.next_packet(now, stats)) {
                Some(Some(Ok(packet))) => {
                    return Some(self.emit(Local::Transfer(id), dest, packet.encode()));
                }
                Some(Some(Err(e))) => {
                    // The client hears nothing more and gives up on its
                    // own timer: no packet may name a closed transfer.
                    self.stats.read_errors += 1;
                    let reason = AbortReason::ReadFailed {
                        message: e.to_string(),
                    };
                    self.close(now, id, Outcome::Aborted { reason });
                }
                _ => self.sched.remove(id),
            }
        }
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
        if self.drain_until.is_some() {
            // Silence, not an ERROR: the client's retry reaches the next
            // server process (or the rack's other agent).
            self.stats.dropped_draining += 1;
            return;
        }
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
        // One address and port asks for one thing at a time. The same
        // request again is a retransmission; another one means the client
        // left what it had on that port (a PXE ROM that sends its size
        // probe and then the real request from one port): the new request
        // replaces it, silently, and late packets of the old exchange must
        // not disturb the new one.
        let sig = request_sig(&path, mode, options);
        let mut after_probe = false;
        if let Some(&(id, prev)) = self.by_client.get(&src) {
            if prev == sig {
                self.stats.duplicate_requests += 1;
                let stall = self.config.tick;
                let kept = self.step(now, id, |t, stats| {
                    t.handle_repeat_request(now, stall, stats)
                });
                if kept != Some(false) {
                    return;
                }
            } else {
                self.stats.requests_replaced += 1;
                // Still waiting for the ACK of its OACK: the client's abort
                // (ERROR 8 after a size probe) may come after this request.
                after_probe = self.transfers.get(&id).is_some_and(Transfer::negotiating);
            }
            self.close(
                now,
                id,
                Outcome::Aborted {
                    reason: AbortReason::Superseded,
                },
            );
        }
        match self.queue.touch(&src, sig, now) {
            Touched::Refreshed => {
                self.stats.duplicate_requests += 1;
                return;
            }
            Touched::Replaced => self.stats.requests_replaced += 1,
            Touched::Absent => {}
        }
        let cap = self.config.max_per_source;
        if cap > 0 && self.per_source.get(&src.ip()).copied().unwrap_or(0) >= cap {
            self.stats.dropped_per_source += 1;
            return;
        }
        let client = src;
        let data = match files.open(&path, client) {
            Ok(data) if data.len() > MAX_FILE_SIZE => {
                self.stats.refused_too_large += 1;
                let message = format!(
                    "file too large for TFTP: {} bytes (at most {MAX_FILE_SIZE}); fetch it over HTTP",
                    data.len()
                );
                self.refuse(src, Some(filename), ErrorCode::DiskFull, message);
                return;
            }
            Ok(data) if mode == Mode::Netascii => match data.read_all(MAX_NETASCII_SIZE) {
                Ok(all) => Content::from(to_netascii(&all)),
                Err(e) => {
                    self.stats.refused_too_large += 1;
                    let message = format!("netascii: {e}; ask in octet mode");
                    self.refuse(src, Some(filename), ErrorCode::DiskFull, message);
                    return;
                }
            },
            Ok(data) => data,
            Err(OpenError::NotFound) => {
                self.stats.refused_not_found += 1;
                let message = "file not found".to_owned();
                self.refuse(src, Some(filename), ErrorCode::FileNotFound, message);
                return;
            }
            Err(OpenError::NotReady) => {
                self.stats.dropped_not_ready += 1;
                return;
            }
            Err(OpenError::AccessDenied) => {
                self.stats.refused_access_denied += 1;
                let message = "access denied".to_owned();
                self.refuse(src, Some(filename), ErrorCode::AccessViolation, message);
                return;
            }
        };
        let negotiated = negotiate(options, data.len(), self.config.limits());
        let pending = Pending {
            client,
            path,
            sig,
            after_probe,
            data,
            negotiated,
            first_seen: now,
            last_seen: now,
            repeats: 0,
        };
        if self.queue.len() == 0 && self.can_admit() {
            self.start(now, pending, false);
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
            self.sched.control.push_back(Outgoing {
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
                    self.step(now, id, |t, stats| t.handle_ack(now, block, stats))
                {
                    self.close(now, id, outcome);
                }
            }
            Ok(Packet::Error { .. }) if self.after_probe.remove(&id) => {
                // The abort of the exchange this transfer replaced, late.
                self.stats.dropped_stale_error += 1;
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

    /// Moves the clock forward (never back), accounting the time the
    /// bandwidth cap held packets back and refilling it.
    fn advance(&mut self, now: Instant) -> Instant {
        let now = self.now.map_or(now, |prev| prev.max(now));
        if let Some(prev) = self.now {
            let busy = match &self.bucket {
                Some(bucket) if self.sched.len() > 0 => {
                    bucket.ready_at().map_or(Duration::ZERO, |t| {
                        t.min(now).saturating_duration_since(prev)
                    })
                }
                _ => Duration::ZERO,
            };
            self.meter.record(now.saturating_duration_since(prev), busy);
        }
        if let Some(bucket) = &mut self.bucket {
            bucket.refill(now);
        }
        self.now = Some(now);
        now
    }

    /// Whether the cap is holding waiting packets back.
    fn throttled(&self) -> bool {
        self.sched.len() > 0 && self.bucket.as_ref().is_some_and(|b| !b.can_send())
    }

    /// How long the packets waiting take to send at the cap.
    fn send_delay(&self) -> Duration {
        self.bucket
            .as_ref()
            .map_or(Duration::ZERO, |b| b.delay_for(self.sched.bytes()))
    }

    /// Whether a request may start now without the first-answer deadline:
    /// a slot is free and the backlog is not over the pause threshold.
    fn can_admit(&self) -> bool {
        self.transfers.len() < self.config.max_active
            && self.send_delay() <= self.config.admission_pause_backlog
    }

    /// When [`Server::admit`] could start a waiting request.
    fn admission_due(&self) -> Option<Instant> {
        let oldest = self.queue.oldest()?;
        if self.can_admit() {
            return self.now;
        }
        let ceiling = self
            .config
            .max_active
            .saturating_add(self.config.max_overflow);
        (self.transfers.len() < ceiling)
            .then(|| later(oldest, self.config.queue_first_answer_deadline))
    }

    /// Sends a packet: counts it and charges the bandwidth cap.
    fn emit(&mut self, local: Local, dest: SocketAddr, payload: Bytes) -> Transmit {
        self.stats.datagrams_sent += 1;
        self.stats.bytes_sent += payload.len() as u64;
        if let Some(bucket) = &mut self.bucket {
            bucket.consume((payload.len() as u64).saturating_add(self.overhead));
        }
        Transmit {
            local,
            dest,
            payload,
        }
    }

    /// Runs `f` on a transfer and keeps the timer table and the scheduler
    /// in step with it.
    fn step<R>(
        &mut self,
        now: Instant,
        id: TransferId,
        f: impl FnOnce(&mut Transfer, &mut Stats) -> R,
    ) -> Option<R> {
        let transfer = self.transfers.get_mut(&id)?;
        let before = transfer.deadline();
        let result = f(transfer, &mut self.stats);
        let after = transfer.deadline();
        let want = transfer.want(self.overhead);
        if before != after {
            if let Some(before) = before {
                self.timers.remove(&(before, id));
            }
            if let Some(after) = after {
                self.timers.insert((after, id));
            }
        }
        if self.sched.update(id, want, now) {
            self.stats.promoted += 1;
        }
        Some(result)
    }

    /// Starts a transfer; `urgent` puts its first packet in the retry class.
    fn start(&mut self, now: Instant, pending: Pending, urgent: bool) {
        let id = TransferId::new(self.next_id);
        self.next_id += 1;
        let size = pending.data.len();
        let transfer = Transfer::start(
            id,
            pending.client,
            pending.path.clone(),
            pending.data,
            pending.negotiated,
            self.timing,
            now,
            urgent,
        );
        self.sched.update(id, transfer.want(self.overhead), now);
        self.by_client.insert(pending.client, (id, pending.sig));
        if pending.after_probe {
            self.after_probe.insert(id);
        }
        self.transfers.insert(id, transfer);
        *self.per_source.entry(pending.client.ip()).or_insert(0) += 1;
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
        let ip = transfer.client().ip();
        if let Some(n) = self.per_source.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_source.remove(&ip);
            }
        }
        if let Some(deadline) = transfer.deadline() {
            self.timers.remove(&(deadline, id));
        }
        self.sched.remove(id);
        let summary = transfer.summary();
        if self
            .by_client
            .get(&summary.client)
            .is_some_and(|&(live, _)| live == id)
        {
            self.by_client.remove(&summary.client);
        }
        self.after_probe.remove(&id);
        let local = Local::Transfer(id);
        self.sched.control.retain(|o| o.local != local);
        match &outcome {
            Outcome::Completed { .. } => self.stats.transfers_completed += 1,
            Outcome::Aborted { reason } => {
                self.stats.transfers_aborted += 1;
                if matches!(
                    reason,
                    AbortReason::ClientError {
                        code: ErrorCode::OptionRefused,
                        ..
                    }
                ) {
                    self.stats.transfers_option_refused += 1;
                }
            }
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

    /// The drain period ran out: abort every transfer and forget every
    /// queued request.
    fn abort_all(&mut self, now: Instant) {
        while self.queue.pop(now, &mut self.stats).is_some() {
            self.stats.dropped_draining += 1;
        }
        let ids: Vec<TransferId> = self.transfers.keys().copied().collect();
        for id in ids {
            self.close(
                now,
                id,
                Outcome::Aborted {
                    reason: AbortReason::Shutdown,
                },
            );
        }
    }

    /// Starts waiting requests, first come first served: while a slot is
    /// free and admission is not paused; then, over the cap up to
    /// `max_overflow`, those that waited the first-answer deadline.
    fn admit(&mut self, now: Instant) {
        let ceiling = self
            .config
            .max_active
            .saturating_add(self.config.max_overflow);
        loop {
            if self.can_admit() {
                match self.queue.pop(now, &mut self.stats) {
                    Some(pending) => {
                        let urgent = pending.repeats > 0;
                        self.start(now, pending, urgent);
                        continue;
                    }
                    None => break,
                }
            }
            if self.transfers.len() >= ceiling {
                break;
            }
            let deadline = self.config.queue_first_answer_deadline;
            match self.queue.pop_due(now, deadline, &mut self.stats) {
                Some(pending) => {
                    if self.transfers.len() >= self.config.max_active {
                        self.stats.admitted_over_cap += 1;
                    }
                    self.start(now, pending, true);
                }
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
        self.sched.control.push_back(Outgoing {
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
