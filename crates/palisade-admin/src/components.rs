//! Per-kind routes (list, one, command), the dead-letter queue's entry routes, the all-in-one
//! `/admin/resilience` document and the `/admin` index.

use axum::Json;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::get;
use palisade_core::{ComponentKind, ControlError};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::auth::{Access, Operator, Reader};
use crate::error::ApiError;
use crate::state::AppState;

/// The URL of each kind's collection, in display order.
pub const KIND_PATHS: [(ComponentKind, &str); 10] = [
    (ComponentKind::CircuitBreaker, "/admin/circuit-breakers"),
    (ComponentKind::Bulkhead, "/admin/bulkheads"),
    (ComponentKind::RateLimiter, "/admin/rate-limiters"),
    (ComponentKind::DeadLetterQueue, "/admin/dlq"),
    (ComponentKind::Health, "/admin/health/components"),
    (ComponentKind::Retry, "/admin/retries"),
    (ComponentKind::Hedge, "/admin/hedges"),
    (ComponentKind::Timeout, "/admin/timeouts"),
    (ComponentKind::Fallback, "/admin/fallbacks"),
    (ComponentKind::FaultInjector, "/admin/fault-injectors"),
];

/// The collection URL of `kind`, if the admin API serves that kind.
pub fn kind_path(kind: ComponentKind) -> Option<&'static str> {
    KIND_PATHS
        .iter()
        .find(|(k, _)| *k == kind)
        .map(|(_, path)| *path)
}

/// `GET {base}`, `GET {base}/{name}` and `POST {base}/{name}` for one kind.
pub(crate) fn kind_router(kind: ComponentKind, base: &str) -> Router<AppState> {
    Router::new()
        .route(
            base,
            get(move |_: Reader, State(s): State<AppState>| async move { list(kind, &s) }),
        )
        .route(
            &format!("{base}/{{name}}"),
            get(
                move |_: Reader,
                      State(s): State<AppState>,
                      name: Result<Path<String>, PathRejection>| async move {
                    one(kind, &s, name)
                },
            )
            .post(
                move |op: Operator,
                      State(s): State<AppState>,
                      name: Result<Path<String>, PathRejection>,
                      body: Result<Bytes, BytesRejection>| {
                    command(kind, s, op, name, body)
                },
            ),
        )
}

fn list(kind: ComponentKind, s: &AppState) -> Json<Value> {
    let items: Vec<Value> = s
        .registry()
        .snapshot_all(Some(kind))
        .into_iter()
        .map(|c| json!({ "name": c.name, "snapshot": c.snapshot }))
        .collect();
    Json(json!({
        "kind": kind.as_str(),
        "count": items.len(),
        "items": items,
    }))
}

fn one(
    kind: ComponentKind,
    s: &AppState,
    name: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name?;
    let snapshot = s.registry().snapshot(kind, &name)?;
    Ok(Json(json!({
        "kind": kind.as_str(),
        "name": name,
        "snapshot": snapshot,
    })))
}

/// Reads a request body as JSON; an empty or non-JSON body is a 400, an oversized one a 413.
pub(crate) fn json_body(body: Result<Bytes, BytesRejection>) -> Result<Value, ApiError> {
    let bytes = body?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::malformed_json(
            "the body is empty; send the command as a JSON object such as {\"action\": \"...\"}",
        ));
    }
    serde_json::from_slice(&bytes).map_err(ApiError::malformed_json)
}

/// The `action` of a JSON command (already accepted by the component, so it is a known name).
pub(crate) fn action_of(command: &Value) -> String {
    command
        .get("action")
        .and_then(Value::as_str)
        .unwrap_or("command")
        .to_owned()
}

async fn command(
    kind: ComponentKind,
    s: AppState,
    op: Operator,
    name: Result<Path<String>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name?;
    let command = json_body(body)?;
    let before = s.registry().snapshot(kind, &name)?;
    let action = action_of(&command);
    let result = s.registry().control(kind, &name, command).await?;
    // The snapshot after, not the command's output: for a queue the output can be a page of
    // entries, and the audit trail keeps one bounded shape per component.
    let after = s.registry().snapshot(kind, &name).unwrap_or(Value::Null);
    tracing::info!(
        target: "palisade::admin",
        component_kind = kind.as_str(), component = %name, action = %action, actor = %op.actor,
        "admin command applied"
    );
    s.audit(kind, &name, op.actor, action.clone(), before, after);
    Ok(Json(json!({
        "kind": kind.as_str(),
        "name": name,
        "action": action,
        "result": result,
    })))
}

/// Query of `GET /admin/dlq/{queue}/entries`. Empty values count as absent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EntriesQuery {
    kind: Option<String>,
    operation: Option<String>,
    state: Option<String>,
    after: Option<u64>,
    limit: Option<usize>,
}

/// Sends a read-only command straight to the component: reads are not admin actions, so they
/// publish no event.
async fn read_command(
    s: &AppState,
    kind: ComponentKind,
    name: &str,
    command: Value,
) -> Result<Value, ControlError> {
    let component = s
        .registry()
        .get(kind, name)
        .ok_or_else(|| ControlError::NotFound {
            kind,
            name: name.to_owned(),
        })?;
    component.control_json(command).await
}

/// `GET /admin/dlq/{queue}/entries?kind=&operation=&state=&after=&limit=`: the queue's `list`.
pub(crate) async fn dlq_entries(
    _: Reader,
    State(s): State<AppState>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<EntriesQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(name) = name?;
    let Query(q) = query?;
    let mut command = Map::new();
    command.insert("action".into(), Value::from("list"));
    let text = |v: Option<String>| v.filter(|v| !v.trim().is_empty()).map(Value::from);
    if let Some(v) = text(q.kind) {
        command.insert("kind".into(), v);
    }
    if let Some(v) = text(q.operation) {
        command.insert("operation".into(), v);
    }
    if let Some(v) = text(q.state) {
        command.insert("state".into(), v);
    }
    if let Some(after) = q.after {
        command.insert("after".into(), Value::from(after));
    }
    if let Some(limit) = q.limit {
        command.insert("limit".into(), Value::from(limit));
    }
    match read_command(
        &s,
        ComponentKind::DeadLetterQueue,
        &name,
        Value::Object(command),
    )
    .await
    {
        Ok(mut page) => {
            // Payloads hold tool arguments and client data: never in a list.
            if let Some(entries) = page.get_mut("entries").and_then(Value::as_array_mut) {
                for entry in entries {
                    redact(entry);
                }
            }
            Ok(Json(page))
        }
        // The filters came from the query string: a value the queue cannot read is a bad query.
        Err(ControlError::MalformedCommand { reason, .. }) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_query",
            format!("bad filter in the query string: {reason}"),
        )),
        Err(e) => Err(e.into()),
    }
}

/// Replaces an entry's payload (and raw bytes) with a note saying where to read it.
fn redact(entry: &mut Value) {
    let Some(fields) = entry.as_object_mut() else {
        return;
    };
    let mut redacted = false;
    for key in ["payload", "raw"] {
        redacted |= fields.remove(key).is_some();
    }
    if redacted {
        fields.insert(
            "payload_redacted".into(),
            Value::from("GET this entry with the operator token to see its payload (audited)"),
        );
    }
}

/// `GET /admin/dlq/{queue}/entries/{id}`: the queue's `get`; an unknown id is a 404. The
/// payload is shown to the operator token only, and that read is audited; other readers get
/// the entry without it.
pub(crate) async fn dlq_entry(
    reader: Access,
    State(s): State<AppState>,
    path: Result<Path<(String, u64)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((name, id)) = path?;
    match read_command(
        &s,
        ComponentKind::DeadLetterQueue,
        &name,
        json!({"action": "get", "id": id}),
    )
    .await
    {
        Ok(mut entry) => {
            match reader {
                Access::Operator { actor } => s.audit(
                    ComponentKind::DeadLetterQueue,
                    &name,
                    actor,
                    "read_payload".into(),
                    json!({"id": id}),
                    Value::Null,
                ),
                Access::Reader => redact(&mut entry),
            }
            Ok(Json(entry))
        }
        // The queue answers an unknown id with `Rejected`; over HTTP that is a missing resource.
        Err(ControlError::Rejected { reason, .. }) => {
            Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", reason)
                .with("kind", ComponentKind::DeadLetterQueue.as_str())
                .with("name", name)
                .with("id", id))
        }
        Err(e) => Err(e.into()),
    }
}

/// `GET /admin/resilience`: every registered component, grouped by kind.
pub(crate) async fn resilience(_: Reader, State(s): State<AppState>) -> Json<Value> {
    let mut groups = Map::new();
    for kind in ComponentKind::ALL {
        groups.insert(kind.as_str().to_owned(), Value::Array(Vec::new()));
    }
    let all = s.registry().snapshot_all(None);
    let total = all.len();
    for c in all {
        let entry = groups
            .entry(c.kind.as_str().to_owned())
            .or_insert_with(|| Value::Array(Vec::new()));
        if let Value::Array(items) = entry {
            items.push(json!({ "name": c.name, "snapshot": c.snapshot }));
        }
    }
    let counts: Map<String, Value> = groups
        .iter()
        .map(|(k, v)| (k.clone(), Value::from(v.as_array().map_or(0, Vec::len))))
        .collect();
    let mut doc = json!({
        "generated_at_unix_ms": crate::now_unix_ms(),
        "total": total,
        "counts": counts,
        "components": groups,
    });
    #[cfg(feature = "health")]
    if let (Some(monitor), Some(obj)) = (s.health(), doc.as_object_mut()) {
        obj.insert(
            "health".into(),
            crate::health::monitor_view(&monitor.report()),
        );
    }
    #[cfg(not(feature = "health"))]
    let _ = &mut doc;
    Json(doc)
}

/// The `/admin` index: method, path, what.
const ROUTES: &[(&str, &str, &str)] = &[
    ("GET", "/livez", "liveness: 200 or 503"),
    ("GET", "/readyz", "readiness: 200 or 503"),
    (
        "GET",
        "/health",
        "overall and per-component health (application/health+json)",
    ),
    ("GET", "/metrics", "Prometheus text of every component"),
    ("GET", "/admin", "this index"),
    ("GET", "/admin/dashboard", "the dashboard page"),
    (
        "GET",
        "/admin/resilience",
        "every component, grouped by kind",
    ),
    (
        "GET",
        "/admin/circuit-breakers[/{name}]",
        "circuit breakers",
    ),
    (
        "POST",
        "/admin/circuit-breakers/{name}",
        "reset, force_open, disable, metrics_only, set_config",
    ),
    ("GET", "/admin/bulkheads[/{name}]", "bulkheads"),
    (
        "POST",
        "/admin/bulkheads/{name}",
        "set_max_concurrent, set_max_wait, set_adaptive, set_config",
    ),
    ("GET", "/admin/rate-limiters[/{name}]", "rate limiters"),
    (
        "POST",
        "/admin/rate-limiters/{name}",
        "set_quota, reset, set_failure_policy",
    ),
    (
        "GET",
        "/admin/retries[/{name}]",
        "retry policies and their budgets",
    ),
    (
        "POST",
        "/admin/retries/{name}",
        "set_config, update_config, set_budget, reset_budget",
    ),
    ("GET", "/admin/hedges[/{name}]", "hedging policies"),
    (
        "POST",
        "/admin/hedges/{name}",
        "set_enabled, set_delay, set_config, update_config, set_budget, reset_budget",
    ),
    ("GET", "/admin/timeouts[/{name}]", "per-call deadlines"),
    (
        "POST",
        "/admin/timeouts/{name}",
        "set_deadline, set_config, update_config",
    ),
    ("GET", "/admin/fallbacks[/{name}]", "fallbacks"),
    ("POST", "/admin/fallbacks/{name}", "enable, disable"),
    ("GET", "/admin/fault-injectors[/{name}]", "fault injectors"),
    (
        "POST",
        "/admin/fault-injectors/{name}",
        "enable (mode, rate, ttl), disable",
    ),
    ("GET", "/admin/dlq[/{queue}]", "dead-letter queues"),
    (
        "GET",
        "/admin/dlq/{queue}/entries",
        "entries (kind, operation, state, after, limit)",
    ),
    ("GET", "/admin/dlq/{queue}/entries/{id}", "one entry"),
    (
        "POST",
        "/admin/dlq/{queue}",
        "list, get, retry, discard, purge, stats, trim",
    ),
    ("GET", "/admin/health", "the health monitor's report"),
    (
        "POST",
        "/admin/health",
        "set_auto_restart (whole monitor), check_all",
    ),
    (
        "GET",
        "/admin/health/components[/{name}]",
        "monitored components",
    ),
    (
        "POST",
        "/admin/health/components/{name}",
        "restart, reset_crash_loop, set_auto_restart, check",
    ),
    (
        "GET",
        "/admin/events",
        "recent events (kind, component, type, since_seq, limit)",
    ),
    (
        "GET",
        "/admin/events/stream",
        "live events as server-sent events",
    ),
    (
        "GET",
        "/admin/history",
        "per-second history, last 15 min (kind, name, seconds, since)",
    ),
];

/// `GET /admin`: what this router serves and whether mutations are enabled.
pub(crate) async fn index(_: Reader, State(s): State<AppState>) -> Json<Value> {
    let routes: Vec<Value> = ROUTES
        .iter()
        .map(|&(method, path, what)| {
            json!({
                "method": method,
                "path": path,
                "what": what,
                "needs_token": method != "GET"
                    || (s.protect_reads() && !crate::OPEN_PATHS.contains(&path)),
            })
        })
        .collect();
    Json(json!({
        "service": "palisade-admin",
        "version": env!("CARGO_PKG_VERSION"),
        "mutations_enabled": s.token().is_some(),
        "reads_need_token": s.protect_reads(),
        "routes": routes,
    }))
}
