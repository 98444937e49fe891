//! Why a bulkhead refused a call.

use std::sync::Arc;
use std::time::Duration;

/// A call the bulkhead did not run. Both variants name the partition and its limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BulkheadError {
    /// Every slot was taken and the caller could not wait (no wait allowed, or the wait queue
    /// was full).
    #[error(
        "bulkhead '{name}' is full: {max_concurrent} calls running{}; retry later or raise its limit",
        match .max_waiting { Some(n) => format!(" and {n} waiting"), None => String::new() }
    )]
    Full {
        /// The partition.
        name: Arc<str>,
        /// Its limit at the time.
        max_concurrent: u32,
        /// The wait-queue bound, when the queue was full (`None`: no wait allowed).
        max_waiting: Option<u32>,
    },
    /// The caller waited `waited` without getting a slot.
    #[error(
        "bulkhead '{name}' timed out after {} ms waiting for one of its {max_concurrent} slots",
        .waited.as_millis()
    )]
    TimedOut {
        /// The partition.
        name: Arc<str>,
        /// Its limit at the time.
        max_concurrent: u32,
        /// How long the caller waited.
        waited: Duration,
    },
}

impl BulkheadError {
    /// The partition's name.
    pub fn name(&self) -> &str {
        match self {
            BulkheadError::Full { name, .. } | BulkheadError::TimedOut { name, .. } => name,
        }
    }
}

/// The error of [`Bulkhead::call`](crate::Bulkhead::call): refused, or run and failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError<E> {
    /// The bulkhead refused the call; the future was not polled.
    #[error(transparent)]
    Rejected(BulkheadError),
    /// The call ran and returned this error.
    #[error("{0}")]
    Inner(E),
}
