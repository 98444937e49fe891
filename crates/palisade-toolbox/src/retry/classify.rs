//! Deciding what is retried, and when.

use std::error::Error;
use std::time::Duration;

/// What to do with an attempt's result.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::retry::Decision;
///
/// let rate_limited = Decision::RetryAfter(Duration::from_secs(2));
/// assert!(rate_limited.retries());
/// assert!(!Decision::Return.retries());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Decision {
    /// Hand this result to the caller (a success, or a failure retrying cannot fix).
    Return,
    /// Retry after the backoff's jittered wait, if attempts and budget allow.
    Retry,
    /// Retry after exactly this long (an upstream's `Retry-After`, a refusal's
    /// `retry_after`), if attempts and budget allow and it is at most `max_retry_after`.
    RetryAfter(Duration),
}

impl Decision {
    /// Whether this decision asks for another attempt.
    pub fn retries(&self) -> bool {
        !matches!(self, Decision::Return)
    }
}

/// Decides what happens to each attempt's result. Any `Fn(&Result<T, E>) -> Decision` is one.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::retry::{Classify, Decision};
///
/// #[derive(Debug)]
/// enum ApiError { BadRequest, Throttled { after: Duration }, Unavailable }
///
/// let classify = |r: &Result<String, ApiError>| match r {
///     Ok(_) | Err(ApiError::BadRequest) => Decision::Return, // retrying bad input fails again
///     Err(ApiError::Throttled { after }) => Decision::RetryAfter(*after),
///     Err(ApiError::Unavailable) => Decision::Retry,
/// };
/// assert_eq!(classify.classify(&Err(ApiError::Unavailable)), Decision::Retry);
/// ```
pub trait Classify<T, E> {
    /// Decides for one attempt's result.
    fn classify(&self, result: &Result<T, E>) -> Decision;
}

impl<T, E, F> Classify<T, E> for F
where
    F: Fn(&Result<T, E>) -> Decision,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Decision {
        self(result)
    }
}

/// Retries every `Err` after the backoff, returns every `Ok`: the default classifier.
///
/// ```
/// use palisade_toolbox::retry::{Classify, Decision, RetryErrors};
///
/// assert_eq!(RetryErrors.classify(&Err::<(), _>("timeout")), Decision::Retry);
/// assert_eq!(RetryErrors.classify(&Ok::<_, ()>(1)), Decision::Return);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetryErrors;

impl<T, E> Classify<T, E> for RetryErrors {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Decision {
        match result {
            Ok(_) => Decision::Return,
            Err(_) => Decision::Retry,
        }
    }
}

/// Retries every `Err`, as the error's own [`RetryHint`] says when it has one (a rate
/// limiter's or an open breaker's `retry_after`; a breaker forced open by an operator is not
/// retried), after the backoff otherwise; returns every `Ok`.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::retry::{Classify, Decision, HintedErrors, RetryHint};
///
/// #[derive(Debug)]
/// struct Throttled(Duration);
/// impl RetryHint for Throttled {
///     fn retry_hint(&self) -> Option<Decision> { Some(Decision::RetryAfter(self.0)) }
/// }
///
/// let r: Result<(), _> = Err(Throttled(Duration::from_secs(3)));
/// assert_eq!(HintedErrors.classify(&r), Decision::RetryAfter(Duration::from_secs(3)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HintedErrors;

impl<T, E: RetryHint> Classify<T, E> for HintedErrors {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Decision {
        match result {
            Ok(_) => Decision::Return,
            Err(e) => e.retry_hint().unwrap_or(Decision::Retry),
        }
    }
}

/// An error that knows whether (and when) a retry can succeed.
///
/// Implemented for Palisade's refusals with the crate features `breaker`
/// ([`Rejected`](https://docs.rs/palisade-breaker) and the breaker's `CallError`),
/// `bulkhead` (`BulkheadError` and its `CallError`) and `ratelimit` (`RateLimited`,
/// `RateLimitError`), and for boxed errors ([`tower::BoxError`](https://docs.rs/tower)), which
/// are searched along their source chain for one of those.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::retry::{Decision, RetryHint};
///
/// struct Maintenance;
/// impl RetryHint for Maintenance {
///     fn retry_hint(&self) -> Option<Decision> { Some(Decision::Return) } // not before an operator acts
/// }
/// assert_eq!(Maintenance.retry_hint(), Some(Decision::Return));
/// ```
pub trait RetryHint {
    /// `Some` when the error says what to do; `None` leaves it to the classifier's default.
    fn retry_hint(&self) -> Option<Decision>;
}

impl<E: RetryHint + ?Sized> RetryHint for &E {
    fn retry_hint(&self) -> Option<Decision> {
        (**self).retry_hint()
    }
}

impl RetryHint for Box<dyn Error + Send + Sync> {
    fn retry_hint(&self) -> Option<Decision> {
        hint_in_chain(&**self)
    }
}

impl RetryHint for Box<dyn Error> {
    fn retry_hint(&self) -> Option<Decision> {
        hint_in_chain(&**self)
    }
}

/// The hint of the first error in `err`'s source chain (itself included) that is one of
/// Palisade's refusals (with the matching crate features), if any.
///
/// ```
/// use palisade_toolbox::retry::hint_in_chain;
///
/// let err = std::io::Error::other("connection reset");
/// assert_eq!(hint_in_chain(&err), None);
/// ```
pub fn hint_in_chain(err: &(dyn Error + 'static)) -> Option<Decision> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(hint) = super::refusal::known_hint(e) {
            return Some(hint);
        }
        current = e.source();
    }
    None
}
