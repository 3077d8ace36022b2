//! # rackboot-metrics
//!
//! What the coordinator's and the rack agent's Prometheus metrics share.
//! Each component owns its counters (atomics it updates where the events
//! happen) and implements [`Component`] to encode them; the process
//! registers every component in one [`Exposition`], which renders the
//! OpenMetrics text at scrape time (a scrape costs nothing until it
//! happens and never touches a packet path). [`serve`] is the `GET
//! /metrics` listener both daemons run on `--metrics-listen`.
//!
//! ## Invariants
//! - Rendering reads counters; it never changes them.
//! - [`serve`] renders on a blocking thread (a component may walk a
//!   directory, as the coordinator's blob store does).
//! - Label sets are bounded by the components (a label value never comes
//!   unchecked from the network).
//!
//! ## Must never depend on
//! either daemon or any rackboot crate: components depend on this crate,
//! never the other way round.

use std::fmt;
use std::sync::Arc;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeGaugeValue, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Metric, Registry};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Content type of the exposition.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Something that owns counters and encodes them at scrape time.
pub trait Component: Send + Sync + 'static {
    /// Encode every metric family of the component.
    fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result;
}

/// A registered component, as `prometheus-client` collects it.
struct Registered<C>(Arc<C>);

impl<C> fmt::Debug for Registered<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Registered")
    }
}

impl<C: Component> Collector for Registered<C> {
    fn encode(&self, mut e: DescriptorEncoder) -> fmt::Result {
        self.0.encode(&mut e)
    }
}

/// Every component of one process, rendered together.
#[derive(Debug, Default)]
pub struct Exposition {
    registry: Registry,
}

impl Exposition {
    /// An exposition with nothing registered.
    pub fn new() -> Self {
        Exposition::default()
    }

    /// Add a component; it is read at every scrape.
    pub fn register<C: Component>(&mut self, component: Arc<C>) {
        self.registry
            .register_collector(Box::new(Registered(component)));
    }

    /// Add a metric `prometheus-client` keeps itself (a histogram).
    pub fn register_metric(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// The exposition text.
    pub fn render(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 << 10);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// A counter without labels (`name` without `_total`; the encoder adds it).
pub fn counter(e: &mut DescriptorEncoder, name: &str, help: &str, v: u64) -> fmt::Result {
    let c = ConstCounter::new(v);
    let m = e.encode_descriptor(name, help, None, c.metric_type())?;
    c.encode(m)
}

/// A counter with one label.
pub fn counters<L: AsRef<str>>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(L, u64)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (l, v) in values {
        let labels = [(label, l.as_ref())];
        ConstCounter::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// A gauge without labels.
pub fn gauge<N: EncodeGaugeValue>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: N,
) -> fmt::Result {
    let g = ConstGauge::new(v);
    let m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    g.encode(m)
}

/// A gauge with one label.
pub fn gauges<L: AsRef<str>, N: EncodeGaugeValue + Copy>(
    e: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(L, N)],
) -> fmt::Result {
    let mut m = e.encode_descriptor(name, help, None, MetricType::Gauge)?;
    for (l, v) in values {
        let labels = [(label, l.as_ref())];
        ConstGauge::new(*v).encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

/// The `GET /metrics` answer: the exposition rendered on a blocking thread.
pub async fn scrape(exposition: Arc<Exposition>) -> Response {
    match tokio::task::spawn_blocking(move || exposition.render()).await {
        Ok(Ok(body)) => (
            StatusCode::OK,
            [(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE))],
            body,
        )
            .into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
    }
}

/// Serve `GET /metrics` on `listener` until `shutdown`; anything else is 404.
pub async fn serve(
    listener: TcpListener,
    exposition: Arc<Exposition>,
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(
                |axum::extract::State(x): axum::extract::State<Arc<Exposition>>| scrape(x),
            ),
        )
        .with_state(exposition);
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "metrics listening (GET /metrics)");
    }
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
    {
        tracing::error!(error = %e, "metrics server stopped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[derive(Default)]
    struct Widgets {
        made: AtomicU64,
    }

    impl Component for Widgets {
        fn encode(&self, e: &mut DescriptorEncoder) -> fmt::Result {
            counter(
                e,
                "widgets_made",
                "Widgets made",
                self.made.load(Ordering::Relaxed),
            )?;
            gauges(
                e,
                "widgets_open",
                "Widgets open",
                "kind",
                &[("round", 2u64), ("square", 3)],
            )
        }
    }

    #[test]
    fn components_are_read_at_render_time() {
        let w = Arc::new(Widgets::default());
        let mut x = Exposition::new();
        x.register(w.clone());
        w.made.store(7, Ordering::Relaxed);
        let text = x.render().unwrap_or_default();
        assert!(text.contains("widgets_made_total 7"), "{text}");
        assert!(text.contains("widgets_open{kind=\"square\"} 3"), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[tokio::test]
    async fn the_listener_serves_metrics_and_nothing_else() {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let w = Arc::new(Widgets::default());
        let mut x = Exposition::new();
        x.register(w);
        let stop = CancellationToken::new();
        let task = tokio::spawn(serve(listener, Arc::new(x), stop.clone()));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
            s.write_all(req.as_bytes())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let mut out = String::new();
            s.read_to_string(&mut out)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            out
        };
        let ok = get("/metrics").await;
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        assert!(ok.contains(CONTENT_TYPE), "{ok}");
        assert!(ok.contains("widgets_made_total 0"), "{ok}");
        assert!(get("/other").await.starts_with("HTTP/1.1 404"));
        stop.cancel();
        let _ = task.await;
    }
}
