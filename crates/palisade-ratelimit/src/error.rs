//! Why a limiter refused a request.

use std::sync::Arc;
use std::time::Duration;

/// A request the limiter refused: its quota is spent until `retry_after` has passed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "rate limiter '{name}' refused the request: {limit} requests allowed at once and none left; retry after {} ms",
    ceil_millis(*.retry_after)
)]
pub struct RateLimited {
    /// The limiter.
    pub name: Arc<str>,
    /// The burst size in force.
    pub limit: u32,
    /// How long until the same request would be admitted (for a `Retry-After` header).
    pub retry_after: Duration,
}

/// Why [`RateLimiter::check_n`](crate::RateLimiter::check_n) and friends refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateLimitError {
    /// Over the quota for now; see [`RateLimited::retry_after`].
    #[error(transparent)]
    Limited(#[from] RateLimited),
    /// More cells were asked for at once than the burst size: this request can never pass.
    /// Split it, or raise the burst.
    #[error(
        "rate limiter '{name}' can never admit {requested} requests at once: its burst is {burst}"
    )]
    InsufficientCapacity {
        /// The limiter.
        name: Arc<str>,
        /// Cells asked for.
        requested: u32,
        /// The burst size in force.
        burst: u32,
    },
}

impl RateLimitError {
    /// How long to wait before retrying, when waiting helps (`None` for
    /// [`InsufficientCapacity`](RateLimitError::InsufficientCapacity)).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RateLimitError::Limited(l) => Some(l.retry_after),
            RateLimitError::InsufficientCapacity { .. } => None,
        }
    }
}

/// Milliseconds, rounded up, so that "retry after 0 ms" never tells a client to retry at once
/// when it would be refused again.
pub fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}
