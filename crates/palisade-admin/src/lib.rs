//! # palisade-admin
//!
//! The admin HTTP API of Palisade: an [`axum::Router`] over a
//! [`Registry`](palisade_core::Registry) that lists, inspects and controls every registered
//! component (circuit breakers, bulkheads, rate limiters, dead-letter queues, health-monitored
//! components), answers health probes, renders Prometheus metrics and streams events. It knows
//! no component's internals: it speaks the registry's JSON snapshots and commands.
//!
//! ```
//! use palisade_admin::AdminRouter;
//! use palisade_breaker::CircuitBreaker;
//! use palisade_core::Registry;
//! use tower::ServiceExt; // oneshot
//!
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let registry = Registry::new();
//! let slack = CircuitBreaker::builder("slack").registry(&registry).build()?;
//!
//! // In production: `.token(...)` defaults to PALISADE_ADMIN_TOKEN, and
//! // `.health(&monitor).prometheus(handle)` add the probes and `/metrics`.
//! let app = AdminRouter::builder(&registry).token("0123456789abcdef").build();
//!
//! // What `curl -X POST -H 'Authorization: Bearer …' -d '{"action":"force_open"}'` does:
//! let request = axum::http::Request::post("/admin/circuit-breakers/slack")
//!     .header("authorization", "Bearer 0123456789abcdef")
//!     .header("x-palisade-actor", "alice")
//!     .body(axum::body::Body::from(r#"{"action": "force_open"}"#))?;
//! let response = app.clone().oneshot(request).await?;
//! assert_eq!(response.status(), 200);
//! assert_eq!(slack.state().as_str(), "forced_open");
//!
//! // Without the token, nothing changes: 401 with `WWW-Authenticate: Bearer`.
//! let request = axum::http::Request::post("/admin/circuit-breakers/slack")
//!     .body(axum::body::Body::from(r#"{"action": "reset"}"#))?;
//! assert_eq!(app.oneshot(request).await?.status(), 401);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! Served on a listener of its own (loopback only, unless explicitly allowed):
//!
//! ```
//! # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
//! let registry = palisade_core::Registry::new();
//! let server = palisade_admin::AdminRouter::builder(&registry)
//!     .serve("127.0.0.1:0".parse()?)
//!     .await?;
//! assert!(server.local_addr().ip().is_loopback()); // http://127.0.0.1:<port>/admin
//! server.shutdown().await?;
//!
//! // 0.0.0.0 is refused unless allowed: keep the admin API off the network.
//! let refused = palisade_admin::AdminRouter::builder(&registry)
//!     .serve("0.0.0.0:0".parse()?)
//!     .await;
//! assert!(matches!(refused, Err(palisade_admin::ServeError::NotLoopback { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! # }).unwrap();
//! ```
//!
//! ## Routes
//!
//! | method | path | what |
//! | --- | --- | --- |
//! | GET | `/livez` | 200 while alive, 503 when a `liveness` component is unhealthy |
//! | GET | `/readyz` | 200 when ready (every critical component checked, not unhealthy), else 503 |
//! | GET | `/health` | `application/health+json`: `{"status": "pass"\|"warn"\|"fail", "checks": {name: [...]}, "palisade": report}`; 503 on `fail` |
//! | GET | `/metrics` | Prometheus text (`palisade_*`), after [`Registry::export_metrics`](palisade_core::Registry::export_metrics); 404 without an exporter |
//! | GET | `/admin` | the route index, and whether mutations are enabled |
//! | GET | `/admin/dashboard` | the dashboard page |
//! | GET | `/admin/resilience` | every component's snapshot, grouped by kind |
//! | GET | `/admin/{kind}` | `{"kind", "count", "items": [{"name", "snapshot"}]}` |
//! | GET | `/admin/{kind}/{name}` | `{"kind", "name", "snapshot"}` |
//! | POST | `/admin/{kind}/{name}` | the body is the component's command (`{"action": ...}`); answers `{"kind", "name", "action", "result"}` |
//! | GET | `/admin/dlq/{queue}/entries` | the queue's `list` (`kind`, `operation`, `state`, `after`, `limit`) |
//! | GET | `/admin/dlq/{queue}/entries/{id}` | the queue's `get`; 404 for an unknown id |
//! | GET | `/admin/health` | the health monitor's report |
//! | POST | `/admin/health` | `{"action": "set_auto_restart", "enabled": false}` (the monitor's global switch) or `{"action": "check_all"}` |
//! | GET | `/admin/events` | recent events (`kind`, `component`, `type`, `since_seq`, `limit` — default 100) |
//! | GET | `/admin/events/stream` | server-sent events: `id` = sequence number, `data` = the event's JSON; keep-alive comments; `Last-Event-ID` (or `since_seq`) replays what was missed |
//! | GET | `/admin/history` | per-second points of every component, last 15 minutes (`kind`, `name`, `seconds`, `since`): `{"interval_ms", "now_ms", "components": [{"kind", "name", "points": [{"t", ...}]}]}`; see [`History`] |
//!
//! `{kind}` is `circuit-breakers`, `bulkheads`, `rate-limiters`, `dlq` or `health/components`
//! (see each crate's command enum: `BreakerCommand`, `BulkheadCommand`, `RateLimiterCommand`,
//! `DlqCommand`, `HealthCommand`).
//!
//! ## Errors
//!
//! Every error body is JSON, `{"error": "<code>", "message": "...", ...}`:
//!
//! | status | `error` | when |
//! | --- | --- | --- |
//! | 400 | `malformed_json`, `malformed_command`, `bad_query`, `bad_path` | the body is not JSON, the command is unknown or misses a field, a query value is wrong |
//! | 401 | `unauthorized` | a mutation without `Authorization: Bearer <token>`, or with a wrong token (`WWW-Authenticate: Bearer`) |
//! | 403 | `mutations_disabled` | no token is configured: set `PALISADE_ADMIN_TOKEN` |
//! | 404 | `not_found`, `metrics_disabled`, `no_health_monitor` | unknown route, kind, name or entry; a feature not configured |
//! | 409 | `rejected` | the command cannot be applied in the component's current state (`action`, `reason`) |
//! | 413 | `payload_too_large` | the body is over the limit (default 64 KiB) |
//! | 422 | `invalid_config` | a config value is invalid; `field` names it |
//! | 503 | `backend_unavailable` | a backend (Redis) failed; retrying may succeed |
//!
//! ## Security
//!
//! - **Mutations** (every `POST`) need `Authorization: Bearer <token>`; the token comes from
//!   [`AdminRouterBuilder::token`] or, by default, `PALISADE_ADMIN_TOKEN`, and is compared in
//!   constant time. With no token configured, mutations are refused (403).
//! - **Reads need a token** by default, the operator's or a viewer's
//!   ([`AdminRouterBuilder::viewer_token`], `PALISADE_VIEWER_TOKEN`: reads only, every command
//!   refused with 403); `GET /metrics` too unless [`AdminRouterBuilder::metrics_need_token`]
//!   is off. The probes (`/livez`, `/readyz`, `/health`) and the dashboard page never need
//!   one (the page asks for it, or takes it from `#token=` in its URL). Tokens may come from a
//!   file (`PALISADE_ADMIN_TOKEN_FILE`, `PALISADE_VIEWER_TOKEN_FILE`).
//! - **Host and Origin** are checked: only the names in
//!   [`AdminRouterBuilder::allowed_hosts`] (default the loopback names and the served address)
//!   are answered, so a web page cannot reach the API through DNS rebinding (403
//!   `host_not_allowed`).
//! - Keep it on loopback ([`AdminRouterBuilder::serve`] refuses other addresses unless
//!   allowed) or behind an authenticating proxy.
//! - Bodies are limited (413 above 64 KiB by default).
//!
//! ## Audit trail
//!
//! Every applied mutation publishes an [`EventKind::Audit`](palisade_core::EventKind::Audit)
//! on the registry's event bus, with the component's kind and name, `actor` (the caller's
//! `X-Palisade-Actor` header, printable ASCII cut to 64 characters, or `admin-token`; plus
//! ` from <address>` when the peer is known, as with [`AdminRouterBuilder::serve`]), `action`
//! (the command's name), and `before` / `after`: the component's snapshots around the command
//! (for the monitor's own commands, its status, readiness, auto-restart switch and counts). The
//! caller-declared name is not authenticated: every caller holds the same token. Refused
//! commands change nothing and publish nothing. The registry itself also publishes an
//! `admin_action` event for each command.

mod auth;
mod components;
mod error;
mod events;
mod health;
mod history;
mod host;
mod listener;
mod prometheus;
mod router;
mod serve;
mod state;

pub use auth::{
    ACTOR_HEADER, DEFAULT_ACTOR, FILE_SUFFIX, MAX_ACTOR_LEN, TOKEN_ENV, VIEWER_TOKEN_ENV,
    constant_time_eq,
};
pub use components::{KIND_PATHS, kind_path};
pub use events::DEFAULT_EVENTS_LIMIT;
pub use health::HEALTH_JSON;
pub use history::{
    DEFAULT_CAPACITY, DEFAULT_INTERVAL, DEFAULT_MAX_COMPONENTS, History, HistoryBuilder,
    HistorySample, MAX_CAPACITY,
};
pub use host::DEFAULT_ALLOWED_HOSTS;
pub use listener::{NoDelayListener, bind_nodelay, nodelay};
pub use prometheus::PROMETHEUS_TEXT;
pub use router::{AdminRouter, AdminRouterBuilder, DEFAULT_BODY_LIMIT, DEFAULT_KEEP_ALIVE};
pub use serve::{AdminServer, SHUTDOWN_GRACE, ServeError};

pub(crate) use router::OPEN_PATHS;

/// Milliseconds since the Unix epoch (0 if the system clock is before it).
pub(crate) fn now_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// `ms` since the Unix epoch as an RFC 3339 UTC timestamp (`2024-05-01T12:00:00.250Z`).
#[cfg(feature = "health")]
pub(crate) fn rfc3339(ms: u64) -> String {
    let secs = ms / 1000;
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil, for days since 1970-01-01 (always >= 0 here).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        ms % 1000
    )
}

#[cfg(all(test, feature = "health"))]
mod tests {
    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(super::rfc3339(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(
            super::rfc3339(1_714_564_800_250),
            "2024-05-01T12:00:00.250Z"
        );
        assert_eq!(
            super::rfc3339(4_102_444_799_999),
            "2099-12-31T23:59:59.999Z"
        );
    }
}
