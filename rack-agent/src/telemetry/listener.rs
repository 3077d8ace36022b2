//! The metrics listener (`--metrics-listen`): `GET /metrics` on an address
//! of its own, so metrics survive `--no-http` and can be kept off the rack
//! network. Anything else is 404.

use std::sync::Arc;

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::telemetry::metrics::{AgentMetrics, CONTENT_TYPE};

/// Serve `metrics` on `listener` until `shutdown`.
pub async fn run(listener: TcpListener, metrics: Arc<AgentMetrics>, shutdown: CancellationToken) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(metrics);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!(error = %e, "metrics listener stopped");
    }
}

async fn scrape(
    axum::extract::State(metrics): axum::extract::State<Arc<AgentMetrics>>,
) -> axum::response::Response {
    match metrics.render() {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}
