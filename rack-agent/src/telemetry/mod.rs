//! The agent's telemetry: Prometheus metrics read from the counters each
//! component owns ([`metrics`]), served on their own listener
//! ([`listener`], `--metrics-listen`) and on the boot HTTP port.

pub mod listener;
pub mod metrics;
