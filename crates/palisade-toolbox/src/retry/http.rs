//! HTTP responses and `Retry-After` (crate feature `http`).

use std::time::{Duration, SystemTime};

use http::header::RETRY_AFTER;
use http::{HeaderMap, Response, StatusCode};

use super::classify::{Classify, Decision, RetryHint};

/// Retries the HTTP answers a later attempt may fix: `429 Too Many Requests` and
/// `503 Service Unavailable` after their `Retry-After` when they carry one (else after the
/// backoff), `502 Bad Gateway` and `504 Gateway Timeout` after the backoff. Every other
/// response is returned. Errors are retried as [`HintedErrors`](super::HintedErrors) does
/// (Palisade's refusals by their own `retry_after`, anything else after the backoff).
///
/// ```
/// use std::time::Duration;
/// use http::{Response, StatusCode};
/// use palisade_toolbox::retry::{Classify, Decision, HttpResponses};
///
/// let busy: Result<_, tower::BoxError> = Ok(Response::builder()
///     .status(StatusCode::SERVICE_UNAVAILABLE)
///     .header("retry-after", "2")
///     .body(())
///     .unwrap());
/// assert_eq!(HttpResponses.classify(&busy), Decision::RetryAfter(Duration::from_secs(2)));
///
/// let bad_input: Result<_, tower::BoxError> = Ok(Response::builder().status(400).body(()).unwrap());
/// assert_eq!(HttpResponses.classify(&bad_input), Decision::Return);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpResponses;

impl<B, E: RetryHint> Classify<Response<B>, E> for HttpResponses {
    fn classify(&self, result: &Result<Response<B>, E>) -> Decision {
        match result {
            Ok(response) => match response.status() {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    retry_after(response.headers()).map_or(Decision::Retry, Decision::RetryAfter)
                }
                StatusCode::BAD_GATEWAY | StatusCode::GATEWAY_TIMEOUT => Decision::Retry,
                _ => Decision::Return,
            },
            Err(e) => e.retry_hint().unwrap_or(Decision::Retry),
        }
    }
}

/// The wait a `Retry-After` header asks for: delay-seconds (`"120"`), or an HTTP-date (a
/// date already past means no wait). `None` without the header or when it does not parse.
///
/// ```
/// use std::time::Duration;
/// use http::HeaderMap;
/// use palisade_toolbox::retry::retry_after;
///
/// let mut headers = HeaderMap::new();
/// assert_eq!(retry_after(&headers), None);
/// headers.insert("retry-after", "120".parse().unwrap());
/// assert_eq!(retry_after(&headers), Some(Duration::from_secs(120)));
/// headers.insert("retry-after", "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap());
/// assert_eq!(retry_after(&headers), Some(Duration::ZERO));
/// headers.insert("retry-after", "soon".parse().unwrap());
/// assert_eq!(retry_after(&headers), None);
/// ```
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}
