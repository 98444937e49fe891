//! Deciding whether an outcome counts against the upstream.

/// How a finished call counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The upstream did its job.
    Success,
    /// The upstream failed (timeout, 5xx, connection refused): counts toward opening.
    Failure,
    /// Says nothing about the upstream's health (the caller's bad input, a 429 rate-limit reply,
    /// a cancelled call): neither success nor failure.
    Ignored,
    /// The call took too long (a deadline ran out) and is counted as a **slow call**, whatever
    /// its measured duration: it counts toward the slow-call rate (and re-opens a half-open
    /// breaker, as a slow trial does), but not as a failure or a success. Use it when a
    /// timeout should count as slowness rather than failure (palisade-toolbox's `Timeout`
    /// with `count_as = slow`).
    Slow,
}

/// Turns a call's result into an [`Outcome`]. Any `Fn(&Result<T, E>) -> Outcome` is one.
///
/// ```
/// use palisade_breaker::{Classifier, Outcome};
///
/// #[derive(Debug)]
/// enum ApiError { BadRequest, RateLimited, Server }
///
/// let classify = |r: &Result<u32, ApiError>| match r {
///     Ok(_) => Outcome::Success,
///     Err(ApiError::BadRequest | ApiError::RateLimited) => Outcome::Ignored,
///     Err(ApiError::Server) => Outcome::Failure,
/// };
/// assert_eq!(classify.classify(&Err(ApiError::RateLimited)), Outcome::Ignored);
/// ```
pub trait Classifier<T, E> {
    /// Classifies one result.
    fn classify(&self, result: &Result<T, E>) -> Outcome;
}

impl<T, E, F> Classifier<T, E> for F
where
    F: Fn(&Result<T, E>) -> Outcome,
{
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        self(result)
    }
}

/// `Ok` is a success, `Err` a failure.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorsAreFailures;

impl<T, E> Classifier<T, E> for ErrorsAreFailures {
    #[inline]
    fn classify(&self, result: &Result<T, E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}
