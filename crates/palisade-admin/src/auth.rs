//! Bearer-token checks for mutations (and optionally reads), and who the caller says they are.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};

use crate::error::ApiError;
use crate::state::AppState;

/// The environment variable the admin (operator) token is read from by default.
pub const TOKEN_ENV: &str = "PALISADE_ADMIN_TOKEN";

/// The environment variable the viewer token (reads only) is read from by default.
pub const VIEWER_TOKEN_ENV: &str = "PALISADE_VIEWER_TOKEN";

/// Suffix of the variables naming a file that holds a token (`PALISADE_ADMIN_TOKEN_FILE`):
/// read when the variable itself is unset, so the secret need not sit in the environment.
pub const FILE_SUFFIX: &str = "_FILE";

/// The header a caller may name itself with, for the audit trail.
pub const ACTOR_HEADER: &str = "x-palisade-actor";

/// The actor recorded when the caller does not name itself.
pub const DEFAULT_ACTOR: &str = "admin-token";

/// Longest actor name kept (characters); longer names are cut.
pub const MAX_ACTOR_LEN: usize = 64;

const CHALLENGE: &str = "Bearer realm=\"palisade-admin\"";
const CHALLENGE_INVALID: &str = "Bearer realm=\"palisade-admin\", error=\"invalid_token\"";

/// Compares two byte strings in time that depends only on their lengths, never on where they
/// first differ, so a wrong token's answer time tells nothing about the right one.
///
/// ```
/// assert!(palisade_admin::constant_time_eq(b"s3cret", b"s3cret"));
/// assert!(!palisade_admin::constant_time_eq(b"s3cret", b"s3creT"));
/// ```
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
        // Keep the optimizer from ending the loop early once `diff` is non-zero.
        diff = std::hint::black_box(diff);
    }
    diff == 0
}

/// Checks `Authorization: Bearer <token>` against the operator token; a viewer token gets 403
/// (it may read, not change anything).
pub(crate) fn authorize(
    expected: Option<&str>,
    viewer: Option<&str>,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(expected) = expected else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mutations_disabled",
            format!(
                "admin mutations are disabled because no admin token is configured; set \
                 {TOKEN_ENV} (or AdminRouterBuilder::token) and send \
                 `Authorization: Bearer <token>`"
            ),
        ));
    };
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return Err(ApiError::unauthorized(
            "this request needs `Authorization: Bearer <token>`",
            CHALLENGE,
        ));
    };
    let presented = value
        .to_str()
        .ok()
        .map(str::trim)
        .and_then(|v| v.split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, token)| token.trim());
    let Some(presented) = presented else {
        return Err(ApiError::unauthorized(
            "the Authorization header must be `Bearer <token>`",
            CHALLENGE,
        ));
    };
    if constant_time_eq(presented.as_bytes(), expected.as_bytes()) {
        return Ok(());
    }
    if viewer.is_some_and(|v| constant_time_eq(presented.as_bytes(), v.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this is a viewer token: it can read, but commands need the operator token (PALISADE_ADMIN_TOKEN)",
        ));
    }
    Err(ApiError::unauthorized(
        "the bearer token is not valid",
        CHALLENGE_INVALID,
    ))
}

/// Checks a reader's token: the operator's or the viewer's.
fn authorize_read(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    match (state.token(), state.viewer_token()) {
        (None, None) => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "reads_disabled",
            format!(
                "reads need a token but none is configured; set {TOKEN_ENV} or {VIEWER_TOKEN_ENV} and send `Authorization: Bearer <token>`"
            ),
        )),
        (operator, viewer) => {
            // A viewer token is as good as the operator's for reading.
            if let Some(v) = viewer
                && authorize(Some(v), None, headers).is_ok()
            {
                return Ok(());
            }
            authorize(operator.or(viewer), None, headers)
        }
    }
}

/// The caller's self-declared name from `X-Palisade-Actor`: printable ASCII only (anything
/// else becomes `_`), trimmed, at most [`MAX_ACTOR_LEN`] characters; `None` when empty.
pub(crate) fn sanitize_actor(raw: &[u8]) -> Option<String> {
    let cleaned: String = raw
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() || b == b' ' {
                char::from(b)
            } else {
                '_'
            }
        })
        .collect();
    let trimmed: String = cleaned.trim().chars().take(MAX_ACTOR_LEN).collect();
    let trimmed = trimmed.trim_end();
    (!trimmed.is_empty()).then(|| trimmed.to_owned())
}

/// The actor string of the audit trail: the declared name (or [`DEFAULT_ACTOR`]) and the peer.
pub(crate) fn actor(headers: &HeaderMap, peer: Option<SocketAddr>) -> String {
    let who = headers
        .get(ACTOR_HEADER)
        .and_then(|v| sanitize_actor(v.as_bytes()))
        .unwrap_or_else(|| DEFAULT_ACTOR.to_owned());
    match peer {
        Some(peer) => format!("{who} from {peer}"),
        None => who,
    }
}

/// A caller allowed to change things: the token matched. Carries the audit trail's actor.
#[derive(Debug, Clone)]
pub(crate) struct Operator {
    pub actor: String,
}

impl FromRequestParts<AppState> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0);
        if let Err(e) = authorize(state.token(), state.viewer_token(), &parts.headers) {
            tracing::warn!(
                target: "palisade::admin",
                method = %parts.method, path = %parts.uri.path(),
                peer = ?peer, status = e.status().as_u16(),
                "admin mutation refused"
            );
            return Err(e);
        }
        Ok(Operator {
            actor: actor(&parts.headers, peer),
        })
    }
}

/// A reader, and whether it holds the operator token (then it sees what only an operator may,
/// such as a dead-letter entry's payload, and the read is audited under its actor).
#[derive(Debug, Clone)]
pub(crate) enum Access {
    /// The operator token.
    Operator {
        /// The audit trail's actor.
        actor: String,
    },
    /// A viewer token, or no token where reads are open.
    Reader,
}

impl FromRequestParts<AppState> for Access {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        Reader::from_request_parts(parts, state).await?;
        if state.token().is_some() && authorize(state.token(), None, &parts.headers).is_ok() {
            let peer = parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|c| c.0);
            return Ok(Access::Operator {
                actor: actor(&parts.headers, peer),
            });
        }
        Ok(Access::Reader)
    }
}

/// A Prometheus scraper: like [`Reader`], unless `/metrics` was opened to any scraper.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scraper;

impl FromRequestParts<AppState> for Scraper {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.protect_reads() && state.inner.metrics_need_token {
            authorize_read(state, &parts.headers)?;
        }
        Ok(Scraper)
    }
}

/// The token rules of an application's extension routes
/// ([`AdminRouterBuilder::extension`](crate::AdminRouterBuilder::extension)): `GET`/`HEAD` as a
/// reader, any other method as the operator, whose actor replaces `X-Palisade-Actor`.
pub(crate) async fn guard_extension(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let (mut parts, body) = request.into_parts();
    if parts.method == axum::http::Method::GET || parts.method == axum::http::Method::HEAD {
        if let Err(e) = Reader::from_request_parts(&mut parts, &state).await {
            return e.into_response();
        }
    } else {
        match Operator::from_request_parts(&mut parts, &state).await {
            Ok(operator) => {
                if let Ok(value) = axum::http::HeaderValue::from_str(&operator.actor) {
                    parts.headers.insert("x-palisade-actor", value);
                }
            }
            Err(e) => return e.into_response(),
        }
    }
    next.run(axum::extract::Request::from_parts(parts, body))
        .await
}

/// A caller allowed to read: anyone holding a token (operator or viewer), or anyone at all
/// when the router does not require a token for reads.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader;

impl FromRequestParts<AppState> for Reader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if state.protect_reads() {
            authorize_read(state, &parts.headers)?;
        }
        Ok(Reader)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn constant_time_eq_compares_whole_strings() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
        assert!(!constant_time_eq(b"secret2", b"secret"));
        assert!(!constant_time_eq(b"", b"x"));
        // Same bytes modulo a length that wraps must still differ.
        assert!(!constant_time_eq(b"ab", b"ab\0"));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive_and_token_exact() {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("bearer  s3cret "),
        );
        assert!(authorize(Some("s3cret"), None, &h).is_ok());
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic s3cret"),
        );
        assert_eq!(
            authorize(Some("s3cret"), None, &h).map_err(|e| e.status()),
            Err(StatusCode::UNAUTHORIZED)
        );
        h.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer"));
        assert!(authorize(Some("s3cret"), None, &h).is_err());
        assert_eq!(
            authorize(None, None, &h).map_err(|e| e.status()),
            Err(StatusCode::FORBIDDEN)
        );
    }

    #[test]
    fn actor_is_sanitized_and_bounded() {
        assert_eq!(sanitize_actor(b"  alice  "), Some("alice".into()));
        assert_eq!(sanitize_actor(b"bob\r\nX: y"), Some("bob__X: y".into()));
        assert_eq!(sanitize_actor("zoë".as_bytes()), Some("zo__".into()));
        assert_eq!(sanitize_actor(b"   "), None);
        assert_eq!(
            sanitize_actor(&[b'a'; 500]).map(|s| s.len()),
            Some(MAX_ACTOR_LEN)
        );
        let mut h = HeaderMap::new();
        assert_eq!(actor(&h, None), "admin-token");
        h.insert(ACTOR_HEADER, HeaderValue::from_static("carol"));
        let peer: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(actor(&h, Some(peer)), "carol from 127.0.0.1:4000");
    }
}
