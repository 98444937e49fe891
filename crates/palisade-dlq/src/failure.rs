//! Failure kinds and the failure a handler reports.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// What kind of failure sent an operation to the dead-letter queue. Each kind has its own
/// retry policy ([`RetryPolicy`](crate::RetryPolicy)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureKind {
    /// The upstream did not answer in time.
    Timeout,
    /// The upstream refused for now (HTTP 429); see [`Failure::retry_after`].
    RateLimited,
    /// The upstream could not be reached (connection refused, breaker open, DNS).
    Unavailable,
    /// The upstream failed (HTTP 5xx).
    ServerError,
    /// The request itself was wrong (HTTP 4xx): retrying will not help. Parked at once by
    /// default.
    ClientError,
    /// Anything else.
    Other,
}

impl FailureKind {
    /// All kinds, in display order.
    pub const ALL: [FailureKind; 6] = [
        FailureKind::Timeout,
        FailureKind::RateLimited,
        FailureKind::Unavailable,
        FailureKind::ServerError,
        FailureKind::ClientError,
        FailureKind::Other,
    ];

    /// The snake_case name used in JSON, Redis and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::RateLimited => "rate_limited",
            FailureKind::Unavailable => "unavailable",
            FailureKind::ServerError => "server_error",
            FailureKind::ClientError => "client_error",
            FailureKind::Other => "other",
        }
    }
}

impl fmt::Display for FailureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for FailureKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        FailureKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown failure kind '{s}'; expected one of timeout, rate_limited, \
                     unavailable, server_error, client_error, other"
                )
            })
    }
}

/// Why an operation failed: what [`DeadLetterQueue::push`](crate::DeadLetterQueue::push) records
/// and what a retry handler returns.
///
/// ```
/// use std::time::Duration;
/// use palisade_dlq::{Failure, FailureKind};
///
/// let f = Failure::rate_limited("429 from the upstream", Duration::from_secs(30));
/// assert_eq!(f.kind, FailureKind::RateLimited);
/// assert_eq!(Failure::timeout("no answer in 10 s").kind, FailureKind::Timeout);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The kind, which picks the retry policy.
    pub kind: FailureKind,
    /// The error message (stored truncated to the queue's `max_error_len`).
    pub message: String,
    /// For `rate_limited`: the upstream's `Retry-After`; the next attempt is not earlier.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure of `kind` with `message`.
    pub fn new(kind: FailureKind, message: impl Into<String>) -> Self {
        Failure {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }

    /// A timeout.
    pub fn timeout(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Timeout, message)
    }

    /// A rate-limited refusal with the upstream's `Retry-After`.
    pub fn rate_limited(message: impl Into<String>, retry_after: Duration) -> Self {
        Failure {
            retry_after: Some(retry_after),
            ..Self::new(FailureKind::RateLimited, message)
        }
    }

    /// An unreachable upstream.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Unavailable, message)
    }

    /// An upstream error (5xx).
    pub fn server_error(message: impl Into<String>) -> Self {
        Self::new(FailureKind::ServerError, message)
    }

    /// A bad request (4xx): not retried by default.
    pub fn client_error(message: impl Into<String>) -> Self {
        Self::new(FailureKind::ClientError, message)
    }

    /// Anything else.
    pub fn other(message: impl Into<String>) -> Self {
        Self::new(FailureKind::Other, message)
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.message)
    }
}

/// Truncates `s` to at most `max` bytes on a character boundary, marking the cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max.saturating_sub(3);
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}
