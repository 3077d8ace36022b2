//! Connecting to a coordinator, with errors an operator can act on.

use std::time::Duration;

use anyhow::anyhow;
use rackboot_proto::v1::{
    assignment_service_client::AssignmentServiceClient,
    cluster_service_client::ClusterServiceClient, image_service_client::ImageServiceClient,
    node_service_client::NodeServiceClient, rack_service_client::RackServiceClient,
};
use tonic::transport::{Channel, Endpoint};

/// Largest message sent or accepted.
const MAX_MESSAGE: usize = 64 << 20;

/// A connection to one coordinator.
pub struct Conn {
    /// The URL connected to.
    pub url: String,
    channel: Channel,
}

impl Conn {
    /// Connect to the first coordinator that answers.
    pub async fn connect(urls: &[String]) -> anyhow::Result<Conn> {
        let mut errors = Vec::new();
        for url in urls {
            let ep = Endpoint::from_shared(url.clone())
                .map_err(|e| anyhow!("invalid coordinator URL {url}: {e}"))?
                .connect_timeout(Duration::from_secs(3))
                .tcp_nodelay(true);
            match ep.connect().await {
                Ok(channel) => {
                    return Ok(Conn {
                        url: url.clone(),
                        channel,
                    });
                }
                Err(e) => errors.push(format!("{url}: {}", root_cause(&e))),
            }
        }
        Err(anyhow!(
            "cannot reach coordinator at {} (is rackboot-coordinator or `rackboot dev` running? set --coordinator or RACKBOOT_COORDINATOR)",
            errors.join("; ")
        ))
    }

    /// Turn a status into an error naming the coordinator.
    pub fn err(&self, what: &str, s: tonic::Status) -> anyhow::Error {
        let mut msg = format!("{what}: {}", s.message());
        if let Some(leader) = s
            .metadata()
            .get("rackboot-leader")
            .and_then(|v| v.to_str().ok())
        {
            msg.push_str(&format!(" (leader: {leader})"));
        }
        if s.code() == tonic::Code::Unavailable && s.message().contains("transport") {
            msg.push_str(&format!(" [coordinator {}]", self.url));
        }
        anyhow!(msg)
    }

    /// Image service client.
    pub fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }

    /// Node service client.
    pub fn nodes(&self) -> NodeServiceClient<Channel> {
        NodeServiceClient::new(self.channel.clone()).max_decoding_message_size(MAX_MESSAGE)
    }

    /// Rack service client.
    pub fn racks(&self) -> RackServiceClient<Channel> {
        RackServiceClient::new(self.channel.clone())
    }

    /// Assignment service client.
    pub fn assignments(&self) -> AssignmentServiceClient<Channel> {
        AssignmentServiceClient::new(self.channel.clone())
    }

    /// Cluster service client.
    pub fn cluster(&self) -> ClusterServiceClient<Channel> {
        ClusterServiceClient::new(self.channel.clone())
    }
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
