//! `GET /metrics`: every component exports its figures, then the Prometheus text is rendered.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::auth::Scraper;
use crate::error::ApiError;
use crate::state::{AppState, MetricsSource};

/// The content type of the Prometheus text exposition format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

pub(crate) async fn metrics(_: Scraper, State(s): State<AppState>) -> Result<Response, ApiError> {
    render(&s)
}

/// `GET /metrics` on the probes listener: no token (only what is exposed there is served).
pub(crate) async fn open_metrics(State(s): State<AppState>) -> Result<Response, ApiError> {
    render(&s)
}

fn render(s: &AppState) -> Result<Response, ApiError> {
    let text = match &s.inner.metrics {
        MetricsSource::None => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "metrics_disabled",
                "no Prometheus exporter is configured; install one with \
                 metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder() and \
                 pass the handle to AdminRouterBuilder::prometheus (or pass a recorder that is \
                 not installed globally to AdminRouterBuilder::prometheus_recorder)",
            ));
        }
        MetricsSource::Handle(handle) => {
            // Components push into the global recorder, which this handle reads.
            s.registry().export_metrics();
            handle.run_upkeep();
            handle.render()
        }
        MetricsSource::Recorder(recorder) => {
            ::metrics::with_local_recorder(recorder.as_ref(), || s.registry().export_metrics());
            let handle = recorder.handle();
            handle.run_upkeep();
            handle.render()
        }
    };
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(PROMETHEUS_TEXT),
    );
    Ok(response)
}
