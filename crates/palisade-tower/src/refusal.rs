//! Palisade's refusals as HTTP: status, headers and a small JSON body.

use std::fmt;
use std::time::Duration;

use http::StatusCode;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use palisade_breaker::{RejectReason, Rejected};
use palisade_bulkhead::BulkheadError;
use palisade_core::ComponentKind;
use palisade_ratelimit::RateLimited;

use crate::classify::find_error;
use crate::ratelimit::{ceil_secs, set_ratelimit_headers};

/// The `Retry-After` hint of a full bulkhead: slots free up as calls finish, so soon.
pub const BULKHEAD_RETRY_AFTER: Duration = Duration::from_secs(1);

/// The `Retry-After` of a half-open breaker whose trial slots are all taken: the trials decide
/// soon.
pub const HALF_OPEN_RETRY_AFTER: Duration = Duration::from_secs(1);

/// A call one of Palisade's layers refused, as an HTTP answer.
///
/// | refusal | status | headers |
/// | --- | --- | --- |
/// | circuit breaker open | 503 | `Retry-After`: the time until a trial call, in seconds rounded up |
/// | circuit breaker half-open, trials in flight | 503 | `Retry-After: 1` |
/// | circuit breaker forced open by an operator | 503 | none: it stays open until an operator resets it |
/// | bulkhead full, or its wait timed out | 503 | `Retry-After: 1` ([`BULKHEAD_RETRY_AFTER`]) |
/// | rate limited | 429 | `Retry-After`, `RateLimit-Limit`, `RateLimit-Remaining: 0`, `RateLimit-Reset` |
///
/// The body is JSON naming the component and the reason:
/// `{"error":"rate_limited","component":"rate_limiter","name":"per-client","reason":"rate limiter 'per-client' refused …","retry_after_s":2}`.
/// For a refusal, `RateLimit-Reset` is the time until a request is admitted again (what
/// [`RateLimited`] carries), like `Retry-After`.
///
/// ```
/// use std::time::Duration;
/// use palisade_ratelimit::RateLimited;
/// use palisade_tower::Refusal;
///
/// let err: tower::BoxError = Box::new(RateLimited {
///     name: "per-client".into(), limit: 10, retry_after: Duration::from_millis(1500),
/// });
/// let refusal = Refusal::from_error(&err).unwrap();
/// assert_eq!(refusal.status(), http::StatusCode::TOO_MANY_REQUESTS);
/// let headers = refusal.headers();
/// assert_eq!(headers["retry-after"], "2");
/// assert_eq!(headers["ratelimit-limit"], "10");
/// assert_eq!(headers["ratelimit-remaining"], "0");
/// let body: serde_json::Value = serde_json::from_str(&refusal.json_body()).unwrap();
/// assert_eq!(body["component"], "rate_limiter");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Refusal {
    /// A circuit breaker refused the call.
    CircuitOpen(Rejected),
    /// A bulkhead had no slot.
    BulkheadFull(BulkheadError),
    /// A rate limiter refused the request.
    RateLimited(RateLimited),
}

impl Refusal {
    /// The refusal in `err` (itself, a [`BoxError`](tower::BoxError) holding one, or one in its
    /// source chain), if it is one of Palisade's.
    pub fn from_error<E: 'static>(err: &E) -> Option<Refusal> {
        if let Some(r) = find_error::<Rejected, E>(err) {
            return Some(Refusal::CircuitOpen(r.clone()));
        }
        if let Some(b) = find_error::<BulkheadError, E>(err) {
            return Some(Refusal::BulkheadFull(b.clone()));
        }
        find_error::<RateLimited, E>(err).map(|l| Refusal::RateLimited(l.clone()))
    }

    /// 503 for a breaker or a bulkhead, 429 for a rate limiter.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::CircuitOpen(_) | Refusal::BulkheadFull(_) => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The kind of component that refused.
    pub fn component(&self) -> ComponentKind {
        match self {
            Refusal::CircuitOpen(_) => ComponentKind::CircuitBreaker,
            Refusal::BulkheadFull(_) => ComponentKind::Bulkhead,
            Refusal::RateLimited(_) => ComponentKind::RateLimiter,
        }
    }

    /// The refusing component's name.
    pub fn name(&self) -> &str {
        match self {
            Refusal::CircuitOpen(r) => r.name(),
            Refusal::BulkheadFull(b) => b.name(),
            Refusal::RateLimited(l) => &l.name,
        }
    }

    /// A short machine-readable code: `circuit_open`, `circuit_forced_open`,
    /// `circuit_half_open_full`, `bulkhead_full`, `bulkhead_timeout` or `rate_limited`.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::CircuitOpen(r) => match r.reason() {
                RejectReason::Open => "circuit_open",
                RejectReason::ForcedOpen => "circuit_forced_open",
                RejectReason::HalfOpenFull => "circuit_half_open_full",
            },
            Refusal::BulkheadFull(BulkheadError::Full { .. }) => "bulkhead_full",
            Refusal::BulkheadFull(BulkheadError::TimedOut { .. }) => "bulkhead_timeout",
            Refusal::RateLimited(_) => "rate_limited",
        }
    }

    /// How long the client should wait before retrying, when there is an answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Refusal::CircuitOpen(r) => match r.reason() {
                RejectReason::Open => r.retry_after(),
                RejectReason::HalfOpenFull => Some(HALF_OPEN_RETRY_AFTER),
                RejectReason::ForcedOpen => None,
            },
            Refusal::BulkheadFull(_) => Some(BULKHEAD_RETRY_AFTER),
            Refusal::RateLimited(l) => Some(l.retry_after),
        }
    }

    /// `Retry-After` in whole seconds, rounded up and at least 1.
    fn retry_after_secs(&self) -> Option<u64> {
        self.retry_after().map(|d| ceil_secs(d).max(1))
    }

    /// The response headers: `Retry-After`, the `RateLimit-*` fields for a rate limiter, and
    /// `Content-Type: application/json`.
    pub fn headers(&self) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let secs = self.retry_after_secs();
        if let Some(secs) = secs {
            headers.insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        if let Refusal::RateLimited(l) = self {
            let reset = Duration::from_secs(secs.unwrap_or(0));
            set_ratelimit_headers(&mut headers, l.limit, 0, reset);
        }
        headers
    }

    /// The JSON body: `error` (see [`code`](Self::code)), `component`, `name`, `reason` (the
    /// refusal's message) and `retry_after_s` when known.
    pub fn json_body(&self) -> String {
        let mut body = serde_json::json!({
            "error": self.code(),
            "component": self.component().as_str(),
            "name": self.name(),
            "reason": self.to_string(),
        });
        if let (Some(secs), Some(obj)) = (self.retry_after_secs(), body.as_object_mut()) {
            obj.insert("retry_after_s".into(), secs.into());
        }
        body.to_string()
    }

    /// The refusal as an `http::Response` with any body type built from a `String`.
    pub fn to_response<B: From<String>>(&self) -> http::Response<B> {
        let mut response = http::Response::new(B::from(self.json_body()));
        *response.status_mut() = self.status();
        *response.headers_mut() = self.headers();
        response
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::CircuitOpen(r) => r.fmt(f),
            Refusal::BulkheadFull(b) => b.fmt(f),
            Refusal::RateLimited(l) => l.fmt(f),
        }
    }
}

impl std::error::Error for Refusal {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Refusal::CircuitOpen(r) => Some(r),
            Refusal::BulkheadFull(b) => Some(b),
            Refusal::RateLimited(l) => Some(l),
        }
    }
}

impl From<Rejected> for Refusal {
    fn from(r: Rejected) -> Self {
        Refusal::CircuitOpen(r)
    }
}

impl From<BulkheadError> for Refusal {
    fn from(b: BulkheadError) -> Self {
        Refusal::BulkheadFull(b)
    }
}

impl From<RateLimited> for Refusal {
    fn from(l: RateLimited) -> Self {
        Refusal::RateLimited(l)
    }
}
