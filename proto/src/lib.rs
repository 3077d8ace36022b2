//! rackboot's gRPC API: the generated types and services of package
//! `rackboot.v1`, plus the file descriptor set used for server reflection.
//!
//! Generated types stop at the edge: servers and clients convert them to
//! domain types (see `rackboot-state`) as soon as they arrive.
//! This crate must not depend on anything but prost/tonic. [`tls`] holds
//! what every component needs for mutual TLS.

/// Package `rackboot.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    tonic::include_proto!("rackboot.v1");
}

/// Encoded `FileDescriptorSet` of every rackboot .proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("rackboot_descriptor");

pub mod tls;
