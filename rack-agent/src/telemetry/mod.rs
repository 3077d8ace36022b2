//! The agent's telemetry: Prometheus metrics read from the counters each
//! component owns ([`metrics`]), served on their own listener
//! (`--metrics-listen`, [`rackboot_metrics::serve`]) and on the boot HTTP
//! port.

pub mod metrics;
