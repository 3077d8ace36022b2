//! gRPC channels to the coordinator, with the agent's timeouts and
//! keepalives (and mutual TLS when configured: `rackboot_proto::tls`).

use std::time::Duration;

use tonic::transport::Channel;

/// Connect to a coordinator URL (fails fast when nobody listens).
pub async fn connect(url: &str) -> Result<Channel, tonic::transport::Error> {
    rackboot_proto::tls::endpoint(url)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect()
        .await
}
