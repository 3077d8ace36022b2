//! In-crate tests: codec, protocol rules stepped by hand, whole transfers
//! through a simulated lossy network on a virtual clock, properties under
//! loss, duplication and reordering (`network`), firmware golden patterns,
//! ROMs that reuse one port for probe and request (`port_reuse`),
//! admission control, and the send scheduler with the bandwidth cap
//! (`scheduler`).

#![allow(clippy::unwrap_used)]

mod admission;
mod codec;
mod direct;
mod drain;
mod firmware;
mod harness;
mod network;
mod port_reuse;
mod rules;
mod scheduler;
mod transfers;
