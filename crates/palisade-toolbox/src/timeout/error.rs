//! [`TimeoutError`]: a call that ran out of time, or the call's own error.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// What a call through a [`Timeout`](crate::Timeout) ends in, when it does not succeed.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum TimeoutError<E> {
    /// The deadline ran out; the call was dropped (cancelled).
    Elapsed {
        /// The timeout's name.
        name: Arc<str>,
        /// The deadline that ran out.
        after: Duration,
    },
    /// The call failed on its own, in time.
    Inner(E),
}

impl<E> TimeoutError<E> {
    /// Whether the deadline ran out.
    pub fn is_elapsed(&self) -> bool {
        matches!(self, TimeoutError::Elapsed { .. })
    }

    /// The call's own error, if it failed in time.
    pub fn into_inner(self) -> Option<E> {
        match self {
            TimeoutError::Inner(e) => Some(e),
            TimeoutError::Elapsed { .. } => None,
        }
    }
}

impl<E: fmt::Display> fmt::Display for TimeoutError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TimeoutError::Elapsed { name, after } => {
                write!(f, "'{name}' timed out after {} ms", after.as_millis())
            }
            TimeoutError::Inner(e) => e.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for TimeoutError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TimeoutError::Inner(e) => Some(e),
            TimeoutError::Elapsed { .. } => None,
        }
    }
}
