//! What every handler shares: the registry, the optional health monitor and Prometheus
//! recorder, the token and the shutdown signal.

use std::sync::Arc;
use std::time::Duration;

use metrics_exporter_prometheus::{PrometheusHandle, PrometheusRecorder};
use palisade_core::{ComponentKind, EventKind, Registry};
use tokio::sync::watch;

/// Where `/metrics` gets its text from.
pub(crate) enum MetricsSource {
    /// No Prometheus exporter: `/metrics` answers 404 with how to enable it.
    None,
    /// The handle of a recorder installed globally (`PrometheusBuilder::install_recorder`).
    Handle(PrometheusHandle),
    /// A recorder of the router's own, never installed: components export into it while
    /// `/metrics` renders.
    Recorder(Arc<PrometheusRecorder>),
}

pub(crate) struct Shared {
    pub registry: Registry,
    #[cfg(feature = "health")]
    pub health: Option<palisade_health::HealthMonitor>,
    pub token: Option<String>,
    /// The viewer token: reads only.
    pub viewer: Option<String>,
    pub protect_reads: bool,
    /// `/metrics` needs the token when reads do.
    pub metrics_need_token: bool,
    pub metrics: MetricsSource,
    pub keep_alive: Duration,
    /// `true` once the server is stopping: live event streams end so connections can close.
    pub shutdown: Arc<watch::Sender<bool>>,
    /// The per-second history `GET /admin/history` serves.
    pub history: crate::History,
}

/// The router's state (cheap to clone).
#[derive(Clone)]
pub(crate) struct AppState {
    pub inner: Arc<Shared>,
}

impl AppState {
    pub(crate) fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    pub(crate) fn token(&self) -> Option<&str> {
        self.inner.token.as_deref()
    }

    pub(crate) fn viewer_token(&self) -> Option<&str> {
        self.inner.viewer.as_deref()
    }

    pub(crate) fn protect_reads(&self) -> bool {
        self.inner.protect_reads
    }

    pub(crate) fn history(&self) -> &crate::History {
        &self.inner.history
    }

    #[cfg(feature = "health")]
    pub(crate) fn health(&self) -> Option<&palisade_health::HealthMonitor> {
        self.inner.health.as_ref()
    }

    /// Publishes the audit event of one applied mutation on the registry's bus.
    pub(crate) fn audit(
        &self,
        kind: ComponentKind,
        name: &str,
        actor: String,
        action: String,
        before: serde_json::Value,
        after: serde_json::Value,
    ) {
        self.inner.registry.events().publish(
            kind,
            name,
            EventKind::Audit {
                actor,
                action,
                before,
                after,
            },
        );
    }
}
