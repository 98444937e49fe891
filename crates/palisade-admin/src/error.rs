//! JSON error bodies: every refusal is `{"error": "<code>", "message": "...", ...}` with the
//! status code that tells a client what to do.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use palisade_core::ControlError;
use serde_json::{Map, Value};

/// An error answer: a status code and a JSON object with at least `error` and `message`.
#[derive(Debug, Clone)]
pub(crate) struct ApiError {
    status: StatusCode,
    body: Map<String, Value>,
    www_authenticate: Option<&'static str>,
}

impl ApiError {
    /// An error with a machine-readable `code` and a message for people.
    pub(crate) fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        let mut body = Map::new();
        body.insert("error".into(), Value::from(code));
        body.insert("message".into(), Value::from(message.into()));
        Self {
            status,
            body,
            www_authenticate: None,
        }
    }

    /// The same error with one more field in its body.
    pub(crate) fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.body.insert(key.into(), value.into());
        self
    }

    /// A 401 with `WWW-Authenticate: Bearer ...`.
    pub(crate) fn unauthorized(message: &str, challenge: &'static str) -> Self {
        let mut e = Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message);
        e.www_authenticate = Some(challenge);
        e
    }

    /// A 400 for a body that is not JSON.
    pub(crate) fn malformed_json(reason: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the request body is not valid JSON: {reason}"),
        )
    }

    /// The status code (for tests and logs).
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
}

impl From<ControlError> for ApiError {
    fn from(e: ControlError) -> Self {
        let message = e.to_string();
        match e {
            ControlError::NotFound { kind, name } => {
                Self::new(StatusCode::NOT_FOUND, "not_found", message)
                    .with("kind", kind.as_str())
                    .with("name", name)
            }
            ControlError::MalformedCommand { kind, name, reason } => {
                Self::new(StatusCode::BAD_REQUEST, "malformed_command", message)
                    .with("kind", kind.as_str())
                    .with("name", name)
                    .with("reason", reason)
            }
            ControlError::InvalidConfig(c) => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_config", message)
                    .with("field", c.field)
                    .with("reason", c.reason)
            }
            ControlError::Rejected { action, reason } => {
                Self::new(StatusCode::CONFLICT, "rejected", message)
                    .with("action", action)
                    .with("reason", reason)
            }
            ControlError::Backend { reason } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                message,
            )
            .with("reason", reason),
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
                format!("the request body is too large: {}", r.body_text()),
            );
        }
        Self::new(status, "bad_body", r.body_text())
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_query", r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_path", r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(Value::Object(self.body))).into_response();
        if let Some(challenge) = self.www_authenticate {
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
        response
    }
}
