//! Authentication of MCP clients: the gateway as an OAuth resource server (the MCP
//! authorization spec). A client sends `Authorization: Bearer <JWT>`; the token is checked
//! against the issuer's JWKS (fetched, cached, fetched again when a token names an unknown
//! `kid`, so a key rotation needs no restart): signature, `iss`, `aud` (the gateway's resource
//! URI, RFC 8707), `exp`/`nbf` with a small leeway, and an optional scope. `alg: none` and
//! HMAC algorithms are refused outright, so a public key can never serve as an HMAC secret.
//!
//! A refusal is `401` with `WWW-Authenticate: Bearer resource_metadata="…"`, pointing at the
//! protected-resource metadata (RFC 9728, `/.well-known/oauth-protected-resource`); a token
//! without the required scope is `403 insufficient_scope`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use parking_lot::Mutex;
use serde::Deserialize;
use serde_json::json;

use palisade::admin::constant_time_eq;

use crate::config::JwtConfig;

/// Where the protected-resource metadata is served.
pub const METADATA_PATH: &str = "/.well-known/oauth-protected-resource";

/// Signature algorithms accepted: asymmetric only.
const ALLOWED: [Algorithm; 9] = [
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// How often at most the JWKS is fetched again for an unknown `kid`.
const MIN_REFRESH: Duration = Duration::from_secs(1);

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No usable `Authorization: Bearer` header.
    #[error("this MCP endpoint needs `Authorization: Bearer <token>`")]
    Missing,
    /// The token is not acceptable; the reason says why (never the token itself).
    #[error("the bearer token is not valid: {0}")]
    Invalid(String),
    /// The token is valid but lacks the scope.
    #[error("the bearer token lacks the scope {0:?}")]
    InsufficientScope(String),
    /// The issuer's keys could not be fetched.
    #[error("the issuer's keys are unavailable: {0}")]
    KeysUnavailable(String),
}

/// The claims the gateway reads.
#[derive(Debug, Clone, Deserialize)]
pub struct Claims {
    /// The subject (the client's identity).
    #[serde(default)]
    pub sub: Option<String>,
    /// Space-separated scopes (`scope`), or a list (`scp`).
    #[serde(default)]
    pub scope: Option<String>,
    /// Scopes as a list (Azure AD style).
    #[serde(default)]
    pub scp: Option<Vec<String>>,
}

impl Claims {
    /// Whether the token carries scope `wanted`.
    pub fn has_scope(&self, wanted: &str) -> bool {
        self.scope
            .as_deref()
            .is_some_and(|s| s.split_whitespace().any(|x| x == wanted))
            || self
                .scp
                .as_ref()
                .is_some_and(|l| l.iter().any(|x| x == wanted))
    }
}

/// Checks bearer JWTs against an issuer's JWKS.
pub struct JwtVerifier {
    config: JwtConfig,
    client: reqwest::Client,
    keys: Mutex<Keys>,
    /// Serializes JWKS fetches.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct Keys {
    by_kid: HashMap<String, DecodingKey>,
    fetched: Option<Instant>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuer", &self.config.issuer)
            .field("resource", &self.config.resource)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `config`; keys are fetched on first use.
    pub fn new(config: JwtConfig) -> JwtVerifier {
        JwtVerifier {
            config,
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()
                .unwrap_or_default(),
            keys: Mutex::new(Keys::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    /// The protected-resource metadata document (RFC 9728).
    pub fn metadata(&self) -> serde_json::Value {
        json!({
            "resource": self.config.resource,
            "authorization_servers": [self.config.issuer],
            "bearer_methods_supported": ["header"],
            "scopes_supported": self.config.required_scope.iter().collect::<Vec<_>>(),
        })
    }

    /// The `WWW-Authenticate` value of a refusal.
    fn challenge(&self, error: &AuthError) -> String {
        let metadata = metadata_url(&self.config.resource);
        match error {
            AuthError::Missing => format!("Bearer resource_metadata=\"{metadata}\""),
            AuthError::InsufficientScope(scope) => format!(
                "Bearer error=\"insufficient_scope\", scope=\"{scope}\", resource_metadata=\"{metadata}\""
            ),
            _ => format!("Bearer error=\"invalid_token\", resource_metadata=\"{metadata}\""),
        }
    }

    /// The API key `token` is, if it is one (compared by SHA-256, in constant time).
    fn api_key(&self, token: &str) -> Option<Claims> {
        if self.config.api_keys.is_empty() {
            return None;
        }
        let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let mut found = None;
        for key in &self.config.api_keys {
            // Every key is compared, whatever matches, so the time says nothing.
            if constant_time_eq(hex.as_bytes(), key.sha256.to_ascii_lowercase().as_bytes()) {
                found = Some(key);
            }
        }
        found.map(|key| Claims {
            sub: Some(format!("key:{}", key.name)),
            scope: Some(key.scopes.join(" ")),
            scp: None,
        })
    }

    /// Checks `token` (an API key, or a JWT); the claims when it is acceptable.
    pub async fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if let Some(claims) = self.api_key(token) {
            if let Some(scope) = &self.config.required_scope
                && !claims.has_scope(scope)
            {
                return Err(AuthError::InsufficientScope(scope.clone()));
            }
            return Ok(claims);
        }
        let head = jsonwebtoken::decode_header(token)
            .map_err(|e| AuthError::Invalid(format!("not a JWT ({e})")))?;
        if !ALLOWED.contains(&head.alg) {
            return Err(AuthError::Invalid(format!(
                "algorithm {:?} is not accepted (asymmetric signatures only)",
                head.alg
            )));
        }
        let kid = head
            .kid
            .ok_or_else(|| AuthError::Invalid("the token names no key (`kid`)".into()))?;
        let key = match self.key(&kid) {
            Some(key) => key,
            None => {
                self.refresh().await?;
                self.key(&kid).ok_or_else(|| {
                    AuthError::Invalid(format!("no key {kid:?} in the issuer's JWKS"))
                })?
            }
        };
        let mut validation = Validation::new(head.alg);
        validation.set_issuer(&[&self.config.issuer]);
        validation.set_audience(&[&self.config.resource]);
        validation.leeway = self.config.leeway.as_secs();
        validation.set_required_spec_claims(&["exp", "iss", "aud"]);
        validation.validate_nbf = true;
        let data = jsonwebtoken::decode::<Claims>(token, &key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        if let Some(scope) = &self.config.required_scope
            && !data.claims.has_scope(scope)
        {
            return Err(AuthError::InsufficientScope(scope.clone()));
        }
        Ok(data.claims)
    }

    fn key(&self, kid: &str) -> Option<DecodingKey> {
        self.keys.lock().by_kid.get(kid).cloned()
    }

    /// Fetches the JWKS again (at most once per second).
    async fn refresh(&self) -> Result<(), AuthError> {
        let _one = self.fetching.lock().await;
        if self
            .keys
            .lock()
            .fetched
            .is_some_and(|at| at.elapsed() < MIN_REFRESH)
        {
            return Ok(());
        }
        let url = &self.config.jwks_url;
        let set: JwkSet = self
            .client
            .get(url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| AuthError::KeysUnavailable(format!("GET {url}: {e}")))?
            .json()
            .await
            .map_err(|e| AuthError::KeysUnavailable(format!("{url} is not a JWKS: {e}")))?;
        let mut by_kid = HashMap::new();
        for jwk in &set.keys {
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            match DecodingKey::from_jwk(jwk) {
                Ok(key) => {
                    by_kid.insert(kid, key);
                }
                Err(e) => {
                    tracing::warn!(kid, error = %e, "skipping a JWKS key the gateway cannot use")
                }
            }
        }
        let mut keys = self.keys.lock();
        keys.by_kid = by_kid;
        keys.fetched = Some(Instant::now());
        Ok(())
    }

    /// The refusal response for `error`.
    pub fn refusal(&self, error: &AuthError) -> Response {
        let (status, code) = match error {
            AuthError::InsufficientScope(_) => (StatusCode::FORBIDDEN, "insufficient_scope"),
            AuthError::KeysUnavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable"),
            _ => (StatusCode::UNAUTHORIZED, "invalid_token"),
        };
        let mut response = (
            status,
            axum::Json(json!({"error": code, "message": error.to_string()})),
        )
            .into_response();
        if let Ok(value) = HeaderValue::from_str(&self.challenge(error)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, value);
        }
        response
    }
}

/// The metadata URL of a resource (`https://h/mcp` → `https://h/.well-known/...`).
fn metadata_url(resource: &str) -> String {
    let base = resource
        .find("://")
        .and_then(|i| resource[i + 3..].find('/').map(|j| &resource[..i + 3 + j]))
        .unwrap_or(resource);
    format!("{base}{METADATA_PATH}")
}

/// The bearer token of a request, if it has one.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Axum middleware in front of `/mcp`: every request needs a valid bearer token.
pub async fn require_bearer(
    State(verifier): State<Arc<JwtVerifier>>,
    mut request: Request,
    next: Next,
) -> Response {
    let result = match bearer(&request) {
        None => Err(AuthError::Missing),
        Some(token) => verifier.verify(token).await,
    };
    match result {
        Ok(claims) => {
            request.extensions_mut().insert(claims);
            next.run(request).await
        }
        Err(e) => {
            tracing::info!(error = %e, "MCP request refused");
            verifier.refusal(&e)
        }
    }
}

/// `GET /.well-known/oauth-protected-resource`.
pub async fn metadata(State(verifier): State<Arc<JwtVerifier>>) -> axum::Json<serde_json::Value> {
    axum::Json(verifier.metadata())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_sits_at_the_root_of_the_resource_host() {
        assert_eq!(
            metadata_url("https://tools.example.com/mcp"),
            "https://tools.example.com/.well-known/oauth-protected-resource"
        );
        assert_eq!(
            metadata_url("http://127.0.0.1:8080"),
            "http://127.0.0.1:8080/.well-known/oauth-protected-resource"
        );
    }

    #[test]
    fn scopes_come_as_a_string_or_a_list() {
        let c = |scope: Option<&str>, scp: Option<Vec<&str>>| Claims {
            sub: None,
            scope: scope.map(str::to_owned),
            scp: scp.map(|l| l.into_iter().map(str::to_owned).collect()),
        };
        assert!(c(Some("read tools"), None).has_scope("tools"));
        assert!(!c(Some("toolsx"), None).has_scope("tools"));
        assert!(c(None, Some(vec!["tools"])).has_scope("tools"));
        assert!(!c(None, None).has_scope("tools"));
    }
}
