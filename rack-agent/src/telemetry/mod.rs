//! The agent's telemetry: Prometheus metrics read from the counters each
//! component owns ([`metrics`]), served only on the operator listener
//! (`--metrics-listen`, `crate::serve::http::run_operator`), never on the
//! boot HTTP port.

pub mod metrics;
