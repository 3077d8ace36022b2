//! Starting a coordinator: the replica, the blob store and the gRPC server
//! (with server reflection and grpc.health.v1) on an already-bound listener.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rackboot_proto::v1 as pb;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::api::{
    AgentApi, AssignmentApi, BlobPeerApi, ClusterApi, Ctx, ImageApi, MetaApi, NodeApi, RackApi,
    RaftPeerApi,
};
use crate::blobs::{BlobError, BlobStore};
use crate::raft::{self, Replica, ReplicaConfig};
use crate::replication::Replicator;

/// Largest gRPC message accepted or sent.
pub const MAX_MESSAGE: usize = 8 << 20;

/// A coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The replica could not start.
    #[error("replica: {0}")]
    Replica(#[from] raft::node_error::ReplicaFatal),
    /// The blob store could not open.
    #[error(transparent)]
    Blobs(#[from] BlobError),
    /// Reflection descriptors failed to load.
    #[error("reflection: {0}")]
    Reflection(String),
    /// The TLS configuration is unusable.
    #[error("TLS: {0}")]
    Tls(String),
}

/// Server TLS of this process (mutual: clients must present a certificate
/// of the cluster CA), set once before [`start`]; plaintext without it.
static TLS: std::sync::OnceLock<tonic::transport::ServerTlsConfig> = std::sync::OnceLock::new();

/// Serve gRPC over mutual TLS with `files`, and use the same certificate
/// for connections to peer replicas. Call before [`start`].
pub fn use_tls(files: &rackboot_proto::tls::TlsFiles) -> Result<(), StartError> {
    // A handshake that does not finish in time is dropped, its connection
    // with it (see `conncap`).
    let server = files
        .server()
        .map_err(|e| StartError::Tls(e.to_string()))?
        .timeout(crate::conncap::TLS_HANDSHAKE_TIMEOUT);
    let client = files.client().map_err(|e| StartError::Tls(e.to_string()))?;
    let _ = TLS.set(server);
    rackboot_proto::tls::install_client(client);
    Ok(())
}

/// A running coordinator.
pub struct Coordinator {
    /// Handle to the replica.
    pub replica: Replica,
    /// Address the gRPC server listens on.
    pub local_addr: SocketAddr,
    /// The gRPC server task.
    pub server: JoinHandle<Result<(), tonic::transport::Error>>,
    /// The replica task.
    pub replica_task: JoinHandle<Result<(), raft::node_error::ReplicaFatal>>,
    /// Metrics (served by [`rackboot_metrics::serve`] when asked for).
    pub metrics: Arc<rackboot_metrics::Exposition>,
}

/// Start a coordinator replica serving gRPC on `listener`, storing under `data_dir`.
pub async fn start(
    mut cfg: ReplicaConfig,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<Coordinator, StartError> {
    let local_addr = listener
        .local_addr()
        .map_err(|e| StartError::Reflection(format!("listener: {e}")))?;
    if cfg.peers.len() == 1 && cfg.peers.contains_key(&cfg.id) {
        // A single replica advertises where it actually listens.
        cfg.peers.insert(cfg.id, local_addr.to_string());
    }
    let data_dir: PathBuf = cfg.data_dir.clone();
    // Opening walks and cleans the store's directories: off the runtime.
    let (blobs_dir, grace) = (data_dir.join("blobs"), cfg.upload_grace);
    let dir = blobs_dir.clone();
    let blobs = tokio::task::spawn_blocking(move || BlobStore::open_with_grace(&dir, grace))
        .await
        .map_err(|e| BlobError::Io {
            path: blobs_dir.display().to_string(),
            source: std::io::Error::other(e),
        })??;
    let blobs = Arc::new(blobs);
    // Peer traffic leaves from the address we listen on (when it is one).
    let source = (!local_addr.ip().is_unspecified()).then_some(local_addr.ip());
    let (replica, replica_task) = raft::spawn_with_source(cfg, source, shutdown.clone())?;
    let repl = Arc::new(Replicator::new(blobs.clone(), replica.clone(), source));
    repl.clone().spawn_repair(shutdown.clone());
    let stats = Arc::new(crate::metrics::ApiStats::default());
    let metrics = Arc::new(crate::metrics::exposition(
        replica.clone(),
        blobs.clone(),
        stats.clone(),
    ));
    let ctx = Ctx {
        replica: replica.clone(),
        blobs,
        repl,
        stats: stats.clone(),
    };
    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rackboot_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(rackboot_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .map_err(|e| StartError::Reflection(e.to_string()))?;
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;

    use pb::agent_service_server::AgentServiceServer;
    use pb::assignment_service_server::AssignmentServiceServer;
    use pb::blob_peer_server::BlobPeerServer;
    use pb::cluster_service_server::ClusterServiceServer;
    use pb::image_service_server::ImageServiceServer;
    use pb::meta_service_server::MetaServiceServer;
    use pb::node_service_server::NodeServiceServer;
    use pb::rack_service_server::RackServiceServer;
    use pb::raft_peer_server::RaftPeerServer;
    health.set_serving::<NodeServiceServer<NodeApi>>().await;
    health.set_serving::<RackServiceServer<RackApi>>().await;
    health.set_serving::<ImageServiceServer<ImageApi>>().await;
    health
        .set_serving::<AssignmentServiceServer<AssignmentApi>>()
        .await;
    health
        .set_serving::<ClusterServiceServer<ClusterApi>>()
        .await;
    health.set_serving::<AgentServiceServer<AgentApi>>().await;
    health.set_serving::<MetaServiceServer<MetaApi>>().await;

    let conn_stats = stats.connections.clone();
    let mut builder = tonic::transport::Server::builder()
        .max_concurrent_streams(Some(crate::conncap::MAX_STREAMS_PER_CONNECTION))
        .http2_keepalive_interval(Some(crate::conncap::KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(crate::conncap::KEEPALIVE_TIMEOUT));
    if let Some(tls) = TLS.get() {
        builder = builder
            .tls_config(tls.clone())
            .map_err(|e| StartError::Tls(e.to_string()))?;
    }
    use crate::auth::{ADMIN, AGENT, ANY, Authorizer, CLUSTER, PEER};
    use tonic::service::interceptor::InterceptedService;
    let tls_on = TLS.get().is_some();
    let denied = stats.auth_denied.clone();
    let authz =
        |service: &'static str, roles| Authorizer::new(service, roles, tls_on, denied.clone());
    let router = builder
        .layer(crate::metrics::GrpcCountLayer::new(stats))
        .add_service(InterceptedService::new(
            health_service,
            authz("grpc.health", ANY),
        ))
        .add_service(InterceptedService::new(
            reflection_v1,
            authz("grpc.reflection", ANY),
        ))
        .add_service(InterceptedService::new(
            reflection_v1alpha,
            authz("grpc.reflection", ANY),
        ))
        .add_service(InterceptedService::new(
            NodeServiceServer::new(NodeApi(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            authz("NodeService", ADMIN),
        ))
        .add_service(InterceptedService::new(
            RackServiceServer::new(RackApi(ctx.clone())),
            authz("RackService", ADMIN),
        ))
        .add_service(InterceptedService::new(
            ImageServiceServer::new(ImageApi(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            authz("ImageService", ADMIN),
        ))
        .add_service(InterceptedService::new(
            AssignmentServiceServer::new(AssignmentApi(ctx.clone())),
            authz("AssignmentService", ADMIN),
        ))
        .add_service(InterceptedService::new(
            ClusterServiceServer::new(ClusterApi(ctx.clone())),
            authz("ClusterService", CLUSTER),
        ))
        .add_service(InterceptedService::new(
            MetaServiceServer::new(MetaApi(ctx.clone())),
            authz("MetaService", ADMIN),
        ))
        .add_service(InterceptedService::new(
            AgentServiceServer::new(AgentApi(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            authz("AgentService", AGENT),
        ))
        .add_service(InterceptedService::new(
            BlobPeerServer::new(BlobPeerApi(ctx.clone()))
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            authz("BlobPeer", PEER),
        ))
        .add_service(InterceptedService::new(
            RaftPeerServer::new(RaftPeerApi(ctx))
                .max_decoding_message_size(raft::MAX_PEER_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE),
            authz("RaftPeer", PEER),
        ));
    // Small gRPC answers (Raft acknowledgements, write outcomes) must not
    // wait behind Nagle's algorithm and the peer's delayed ACK.
    let conns = conn_stats;
    let incoming =
        tokio_stream::StreamExt::filter_map(TcpListenerStream::new(listener), move |s| match s {
            Ok(s) => {
                if let Err(e) = s.set_nodelay(true) {
                    tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                }
                conns
                    .admit(
                        s,
                        crate::conncap::MAX_CONNECTIONS,
                        crate::conncap::MAX_PER_SOURCE,
                        crate::conncap::GREETING_TIMEOUT,
                    )
                    .map(Ok::<_, std::io::Error>)
            }
            Err(e) => Some(Err(e)),
        });
    let stop = shutdown.clone();
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await
    });
    tracing::info!(%local_addr, "coordinator gRPC listening (reflection and health enabled)");
    Ok(Coordinator {
        replica,
        local_addr,
        server,
        replica_task,
        metrics,
    })
}
