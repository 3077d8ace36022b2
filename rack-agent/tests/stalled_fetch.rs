//! A coordinator that answers a blob fetch and then sends nothing (a
//! stalled stream, a peer gone silent behind a live TCP connection): the
//! agent's cache gives up after its idle limit with a clear error instead
//! of waiting for ever, and the next fetch goes ahead. A real gRPC server
//! on a loopback socket, misbehaving on purpose.
#![allow(clippy::unwrap_used)]

use std::pin::Pin;
use std::time::{Duration, Instant};

use rackboot_agent::store::cache::{BlobCache, CacheError};
use rackboot_proto::v1 as pb;
use rackboot_proto::v1::agent_service_client::AgentServiceClient;
use rackboot_proto::v1::agent_service_server::{AgentService, AgentServiceServer};
use rackboot_state::{Blake3Digest, BlobRef};
use tokio_stream::Stream;
use tonic::{Request, Response, Status, Streaming};

type Boxed<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Answers FetchBlob with a stream that never yields; everything else is
/// unimplemented.
struct Silent;

#[tonic::async_trait]
impl AgentService for Silent {
    async fn register(
        &self,
        _: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }
    type WatchRackStream = Boxed<pb::RackState>;
    async fn watch_rack(
        &self,
        _: Request<pb::WatchRackRequest>,
    ) -> Result<Response<Self::WatchRackStream>, Status> {
        Err(Status::unimplemented("test server"))
    }
    type FetchBlobStream = Boxed<pb::BlobChunk>;
    async fn fetch_blob(
        &self,
        _: Request<pb::FetchBlobRequest>,
    ) -> Result<Response<Self::FetchBlobStream>, Status> {
        Ok(Response::new(Box::pin(tokio_stream::pending())))
    }
    async fn discover_node(
        &self,
        _: Request<pb::DiscoverNodeRequest>,
    ) -> Result<Response<pb::Node>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn report_boot_events(
        &self,
        _: Request<pb::ReportBootEventsRequest>,
    ) -> Result<Response<pb::ReportBootEventsResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }
    type ShipLogsStream = Boxed<pb::LogAck>;
    async fn ship_logs(
        &self,
        _: Request<Streaming<pb::LogBatch>>,
    ) -> Result<Response<Self::ShipLogsStream>, Status> {
        Err(Status::unimplemented("test server"))
    }
    async fn report_cache(
        &self,
        _: Request<pb::ReportCacheRequest>,
    ) -> Result<Response<pb::ReportCacheResponse>, Status> {
        Err(Status::unimplemented("test server"))
    }
}

#[tokio::test]
async fn a_stalled_blob_stream_is_given_up_and_the_next_fetch_proceeds() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(AgentServiceServer::new(Silent))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = AgentServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let idle = Duration::from_millis(500);
    let cache = BlobCache::open(dir.path()).unwrap().with_fetch_idle(idle);
    for name in [b"first".as_slice(), b"second"] {
        let blob = BlobRef {
            digest: Blake3Digest::of(name),
            size: 3 << 20,
        };
        let t = Instant::now();
        let r = tokio::time::timeout(Duration::from_secs(10), cache.ensure(&mut client, &blob))
            .await
            .expect("a stalled fetch must end by itself");
        let waited = t.elapsed();
        match r {
            Err(CacheError::Stalled { digest, .. }) => assert_eq!(digest, blob.digest),
            other => panic!("expected Stalled, got {other:?}"),
        }
        assert!(
            waited >= idle && waited < idle * 4,
            "gave up after {waited:?}"
        );
        assert!(
            cache.get(&blob.digest).is_none(),
            "nothing cached from a stall"
        );
    }
}
