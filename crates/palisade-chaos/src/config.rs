//! Whether fault injection may be switched on at all, and for how long at most.

use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, duration};
use serde::{Deserialize, Serialize};

/// The longest time-to-live any fault injection may have: 1 h. There is no "forever".
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// The shortest time-to-live: 1 ms (zero is refused).
pub const MIN_TTL: Duration = Duration::from_millis(1);

/// A fault injector's config: safe by default.
///
/// Unless `enabled_in_config` is `true`, every `enable` command is refused: fault injection
/// cannot be switched on through the admin API of an instance whose config does not allow it.
///
/// ```
/// use std::time::Duration;
/// use palisade_chaos::FaultInjectorConfig;
///
/// let off = FaultInjectorConfig::default();
/// assert!(!off.enabled_in_config);
/// assert_eq!(off.max_ttl, Duration::from_secs(3600));
///
/// let cfg: FaultInjectorConfig =
///     serde_json::from_str(r#"{"enabled_in_config": true, "max_ttl": "15m"}"#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.max_ttl, Duration::from_secs(900));
///
/// let too_long: FaultInjectorConfig = serde_json::from_str(r#"{"max_ttl": "2h"}"#).unwrap();
/// assert_eq!(too_long.validate().unwrap_err().field, "max_ttl");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FaultInjectorConfig {
    /// Whether `enable` commands are accepted. Default `false`.
    pub enabled_in_config: bool,
    /// The longest `ttl` an `enable` command may ask for ([`MIN_TTL`] to [`MAX_TTL`]).
    /// Default [`MAX_TTL`].
    #[serde(with = "duration")]
    pub max_ttl: Duration,
}

impl Default for FaultInjectorConfig {
    fn default() -> Self {
        Self {
            enabled_in_config: false,
            max_ttl: MAX_TTL,
        }
    }
}

impl FaultInjectorConfig {
    /// Checks every field; the error names the first invalid one.
    ///
    /// ```
    /// # use std::time::Duration;
    /// let cfg = palisade_chaos::FaultInjectorConfig { max_ttl: Duration::ZERO, ..Default::default() };
    /// assert_eq!(cfg.validate().unwrap_err().field, "max_ttl");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration("max_ttl", self.max_ttl, MIN_TTL, MAX_TTL)
    }
}
