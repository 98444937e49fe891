//! Bulkhead configuration.

use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

/// Largest accepted `max_concurrent` and `max_waiting`.
pub const MAX_LIMIT: u32 = 1_000_000;
/// Longest accepted `max_wait`.
pub const MAX_WAIT: Duration = Duration::from_secs(3600);

/// How many calls a bulkhead runs at once and how long callers may wait for a slot.
///
/// ```
/// use palisade_bulkhead::BulkheadConfig;
///
/// let cfg: BulkheadConfig =
///     serde_json::from_str(r#"{"max_concurrent": 5, "max_wait": "250ms", "max_waiting": 20}"#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.max_wait.as_millis(), 250);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed to run at once (1 to 1 000 000). Default 10.
    pub max_concurrent: u32,
    /// How long a caller waits for a slot before giving up; zero fails fast. Default 0.
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// At most this many callers may wait at once; more are refused at once. Default unbounded.
    pub max_waiting: Option<u32>,
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 10,
            max_wait: Duration::ZERO,
            max_waiting: None,
        }
    }
}

impl BulkheadConfig {
    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("max_concurrent", self.max_concurrent, 1, MAX_LIMIT)?;
        check_duration("max_wait", self.max_wait, Duration::ZERO, MAX_WAIT)?;
        if let Some(n) = self.max_waiting {
            check_range("max_waiting", n, 0, MAX_LIMIT)?;
        }
        Ok(())
    }
}
