//! Receives Raft messages from peer replicas.

use protobuf::Message as PbMessage;
use rackboot_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::Ctx;
use super::convert::replica_error;

/// `RaftPeer`.
pub struct RaftPeerApi(pub Ctx);

#[tonic::async_trait]
impl pb::raft_peer_server::RaftPeer for RaftPeerApi {
    async fn send(&self, req: Request<pb::RaftEnvelope>) -> Result<Response<pb::RaftAck>, Status> {
        let msg = raft::prelude::Message::parse_from_bytes(&req.into_inner().message)
            .map_err(|e| Status::invalid_argument(format!("message: not a raft message: {e}")))?;
        self.0.replica.step(msg).await.map_err(replica_error)?;
        Ok(Response::new(pb::RaftAck {}))
    }
}
