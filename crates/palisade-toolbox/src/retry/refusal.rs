//! Palisade's own refusals as retry hints (crate features `breaker`, `bulkhead`, `ratelimit`).
//!
//! | refusal | decision |
//! | --- | --- |
//! | breaker open, with its time to the next trial | `RetryAfter(retry_after)` |
//! | breaker half-open with every trial slot taken | `Retry` (backoff) |
//! | breaker forced open by an operator | `Return`: it stays open until someone resets it |
//! | bulkhead full, or its wait timed out | `Retry` (backoff) |
//! | rate limited | `RetryAfter(retry_after)` |
//! | rate limiter asked for more than its burst | `Return`: it can never pass |
//!
//! A hint longer than the retry's `max_retry_after` (a breaker's 60 s wait, by default) ends the
//! call at once with the refusal, without spending budget or holding the caller.

use super::classify::Decision;
#[cfg(any(feature = "breaker", feature = "bulkhead", feature = "ratelimit"))]
use super::classify::RetryHint;

/// The hint of `err` if it is one of the refusal types compiled in.
#[allow(unused_variables)] // without any refusal feature there is nothing to look for
pub(crate) fn known_hint(err: &(dyn std::error::Error + 'static)) -> Option<Decision> {
    #[cfg(feature = "breaker")]
    if let Some(r) = err.downcast_ref::<palisade_breaker::Rejected>() {
        return r.retry_hint();
    }
    #[cfg(feature = "bulkhead")]
    if let Some(b) = err.downcast_ref::<palisade_bulkhead::BulkheadError>() {
        return b.retry_hint();
    }
    #[cfg(feature = "ratelimit")]
    {
        if let Some(l) = err.downcast_ref::<palisade_ratelimit::RateLimited>() {
            return l.retry_hint();
        }
        if let Some(l) = err.downcast_ref::<palisade_ratelimit::RateLimitError>() {
            return l.retry_hint();
        }
    }
    None
}

#[cfg(feature = "breaker")]
impl RetryHint for palisade_breaker::Rejected {
    fn retry_hint(&self) -> Option<Decision> {
        use palisade_breaker::RejectReason;
        Some(match (self.reason(), self.retry_after()) {
            (RejectReason::Open, Some(after)) => Decision::RetryAfter(after),
            (RejectReason::ForcedOpen, _) => Decision::Return,
            _ => Decision::Retry,
        })
    }
}

#[cfg(feature = "breaker")]
impl<E> RetryHint for palisade_breaker::CallError<E> {
    /// The refusal's hint; `None` for the inner error (the classifier's default applies).
    fn retry_hint(&self) -> Option<Decision> {
        self.rejected().and_then(RetryHint::retry_hint)
    }
}

#[cfg(feature = "bulkhead")]
impl RetryHint for palisade_bulkhead::BulkheadError {
    fn retry_hint(&self) -> Option<Decision> {
        Some(Decision::Retry)
    }
}

#[cfg(feature = "bulkhead")]
impl<E> RetryHint for palisade_bulkhead::CallError<E> {
    /// The refusal's hint; `None` for the inner error (the classifier's default applies).
    fn retry_hint(&self) -> Option<Decision> {
        match self {
            palisade_bulkhead::CallError::Rejected(b) => b.retry_hint(),
            palisade_bulkhead::CallError::Inner(_) => None,
        }
    }
}

#[cfg(feature = "ratelimit")]
impl RetryHint for palisade_ratelimit::RateLimited {
    fn retry_hint(&self) -> Option<Decision> {
        Some(Decision::RetryAfter(self.retry_after))
    }
}

#[cfg(feature = "ratelimit")]
impl RetryHint for palisade_ratelimit::RateLimitError {
    fn retry_hint(&self) -> Option<Decision> {
        Some(match self.retry_after() {
            Some(after) => Decision::RetryAfter(after),
            None => Decision::Return,
        })
    }
}
