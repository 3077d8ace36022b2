//! Shipping node logs and boot sessions to the coordinator, in batches, with
//! backpressure: one batch in flight, acknowledged by sequence number. While
//! the coordinator is away lines wait in a bounded buffer; when it is full the
//! oldest are dropped and the count is reported with the next batch.

use std::collections::VecDeque;
use std::time::Duration;

use rackboot_proto::v1 as pb;
use rackboot_proto::v1::agent_service_client::AgentServiceClient;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;

use crate::sessions::BootSession;
use crate::syslog::TaggedLine;

/// Lines kept while the coordinator is away.
pub const BUFFER_LINES: usize = 200_000;
/// Lines per batch.
pub const BATCH_LINES: usize = 512;

/// Run until `shutdown`.
pub async fn run(
    coordinators: Vec<String>,
    rack: String,
    lines: mpsc::Receiver<TaggedLine>,
    sessions: mpsc::Receiver<BootSession>,
    shutdown: CancellationToken,
) {
    let mut buf: VecDeque<TaggedLine> = VecDeque::new();
    let mut pending_sessions: Vec<BootSession> = Vec::new();
    let mut dropped: u64 = 0;
    let mut seq: u64 = 0;
    let mut which = 0usize;
    let mut backoff = Duration::from_millis(200);
    // A closed channel (e.g. syslog disabled) is simply not read again:
    // `recv()` on it would return at once, for ever.
    let mut lines = Some(lines);
    let mut sessions = Some(sessions);
    loop {
        // Collect what arrived.
        tokio::select! {
            _ = shutdown.cancelled() => return,
            l = recv(&mut lines) => match l {
                Some(l) => push(&mut buf, l, &mut dropped),
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
                push(&mut buf, l, &mut dropped);
            }
        }
        if let Some(rx) = sessions.as_mut() {
            while let Ok(s) = rx.try_recv() {
                add_session(&mut pending_sessions, s);
            }
        }
        if buf.is_empty() && pending_sessions.is_empty() && dropped == 0 {
            continue;
        }
        let url = coordinators
            .get(which % coordinators.len().max(1))
            .cloned()
            .unwrap_or_default();
        let ok = ship(
            &url,
            &rack,
            &mut buf,
            &mut pending_sessions,
            &mut dropped,
            &mut seq,
        )
        .await;
        if let Err(e) = ok {
            tracing::debug!(coordinator = %url, error = %e, buffered = buf.len(), "log shipping paused");
            which += 1;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        } else {
            backoff = Duration::from_millis(200);
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

fn push(buf: &mut VecDeque<TaggedLine>, l: TaggedLine, dropped: &mut u64) {
    if buf.len() >= BUFFER_LINES {
        buf.pop_front();
        *dropped += 1;
    }
    buf.push_back(l);
}

async fn ship(
    url: &str,
    rack: &str,
    buf: &mut VecDeque<TaggedLine>,
    sessions: &mut Vec<BootSession>,
    dropped: &mut u64,
    seq: &mut u64,
) -> Result<(), tonic::Status> {
    let channel = crate::sync::connect(url)
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
                phases: s.phases.iter().map(|(k, v)| (k.clone(), *v)).collect(),
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
    if buf.is_empty() && *dropped == 0 {
        return Ok(());
    }
    let (tx, rx) = mpsc::channel(2);
    let mut acks = client
        .ship_logs(ReceiverStream::new(rx))
        .await?
        .into_inner();
    while !buf.is_empty() || *dropped > 0 {
        *seq += 1;
        let n = buf.len().min(BATCH_LINES);
        let batch = pb::LogBatch {
            rack: rack.to_string(),
            sequence: *seq,
            lines: buf
                .iter()
                .take(n)
                .map(|l| pb::LogLine {
                    node: l.node,
                    boot_session: l.boot_session.clone(),
                    unix_millis: l.unix_millis,
                    text: l.text.clone(),
                })
                .collect(),
            dropped: *dropped,
        };
        tx.send(batch)
            .await
            .map_err(|_| tonic::Status::unavailable("log stream closed"))?;
        match acks.message().await? {
            Some(ack) if ack.sequence == *seq => {
                buf.drain(..n);
                *dropped = 0;
            }
            Some(ack) => {
                return Err(tonic::Status::internal(format!(
                    "log ack for batch {} while {} was in flight",
                    ack.sequence, seq
                )));
            }
            None => return Err(tonic::Status::unavailable("log stream ended")),
        }
    }
    Ok(())
}
