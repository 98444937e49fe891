//! What a refused or failed call returns.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Why a breaker refused a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The breaker is open; `retry_after` says when it will admit a trial call.
    Open,
    /// An operator forced the breaker open; it stays open until reset.
    ForcedOpen,
    /// The breaker is half-open and every trial slot is taken.
    HalfOpenFull,
}

/// A call the breaker refused without running it.
///
/// ```
/// # use std::time::Duration;
/// # use palisade_breaker::{CircuitBreaker, Outcome};
/// # use palisade_core::ManualClock;
/// let clock = ManualClock::new();
/// let cb = CircuitBreaker::builder("slack").consecutive_failures(1)
///     .wait_duration(Duration::from_secs(25)).clock(clock.shared()).build().unwrap();
/// cb.try_acquire().unwrap().record(Outcome::Failure);
/// let refused = cb.try_acquire().unwrap_err();
/// assert_eq!(refused.to_string(), "circuit breaker 'slack' is open; retry in 25000 ms");
/// assert_eq!(refused.retry_after(), Some(Duration::from_secs(25)));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    pub(crate) name: Arc<str>,
    pub(crate) reason: RejectReason,
    pub(crate) retry_after: Option<Duration>,
}

impl Rejected {
    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Why the call was refused.
    pub fn reason(&self) -> RejectReason {
        self.reason
    }

    /// How long until the breaker admits a trial call, when known. `None` for a breaker forced
    /// open (it waits for an operator) or half-open with every trial slot taken (it depends on
    /// the trials' outcome).
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for Rejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.reason, self.retry_after) {
            (RejectReason::Open, Some(after)) => write!(
                f,
                "circuit breaker '{}' is open; retry in {} ms",
                self.name,
                ceil_millis(after)
            ),
            (RejectReason::Open, None) => write!(f, "circuit breaker '{}' is open", self.name),
            (RejectReason::ForcedOpen, _) => write!(
                f,
                "circuit breaker '{}' is forced open by an operator; retry after it is reset",
                self.name
            ),
            (RejectReason::HalfOpenFull, _) => write!(
                f,
                "circuit breaker '{}' is half-open and all trial calls are in flight; retry shortly",
                self.name
            ),
        }
    }
}

impl std::error::Error for Rejected {}

/// Milliseconds, rounded up: a client told "retry in N ms" must not come back too early.
pub(crate) fn ceil_millis(d: Duration) -> u128 {
    d.as_nanos().div_ceil(1_000_000)
}

/// The error of [`CircuitBreaker::call`](crate::CircuitBreaker::call): refused, or run and failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError<E> {
    /// The breaker refused the call; the future was not polled.
    Rejected(Rejected),
    /// The call ran and returned this error.
    Inner(E),
}

impl<E> CallError<E> {
    /// The refusal, if the call was refused.
    pub fn rejected(&self) -> Option<&Rejected> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Inner(_) => None,
        }
    }

    /// The inner error, if the call ran and failed.
    pub fn into_inner(self) -> Option<E> {
        match self {
            CallError::Rejected(_) => None,
            CallError::Inner(e) => Some(e),
        }
    }
}

impl<E: fmt::Display> fmt::Display for CallError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Rejected(r) => r.fmt(f),
            CallError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for CallError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            CallError::Rejected(r) => Some(r),
            CallError::Inner(e) => Some(e),
        }
    }
}

impl<E> From<Rejected> for CallError<E> {
    fn from(r: Rejected) -> Self {
        CallError::Rejected(r)
    }
}
