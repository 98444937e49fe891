//! MCP sessions, bounded: at most `max_sessions` open at once, each closed after an idle timeout.
//!
//! A client that opens sessions in a loop without closing them would otherwise grow the
//! gateway's memory without limit. Past the cap, a new session (an `initialize` request) is
//! refused with `503 Service Unavailable`, a `Retry-After` and a JSON-RPC error naming the
//! limit; sessions already open keep working, and requests without sessions (the stateless
//! protocol revisions) are not affected.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rmcp::model::{ClientJsonRpcMessage, ServerJsonRpcMessage};
use rmcp::transport::streamable_http_server::session::local::{
    LocalSessionManager, LocalSessionManagerError,
};
use rmcp::transport::streamable_http_server::session::{ServerSseMessage, SessionId};
use rmcp::transport::streamable_http_server::{RestoreOutcome, SessionManager};
use serde_json::json;
use tokio_stream::{Stream, StreamExt};

/// The header that names an MCP session (streamable HTTP).
const SESSION_HEADER: &str = "mcp-session-id";
/// The `Retry-After` of a refused session, in seconds.
const RETRY_AFTER_SECS: u64 = 5;
/// The largest body read to tell an `initialize` from another session-less request while the
/// gateway is full (rmcp itself refuses bodies over 4 MiB).
const MAX_PEEK_BODY: usize = 4 * 1024 * 1024;

/// Why a session could not be created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SessionError {
    /// `max_sessions` sessions are open.
    #[error(
        "session limit reached: {max} MCP sessions are open; close idle sessions (HTTP DELETE \
         with their Mcp-Session-Id) or retry later"
    )]
    Full {
        /// The configured limit.
        max: usize,
    },
    /// rmcp's session manager failed.
    #[error(transparent)]
    Local(#[from] LocalSessionManagerError),
}

/// rmcp's in-memory session manager with a cap on open sessions and an idle timeout.
#[derive(Debug)]
pub struct Sessions {
    inner: LocalSessionManager,
    max: usize,
    /// Held while a session is created, so concurrent `initialize` requests cannot overshoot.
    creating: tokio::sync::Mutex<()>,
}

impl Sessions {
    /// At most `max` sessions, each closed after `idle_timeout` without a request.
    pub fn new(max: usize, idle_timeout: Duration) -> Sessions {
        let mut inner = LocalSessionManager::default();
        inner.session_config.keep_alive = Some(idle_timeout);
        Sessions {
            inner,
            max,
            creating: tokio::sync::Mutex::new(()),
        }
    }

    /// Open sessions.
    pub async fn count(&self) -> usize {
        self.inner.sessions.read().await.len()
    }

    /// The configured limit.
    pub fn max(&self) -> usize {
        self.max
    }

    async fn is_full(&self) -> bool {
        self.count().await >= self.max
    }
}

impl SessionManager for Sessions {
    type Error = SessionError;
    type Transport = <LocalSessionManager as SessionManager>::Transport;

    async fn create_session(&self) -> Result<(SessionId, Self::Transport), Self::Error> {
        let _creating = self.creating.lock().await;
        if self.is_full().await {
            return Err(SessionError::Full { max: self.max });
        }
        Ok(self.inner.create_session().await?)
    }

    async fn initialize_session(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<ServerJsonRpcMessage, Self::Error> {
        Ok(self.inner.initialize_session(id, message).await?)
    }

    async fn has_session(&self, id: &SessionId) -> Result<bool, Self::Error> {
        Ok(self.inner.has_session(id).await?)
    }

    async fn close_session(&self, id: &SessionId) -> Result<(), Self::Error> {
        Ok(self.inner.close_session(id).await?)
    }

    async fn create_stream(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_stream(id, message).await?)
    }

    async fn accept_message(
        &self,
        id: &SessionId,
        message: ClientJsonRpcMessage,
    ) -> Result<(), Self::Error> {
        Ok(self.inner.accept_message(id, message).await?)
    }

    async fn create_standalone_stream(
        &self,
        id: &SessionId,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.create_standalone_stream(id).await?)
    }

    async fn resume(
        &self,
        id: &SessionId,
        last_event_id: String,
    ) -> Result<impl Stream<Item = ServerSseMessage> + Send + Sync + 'static, Self::Error> {
        Ok(self.inner.resume(id, last_event_id).await?)
    }

    async fn restore_session(
        &self,
        _id: SessionId,
    ) -> Result<RestoreOutcome<Self::Transport>, Self::Error> {
        // No external session store: an unknown session is gone (404), as with rmcp's manager.
        Ok(RestoreOutcome::NotSupported)
    }
}

/// Axum middleware in front of the MCP service: every `POST` (a call, a notification, a
/// response) holds a [`Gateway::track_response`] token until its response body has been sent
/// or dropped, so a shutdown delivers the answers of the calls it waited for.
pub async fn track_responses(
    State(gateway): State<crate::Gateway>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST {
        return next.run(request).await;
    }
    let token = gateway.track_response();
    let response = next.run(request).await;
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _held = &token;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}

/// Axum middleware in front of the MCP service: while every session slot is taken, an
/// `initialize` request (a `POST` without `Mcp-Session-Id`) is answered `503` with a
/// `Retry-After` and a JSON-RPC error naming the limit. [`Sessions::create_session`] enforces
/// the same cap exactly; this gives the refusal a clear status and message.
pub async fn refuse_when_full(
    State(sessions): State<Arc<Sessions>>,
    request: Request,
    next: Next,
) -> Response {
    if request.method() != Method::POST
        || request.headers().contains_key(SESSION_HEADER)
        || !sessions.is_full().await
    {
        return next.run(request).await;
    }
    // Full, and no session named: read the body to see whether it opens a session.
    let (parts, body) = request.into_parts();
    let bytes: Bytes = match axum::body::to_bytes(body, MAX_PEEK_BODY).await {
        Ok(bytes) => bytes,
        Err(e) => {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("cannot read the request body: {e}"),
            )
                .into_response();
        }
    };
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow)]
        method: Option<&'a str>,
        id: Option<serde_json::Value>,
    }
    let opens_session = serde_json::from_slice::<Message<'_>>(&bytes)
        .ok()
        .filter(|m| m.method == Some("initialize"));
    let Some(init) = opens_session else {
        return next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
    };
    let error = SessionError::Full {
        max: sessions.max(),
    };
    tracing::warn!(
        max = sessions.max(),
        "MCP session refused: session limit reached"
    );
    let body = json!({
        "jsonrpc": "2.0",
        "id": init.id.unwrap_or(serde_json::Value::Null),
        "error": {"code": -32000, "message": error.to_string(), "data": {"error": "session_limit", "max_sessions": sessions.max()}},
    });
    let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
    response
}
