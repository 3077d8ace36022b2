//! Blob replication between replicas.
//!
//! Image manifests travel through Raft; their blobs travel beside it, by
//! hash, over the internal `BlobPeer` service:
//!
//! - A replica pulls a blob it lacks from a peer (`BlobPeer.Fetch`), writing
//!   it through [`BlobStore::begin`], which hashes and counts every byte and
//!   keeps nothing that does not hash to its name.
//! - A push is acknowledged only once its blob is durable on a majority of
//!   the voters ([`Replicator::replicate_to_quorum`]): the receiving replica
//!   asks every other voter to pull it (`BlobPeer.Replicate`, answered once
//!   the blob is fsynced there) and waits for enough of them.
//! - Every replica repairs itself in the background
//!   ([`Replicator::spawn_repair`]): whenever the applied state changes (and
//!   every [`REPAIR_EVERY`]) it pulls the blobs of committed images it lacks,
//!   so a replica that was down while an image was pushed catches up.
//!
//! Concurrent pulls of one blob on one replica are serialized: the second
//! waits for the first and then finds the blob stored.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rackboot_proto::v1 as pb;
use rackboot_proto::v1::blob_peer_client::BlobPeerClient;
use rackboot_state::{Blake3Digest, BlobRef};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tonic::transport::Channel;

use crate::blobs::{BlobStore, Upload};
use crate::keyed_locks::KeyedLocks;
use crate::raft::Replica;

/// Longest the next chunk of a pull may take to arrive.
pub const CHUNK_IDLE: Duration = Duration::from_secs(10);
/// Base of the wait for a quorum ([`quorum_timeout`]).
pub const QUORUM_BASE: Duration = Duration::from_secs(10);
/// Replication speed the quorum wait allows for, on top of [`QUORUM_BASE`].
pub const QUORUM_BYTES_PER_SEC: u64 = 8 << 20;
/// How often the background repair looks for missing blobs even when the
/// state does not change.
pub const REPAIR_EVERY: Duration = Duration::from_secs(10);

/// How long a push waits for its blob to be durable on a quorum: 10 s plus
/// one second per 8 MiB.
pub fn quorum_timeout(size: u64) -> Duration {
    QUORUM_BASE + Duration::from_millis(size.saturating_mul(1000) / QUORUM_BYTES_PER_SEC)
}

/// This replica's view of the group, for replication.
#[derive(Debug, Clone, Default)]
pub struct Members {
    /// This replica's id.
    pub me: u64,
    /// This replica's peer address.
    pub my_address: String,
    /// Whether this replica is a voter.
    pub me_voter: bool,
    /// Number of voters (this one included, when it is one).
    pub voters: usize,
    /// Every other member: (id, address, voter).
    pub others: Vec<(u64, String, bool)>,
}

impl Members {
    /// Copies a blob needs to be acknowledged: a majority of the voters.
    pub fn quorum(&self) -> usize {
        self.voters / 2 + 1
    }
}

/// Pulls blobs from peers and pushes them to a quorum. Cheap to share.
pub struct Replicator {
    blobs: Arc<BlobStore>,
    replica: Replica,
    source: Option<IpAddr>,
    /// One pull at a time per blob.
    pulling: KeyedLocks<Blake3Digest>,
    channels: Mutex<HashMap<String, Channel>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn url(addr: &str) -> String {
    if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    }
}

impl Replicator {
    /// A replicator for this replica's store; peer connections leave from
    /// `source` when given (as Raft traffic does).
    pub fn new(blobs: Arc<BlobStore>, replica: Replica, source: Option<IpAddr>) -> Self {
        Replicator {
            blobs,
            replica,
            source,
            pulling: KeyedLocks::new(),
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The group as this replica sees it now.
    pub fn members(&self) -> Members {
        let st = self.replica.status();
        let mut m = Members {
            me: st.id,
            ..Members::default()
        };
        for (&id, member) in &st.members {
            if member.voter {
                m.voters += 1;
            }
            if id == st.id {
                m.my_address = member.address.clone();
                m.me_voter = member.voter;
            } else {
                m.others.push((id, member.address.clone(), member.voter));
            }
        }
        m
    }

    /// True when the blob is stored here (the size matches; its content was
    /// verified before it was moved into place).
    pub async fn has(&self, blob: &BlobRef) -> bool {
        self.blobs.size(&blob.digest).await == Some(blob.size)
    }

    fn client(&self, addr: &str) -> Result<BlobPeerClient<Channel>, String> {
        let url = url(addr);
        let mut channels = lock(&self.channels);
        let channel = match channels.get(&url) {
            Some(c) => c.clone(),
            None => {
                let c = rackboot_proto::tls::endpoint(&url)
                    .map_err(|e| format!("bad peer address {addr}: {e}"))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(2))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .local_address(self.source)
                    .connect_lazy();
                channels.insert(url, c.clone());
                c
            }
        };
        Ok(BlobPeerClient::new(channel))
    }

    /// Make `blob` stored here, pulling it from `hints` first and then from
    /// every other member. `Ok(true)` when it was pulled now, `Ok(false)`
    /// when it was already stored; the error names each source tried.
    pub async fn ensure_local(&self, blob: BlobRef, hints: &[String]) -> Result<bool, String> {
        if self.has(&blob).await {
            return Ok(false);
        }
        let gate = self.pulling.get_or_insert(&blob.digest);
        let result = {
            let _one = gate.lock().await;
            if self.has(&blob).await {
                Ok(false)
            } else {
                self.pull(blob, hints).await.map(|()| true)
            }
        };
        self.pulling.release(&blob.digest, gate);
        result
    }

    /// [`Replicator::ensure_local`] in a task of its own: a caller that
    /// gives up (a client deadline) does not cancel the transfer, and a retry
    /// waits for it instead of starting over.
    pub async fn ensure_local_detached(
        self: &Arc<Self>,
        blob: BlobRef,
        hints: Vec<String>,
    ) -> Result<bool, String> {
        let this = self.clone();
        tokio::spawn(async move { this.ensure_local(blob, &hints).await })
            .await
            .map_err(|e| format!("pull task: {e}"))?
    }

    async fn pull(&self, blob: BlobRef, hints: &[String]) -> Result<(), String> {
        let m = self.members();
        let mut sources: Vec<String> = Vec::new();
        for addr in hints.iter().chain(m.others.iter().map(|(_, addr, _)| addr)) {
            if !addr.is_empty() && *addr != m.my_address && !sources.contains(addr) {
                sources.push(addr.clone());
            }
        }
        if sources.is_empty() {
            return Err("no other replica to pull it from".to_string());
        }
        let started = Instant::now();
        let mut errors = Vec::new();
        for addr in &sources {
            // A fresh file per source: bytes of a source that failed are
            // never mixed with another's.
            let mut upload = self.blobs.begin(blob).await.map_err(|e| e.to_string())?;
            let pulled = match self.fetch_into(addr, &mut upload).await {
                Ok(()) => upload.finish().await.map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match pulled {
                Ok(_) => {
                    tracing::info!(
                        blob = %blob.digest,
                        size = blob.size,
                        from = %addr,
                        ms = started.elapsed().as_millis() as u64,
                        "blob pulled from a peer and verified"
                    );
                    return Ok(());
                }
                Err(e) => {
                    tracing::debug!(blob = %blob.digest, from = %addr, error = %e, "pull failed");
                    errors.push(format!("{addr}: {e}"));
                }
            }
        }
        Err(errors.join("; "))
    }

    async fn fetch_into(&self, addr: &str, upload: &mut Upload) -> Result<(), String> {
        let blob = upload.blob();
        let mut client = self.client(addr)?;
        let req = pb::FetchBlobRequest {
            blake3: blob.digest.to_string(),
            offset: 0,
            length: 0,
        };
        let mut stream = tokio::time::timeout(CHUNK_IDLE, client.fetch(req))
            .await
            .map_err(|_| format!("no answer within {CHUNK_IDLE:?}"))?
            .map_err(|s| s.message().to_string())?
            .into_inner();
        loop {
            let chunk = tokio::time::timeout(CHUNK_IDLE, stream.message())
                .await
                .map_err(|_| format!("no data for {CHUNK_IDLE:?}"))?
                .map_err(|s| s.message().to_string())?;
            let Some(chunk) = chunk else { return Ok(()) };
            if chunk.size != blob.size {
                return Err(format!(
                    "it holds {} bytes under this name, {} expected",
                    chunk.size, blob.size
                ));
            }
            if chunk.offset != upload.written() {
                return Err(format!(
                    "chunk at offset {} where {} was expected",
                    chunk.offset,
                    upload.written()
                ));
            }
            upload.write(&chunk.data).await.map_err(|e| e.to_string())?;
        }
    }

    /// Wait until `blob` (stored here) is durable on a majority of the
    /// voters, asking every other voter to pull it. `UNAVAILABLE` naming
    /// each replica's answer when that does not happen within
    /// [`quorum_timeout`]. The requests to the other voters carry on after
    /// a quorum answered (until the same deadline), so usually every
    /// replica ends up with the blob at once.
    pub async fn replicate_to_quorum(self: &Arc<Self>, blob: BlobRef) -> Result<usize, Status> {
        if !self.has(&blob).await {
            return Err(Status::failed_precondition(format!(
                "blob {} ({} bytes) is not stored on this replica",
                blob.digest, blob.size
            )));
        }
        let m = self.members();
        let need = m.quorum();
        let mut have = usize::from(m.me_voter);
        if have >= need {
            return Ok(have);
        }
        let started = Instant::now();
        let deadline = started + quorum_timeout(blob.size);
        let voters: Vec<(u64, String)> = m
            .others
            .iter()
            .filter(|(_, _, voter)| *voter)
            .map(|(id, addr, _)| (*id, addr.clone()))
            .collect();
        let (tx, mut rx) = mpsc::channel(voters.len().max(1));
        for (id, addr) in voters {
            let this = self.clone();
            let tx = tx.clone();
            let me = m.my_address.clone();
            tokio::spawn(async move {
                let r = this.ask_to_pull(&addr, blob, &me, deadline).await;
                let _ = tx.send((id, addr, r)).await;
            });
        }
        drop(tx);
        let mut errors = Vec::new();
        while have < need {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((_, _, Ok(())))) => have += 1,
                Ok(Some((id, addr, Err(e)))) => errors.push(format!("replica {id} at {addr}: {e}")),
                Ok(None) => break,
                Err(_) => {
                    errors.push(format!(
                        "the others did not answer within {:?}",
                        quorum_timeout(blob.size)
                    ));
                    break;
                }
            }
        }
        if have >= need {
            tracing::info!(
                blob = %blob.digest,
                size = blob.size,
                replicas = have,
                ms = started.elapsed().as_millis() as u64,
                "blob durable on a quorum"
            );
            return Ok(have);
        }
        Err(Status::unavailable(format!(
            "blob {} ({} bytes) is durable on {have} of {} replicas, {need} needed, so it is not acknowledged: {}",
            blob.digest,
            blob.size,
            m.voters,
            errors.join("; ")
        )))
    }

    /// Ask `addr` to pull `blob` (from `me` first), retrying until `deadline`.
    async fn ask_to_pull(
        &self,
        addr: &str,
        blob: BlobRef,
        me: &str,
        deadline: Instant,
    ) -> Result<(), String> {
        if addr.is_empty() {
            return Err("no known address".to_string());
        }
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let mut client = self.client(addr)?;
            let req = pb::ReplicateBlobRequest {
                blob: Some(pb::BlobRef {
                    blake3: blob.digest.to_string(),
                    size: blob.size,
                }),
                sources: vec![me.to_string()],
            };
            let why = match tokio::time::timeout_at(deadline, client.replicate(req)).await {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(s)) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(s.message().to_string());
                }
                Ok(Err(s)) => s.message().to_string(),
                Err(_) => return Err("no answer in time".to_string()),
            };
            let pause = Duration::from_millis(100 * u64::from(attempt.min(10)));
            if Instant::now() + pause >= deadline {
                return Err(why);
            }
            tracing::debug!(peer = %addr, blob = %blob.digest, error = %why, "replicate request failed; retrying");
            tokio::time::sleep(pause).await;
        }
    }

    /// Reclaim interrupted pushes idle past the grace period, and collect
    /// blobs no committed image names that are older than it. Collection
    /// runs only on a replica that has applied everything it knows to be
    /// committed, knows a leader, and has been up for a grace period (so a
    /// replica restarted behind the log never mistakes a blob for garbage).
    async fn collect(&self, started: Instant) {
        match self.blobs.reclaim(Instant::now().into_std()).await {
            Ok((files, bytes)) if files > 0 => {
                tracing::info!(files, bytes, "interrupted uploads reclaimed");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reclaiming interrupted uploads failed"),
        }
        let st = self.replica.status();
        if st.leader_id == 0 || st.applied < st.commit || started.elapsed() < self.blobs.grace() {
            return;
        }
        let referenced: std::collections::HashSet<Blake3Digest> = {
            let state = self.replica.state();
            state
                .images()
                .flat_map(|i| i.blobs().copied())
                .map(|b| b.digest)
                .collect()
        };
        match self
            .blobs
            .collect(referenced, Instant::now().into_std())
            .await
        {
            Ok((blobs, bytes)) if blobs > 0 => {
                tracing::info!(blobs, bytes, "unreferenced blobs collected");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "collecting unreferenced blobs failed"),
        }
    }

    /// The size of a blob some committed image names, if any.
    pub fn committed_size(&self, digest: &Blake3Digest) -> Option<u64> {
        let state = self.replica.state();
        state
            .images()
            .flat_map(|i| i.blobs().copied())
            .find(|b| b.digest == *digest)
            .map(|b| b.size)
    }

    /// Pull, in the background, the blobs of committed images that this
    /// replica lacks: after every change of the applied state (at most once
    /// a second) and every [`REPAIR_EVERY`].
    pub fn spawn_repair(self: Arc<Self>, shutdown: CancellationToken) {
        tokio::spawn(async move {
            let mut revisions = self.replica.revisions();
            let mut failing: BTreeSet<Blake3Digest> = BTreeSet::new();
            let started = Instant::now();
            loop {
                self.collect(started).await;
                let wanted: BTreeMap<Blake3Digest, BlobRef> = {
                    let state = self.replica.state();
                    state
                        .images()
                        .flat_map(|i| i.blobs().copied())
                        .map(|b| (b.digest, b))
                        .collect()
                };
                for blob in wanted.into_values() {
                    if shutdown.is_cancelled() {
                        return;
                    }
                    if self.has(&blob).await {
                        continue;
                    }
                    match self.ensure_local(blob, &[]).await {
                        Ok(_) => {
                            failing.remove(&blob.digest);
                            tracing::info!(blob = %blob.digest, size = blob.size, "missing blob of a committed image repaired");
                        }
                        Err(e) => {
                            if failing.insert(blob.digest) {
                                tracing::warn!(blob = %blob.digest, error = %e, "a committed image's blob is missing here and no peer supplied it; will retry");
                            }
                        }
                    }
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = revisions.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(REPAIR_EVERY) => {}
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quorum_and_timeout() {
        let m = Members {
            voters: 3,
            ..Members::default()
        };
        assert_eq!(m.quorum(), 2);
        let m = Members {
            voters: 1,
            ..Members::default()
        };
        assert_eq!(m.quorum(), 1);
        assert_eq!(quorum_timeout(0), QUORUM_BASE);
        assert_eq!(
            quorum_timeout(80 << 20),
            QUORUM_BASE + Duration::from_secs(10)
        );
    }
}
