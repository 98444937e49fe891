//! Refusals as axum responses (feature `axum`).

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderValue};
use tower::BoxError;

use crate::classify::{find_error, is_timeout};
use crate::ratelimit::MissingKey;
use crate::refusal::Refusal;

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        self.to_response::<Body>()
    }
}

impl IntoResponse for MissingKey {
    fn into_response(self) -> Response {
        let status = if self.is_server_fault() {
            StatusCode::INTERNAL_SERVER_ERROR
        } else {
            StatusCode::BAD_REQUEST
        };
        json_response(
            status,
            serde_json::json!({
                "error": "missing_rate_limit_key",
                "component": palisade_core::ComponentKind::RateLimiter.as_str(),
                "reason": self.to_string(),
            }),
        )
    }
}

fn json_response(status: StatusCode, body: serde_json::Value) -> Response {
    let mut response = Response::new(Body::from(body.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// The response for an error of a Palisade stack, for `axum::error_handling::HandleErrorLayer`
/// (see [`handle_error`]):
///
/// - a Palisade refusal: 503 or 429 with `Retry-After` and, for a rate limiter, the
///   `RateLimit-*` headers, as [`Refusal`] describes;
/// - [`MissingKey`]: 400, or 500 when the server cannot provide the key (no peer address);
/// - a timeout (tower's `Timeout`, tokio's, an I/O timeout): 504;
/// - anything else: 500 with a generic body (the error itself is logged with `tracing`, not
///   shown to the client).
pub fn error_response(err: BoxError) -> Response {
    if let Some(refusal) = Refusal::from_error(&err) {
        return refusal.into_response();
    }
    if let Some(missing) = find_error::<MissingKey, _>(&err) {
        return missing.clone().into_response();
    }
    if is_timeout(&err) {
        return json_response(
            StatusCode::GATEWAY_TIMEOUT,
            serde_json::json!({
                "error": "timeout",
                "reason": "the upstream did not answer in time",
            }),
        );
    }
    tracing::error!(target: "palisade::tower", error = %err, "request failed");
    json_response(
        StatusCode::INTERNAL_SERVER_ERROR,
        serde_json::json!({"error": "internal", "reason": "the request failed"}),
    )
}

/// [`error_response`] as the async function `HandleErrorLayer` takes.
///
/// ```
/// use axum::{Router, error_handling::HandleErrorLayer, routing::get};
/// use http::{Request, StatusCode};
/// use palisade_bulkhead::Bulkhead;
/// use palisade_tower::{BulkheadLayer, handle_error};
/// use tower::{ServiceBuilder, ServiceExt};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let tools = Bulkhead::builder("tools").max_concurrent(1).build()?;
/// let app = Router::new().route("/", get(|| async { "ok" })).layer(
///     ServiceBuilder::new()
///         .layer(HandleErrorLayer::new(handle_error))
///         .layer(BulkheadLayer::new(tools.clone())),
/// );
/// let _busy = tools.try_acquire()?;
/// let reply = app.oneshot(Request::new(axum::body::Body::empty())).await?;
/// assert_eq!(reply.status(), StatusCode::SERVICE_UNAVAILABLE);
/// assert_eq!(reply.headers()["retry-after"], "1");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub async fn handle_error(err: BoxError) -> Response {
    error_response(err)
}
