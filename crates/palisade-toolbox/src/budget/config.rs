//! What a retry budget allows: a share of the traffic, a floor, and the window it counts over.

use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

/// Largest accepted [`BudgetConfig::ratio`]: a hundred retries per call is already no budget.
pub const MAX_RATIO: f64 = 100.0;
/// Largest accepted [`BudgetConfig::min_retries_per_second`].
pub const MAX_MIN_RETRIES_PER_SECOND: f64 = 1_000_000.0;
/// Shortest accepted [`BudgetConfig::window`] (Finagle's bound).
pub const MIN_WINDOW: Duration = Duration::from_secs(1);
/// Longest accepted [`BudgetConfig::window`] (Finagle's bound).
pub const MAX_WINDOW: Duration = Duration::from_secs(60);

/// How many retries a [`RetryBudget`](crate::budget::RetryBudget) allows: at most `ratio`
/// retries per call made over the last `window`, plus `min_retries_per_second` whatever the
/// traffic (Finagle's `RetryBudget`, tower's `TpsBudget`). Defaults: 20 % of the traffic, 10
/// retries a second, a 10 s window.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::budget::BudgetConfig;
///
/// let cfg: BudgetConfig =
///     serde_json::from_str(r#"{"ratio": 0.1, "min_retries_per_second": 5, "window": "30s"}"#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.window, Duration::from_secs(30));
///
/// let bad = BudgetConfig { ratio: -0.5, ..BudgetConfig::default() };
/// assert_eq!(bad.validate().unwrap_err().field, "ratio");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BudgetConfig {
    /// Retries allowed per call (first attempt) over the window, 0 to 100. Default 0.2.
    pub ratio: f64,
    /// Retries allowed per second even without traffic, 0 to 1 000 000: the floor that lets
    /// a quiet service retry at all. Default 10.
    pub min_retries_per_second: f64,
    /// How long a call's share of retries stays available, 1 s to 60 s. Default 10 s.
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for BudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            min_retries_per_second: 10.0,
            window: Duration::from_secs(10),
        }
    }
}

impl BudgetConfig {
    /// Checks every field; the error names the first invalid one.
    ///
    /// ```
    /// use palisade_toolbox::budget::BudgetConfig;
    ///
    /// let cfg = BudgetConfig { min_retries_per_second: f64::NAN, ..BudgetConfig::default() };
    /// assert_eq!(cfg.validate().unwrap_err().field, "min_retries_per_second");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_finite("ratio", self.ratio)?;
        check_range("ratio", self.ratio, 0.0, MAX_RATIO)?;
        check_finite("min_retries_per_second", self.min_retries_per_second)?;
        check_range(
            "min_retries_per_second",
            self.min_retries_per_second,
            0.0,
            MAX_MIN_RETRIES_PER_SECOND,
        )?;
        check_duration("window", self.window, MIN_WINDOW, MAX_WINDOW)
    }

    /// The most retries the floor alone keeps available: `min_retries_per_second` × `window`.
    ///
    /// ```
    /// use palisade_toolbox::budget::BudgetConfig;
    ///
    /// assert_eq!(BudgetConfig::default().reserve(), 100.0); // 10 a second over 10 s
    /// ```
    pub fn reserve(&self) -> f64 {
        self.min_retries_per_second * self.window.as_secs_f64()
    }
}

fn check_finite(field: &str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(ConfigError::new(
            field,
            format!("{value} is not a finite number"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        BudgetConfig::default().validate().unwrap();
        let cases = [
            (
                BudgetConfig {
                    ratio: -0.1,
                    ..Default::default()
                },
                "ratio",
            ),
            (
                BudgetConfig {
                    ratio: 101.0,
                    ..Default::default()
                },
                "ratio",
            ),
            (
                BudgetConfig {
                    min_retries_per_second: -1.0,
                    ..Default::default()
                },
                "min_retries_per_second",
            ),
            (
                BudgetConfig {
                    window: Duration::from_millis(500),
                    ..Default::default()
                },
                "window",
            ),
            (
                BudgetConfig {
                    window: Duration::from_secs(61),
                    ..Default::default()
                },
                "window",
            ),
        ];
        for (cfg, field) in cases {
            assert_eq!(cfg.validate().unwrap_err().field, field, "{cfg:?}");
        }
    }
}
