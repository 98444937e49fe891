//! Retry configuration.

use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

use crate::budget::BudgetConfig;
use crate::retry::Backoff;

/// Largest accepted `max_attempts`.
pub const MAX_ATTEMPTS: u32 = 100;
/// Longest accepted backoff delay and `max_retry_after`.
pub const MAX_DELAY: Duration = Duration::from_secs(3600);
/// Largest accepted backoff multiplier.
pub const MAX_MULTIPLIER: f64 = 10.0;

/// How a [`Retry`](crate::retry::Retry) retries: attempts, backoff, how long a `Retry-After`
/// hint may make it wait, and its [budget](BudgetConfig).
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::retry::RetryConfig;
///
/// let cfg: RetryConfig = serde_json::from_str(
///     r#"{"max_attempts": 4, "base_delay": "50ms", "max_delay": "2s", "budget": {"ratio": 0.1}}"#,
/// ).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.budget.ratio, 0.1);
///
/// let bad = RetryConfig { max_delay: Duration::from_millis(10), ..cfg };
/// assert_eq!(bad.validate().unwrap_err().field, "max_delay");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryConfig {
    /// Attempts in all, the first included (1 to 100; 1 never retries). Default 3.
    pub max_attempts: u32,
    /// The ceiling of the first retry's wait (0 to 1 h; 0 retries at once). Default 100 ms.
    #[serde(with = "duration")]
    pub base_delay: Duration,
    /// The cap of every backoff wait (`base_delay` to 1 h). Default 10 s.
    #[serde(with = "duration")]
    pub max_delay: Duration,
    /// Growth of the wait's ceiling from one retry to the next (1 to 10). Default 2.
    pub multiplier: f64,
    /// The longest `Retry-After` hint honoured (0 to 1 h): a longer one ends the call with the
    /// refused attempt's result instead of holding the caller. Default 30 s.
    #[serde(with = "duration")]
    pub max_retry_after: Duration,
    /// The retry budget. With a budget shared between components, this is the shared
    /// budget's config, and changing it changes it for all of them.
    pub budget: BudgetConfig,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(10),
            multiplier: 2.0,
            max_retry_after: Duration::from_secs(30),
            budget: BudgetConfig::default(),
        }
    }
}

impl RetryConfig {
    /// Checks every field; the error names the first invalid one (`budget.ratio` for the
    /// budget's).
    ///
    /// ```
    /// use palisade_toolbox::retry::RetryConfig;
    ///
    /// let cfg = RetryConfig { max_attempts: 0, ..Default::default() };
    /// assert_eq!(cfg.validate().unwrap_err().field, "max_attempts");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("max_attempts", self.max_attempts, 1, MAX_ATTEMPTS)?;
        check_duration("base_delay", self.base_delay, Duration::ZERO, MAX_DELAY)?;
        if self.max_delay < self.base_delay {
            return Err(ConfigError::new(
                "max_delay",
                format!(
                    "{:?} is shorter than base_delay ({:?}); the cap must be at least the base",
                    self.max_delay, self.base_delay
                ),
            ));
        }
        check_duration("max_delay", self.max_delay, Duration::ZERO, MAX_DELAY)?;
        if !self.multiplier.is_finite() {
            return Err(ConfigError::new("multiplier", "must be a finite number"));
        }
        check_range("multiplier", self.multiplier, 1.0, MAX_MULTIPLIER)?;
        check_duration(
            "max_retry_after",
            self.max_retry_after,
            Duration::ZERO,
            MAX_DELAY,
        )?;
        self.budget.validate().map_err(|e| e.within("budget"))
    }

    /// The backoff this config describes.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::retry::RetryConfig;
    ///
    /// assert_eq!(RetryConfig::default().backoff().ceiling(1), Duration::from_millis(200));
    /// ```
    pub fn backoff(&self) -> Backoff {
        Backoff {
            base: self.base_delay,
            max: self.max_delay,
            multiplier: self.multiplier,
        }
    }
}

impl crate::budget::patch::BudgetedConfig for RetryConfig {
    fn budget_mut(&mut self) -> &mut crate::budget::BudgetConfig {
        &mut self.budget
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_named() {
        let ok = RetryConfig::default();
        ok.validate().unwrap();
        let cases: Vec<(RetryConfig, &str)> = vec![
            (
                RetryConfig {
                    max_attempts: 101,
                    ..ok.clone()
                },
                "max_attempts",
            ),
            (
                RetryConfig {
                    base_delay: Duration::from_secs(2),
                    max_delay: Duration::from_secs(1),
                    ..ok.clone()
                },
                "max_delay",
            ),
            (
                RetryConfig {
                    base_delay: Duration::from_secs(7200),
                    max_delay: Duration::from_secs(7200),
                    ..ok.clone()
                },
                "base_delay",
            ),
            (
                RetryConfig {
                    multiplier: 0.5,
                    ..ok.clone()
                },
                "multiplier",
            ),
            (
                RetryConfig {
                    multiplier: f64::NAN,
                    ..ok.clone()
                },
                "multiplier",
            ),
            (
                RetryConfig {
                    max_retry_after: Duration::from_secs(7200),
                    ..ok.clone()
                },
                "max_retry_after",
            ),
            (
                RetryConfig {
                    budget: BudgetConfig {
                        ratio: -1.0,
                        ..Default::default()
                    },
                    ..ok.clone()
                },
                "budget.ratio",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(cfg.validate().unwrap_err().field, field, "{cfg:?}");
        }
    }

    #[test]
    fn durations_read_and_write_as_strings() {
        let cfg = RetryConfig::default();
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["base_delay"], "100ms");
        assert_eq!(json["budget"]["window"], "10s");
        let back: RetryConfig = serde_json::from_value(json).unwrap();
        assert_eq!(back, cfg);
    }
}
