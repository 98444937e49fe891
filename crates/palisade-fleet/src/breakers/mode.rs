//! [`ShareMode`]: how a shared breaker decides with its fleet.

use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::config::duration;
use serde::{Deserialize, Serialize};

/// How a shared breaker decides with its fleet. Serialized with a `mode` tag, as gateway
/// configs write it:
///
/// ```
/// use palisade_fleet::ShareMode;
///
/// let rate: ShareMode = serde_json::from_value(serde_json::json!({
///     "mode": "failure_rate", "failure_rate_threshold": 50.0, "minimum_calls": 20, "window": "30s"
/// })).unwrap();
/// assert_eq!(rate, ShareMode::failure_rate(50.0, 20));
/// let quorum: ShareMode = serde_json::from_value(serde_json::json!({"mode": "quorum", "quorum": 2})).unwrap();
/// assert_eq!(quorum, ShareMode::Quorum { quorum: 2 });
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
#[non_exhaustive]
pub enum ShareMode {
    /// Every instance publishes its outcome counts; each opens its breaker when the fleet's
    /// failure rate over `window` reaches `failure_rate_threshold` (percent) with at least
    /// `minimum_calls` calls.
    FailureRate {
        /// Percent of failed calls (0 < t ≤ 100) that opens every instance. Default 50.
        #[serde(default = "default_threshold")]
        failure_rate_threshold: f64,
        /// Calls the fleet's window must hold before its rate counts. Default 20.
        #[serde(default = "default_minimum_calls")]
        minimum_calls: u64,
        /// How far back the fleet's window reaches (whole seconds count). Default 30 s.
        #[serde(default = "default_window", with = "duration")]
        window: Duration,
    },
    /// Each instance opens its breaker when at least `quorum` instances have opened theirs on
    /// their own (by their own calls, not on the fleet's word).
    Quorum {
        /// Instances open on their own that open the rest (at least 1).
        quorum: u32,
    },
}

fn default_threshold() -> f64 {
    50.0
}

fn default_minimum_calls() -> u64 {
    20
}

fn default_window() -> Duration {
    Duration::from_secs(30)
}

/// The window a quorum-mode breaker still publishes its counts over (shown in snapshots).
const QUORUM_WINDOW: Duration = Duration::from_secs(30);

/// The longest fleet window.
pub const MAX_SHARE_WINDOW: Duration = Duration::from_secs(3600);

impl ShareMode {
    /// Failure-rate mode with `threshold` percent and `minimum_calls`, over the default 30 s
    /// window.
    pub fn failure_rate(threshold: f64, minimum_calls: u64) -> Self {
        ShareMode::FailureRate {
            failure_rate_threshold: threshold,
            minimum_calls,
            window: default_window(),
        }
    }

    /// `failure_rate` or `quorum`.
    pub fn as_str(&self) -> &'static str {
        match self {
            ShareMode::FailureRate { .. } => "failure_rate",
            ShareMode::Quorum { .. } => "quorum",
        }
    }

    /// The fleet window the counts are summed over.
    pub(crate) fn window(&self) -> Duration {
        match self {
            ShareMode::FailureRate { window, .. } => *window,
            ShareMode::Quorum { .. } => QUORUM_WINDOW,
        }
    }

    /// Checks every field; the error names the first invalid one.
    ///
    /// ```
    /// use palisade_fleet::ShareMode;
    ///
    /// let err = ShareMode::failure_rate(0.0, 20).validate().unwrap_err();
    /// assert_eq!(err.field, "failure_rate_threshold");
    /// assert_eq!(ShareMode::Quorum { quorum: 0 }.validate().unwrap_err().field, "quorum");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            ShareMode::FailureRate {
                failure_rate_threshold: t,
                window,
                ..
            } => {
                if !(t.is_finite() && *t > 0.0 && *t <= 100.0) {
                    return Err(ConfigError::new(
                        "failure_rate_threshold",
                        format!("{t} is not a percentage in (0, 100]"),
                    ));
                }
                if *window < Duration::from_secs(1) || *window > MAX_SHARE_WINDOW {
                    return Err(ConfigError::new(
                        "window",
                        format!("{window:?} is outside 1 s to 1 h"),
                    ));
                }
                Ok(())
            }
            ShareMode::Quorum { quorum } if *quorum == 0 => {
                Err(ConfigError::new("quorum", "must be at least 1"))
            }
            ShareMode::Quorum { .. } => Ok(()),
        }
    }
}
