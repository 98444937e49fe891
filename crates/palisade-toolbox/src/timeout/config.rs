//! [`TimeoutConfig`]: the deadline and how a breaker counts it.

use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::config::duration;
use serde::{Deserialize, Serialize};

/// The longest deadline a timeout accepts.
pub const MAX_DEADLINE: Duration = Duration::from_secs(24 * 3600);

/// How a breaker counts a call whose deadline ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum CountAs {
    /// A failure: it counts toward the consecutive failures and the failure rate.
    #[default]
    Failure,
    /// A slow call: it counts toward the slow-call rate only (the breaker's
    /// `Outcome::Slow`).
    Slow,
}

impl CountAs {
    /// `failure` or `slow`.
    pub fn as_str(self) -> &'static str {
        match self {
            CountAs::Failure => "failure",
            CountAs::Slow => "slow",
        }
    }
}

/// A timeout's config.
///
/// ```
/// use palisade_toolbox::{CountAs, TimeoutConfig};
///
/// let config: TimeoutConfig =
///     serde_json::from_str(r#"{"deadline": "1500ms", "count_as": "slow"}"#).unwrap();
/// assert_eq!(config.deadline.as_millis(), 1500);
/// assert_eq!(config.count_as, CountAs::Slow);
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeoutConfig {
    /// How long a call may run (`"2s"`, `"250ms"` or milliseconds). Default 10 s; at most
    /// [`MAX_DEADLINE`].
    #[serde(with = "duration")]
    pub deadline: Duration,
    /// How a breaker counts an elapsed deadline. Default `failure`.
    pub count_as: CountAs,
}

impl Default for TimeoutConfig {
    fn default() -> Self {
        TimeoutConfig {
            deadline: Duration::from_secs(10),
            count_as: CountAs::Failure,
        }
    }
}

impl TimeoutConfig {
    /// Checks every field; the error names the invalid one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::TimeoutConfig;
    ///
    /// let zero = TimeoutConfig { deadline: Duration::ZERO, ..Default::default() };
    /// assert_eq!(zero.validate().unwrap_err().field, "deadline");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_deadline(self.deadline)
    }
}

/// A deadline is positive and at most [`MAX_DEADLINE`].
pub(crate) fn check_deadline(d: Duration) -> Result<(), ConfigError> {
    if d.is_zero() || d > MAX_DEADLINE {
        return Err(ConfigError::new(
            "deadline",
            format!("{d:?} is outside 1 ns to 24 h"),
        ));
    }
    Ok(())
}
