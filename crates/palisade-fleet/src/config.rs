//! [`FleetConfig`]: who this instance is and how it keeps in touch with its fleet.

use std::time::Duration;

use palisade_core::ConfigError;
use palisade_core::redis::ConnectionOptions;
use palisade_core::registry::{NAME_RULE, is_valid_name};

/// Most addresses an instance may advertise.
pub const MAX_ADDRESSES: usize = 16;

/// Longest advertised address or version (bytes).
pub const MAX_TEXT_LEN: usize = 256;

/// Who this instance is in which fleet, and its timings. Build it with [`FleetConfig::new`]
/// and change what differs from the defaults:
///
/// ```
/// use std::time::Duration;
/// use palisade_fleet::FleetConfig;
///
/// let config = FleetConfig {
///     version: "1.4.2".into(),
///     addresses: vec!["http://10.0.0.7:8080".into()],
///     ttl: Duration::from_secs(15),
///     ..FleetConfig::new("mcp-gateway", "10.0.0.7:8080")
/// };
/// assert_eq!(config.heartbeat, Duration::from_secs(2));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetConfig {
    /// The fleet's name: every replica of one service uses the same. 1 to 128 characters of
    /// `A-Z a-z 0-9 - _ . :`; it is the Redis hash tag of all the fleet's keys.
    pub fleet: String,
    /// This instance's id, unique among the running replicas and stable across its restarts
    /// (a host name and port, a StatefulSet pod name), so that a restarted instance catches up
    /// on the commands it missed. Same characters as `fleet`.
    pub instance_id: String,
    /// The version this instance runs (shown in the instance list). Default empty.
    pub version: String,
    /// Where the instance can be reached (shown in the instance list). Default none.
    pub addresses: Vec<String>,
    /// How often the instance renews its registration. Default 2 s.
    pub heartbeat: Duration,
    /// How long a registration lasts without renewal: an instance that stops heartbeating
    /// leaves the list within this time. Must exceed `heartbeat` (three times it is safe).
    /// Default 10 s.
    pub ttl: Duration,
    /// How often the shared breakers ([`Fleet::share_breaker`](crate::Fleet::share_breaker))
    /// exchange their counts with the fleet: one Redis command per instance per interval, for
    /// all of them. Default 1 s.
    pub publish_interval: Duration,
    /// Commands older than this are not applied by an instance catching up after a stop (and
    /// their outcomes are kept in Redis this long). Default 1 hour.
    pub catch_up: Duration,
    /// How long [`Fleet::join`](crate::Fleet::join) waits for Redis to register the instance,
    /// re-apply the overrides and catch up before it returns anyway (the background tasks then
    /// finish the work). Default 5 s.
    pub join_timeout: Duration,
    /// Timeouts and reconnection of the Redis connections.
    pub connection: ConnectionOptions,
}

impl FleetConfig {
    /// The defaults for instance `instance_id` of fleet `fleet`.
    pub fn new(fleet: impl Into<String>, instance_id: impl Into<String>) -> Self {
        FleetConfig {
            fleet: fleet.into(),
            instance_id: instance_id.into(),
            version: String::new(),
            addresses: Vec::new(),
            heartbeat: Duration::from_secs(2),
            ttl: Duration::from_secs(10),
            publish_interval: Duration::from_secs(1),
            catch_up: Duration::from_secs(3600),
            join_timeout: Duration::from_secs(5),
            connection: ConnectionOptions::default(),
        }
    }

    /// Checks every field; the error names the first invalid one.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_fleet::FleetConfig;
    ///
    /// let config = FleetConfig { ttl: Duration::from_secs(1), ..FleetConfig::new("mcp", "a") };
    /// assert_eq!(config.validate().unwrap_err().field, "ttl");
    /// ```
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (field, value) in [("fleet", &self.fleet), ("instance_id", &self.instance_id)] {
            if !is_valid_name(value) {
                return Err(ConfigError::new(
                    field,
                    format!("{value:?} is not a valid name; {NAME_RULE}"),
                ));
            }
        }
        if self.version.len() > MAX_TEXT_LEN {
            return Err(ConfigError::new(
                "version",
                format!("longer than {MAX_TEXT_LEN} bytes"),
            ));
        }
        if self.addresses.len() > MAX_ADDRESSES {
            return Err(ConfigError::new(
                "addresses",
                format!("at most {MAX_ADDRESSES} addresses"),
            ));
        }
        if let Some(long) = self.addresses.iter().find(|a| a.len() > MAX_TEXT_LEN) {
            return Err(ConfigError::new(
                "addresses",
                format!("{long:?} is longer than {MAX_TEXT_LEN} bytes"),
            ));
        }
        if self.heartbeat < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "heartbeat",
                format!("{:?} is too short; use at least 10 ms", self.heartbeat),
            ));
        }
        if self.ttl <= self.heartbeat {
            return Err(ConfigError::new(
                "ttl",
                format!(
                    "{:?} must exceed the heartbeat ({:?}); three heartbeats or more is safe",
                    self.ttl, self.heartbeat
                ),
            ));
        }
        if self.publish_interval < Duration::from_millis(10) {
            return Err(ConfigError::new(
                "publish_interval",
                format!(
                    "{:?} is too short; use at least 10 ms",
                    self.publish_interval
                ),
            ));
        }
        if self.catch_up < Duration::from_secs(1) {
            return Err(ConfigError::new(
                "catch_up",
                format!("{:?} is too short; use at least 1 s", self.catch_up),
            ));
        }
        Ok(())
    }
}

/// How long a stopped instance's cursor is kept by default: an instance that comes back
/// later than this (or later than `catch_up`, whichever is longer) starts afresh, as a new
/// instance does.
pub const CURSOR_RETENTION: Duration = Duration::from_secs(24 * 3600);

impl FleetConfig {
    /// How long this instance's cursor outlives its last heartbeat or command.
    pub(crate) fn cursor_retention(&self) -> Duration {
        self.catch_up.max(CURSOR_RETENTION)
    }
}

/// `d` in whole milliseconds, saturating, at least 1.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        FleetConfig::new("mcp", "10.0.0.7:8080")
            .validate()
            .expect("defaults");
    }

    #[test]
    fn each_invalid_field_is_named() {
        let base = FleetConfig::new("mcp", "a");
        let cases = [
            (
                FleetConfig {
                    fleet: "a{b}".into(),
                    ..base.clone()
                },
                "fleet",
            ),
            (
                FleetConfig {
                    instance_id: String::new(),
                    ..base.clone()
                },
                "instance_id",
            ),
            (
                FleetConfig {
                    version: "v".repeat(300),
                    ..base.clone()
                },
                "version",
            ),
            (
                FleetConfig {
                    addresses: vec!["a".into(); 17],
                    ..base.clone()
                },
                "addresses",
            ),
            (
                FleetConfig {
                    heartbeat: Duration::ZERO,
                    ..base.clone()
                },
                "heartbeat",
            ),
            (
                FleetConfig {
                    ttl: Duration::from_secs(2),
                    ..base.clone()
                },
                "ttl",
            ),
            (
                FleetConfig {
                    publish_interval: Duration::from_millis(1),
                    ..base.clone()
                },
                "publish_interval",
            ),
            (
                FleetConfig {
                    catch_up: Duration::ZERO,
                    ..base.clone()
                },
                "catch_up",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().expect_err(field);
            assert_eq!(err.field, field, "{err}");
        }
    }
}
