//! What an injected fault looks like to the caller.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::decide::ceil_millis;

/// An injected fault that stops a call: an error, or a refusal shaped like Palisade's own
/// (a breaker open, a rate limit hit) with a `retry_after`.
///
/// Map it into your own error type (`impl From<Injected> for MyError`) so the injected fault
/// takes the same path as a real one: [`FaultInjector::call`](crate::FaultInjector::call) and
/// the tower layer do that conversion.
///
/// ```
/// use std::time::Duration;
/// use palisade_chaos::{Fault, FaultInjector, Injected};
/// use palisade_core::ManualClock;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let github = FaultInjector::builder("github").allow(true).clock(ManualClock::new().shared()).build().unwrap();
/// github.enable(Fault::refuse(Duration::from_secs(2)), 1.0, Duration::from_secs(60)).unwrap();
/// let refused = github.inject().await.unwrap_err();
/// assert_eq!(refused.to_string(), "fault injector 'github' refused the call (injected fault); retry in 2000 ms");
/// assert_eq!(refused.retry_after(), Some(Duration::from_secs(2)));
/// assert!(refused.is_refusal());
///
/// github.enable(Fault::error(), 1.0, Duration::from_secs(60)).unwrap();
/// let failed = github.inject().await.unwrap_err();
/// assert_eq!(failed.to_string(), "fault injector 'github' failed the call (injected fault)");
/// assert!(matches!(failed, Injected::Error { .. }));
/// assert_eq!(failed.name(), "github");
/// # });
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Injected {
    /// An injected error: the call did not run.
    Error {
        /// The injector's name.
        name: Arc<str>,
    },
    /// An injected refusal: the call did not run; the caller is told to retry after a while.
    Refused {
        /// The injector's name.
        name: Arc<str>,
        /// How long the refusal tells the caller to wait.
        retry_after: Duration,
    },
}

impl Injected {
    /// The name of the injector that injected it.
    ///
    /// ```
    /// let e = palisade_chaos::Injected::Error { name: "db".into() };
    /// assert_eq!(e.name(), "db");
    /// ```
    pub fn name(&self) -> &str {
        match self {
            Injected::Error { name } | Injected::Refused { name, .. } => name,
        }
    }

    /// How long a refusal tells the caller to wait; `None` for an error.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let r = palisade_chaos::Injected::Refused { name: "db".into(), retry_after: Duration::from_secs(1) };
    /// assert_eq!(r.retry_after(), Some(Duration::from_secs(1)));
    /// ```
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Injected::Error { .. } => None,
            Injected::Refused { retry_after, .. } => Some(*retry_after),
        }
    }

    /// Whether this is a refusal (the caller should come back later) rather than an error.
    ///
    /// ```
    /// assert!(!palisade_chaos::Injected::Error { name: "db".into() }.is_refusal());
    /// ```
    pub fn is_refusal(&self) -> bool {
        matches!(self, Injected::Refused { .. })
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Injected::Error { name } => {
                write!(
                    f,
                    "fault injector '{name}' failed the call (injected fault)"
                )
            }
            Injected::Refused { name, retry_after } => write!(
                f,
                "fault injector '{name}' refused the call (injected fault); retry in {} ms",
                ceil_millis(*retry_after)
            ),
        }
    }
}

impl std::error::Error for Injected {}
