//! Blob replication between replicas (`BlobPeer`), and the stream of a
//! locally stored blob that it shares with `AgentService/FetchBlob`.

use std::sync::Arc;

use rackboot_image::outboard::GROUP;
use rackboot_proto::v1 as pb;
use rackboot_state::Blake3Digest;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::admin::BoxStream;
use super::convert::{blob_from_pb, field};
use crate::blobs::{BlobStore, GroupReadError};

/// Stream `length` bytes (0 = to the end) of a blob stored on this replica
/// from `offset`. The first message carries the blob's outboard; every 1 MiB
/// group is verified against it as it is read, before any of its bytes are
/// sent. A group that fails ends the stream with `DATA_LOSS`, and the blob is
/// hashed again on its own: a bad file is removed and pulled again from a
/// peer (on the next request or by the background repair).
pub async fn local_blob_stream(
    blobs: &Arc<BlobStore>,
    digest: Blake3Digest,
    offset: u64,
    length: u64,
) -> Result<BoxStream<pb::BlobChunk>, Status> {
    let groups = match blobs.open_verified_groups(&digest).await {
        Ok(g) => g,
        Err(crate::blobs::BlobError::NotFound(_)) => {
            return Err(Status::not_found(format!("blob {digest} not found")));
        }
        Err(e) => return Err(Status::internal(e.to_string())),
    };
    let size = groups.outboard().size();
    if offset > size {
        return Err(Status::out_of_range(format!(
            "offset {offset} beyond blob size {size}"
        )));
    }
    let end = if length == 0 {
        size
    } else {
        offset.saturating_add(length).min(size)
    };
    let (tx, rx) = mpsc::channel(4);
    let store = blobs.clone();
    tokio::spawn(async move {
        let first_group = offset / GROUP;
        let mut ob_bytes = Some(groups.outboard().to_bytes());
        let mut index = first_group;
        let mut pos = offset;
        while let Some((goff, glen)) = rackboot_image::outboard::group_range(size, index) {
            if goff >= end && !(size == 0 && ob_bytes.is_some()) {
                break;
            }
            let buf = match groups.read(index, goff, glen).await {
                Ok(buf) => buf,
                Err(GroupReadError::Read(e)) => {
                    let _ = tx
                        .send(Err(Status::data_loss(format!("blob {digest}: {e}"))))
                        .await;
                    let _ = store.verify_or_remove(&digest).await;
                    return;
                }
                Err(GroupReadError::Verify) => {
                    tracing::error!(blob = %digest, group = index, "stored blob fails verification");
                    let _ = store.verify_or_remove(&digest).await;
                    let _ = tx
                        .send(Err(Status::data_loss(format!(
                            "blob {digest} fails verification on the coordinator (bytes {goff}..{})",
                            goff + glen
                        ))))
                        .await;
                    return;
                }
            };
            let from = usize::try_from(pos - goff).unwrap_or(0);
            let to = usize::try_from(end.min(goff + glen) - goff).unwrap_or(0);
            let data = buf.get(from..to).unwrap_or_default().to_vec();
            let n = data.len() as u64;
            let chunk = pb::BlobChunk {
                offset: pos,
                data,
                size,
                outboard: ob_bytes.take().unwrap_or_default(),
            };
            pos += n;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
            index += 1;
        }
    });
    Ok(Box::pin(ReceiverStream::new(rx)))
}

/// `BlobPeer`.
pub struct BlobPeerApi(pub Ctx);

#[tonic::async_trait]
impl pb::blob_peer_server::BlobPeer for BlobPeerApi {
    type FetchStream = BoxStream<pb::BlobChunk>;

    async fn fetch(
        &self,
        req: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchStream>, Status> {
        let r = req.into_inner();
        let digest: Blake3Digest = field("blake3", &r.blake3)?;
        Ok(Response::new(
            local_blob_stream(&self.0.blobs, digest, r.offset, r.length).await?,
        ))
    }

    async fn replicate(
        &self,
        req: Request<pb::ReplicateBlobRequest>,
    ) -> Result<Response<pb::ReplicateBlobResponse>, Status> {
        let r = req.into_inner();
        let blob = blob_from_pb("blob", r.blob.as_ref())?;
        // A caller that gives up (or retries) does not cancel the pull.
        match self.0.repl.ensure_local_detached(blob, r.sources).await {
            Ok(fetched) => Ok(Response::new(pb::ReplicateBlobResponse { fetched })),
            Err(e) => Err(Status::unavailable(format!(
                "blob {} could not be pulled: {e}",
                blob.digest
            ))),
        }
    }
}
