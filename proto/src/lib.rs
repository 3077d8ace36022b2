//! rackboot's gRPC API: the generated types and services of package
//! `rackboot.v1`, plus the file descriptor set used for server reflection.
//!
//! Generated types stop at the edge: servers and clients convert them to
//! domain types (see `rackboot-state`) as soon as they arrive.
//! This crate must not depend on anything but prost/tonic. `tls` holds
//! what every component needs for mutual TLS.
//!
//! Feature `grpc` (default) adds the services, clients and `tls` (tonic);
//! without it the crate is the messages alone, on prost, for tokio-free
//! crates such as the agent's domain.

/// Package `rackboot.v1`.
#[allow(missing_docs, clippy::all, clippy::pedantic)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/rackboot.v1.rs"));
}

/// Encoded `FileDescriptorSet` of every rackboot .proto file, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/rackboot_descriptor.bin"));

#[cfg(feature = "grpc")]
pub mod tls;
