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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BulkheadConfig {
    /// Calls allowed to run at once (1 to 1 000 000). Default 10.
    pub max_concurrent: u32,
    /// How long a caller waits for a slot before giving up; zero fails fast. Default 0.
    #[serde(with = "duration")]
    pub max_wait: Duration,
    /// At most this many callers may wait at once; more are refused at once. Default unbounded.
    pub max_waiting: Option<u32>,
    /// Let the limit move with observed latency and errors. Default off.
    pub adaptive: AdaptiveConfig,
}

/// Adaptive limit (AIMD, as in Netflix's concurrency-limits): a call that fails or takes at
/// least `latency_threshold` multiplies the limit by `backoff_ratio` (not below
/// `min_concurrent`); `limit` successes in a row add one slot (not above `max_concurrent`), but
/// only while at least half the slots are in use, so an idle partition does not inflate.
///
/// Samples come from [`Bulkhead::call`](crate::Bulkhead::call), or from
/// [`Bulkhead::observe`](crate::Bulkhead::observe) for code that uses permits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Whether the limit adapts. Default false.
    pub enabled: bool,
    /// The floor of the limit. Default 1.
    pub min_concurrent: u32,
    /// The ceiling of the limit. Default 100.
    pub max_concurrent: u32,
    /// Calls at least this slow count as a sign of overload. Default 1 s.
    #[serde(with = "duration")]
    pub latency_threshold: Duration,
    /// Factor applied to the limit on overload (0.5 to 0.99). Default 0.9.
    pub backoff_ratio: f64,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            min_concurrent: 1,
            max_concurrent: 100,
            latency_threshold: Duration::from_secs(1),
            backoff_ratio: 0.9,
        }
    }
}

impl AdaptiveConfig {
    /// Checks every field; the error names the first invalid one (relative to this struct).
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("min_concurrent", self.min_concurrent, 1, MAX_LIMIT)?;
        check_range(
            "max_concurrent",
            self.max_concurrent,
            self.min_concurrent,
            MAX_LIMIT,
        )?;
        check_duration(
            "latency_threshold",
            self.latency_threshold,
            Duration::from_nanos(1),
            MAX_WAIT,
        )?;
        if !self.backoff_ratio.is_finite() {
            return Err(ConfigError::new("backoff_ratio", "must be a finite number"));
        }
        check_range("backoff_ratio", self.backoff_ratio, 0.5, 0.99)
    }

    /// The next limit after one sample, given the current limit, the calls in flight and the
    /// current run of good samples (which counts this one if it was good).
    pub(crate) fn next_limit(
        &self,
        limit: u32,
        in_flight: u32,
        overloaded: bool,
        streak: u32,
    ) -> u32 {
        if overloaded {
            let backed_off = (f64::from(limit) * self.backoff_ratio).floor() as u32;
            return backed_off.clamp(self.min_concurrent, self.max_concurrent);
        }
        if streak >= limit && in_flight.saturating_mul(2) >= limit {
            return limit
                .saturating_add(1)
                .clamp(self.min_concurrent, self.max_concurrent);
        }
        limit
    }
}

impl Default for BulkheadConfig {
    fn default() -> Self {
        Self {
            max_concurrent: 10,
            max_wait: Duration::ZERO,
            max_waiting: None,
            adaptive: AdaptiveConfig::default(),
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
        self.adaptive.validate().map_err(|e| e.within("adaptive"))?;
        if self.adaptive.enabled {
            let (lo, hi) = (self.adaptive.min_concurrent, self.adaptive.max_concurrent);
            if !(lo..=hi).contains(&self.max_concurrent) {
                return Err(ConfigError::new(
                    "max_concurrent",
                    format!(
                        "{} is outside the adaptive bounds {lo} to {hi}; move it inside or change the bounds",
                        self.max_concurrent
                    ),
                ));
            }
        }
        Ok(())
    }
}
