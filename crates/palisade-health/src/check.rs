//! What a health check returns, and the traits a monitored component implements.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// A component's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Working.
    Healthy,
    /// Working with reduced service (a dependency is out, a circuit breaker is open). Counts as
    /// ready; never fails liveness; never triggers a restart.
    Degraded,
    /// Not working.
    Unhealthy,
}

impl Status {
    /// The snake_case name used in JSON, metrics and logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Status::Healthy => "healthy",
            Status::Degraded => "degraded",
            Status::Unhealthy => "unhealthy",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of one check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    /// What the check found.
    pub status: Status,
    /// Why, in words an operator reads (`"PING answered in 0.4 ms"`, `"exited with status 1"`).
    pub message: String,
}

impl CheckResult {
    /// Healthy, with a message.
    pub fn healthy(message: impl Into<String>) -> Self {
        CheckResult {
            status: Status::Healthy,
            message: message.into(),
        }
    }

    /// Degraded, with a message.
    pub fn degraded(message: impl Into<String>) -> Self {
        CheckResult {
            status: Status::Degraded,
            message: message.into(),
        }
    }

    /// Unhealthy, with a message.
    pub fn unhealthy(message: impl Into<String>) -> Self {
        CheckResult {
            status: Status::Unhealthy,
            message: message.into(),
        }
    }
}

/// A health check. The monitor times each call and cancels it after the component's
/// `timeout` (a timed-out check is unhealthy), so a check only has to say what it sees.
///
/// ```
/// use palisade_health::{CheckResult, HealthCheck, async_trait};
///
/// struct DiskSpace;
///
/// #[async_trait]
/// impl HealthCheck for DiskSpace {
///     async fn check(&self) -> CheckResult {
///         CheckResult::healthy("42 GiB free")
///     }
/// }
/// ```
#[async_trait]
pub trait HealthCheck: Send + Sync + 'static {
    /// Looks at the component once.
    async fn check(&self) -> CheckResult;

    /// A signal the monitor also waits on between checks: a component that learns by itself
    /// that it changed (a child process exited) notifies it, and the monitor checks at once
    /// instead of at the next interval. `None` (the default): checks run on the interval only.
    fn changes(&self) -> Option<Arc<Notify>> {
        None
    }
}

/// A component the monitor can restart (a child process, a connection pool, a worker).
#[async_trait]
pub trait Restartable: Send + Sync + 'static {
    /// Restarts the component. An error is recorded and counts as a failed restart.
    async fn restart(&self) -> Result<(), String>;
}

/// A check from an async closure.
///
/// ```
/// use palisade_health::{CheckResult, check_fn};
///
/// let check = check_fn(|| async { CheckResult::healthy("ok") });
/// # let _ = check;
/// ```
pub fn check_fn<F, Fut>(f: F) -> FnCheck<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CheckResult> + Send + 'static,
{
    FnCheck(f)
}

/// See [`check_fn`].
pub struct FnCheck<F>(F);

impl<F> fmt::Debug for FnCheck<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FnCheck")
    }
}

#[async_trait]
impl<F, Fut> HealthCheck for FnCheck<F>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = CheckResult> + Send + 'static,
{
    async fn check(&self) -> CheckResult {
        (self.0)().await
    }
}

/// Formats a latency for check messages: `0.42 ms`, `12 ms`, `1.5 s`.
pub fn format_latency(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else if ms < 1000.0 {
        format!("{ms:.0} ms")
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}
