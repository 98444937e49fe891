//! The fleet's admin routes (feature `axum`, on by default): [`fleet_router`], whose
//! documentation lists the routes and errors.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{ConnectInfo, DefaultBodyLimit, FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use palisade_core::ComponentKind;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::command::{FleetCommand, MAX_COMMAND_BYTES};
use crate::error::FleetError;
use crate::fleet::Fleet;

/// The deadline of a command whose body names none.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(5);

/// The longest deadline a request may ask for.
pub const MAX_DEADLINE: Duration = Duration::from_secs(60);

/// The header a caller names itself with, for the audit trail (as palisade-admin).
pub const ACTOR_HEADER: &str = "x-palisade-actor";

/// The actor recorded when the caller does not name itself (as palisade-admin).
pub const DEFAULT_ACTOR: &str = "admin-token";

/// Longest actor name kept (characters).
const MAX_ACTOR_LEN: usize = 64;

/// The fleet's admin routes over `fleet`. **It does no authentication**: merge it into
/// palisade-admin's router behind its bearer-token check (as the gateway does), never serve it
/// on an open listener.
///
/// | method | path | what |
/// | --- | --- | --- |
/// | GET | `/admin/fleet` | `{"fleet", "instance", "count", "instances": [InstanceInfo...]}` |
/// | POST | `/admin/fleet/commands` | body `{"kind", "name", "command", "persist", "deadline_ms"}` (`persist` default false, `deadline_ms` default 5000, at most 60000); answers the [`FleetAnswer`](crate::FleetAnswer) |
/// | GET | `/admin/fleet/overrides` | `{"fleet", "count", "overrides": [Override...]}` |
/// | DELETE | `/admin/fleet/overrides` | removes every override: `{"removed"}` |
/// | DELETE | `/admin/fleet/overrides/{kind}/{name}` | removes a component's overrides: `{"kind", "name", "removed"}` |
///
/// `{kind}` is the JSON name (`circuit_breaker`) or the admin path's (`circuit-breakers`).
/// The actor of a command is the `X-Palisade-Actor` header (printable ASCII, cut to 64
/// characters) or `admin-token`, followed by ` from <address>` when the peer is known; each
/// instance's audit event names it.
///
/// Errors are JSON, `{"error": "<code>", "message"}`: 400 `malformed_json`,
/// `malformed_body` (the message names the missing, unknown or invalid field),
/// `invalid_command`, `not_persistable`, `bad_path`; 413 `payload_too_large` (over 64 KiB);
/// 503 `backend_unavailable` when Redis cannot be reached; 500 `corrupt` for unreadable data.
///
/// ```no_run
/// use palisade_core::Registry;
/// use palisade_fleet::{Fleet, FleetConfig, fleet_router};
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let registry = Registry::new();
/// let fleet = Fleet::join("redis://127.0.0.1:6379", FleetConfig::new("mcp", "gw-1"), &registry).await?;
/// let admin: axum::Router = fleet_router(fleet.clone()); // behind the admin token
/// # let _ = admin;
/// # Ok(()) }
/// ```
pub fn fleet_router(fleet: Fleet) -> Router {
    Router::new()
        .route("/admin/fleet", get(instances))
        .route("/admin/fleet/resilience", get(resilience))
        .route("/admin/fleet/commands", post(send))
        .route("/admin/fleet/overrides", get(overrides).delete(clear_all))
        .route("/admin/fleet/overrides/{kind}/{name}", delete(clear_one))
        .layer(DefaultBodyLimit::max(MAX_COMMAND_BYTES))
        .with_state(fleet)
}

/// An error answer: a status and `{"error": code, "message"}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": self.code, "message": self.message});
        (self.status, Json(body)).into_response()
    }
}

impl From<FleetError> for ApiError {
    fn from(e: FleetError) -> Self {
        let message = e.to_string();
        match e {
            FleetError::Unavailable { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                message,
            ),
            FleetError::InvalidCommand { .. } => Self::bad_request("invalid_command", message),
            FleetError::NotPersistable { .. } => Self::bad_request("not_persistable", message),
            FleetError::Corrupt { .. } => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "corrupt", message)
            }
            _ => Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
        }
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        let status = r.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            return Self::new(
                status,
                "payload_too_large",
                format!("the request body is over {MAX_COMMAND_BYTES} bytes"),
            );
        }
        Self::new(status, "bad_body", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::bad_request("bad_path", r.body_text())
    }
}

/// Who sent a request, for the audit trail (never fails).
struct Actor(String);

impl<S: Send + Sync> FromRequestParts<S> for Actor {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        let declared = parts
            .headers
            .get(ACTOR_HEADER)
            .and_then(|v| sanitize_actor(v.as_bytes()))
            .unwrap_or_else(|| DEFAULT_ACTOR.to_owned());
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        // Behind palisade-admin's guard the header already names the peer: say it once.
        Ok(Actor(match peer {
            Some(peer) if !declared.ends_with(&format!(" from {peer}")) => {
                format!("{declared} from {peer}")
            }
            _ => declared,
        }))
    }
}

/// Printable ASCII (others become `_`), trimmed, cut to 64 characters; `None` when empty.
fn sanitize_actor(raw: &[u8]) -> Option<String> {
    let text: String = raw
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    let text: String = text.trim().chars().take(MAX_ACTOR_LEN).collect();
    (!text.is_empty()).then_some(text)
}

/// A component kind from a path segment: the JSON name or the admin path's.
fn parse_kind(segment: &str) -> Result<ComponentKind, ApiError> {
    let alias = match segment {
        "circuit-breakers" => Some(ComponentKind::CircuitBreaker),
        "bulkheads" => Some(ComponentKind::Bulkhead),
        "rate-limiters" => Some(ComponentKind::RateLimiter),
        "dlq" => Some(ComponentKind::DeadLetterQueue),
        "retries" => Some(ComponentKind::Retry),
        "hedges" => Some(ComponentKind::Hedge),
        "timeouts" => Some(ComponentKind::Timeout),
        "fallbacks" => Some(ComponentKind::Fallback),
        "fault-injectors" => Some(ComponentKind::FaultInjector),
        _ => None,
    };
    alias
        .or_else(|| serde_json::from_value(Value::from(segment)).ok())
        .ok_or_else(|| {
            let known: Vec<&str> = ComponentKind::ALL.iter().map(|k| k.as_str()).collect();
            ApiError::bad_request(
                "bad_path",
                format!(
                    "unknown component kind {segment:?}; use one of {}",
                    known.join(", ")
                ),
            )
        })
}

async fn instances(State(fleet): State<Fleet>) -> Result<Json<Value>, ApiError> {
    let list = fleet.instances().await?;
    Ok(Json(json!({
        "fleet": fleet.name(),
        "instance": fleet.instance_id(),
        "count": list.len(),
        "instances": list,
    })))
}

/// The body of `POST /admin/fleet/commands`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandBody {
    kind: ComponentKind,
    name: String,
    command: Value,
    #[serde(default)]
    persist: bool,
    #[serde(default)]
    deadline_ms: Option<u64>,
}

fn command_body(body: Result<Bytes, BytesRejection>) -> Result<CommandBody, ApiError> {
    let bytes = body?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad_request(
            "malformed_json",
            "the body is empty; send {\"kind\": \"circuit_breaker\", \"name\": \"...\", \
             \"command\": {\"action\": \"...\"}}",
        ));
    }
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| {
        ApiError::bad_request(
            "malformed_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    serde_json::from_value(value).map_err(|e| {
        ApiError::bad_request(
            "malformed_body",
            format!(
                "the body must be {{\"kind\", \"name\", \"command\", \"persist\", \
                 \"deadline_ms\"}}: {e}"
            ),
        )
    })
}

async fn send(
    State(fleet): State<Fleet>,
    Actor(actor): Actor,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = command_body(body)?;
    let deadline = body
        .deadline_ms
        .map_or(DEFAULT_DEADLINE, Duration::from_millis);
    if deadline > MAX_DEADLINE {
        return Err(ApiError::bad_request(
            "malformed_body",
            format!(
                "deadline_ms {} is over the limit of {} ms",
                deadline.as_millis(),
                MAX_DEADLINE.as_millis()
            ),
        ));
    }
    let command = FleetCommand::new(body.kind, body.name, body.command)
        .persist(body.persist)
        .actor(actor);
    let answer = fleet.send(command, deadline).await?;
    Ok(Json(json!(answer)))
}

async fn overrides(State(fleet): State<Fleet>) -> Result<Json<Value>, ApiError> {
    let list = fleet.overrides().await?;
    Ok(Json(json!({
        "fleet": fleet.name(),
        "count": list.len(),
        "overrides": list,
    })))
}

async fn clear_one(
    State(fleet): State<Fleet>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path((kind, name)) = path?;
    let kind = parse_kind(&kind)?;
    let removed = fleet.clear_override(kind, &name).await?;
    Ok(Json(
        json!({"kind": kind, "name": name, "removed": removed}),
    ))
}

/// `GET /admin/fleet/resilience`: the live instances' components as one.
async fn resilience(State(fleet): State<Fleet>) -> Result<Json<crate::FleetResilience>, ApiError> {
    Ok(Json(fleet.resilience().await?))
}

async fn clear_all(State(fleet): State<Fleet>) -> Result<Json<Value>, ApiError> {
    let removed = fleet.clear_all().await?;
    Ok(Json(json!({"removed": removed})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_are_sanitized_and_bounded() {
        assert_eq!(sanitize_actor(b"  alice  "), Some("alice".into()));
        assert_eq!(sanitize_actor(b"bob\r\nX: y"), Some("bob__X: y".into()));
        assert_eq!(sanitize_actor(b"   "), None);
        assert_eq!(sanitize_actor(&[b'a'; 500]).map(|s| s.len()), Some(64));
    }

    #[test]
    fn kinds_parse_from_json_and_path_names() {
        assert_eq!(
            parse_kind("circuit_breaker").unwrap(),
            ComponentKind::CircuitBreaker
        );
        assert_eq!(
            parse_kind("circuit-breakers").unwrap(),
            ComponentKind::CircuitBreaker
        );
        assert_eq!(parse_kind("health").unwrap(), ComponentKind::Health);
        let err = parse_kind("breakers").unwrap_err();
        assert_eq!(err.status, StatusCode::BAD_REQUEST);
        assert!(err.message.contains("circuit_breaker"), "{}", err.message);
    }
}
