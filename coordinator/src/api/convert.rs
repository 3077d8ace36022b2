//! Conversions between generated API types and domain types. Incoming values
//! are validated here; errors name the offending field.

use std::net::Ipv4Addr;

use rackboot_proto::v1 as pb;
use rackboot_state::{
    Blake3Digest, BlobRef, Image, Mac, Node, PendingMachine, Rack, RackName, State, StateError,
};
use tonic::Status;

use crate::raft::ReplicaError;

/// Parse a field or answer `INVALID_ARGUMENT` naming it.
pub fn field<T: std::str::FromStr>(name: &str, value: &str) -> Result<T, Status>
where
    T::Err: std::fmt::Display,
{
    value
        .parse()
        .map_err(|e| Status::invalid_argument(format!("{name}: {e}")))
}

/// A blob reference from the API.
pub fn blob_from_pb(name: &str, b: Option<&pb::BlobRef>) -> Result<BlobRef, Status> {
    let b = b.ok_or_else(|| Status::invalid_argument(format!("{name}: missing")))?;
    Ok(BlobRef {
        digest: field::<Blake3Digest>(&format!("{name}.blake3"), &b.blake3)?,
        size: b.size,
    })
}

/// A blob reference for the API.
pub fn blob_to_pb(b: &BlobRef) -> pb::BlobRef {
    pb::BlobRef {
        blake3: b.digest.to_string(),
        size: b.size,
    }
}

/// A rack from the API.
pub fn rack_from_pb(r: Option<&pb::Rack>) -> Result<Rack, Status> {
    let r = r.ok_or_else(|| Status::invalid_argument("rack: missing"))?;
    let gateway = if r.gateway.is_empty() {
        None
    } else {
        Some(field::<Ipv4Addr>("rack.gateway", &r.gateway)?)
    };
    let rack = Rack {
        name: field("rack.name", &r.name)?,
        subnet: field("rack.subnet", &r.subnet)?,
        server_address: field("rack.server_address", &r.server_address)?,
        node_base: field("rack.node_base", &r.node_base)?,
        gateway,
    };
    rack.validate()
        .map_err(|e| Status::invalid_argument(format!("rack: {e}")))?;
    Ok(rack)
}

/// A rack for the API.
pub fn rack_to_pb(r: &Rack) -> pb::Rack {
    pb::Rack {
        name: r.name.to_string(),
        subnet: r.subnet.to_string(),
        server_address: r.server_address.to_string(),
        node_base: r.node_base.to_string(),
        gateway: r.gateway.map(|g| g.to_string()).unwrap_or_default(),
    }
}

/// A node for the API, with its computed address and resolved image.
pub fn node_to_pb(state: &State, n: &Node) -> pb::Node {
    let address = state
        .rack(&n.rack)
        .and_then(|r| r.slot_address(n.slot))
        .map(|a| a.to_string())
        .unwrap_or_default();
    let (image, source) = state
        .resolved_image(n)
        .map(|(i, s)| (i.to_string(), s.to_string()))
        .unwrap_or_default();
    pb::Node {
        number: n.number.0,
        name: n.number.name(),
        macs: n.macs.iter().map(Mac::to_string).collect(),
        rack: n.rack.to_string(),
        slot: n.slot,
        address,
        assigned_image: image,
        assignment_source: source,
        retired: n.retired,
        inventory: n.inventory.clone().into_iter().collect(),
        pending: false,
        seen_at: 0,
        names_node: 0,
    }
}

/// A machine held for acceptance, as a node with `pending` set and number 0.
pub fn pending_to_pb(state: &State, p: &PendingMachine) -> pb::Node {
    pb::Node {
        macs: p.macs.iter().map(Mac::to_string).collect(),
        rack: p.rack.to_string(),
        inventory: p.inventory.clone().into_iter().collect(),
        pending: true,
        seen_at: p.seen_at,
        names_node: p
            .macs
            .iter()
            .find_map(|m| state.node_by_mac(m))
            .map_or(0, |n| n.number.0),
        ..pb::Node::default()
    }
}

/// An image for the API.
pub fn image_to_pb(i: &Image) -> pb::ImageManifest {
    pb::ImageManifest {
        name: i.name.to_string(),
        kernel: Some(blob_to_pb(&i.kernel)),
        initrd: Some(blob_to_pb(&i.initrd)),
        cmdline: i.cmdline.clone(),
        kernel_version: i.kernel_version.clone(),
        manifest_hash: i.manifest_hash().to_string(),
        committed_at: i.committed_at,
        modules: i.modules.as_ref().map(blob_to_pb),
        dtb: i.dtb.as_ref().map(blob_to_pb),
    }
}

/// The full view of one rack for its agent.
pub fn rack_state(state: &State, rack: &RackName) -> Option<pb::RackState> {
    let view = state.rack_view(rack)?;
    Some(pb::RackState {
        revision: view.revision,
        rack: Some(rack_to_pb(&view.rack)),
        nodes: view
            .nodes
            .iter()
            .map(|(n, _)| node_to_pb(state, n))
            .collect(),
        images: view.images.iter().map(image_to_pb).collect(),
        meta: view.meta.into_iter().collect(),
        discovery_image: view
            .discovery_image
            .map(|i| i.to_string())
            .unwrap_or_default(),
    })
}

/// A refused command as a status.
pub fn state_error(e: StateError) -> Status {
    let msg = e.to_string();
    match e {
        StateError::ImageNotFound(_)
        | StateError::RackNotFound(_)
        | StateError::NodeNotFound(_) => Status::not_found(msg),
        StateError::ImageExists { .. } => Status::already_exists(msg),
        StateError::RackFull { .. } => Status::resource_exhausted(msg),
        StateError::MacTaken { .. } => Status::failed_precondition(msg),
        StateError::RackWouldMoveNodes { .. } => Status::failed_precondition(msg),
        StateError::OtherRack { .. } | StateError::HeldByOtherRack { .. } => {
            Status::permission_denied(msg)
        }
        StateError::NotPending(_) => Status::not_found(msg),
        StateError::PendingFull(_) => Status::resource_exhausted(msg),
        StateError::InvalidRack { .. }
        | StateError::InvalidMeta { .. }
        | StateError::InvalidTag { .. }
        | StateError::BadMacCount { .. }
        | StateError::NotUnicast(_) => Status::invalid_argument(msg),
    }
}

/// Metadata key carrying the leader's address on `UNAVAILABLE`.
pub const LEADER_HINT: &str = "rackboot-leader";

/// A replica failure as a status; `NotLeader` carries the leader hint.
pub fn replica_error(e: ReplicaError) -> Status {
    let msg = e.to_string();
    match e {
        ReplicaError::NotLeader { leader } => {
            let mut s = Status::unavailable(msg);
            if let Some((_, addr)) = leader
                && let Ok(v) = addr.parse()
            {
                s.metadata_mut().insert(LEADER_HINT, v);
            }
            s
        }
        ReplicaError::Timeout(_)
        | ReplicaError::Stopped
        | ReplicaError::Refused(_)
        | ReplicaError::ConfChangePending => Status::unavailable(msg),
        ReplicaError::Membership(_) => Status::failed_precondition(msg),
    }
}
