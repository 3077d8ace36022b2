//! The one integration-test binary of `rackboot-dhcp-core`: golden firmware
//! exchanges, protocol flows and malformed input.

#![allow(clippy::unwrap_used, missing_docs)]

mod flows;
mod golden;
mod malformed;
mod provisional;
mod proxy;
mod rig;
mod server;
mod support;
