//! `/livez`, `/readyz`, `/health` (application/health+json) and the monitor's own routes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::auth::{Operator, Reader};
use crate::error::ApiError;
use crate::state::AppState;

/// The media type of `/health` (draft-inadarei-api-health-check).
pub const HEALTH_JSON: &str = "application/health+json";

fn probe(ok: bool, field: &str) -> Response {
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({ "status": if ok { "pass" } else { "fail" }, field: ok });
    (code, Json(body)).into_response()
}

/// `GET /livez`: 200 while the process is alive, 503 when a component marked `liveness` is
/// unhealthy (restarting the process may help). Always 200 without a monitor.
pub(crate) async fn livez(State(s): State<AppState>) -> Response {
    #[cfg(feature = "health")]
    if let Some(m) = s.health() {
        return probe(m.report().live, "live");
    }
    let _ = &s;
    probe(true, "live")
}

/// `GET /readyz`: 200 when traffic should come here (every critical component checked and not
/// unhealthy), else 503. Always 200 without a monitor.
pub(crate) async fn readyz(State(s): State<AppState>) -> Response {
    #[cfg(feature = "health")]
    if let Some(m) = s.health() {
        return probe(m.report().ready, "ready");
    }
    let _ = &s;
    probe(true, "ready")
}

fn health_json(code: StatusCode, body: Value) -> Response {
    let mut response = (code, Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON));
    response
}

/// `GET /health`: `{"status": "pass"|"warn"|"fail", "checks": {...}, "palisade": report}`;
/// 503 when the status is `fail`.
pub(crate) async fn health(State(s): State<AppState>) -> Response {
    #[cfg(feature = "health")]
    if let Some(m) = s.health() {
        let report = m.report();
        let mut status = status_word(Some(report.status));
        // Healthy but not ready (a critical component not checked yet) is not a plain pass.
        if status == "pass" && !report.ready {
            status = "warn";
        }
        let mut checks = serde_json::Map::new();
        for (name, c) in &report.components {
            let word = status_word(c.status);
            let mut check = serde_json::Map::new();
            check.insert("componentId".into(), Value::from(name.as_str()));
            check.insert("componentType".into(), Value::from("component"));
            check.insert("status".into(), Value::from(word));
            if word != "pass" {
                let output = if c.status.is_none() {
                    "not checked yet".to_owned()
                } else {
                    c.message.clone()
                };
                check.insert("output".into(), Value::from(output));
            }
            if c.status.is_some() {
                check.insert("observedValue".into(), Value::from(c.latency_ms));
                check.insert("observedUnit".into(), Value::from("ms"));
            }
            if let Some(ms) = c.last_check_ms {
                check.insert("time".into(), Value::from(crate::rfc3339(ms)));
            }
            checks.insert(name.clone(), Value::Array(vec![Value::Object(check)]));
        }
        let code = if status == "fail" {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::OK
        };
        let body = json!({
            "status": status,
            "description": "Palisade health monitor",
            "checks": checks,
            "palisade": report,
        });
        return health_json(code, body);
    }
    let _ = &s;
    health_json(
        StatusCode::OK,
        json!({
            "status": "pass",
            "description": "Palisade health monitor",
            "checks": {},
            "notes": ["no health monitor is attached to the admin router; pass one to AdminRouterBuilder::health"],
        }),
    )
}

/// `pass` / `warn` / `fail` for healthy / degraded / unhealthy; not yet checked is `warn`.
#[cfg(feature = "health")]
fn status_word(s: Option<palisade_health::Status>) -> &'static str {
    use palisade_health::Status;
    match s {
        Some(Status::Healthy) => "pass",
        Some(Status::Degraded) | None => "warn",
        Some(Status::Unhealthy) => "fail",
    }
}

/// The monitor's headline figures (the audit trail's before/after of monitor commands).
#[cfg(feature = "health")]
pub(crate) fn monitor_view(report: &palisade_health::HealthReport) -> Value {
    json!({
        "status": report.status,
        "live": report.live,
        "ready": report.ready,
        "auto_restart": report.auto_restart,
        "summary": report.summary,
    })
}

#[cfg(feature = "health")]
fn no_monitor() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_health_monitor",
        "no health monitor is attached to the admin router; pass one to AdminRouterBuilder::health",
    )
}

#[cfg(not(feature = "health"))]
fn no_monitor() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_health_monitor",
        "palisade-admin was built without its `health` feature; enable it and pass a monitor \
         to AdminRouterBuilder::health",
    )
}

/// `GET /admin/health`: the monitor's full report.
pub(crate) async fn monitor_report(
    _: Reader,
    State(s): State<AppState>,
) -> Result<Json<Value>, ApiError> {
    #[cfg(feature = "health")]
    if let Some(m) = s.health() {
        return Ok(Json(json!(m.report())));
    }
    let _ = &s;
    Err(no_monitor())
}

/// Commands for the monitor as a whole.
#[cfg(feature = "health")]
#[derive(Debug, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
enum MonitorCommand {
    /// The global auto-restart switch (each component's own switch still applies).
    SetAutoRestart { enabled: bool },
    /// Run every check now.
    CheckAll,
}

/// `POST /admin/health`: `{"action": "set_auto_restart", "enabled": false}` or
/// `{"action": "check_all"}`.
pub(crate) async fn monitor_command(
    op: Operator,
    State(s): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    #[cfg(feature = "health")]
    {
        let Some(monitor) = s.health() else {
            return Err(no_monitor());
        };
        let command = crate::components::json_body(body)?;
        let action = crate::components::action_of(&command);
        let command: MonitorCommand = serde_json::from_value(command).map_err(|e| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_command",
                format!("malformed command for the health monitor: {e}"),
            )
            .with("kind", palisade_core::ComponentKind::Health.as_str())
            .with("name", MONITOR)
            .with("reason", e.to_string())
        })?;
        let before = monitor_view(&monitor.report());
        let report = match command {
            MonitorCommand::SetAutoRestart { enabled } => {
                monitor.set_auto_restart(enabled);
                monitor.report()
            }
            MonitorCommand::CheckAll => monitor.check_all().await,
        };
        let after = monitor_view(&report);
        tracing::info!(
            target: "palisade::admin",
            component_kind = "health", component = MONITOR, action = %action, actor = %op.actor,
            "admin command applied"
        );
        s.audit(
            palisade_core::ComponentKind::Health,
            MONITOR,
            op.actor,
            action.clone(),
            before,
            after,
        );
        Ok(Json(json!({
            "kind": palisade_core::ComponentKind::Health.as_str(),
            "name": MONITOR,
            "action": action,
            "result": report,
        })))
    }
    #[cfg(not(feature = "health"))]
    {
        let _ = (op, s, body);
        Err(no_monitor())
    }
}

/// The component name the monitor's own events carry.
#[cfg(feature = "health")]
const MONITOR: &str = "monitor";
