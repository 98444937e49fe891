//! [`FailureKind`]: what kind of failure a fallback answers.

use serde::{Deserialize, Serialize};

/// The kind of a failed or refused call, as a fallback's classifier names it (the same names
/// as the dead-letter queue's failure kinds, plus `refused`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// Palisade refused the call without running it (breaker open, bulkhead full, quota).
    Refused,
    /// A deadline ran out.
    Timeout,
    /// The upstream said it is rate limiting (HTTP 429).
    RateLimited,
    /// The upstream could not be reached or is down (connection refused, 503).
    Unavailable,
    /// The upstream failed (5xx).
    ServerError,
    /// The request was wrong (4xx): a fallback rarely fits.
    ClientError,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// Every kind, in this order.
    pub const ALL: [FailureKind; 7] = [
        FailureKind::Refused,
        FailureKind::Timeout,
        FailureKind::RateLimited,
        FailureKind::Unavailable,
        FailureKind::ServerError,
        FailureKind::ClientError,
        FailureKind::Other,
    ];

    /// The snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Refused => "refused",
            FailureKind::Timeout => "timeout",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Unavailable => "unavailable",
            FailureKind::ServerError => "server_error",
            FailureKind::ClientError => "client_error",
            FailureKind::Other => "other",
        }
    }

    /// Its position in [`FailureKind::ALL`].
    pub(crate) const fn index(self) -> usize {
        match self {
            FailureKind::Refused => 0,
            FailureKind::Timeout => 1,
            FailureKind::RateLimited => 2,
            FailureKind::Unavailable => 3,
            FailureKind::ServerError => 4,
            FailureKind::ClientError => 5,
            FailureKind::Other => 6,
        }
    }
}
