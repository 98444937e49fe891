//! What counts against an upstream: HTTP statuses, errors, timeouts and Palisade's own refusals.

use std::any::Any;
use std::error::Error as StdError;

use http::{Response, StatusCode};
use palisade_breaker::{Classifier, Outcome, Rejected};
use palisade_bulkhead::BulkheadError;
use palisade_ratelimit::RateLimited;
use tower::BoxError;

/// The circuit breaker's classifier for HTTP services.
///
/// | result | outcome | why |
/// | --- | --- | --- |
/// | 5xx | failure | the upstream failed |
/// | 429 | ignored | back-pressure: the upstream is healthy and asks us to slow down; tripping the breaker on it would turn a rate limit into an outage |
/// | other statuses (2xx, 3xx, 4xx) | success | the upstream answered; a caller's bad request says nothing about its health |
/// | a Palisade refusal (breaker open, bulkhead full, rate limited) from an inner layer | ignored | local back-pressure, not the upstream's fault |
/// | any other error (timeout, connection refused, …) | failure | |
///
/// ```
/// use http::{Response, StatusCode};
/// use palisade_breaker::{Classifier, Outcome};
/// use palisade_tower::HttpClassifier;
///
/// let reply = |s: u16| Ok::<_, tower::BoxError>(
///     Response::builder().status(s).body(()).unwrap());
/// assert_eq!(HttpClassifier.classify(&reply(503)), Outcome::Failure);
/// assert_eq!(HttpClassifier.classify(&reply(404)), Outcome::Success);
/// assert_eq!(HttpClassifier.classify(&reply(429)), Outcome::Ignored);
/// let timed_out: Result<Response<()>, tower::BoxError> =
///     Err(Box::new(tower::timeout::error::Elapsed::new()));
/// assert_eq!(HttpClassifier.classify(&timed_out), Outcome::Failure);
/// # let _ = StatusCode::OK;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HttpClassifier;

impl HttpClassifier {
    /// How a response with `status` counts.
    #[inline]
    pub fn status(status: StatusCode) -> Outcome {
        if status == StatusCode::TOO_MANY_REQUESTS {
            Outcome::Ignored
        } else if status.is_server_error() {
            Outcome::Failure
        } else {
            Outcome::Success
        }
    }

    /// How an error counts: a Palisade refusal is ignored, anything else is a failure.
    pub fn error<E: 'static>(err: &E) -> Outcome {
        if is_refusal(err) {
            Outcome::Ignored
        } else {
            Outcome::Failure
        }
    }
}

impl<B, E: 'static> Classifier<Response<B>, E> for HttpClassifier {
    #[inline]
    fn classify(&self, result: &Result<Response<B>, E>) -> Outcome {
        match result {
            Ok(response) => Self::status(response.status()),
            Err(err) => Self::error(err),
        }
    }
}

/// Finds an error of type `T` in `err`: `err` itself, or, when `err` is a [`BoxError`], the
/// boxed error or any error in its `source()` chain.
///
/// ```
/// use palisade_tower::classify::find_error;
///
/// let err: tower::BoxError = Box::new(tower::timeout::error::Elapsed::new());
/// assert!(find_error::<tower::timeout::error::Elapsed, _>(&err).is_some());
/// assert!(find_error::<std::io::Error, _>(&err).is_none());
/// ```
pub fn find_error<T, E>(err: &E) -> Option<&T>
where
    T: StdError + 'static,
    E: 'static,
{
    let any: &dyn Any = err;
    if let Some(found) = any.downcast_ref::<T>() {
        return Some(found);
    }
    let boxed = any.downcast_ref::<BoxError>()?;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(&**boxed);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

/// Whether `err` is one of Palisade's refusals: [`Rejected`] (breaker open),
/// [`BulkheadError`] (bulkhead full or wait timed out) or [`RateLimited`].
///
/// Retry policies use it to fail fast instead of retrying into a refusal.
///
/// ```
/// use palisade_tower::classify::is_refusal;
/// use palisade_ratelimit::RateLimited;
/// use std::time::Duration;
///
/// let err: tower::BoxError = Box::new(RateLimited {
///     name: "per-client".into(), limit: 10, retry_after: Duration::from_secs(1),
/// });
/// assert!(is_refusal(&err));
/// let other: tower::BoxError = "connection reset".into();
/// assert!(!is_refusal(&other));
/// ```
pub fn is_refusal<E: 'static>(err: &E) -> bool {
    find_error::<Rejected, E>(err).is_some()
        || find_error::<BulkheadError, E>(err).is_some()
        || find_error::<RateLimited, E>(err).is_some()
}

/// Whether `err` is a timeout: tower's [`Elapsed`](tower::timeout::error::Elapsed), tokio's
/// [`Elapsed`](tokio::time::error::Elapsed), or an [`std::io::Error`] of kind `TimedOut`.
pub fn is_timeout<E: 'static>(err: &E) -> bool {
    find_error::<tower::timeout::error::Elapsed, E>(err).is_some()
        || find_error::<tokio::time::error::Elapsed, E>(err).is_some()
        || find_error::<std::io::Error, E>(err)
            .is_some_and(|e| e.kind() == std::io::ErrorKind::TimedOut)
}
