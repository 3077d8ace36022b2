//! Shipping node logs and boot sessions to the coordinator, in batches, with
//! backpressure: one batch in flight, acknowledged by sequence number. While
//! the coordinator is away lines wait in memory up to [`MEMORY_LINES`], then
//! in the bounded on-disk [`Spool`] (oldest shipped first, kept across
//! restarts); when that is full the oldest are dropped and the count is
//! reported with the next batch.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rackboot_proto::v1 as pb;
use rackboot_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::store::logspool::{Spool, to_pb};
use rackboot_agent_domain::retry::Backoff;
use rackboot_agent_domain::syslog::TaggedLine;
use rackboot_agent_domain::timeline::BootSession;

/// Lines kept in memory with no spool (or when the spool cannot be written).
pub const BUFFER_LINES: usize = 200_000;
/// Lines kept in memory before spilling to the spool.
pub const MEMORY_LINES: usize = 8192;
/// Lines per batch.
pub const BATCH_LINES: usize = 512;

/// What waits to be shipped, and what was (for metrics).
#[derive(Debug, Default)]
pub struct LogShipStats {
    /// Lines waiting in memory.
    pub memory_lines: AtomicU64,
    /// Lines waiting in the on-disk spool.
    pub spool_lines: AtomicU64,
    /// Bytes of the on-disk spool.
    pub spool_bytes: AtomicU64,
    /// Lines the coordinator acknowledged.
    pub shipped_lines: AtomicU64,
}

impl LogShipStats {
    fn publish(&self, buf: &VecDeque<TaggedLine>, spool: &Option<Spool>) {
        self.memory_lines.store(buf.len() as u64, Ordering::Relaxed);
        let (lines, bytes) = spool.as_ref().map_or((0, 0), |s| (s.lines(), s.bytes()));
        self.spool_lines.store(lines, Ordering::Relaxed);
        self.spool_bytes.store(bytes, Ordering::Relaxed);
    }
}

/// Run until `shutdown`.
pub async fn run(
    coordinators: Vec<String>,
    rack: String,
    lines: mpsc::Receiver<TaggedLine>,
    sessions: mpsc::Receiver<BootSession>,
    mut spool: Option<Spool>,
    stats: std::sync::Arc<LogShipStats>,
    shutdown: CancellationToken,
) {
    let mut buf: VecDeque<TaggedLine> = VecDeque::new();
    let mut pending_sessions: Vec<BootSession> = Vec::new();
    let mut dropped: u64 = 0;
    let mut seq: u64 = 0;
    let mut backoff = Backoff::default();
    // A closed channel (e.g. syslog disabled) is simply not read again:
    // `recv()` on it would return at once, for ever.
    let mut lines = Some(lines);
    let mut sessions = Some(sessions);
    loop {
        stats.publish(&buf, &spool);
        // Collect what arrived.
        tokio::select! {
            _ = shutdown.cancelled() => return persist(&mut buf, &mut spool).await,
            l = recv(&mut lines) => match l {
                Some(l) => push(&mut buf, l, &mut dropped, &mut spool).await,
                None => lines = None,
            },
            s = recv(&mut sessions) => match s {
                Some(s) => add_session(&mut pending_sessions, s),
                None => sessions = None,
            },
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
        if let Some(rx) = lines.as_mut() {
            while let Ok(l) = rx.try_recv() {
                push(&mut buf, l, &mut dropped, &mut spool).await;
            }
        }
        if let Some(rx) = sessions.as_mut() {
            while let Ok(s) = rx.try_recv() {
                add_session(&mut pending_sessions, s);
            }
        }
        let spooled = spool
            .as_ref()
            .is_some_and(|s| !s.is_empty() || s.dropped > 0);
        if buf.is_empty() && pending_sessions.is_empty() && dropped == 0 && !spooled {
            continue;
        }
        let url = coordinators
            .get(backoff.which(coordinators.len()))
            .cloned()
            .unwrap_or_default();
        let ok = ship(
            &url,
            &rack,
            &mut buf,
            &mut spool,
            &mut pending_sessions,
            &mut dropped,
            &mut seq,
            &stats,
        )
        .await;
        if let Err(e) = ok {
            tracing::debug!(coordinator = %url, error = %e, buffered = buf.len(), "log shipping paused");
            let at = backoff.failed(tokio::time::Instant::now().into_std());
            tokio::select! {
                _ = shutdown.cancelled() => return persist(&mut buf, &mut spool).await,
                _ = tokio::time::sleep_until(at.into()) => {}
            }
        } else {
            backoff.succeeded();
        }
    }
}

/// Receive from a channel that may be gone (then wait for ever).
async fn recv<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(r) => r.recv().await,
        None => std::future::pending().await,
    }
}

/// Queue a session report; a newer report of the same session replaces the
/// older (it holds every phase the older one had).
fn add_session(pending: &mut Vec<BootSession>, s: BootSession) {
    match pending.iter_mut().find(|p| p.id == s.id) {
        Some(p) => *p = s,
        None => pending.push(s),
    }
}

/// Run `f` on the spool on a blocking thread (the spool writes, fsyncs,
/// reads and deletes files). `None` without a spool; a spool whose closure
/// panicked is given up (lines then wait in memory only).
async fn on_spool<R: Send + 'static>(
    spool: &mut Option<Spool>,
    f: impl FnOnce(&mut Spool) -> R + Send + 'static,
) -> Option<R> {
    let mut sp = spool.take()?;
    match tokio::task::spawn_blocking(move || {
        let r = f(&mut sp);
        (sp, r)
    })
    .await
    {
        Ok((sp, r)) => {
            *spool = Some(sp);
            Some(r)
        }
        Err(e) => {
            tracing::error!(error = %e, "log spool task failed; node logs now wait in memory only");
            None
        }
    }
}

async fn push(
    buf: &mut VecDeque<TaggedLine>,
    l: TaggedLine,
    dropped: &mut u64,
    spool: &mut Option<Spool>,
) {
    buf.push_back(l);
    if spool.is_some() && buf.len() > MEMORY_LINES {
        // The oldest lines in memory are newer than everything spooled.
        let n = BATCH_LINES.min(buf.len());
        let batch: Vec<TaggedLine> = buf.iter().take(n).cloned().collect();
        match on_spool(spool, move |sp| sp.push(&batch)).await {
            Some(Ok(())) => {
                buf.drain(..n);
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "log spool write failed; keeping lines in memory")
            }
            None => {}
        }
    }
    if buf.len() > BUFFER_LINES {
        buf.pop_front();
        *dropped += 1;
    }
}

/// On shutdown: what is still in memory goes to the spool, to be shipped
/// by the next run.
async fn persist(buf: &mut VecDeque<TaggedLine>, spool: &mut Option<Spool>) {
    if spool.is_none() {
        return;
    }
    let lines: Vec<TaggedLine> = buf.drain(..).collect();
    let n = lines.len();
    let written = on_spool(spool, move |sp| {
        lines
            .chunks(BATCH_LINES)
            .try_for_each(|chunk| sp.push(chunk))
    })
    .await;
    match written {
        Some(Err(e)) => {
            tracing::warn!(error = %e, lines = n, "log spool write failed at shutdown; unshipped lines lost")
        }
        Some(Ok(())) if n > 0 => {
            tracing::info!(
                lines = n,
                "unshipped node log lines kept in the spool for the next run"
            );
        }
        _ => {}
    }
}

/// Send one batch on the log stream and wait for its acknowledgement.
async fn send_batch(
    tx: &mpsc::Sender<pb::LogBatch>,
    acks: &mut tonic::Streaming<pb::LogAck>,
    rack: &str,
    seq: &mut u64,
    lines: Vec<pb::LogLine>,
    dropped: u64,
    stats: &LogShipStats,
) -> Result<(), tonic::Status> {
    let n = lines.len() as u64;
    *seq += 1;
    let batch = pb::LogBatch {
        rack: rack.to_string(),
        sequence: *seq,
        lines,
        dropped,
    };
    tx.send(batch)
        .await
        .map_err(|_| tonic::Status::unavailable("log stream closed"))?;
    match acks.message().await? {
        Some(ack) if ack.sequence == *seq => {
            stats.shipped_lines.fetch_add(n, Ordering::Relaxed);
            Ok(())
        }
        Some(ack) => Err(tonic::Status::internal(format!(
            "log ack for batch {} while {} was in flight",
            ack.sequence, seq
        ))),
        None => Err(tonic::Status::unavailable("log stream ended")),
    }
}

#[allow(clippy::too_many_arguments)]
async fn ship(
    url: &str,
    rack: &str,
    buf: &mut VecDeque<TaggedLine>,
    spool: &mut Option<Spool>,
    sessions: &mut Vec<BootSession>,
    dropped: &mut u64,
    seq: &mut u64,
    stats: &LogShipStats,
) -> Result<(), tonic::Status> {
    let channel = crate::upstream::channel::connect(url)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut client = AgentServiceClient::new(channel);
    if !sessions.is_empty() {
        let events = sessions
            .iter()
            .map(|s| pb::BootEvent {
                node: s.node,
                mac: s.mac.clone(),
                image: s.image.clone(),
                kernel_blake3: s.kernel_blake3.clone(),
                kernel_version: s.kernel_version.clone(),
                transport: s.transport.to_string(),
                unix_millis: s.unix_millis,
                session_id: s.id.clone(),
                phases: s
                    .phases
                    .iter()
                    .map(|(k, v)| (k.name().to_string(), *v))
                    .collect(),
            })
            .collect();
        client
            .report_boot_events(pb::ReportBootEventsRequest {
                rack: rack.to_string(),
                events,
            })
            .await?;
        sessions.clear();
    }
    let spooled = spool
        .as_ref()
        .is_some_and(|s| !s.is_empty() || s.dropped > 0);
    if buf.is_empty() && *dropped == 0 && !spooled {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(2);
    let mut acks = client
        .ship_logs(ReceiverStream::new(rx))
        .await?
        .into_inner();
    // Spooled lines first: they are the oldest.
    while let Some(Some(lines)) = on_spool(spool, Spool::oldest).await {
        let lines = lines.iter().map(to_pb).collect();
        let spool_dropped = spool.as_ref().map_or(0, |sp| sp.dropped);
        send_batch(
            &tx,
            &mut acks,
            rack,
            seq,
            lines,
            *dropped + spool_dropped,
            stats,
        )
        .await?;
        on_spool(spool, Spool::ack_oldest).await;
        *dropped = 0;
        if let Some(sp) = spool.as_mut() {
            sp.dropped = 0;
        }
    }
    if let Some(sp) = spool.as_mut()
        && sp.dropped > 0
    {
        *dropped += sp.dropped;
        sp.dropped = 0;
    }
    while !buf.is_empty() || *dropped > 0 {
        let n = buf.len().min(BATCH_LINES);
        let lines = buf.iter().take(n).map(to_pb).collect();
        send_batch(&tx, &mut acks, rack, seq, lines, *dropped, stats).await?;
        buf.drain(..n);
        *dropped = 0;
    }
    Ok(())
}

impl rackboot_metrics::Component for LogShipStats {
    fn encode(&self, e: &mut prometheus_client::encoding::DescriptorEncoder) -> std::fmt::Result {
        use rackboot_metrics::{counter, gauge};
        use std::sync::atomic::Ordering::Relaxed;
        let l = self;
        gauge(
            e,
            "rackboot_agent_log_memory_lines",
            "Node log lines waiting in memory to be shipped",
            l.memory_lines.load(Relaxed),
        )?;
        gauge(
            e,
            "rackboot_agent_log_spool_lines",
            "Node log lines waiting in the on-disk spool",
            l.spool_lines.load(Relaxed),
        )?;
        gauge(
            e,
            "rackboot_agent_log_spool_bytes",
            "Bytes of the on-disk log spool",
            l.spool_bytes.load(Relaxed),
        )?;
        counter(
            e,
            "rackboot_agent_log_shipped_lines",
            "Node log lines the coordinator acknowledged",
            l.shipped_lines.load(Relaxed),
        )
    }
}
