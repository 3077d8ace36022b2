//! Blob replication between replicas (`BlobPeer`), and the stream of a
//! locally stored blob that it shares with `AgentService/FetchBlob`.

use std::sync::Arc;

use rackboot_proto::v1 as pb;
use rackboot_state::Blake3Digest;
use tokio::io::{AsyncReadExt, AsyncSeekExt};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::admin::BoxStream;
use super::convert::{blob_from_pb, field};
use crate::blobs::BlobStore;

/// Size of a `FetchBlob` chunk.
pub const FETCH_CHUNK: usize = 1 << 20;

/// Stream a blob stored on this replica from `offset`. A whole read
/// (offset 0) is hashed on the way and ends with `DATA_LOSS` when the stored
/// bytes no longer hash to their name; the receiver verifies too.
pub async fn local_blob_stream(
    blobs: &Arc<BlobStore>,
    digest: Blake3Digest,
    offset: u64,
) -> Result<BoxStream<pb::BlobChunk>, Status> {
    let path = blobs.path(&digest);
    let mut file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| Status::not_found(format!("blob {digest} not found")))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| Status::internal(format!("blob {digest}: {e}")))?
        .len();
    if offset > size {
        return Err(Status::out_of_range(format!(
            "offset {offset} beyond blob size {size}"
        )));
    }
    let (tx, rx) = mpsc::channel(4);
    let store = blobs.clone();
    tokio::spawn(async move {
        let mut hasher = (offset == 0).then(blake3::Hasher::new);
        if offset > 0 && file.seek(std::io::SeekFrom::Start(offset)).await.is_err() {
            let _ = tx.send(Err(Status::internal("seek failed"))).await;
            return;
        }
        let mut pos = offset;
        loop {
            let mut buf = vec![0u8; FETCH_CHUNK];
            let n = match file.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let _ = tx
                        .send(Err(Status::internal(format!("blob {digest}: {e}"))))
                        .await;
                    return;
                }
            };
            if n == 0 {
                break;
            }
            buf.truncate(n);
            if let Some(h) = hasher.as_mut() {
                h.update(&buf);
            }
            let chunk = pb::BlobChunk {
                offset: pos,
                data: buf,
                size,
            };
            pos += n as u64;
            if tx.send(Ok(chunk)).await.is_err() {
                return;
            }
        }
        if let Some(h) = hasher
            && Blake3Digest::from(h.finalize()) != digest
        {
            tracing::error!(blob = %digest, "stored blob fails verification");
            // Hashed again on its own: a file replaced meanwhile by a good
            // copy is kept; a bad one is removed and pulled again on the next
            // request (or by the background repair).
            let _ = store.verify_or_remove(&digest).await;
            let _ = tx
                .send(Err(Status::data_loss(format!(
                    "blob {digest} fails verification on the coordinator"
                ))))
                .await;
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
            local_blob_stream(&self.0.blobs, digest, r.offset).await?,
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
