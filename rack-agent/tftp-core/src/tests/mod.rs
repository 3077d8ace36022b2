//! In-crate tests: codec, protocol rules stepped by hand, whole transfers
//! through a simulated lossy network on a virtual clock, firmware golden
//! patterns, admission control.

#![allow(clippy::unwrap_used)]

mod admission;
mod codec;
mod direct;
mod firmware;
mod harness;
mod network;
mod rules;
mod scratch;
mod transfers;
