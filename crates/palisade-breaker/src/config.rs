//! Breaker configuration: from a builder, from serde (TOML/JSON) or from the environment.

use std::time::Duration;

use palisade_core::config::{ConfigError, Env, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

/// Upper bound of any wait duration: one week.
const MAX_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// How a circuit breaker decides to open, how long it stays open, and how it recovers.
///
/// Deserializes from TOML or JSON with every field optional (defaults below) and unknown fields
/// refused; durations read as `"60s"`, `"250ms"` or integer milliseconds.
///
/// ```
/// use palisade_breaker::BreakerConfig;
///
/// let cfg: BreakerConfig = serde_json::from_str(r#"{
///     "consecutive_failures": 5,
///     "wait_duration": "30s",
///     "failure_rate": { "window": { "type": "count", "size": 20 }, "minimum_calls": 10 }
/// }"#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.wait_duration.as_secs(), 30);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerConfig {
    /// Consecutive failures that open the breaker; 0 turns this trigger off.
    /// Default 3 (env `CIRCUIT_BREAKER_THRESHOLD`).
    pub consecutive_failures: u32,
    /// Open on a failure rate (or slow-call rate) over a sliding window. Default off.
    pub failure_rate: Option<FailureRateConfig>,
    /// How long the breaker stays open before it lets trial calls through (half-open).
    /// Default 60 s (env `CIRCUIT_BREAKER_TIMEOUT`, in seconds).
    #[serde(with = "duration")]
    pub wait_duration: Duration,
    /// When set, each trip that follows a failed recovery multiplies the wait by
    /// `wait_multiplier`, up to this cap; a successful recovery resets it. Default off
    /// (env `CIRCUIT_BREAKER_MAX_TIMEOUT`, in seconds).
    #[serde(with = "duration::option")]
    pub max_wait_duration: Option<Duration>,
    /// Growth factor of the wait between consecutive trips. Default 2.0.
    pub wait_multiplier: f64,
    /// Random spread of the wait, as a fraction: 0.1 makes each wait 90 %–110 % of nominal, so
    /// many instances do not probe a recovering upstream at the same instant. Default 0.
    pub jitter: f64,
    /// Trial calls admitted at once while half-open; this many successes close the breaker and
    /// one failure re-opens it. Default 1 (env `CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS`).
    /// Changed while half-open, it applies at once: if the trials that already succeeded are
    /// enough for the new value, the breaker closes.
    pub half_open_max_calls: u32,
    /// How long a half-open breaker with trial calls in flight waits for news of them. When
    /// that long passes with no trial admitted or reported, the trials in flight are presumed
    /// hung and the breaker re-opens as if a trial had failed (a new open period, which counts
    /// for wait growth); their late outcomes are then ignored. A half-open breaker with no trial
    /// in flight is waiting for nothing and stays half-open until a call comes. The breaker
    /// re-opens at the deadline itself, whenever it is next looked at. Like resilience4j's
    /// `maxWaitDurationInHalfOpenState`, but never infinite, so one hung call cannot hold a
    /// breaker half-open forever. Default 60 s (1 ms to one week).
    #[serde(with = "duration")]
    pub max_wait_in_half_open: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            consecutive_failures: 3,
            failure_rate: None,
            wait_duration: Duration::from_secs(60),
            max_wait_duration: None,
            wait_multiplier: 2.0,
            jitter: 0.0,
            half_open_max_calls: 1,
            max_wait_in_half_open: Duration::from_secs(60),
        }
    }
}

/// Opening on a rate of failures (and optionally of slow calls) over a sliding window.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FailureRateConfig {
    /// The window the rates are computed over. Default: the last 100 calls.
    pub window: SlidingWindow,
    /// Calls the window must hold before a rate can open the breaker. Default 10.
    pub minimum_calls: u32,
    /// Failure percentage (0 < x ≤ 100) at or above which the breaker opens. Default 50.
    pub failure_rate_threshold: f64,
    /// Calls that take at least this long count as slow (successful or not). Default off.
    /// While half-open, a slow trial counts as a failed one.
    #[serde(with = "duration::option")]
    pub slow_call_duration: Option<Duration>,
    /// Slow-call percentage (0 < x ≤ 100) at or above which the breaker opens. Default 100.
    pub slow_call_rate_threshold: f64,
}

impl Default for FailureRateConfig {
    fn default() -> Self {
        Self {
            window: SlidingWindow::Count { size: 100 },
            minimum_calls: 10,
            failure_rate_threshold: 50.0,
            slow_call_duration: None,
            slow_call_rate_threshold: 100.0,
        }
    }
}

/// The shape of a sliding window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum SlidingWindow {
    /// The last `size` calls.
    Count {
        /// Number of calls kept (1 to 10 000).
        size: u32,
    },
    /// Calls of the last `length` of time, kept in ten buckets: outcomes age out in steps of a
    /// tenth of the window.
    Time {
        /// Window length (10 ms to 1 h).
        #[serde(with = "duration")]
        length: Duration,
    },
}

fn check_percent(field: &str, v: f64) -> Result<(), ConfigError> {
    if !(v.is_finite() && v > 0.0 && v <= 100.0) {
        return Err(ConfigError::new(
            field,
            format!("{v} is not a percentage; expected more than 0 and at most 100"),
        ));
    }
    Ok(())
}

fn check_finite_range(field: &str, v: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if !v.is_finite() {
        return Err(ConfigError::new(
            field,
            format!("{v} is not a finite number"),
        ));
    }
    check_range(field, v, lo, hi)
}

impl FailureRateConfig {
    /// Checks every field; the error names the first invalid one (relative to this struct).
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.window {
            SlidingWindow::Count { size } => {
                check_range("window.size", size, 1, 10_000)?;
                if self.minimum_calls > size {
                    return Err(ConfigError::new(
                        "minimum_calls",
                        format!(
                            "{} exceeds the window size {size}; the rate could never be evaluated",
                            self.minimum_calls
                        ),
                    ));
                }
            }
            SlidingWindow::Time { length } => check_duration(
                "window.length",
                length,
                Duration::from_millis(10),
                Duration::from_secs(3600),
            )?,
        }
        check_range("minimum_calls", self.minimum_calls, 1, 1_000_000)?;
        check_percent("failure_rate_threshold", self.failure_rate_threshold)?;
        check_percent("slow_call_rate_threshold", self.slow_call_rate_threshold)?;
        if let Some(slow) = self.slow_call_duration {
            check_duration(
                "slow_call_duration",
                slow,
                Duration::from_nanos(1),
                MAX_WAIT,
            )?;
        }
        Ok(())
    }
}

impl BreakerConfig {
    /// Checks every field; the error names the first invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range(
            "consecutive_failures",
            self.consecutive_failures,
            0,
            1_000_000,
        )?;
        if self.consecutive_failures == 0 && self.failure_rate.is_none() {
            return Err(ConfigError::new(
                "consecutive_failures",
                "0 with no failure_rate leaves the breaker nothing to trip on; set one of them",
            ));
        }
        if let Some(rate) = &self.failure_rate {
            rate.validate().map_err(|e| e.within("failure_rate"))?;
        }
        check_duration(
            "wait_duration",
            self.wait_duration,
            Duration::ZERO,
            MAX_WAIT,
        )?;
        if let Some(max) = self.max_wait_duration {
            check_duration("max_wait_duration", max, self.wait_duration, MAX_WAIT)?;
        }
        check_finite_range("wait_multiplier", self.wait_multiplier, 1.0, 100.0)?;
        check_finite_range("jitter", self.jitter, 0.0, 1.0)?;
        check_range("half_open_max_calls", self.half_open_max_calls, 1, 1000)?;
        check_duration(
            "max_wait_in_half_open",
            self.max_wait_in_half_open,
            Duration::from_millis(1),
            MAX_WAIT,
        )?;
        Ok(())
    }

    /// The defaults overridden by the process environment; see [`BreakerConfig::from_env_with`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// The defaults overridden by `CIRCUIT_BREAKER_THRESHOLD` (consecutive failures),
    /// `CIRCUIT_BREAKER_TIMEOUT` (wait, seconds unless a unit is given: `60`, `500ms`),
    /// `CIRCUIT_BREAKER_MAX_TIMEOUT` (wait cap, enables growth) and
    /// `CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS`, then validated. Errors name the variable.
    ///
    /// ```
    /// use palisade_breaker::BreakerConfig;
    /// use palisade_core::Env;
    ///
    /// let env = Env::from_fn(|k| match k {
    ///     "CIRCUIT_BREAKER_THRESHOLD" => Some("5".into()),
    ///     "CIRCUIT_BREAKER_TIMEOUT" => Some("30".into()),
    ///     _ => None,
    /// });
    /// let cfg = BreakerConfig::from_env_with(&env).unwrap();
    /// assert_eq!(cfg.consecutive_failures, 5);
    /// assert_eq!(cfg.wait_duration.as_secs(), 30);
    /// ```
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        const THRESHOLD: &str = "CIRCUIT_BREAKER_THRESHOLD";
        const TIMEOUT: &str = "CIRCUIT_BREAKER_TIMEOUT";
        const MAX_TIMEOUT: &str = "CIRCUIT_BREAKER_MAX_TIMEOUT";
        const HALF_OPEN: &str = "CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS";
        let secs = Duration::from_secs(1);
        let mut cfg = Self::default();
        if let Some(v) = env.parse(THRESHOLD)? {
            cfg.consecutive_failures = v;
        }
        if let Some(v) = env.parse_duration(TIMEOUT, secs)? {
            cfg.wait_duration = v;
        }
        if let Some(v) = env.parse_duration(MAX_TIMEOUT, secs)? {
            cfg.max_wait_duration = Some(v);
        }
        if let Some(v) = env.parse(HALF_OPEN)? {
            cfg.half_open_max_calls = v;
        }
        // Report a bad value under the variable that set it.
        cfg.validate().map_err(|e| {
            let var = match e.field.as_str() {
                "consecutive_failures" => THRESHOLD,
                "wait_duration" => TIMEOUT,
                "max_wait_duration" => MAX_TIMEOUT,
                "half_open_max_calls" => HALF_OPEN,
                _ => return e,
            };
            ConfigError::new(var, e.reason)
        })?;
        Ok(cfg)
    }

    /// The nominal wait (before jitter) after `trips` consecutive trips (1 for the first).
    pub fn wait_for_trip(&self, trips: u32) -> Duration {
        let Some(max) = self.max_wait_duration else {
            return self.wait_duration;
        };
        let exp = i32::try_from(trips.saturating_sub(1).min(64)).unwrap_or(64);
        let secs = self.wait_duration.as_secs_f64() * self.wait_multiplier.powi(exp);
        Duration::try_from_secs_f64(secs).map_or(max, |d| d.min(max))
    }

    pub(crate) fn timing_needed(&self) -> bool {
        self.failure_rate.as_ref().is_some_and(|r| {
            r.slow_call_duration.is_some() || matches!(r.window, SlidingWindow::Time { .. })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(cfg: BreakerConfig) -> String {
        cfg.validate().unwrap_err().field
    }

    #[test]
    fn defaults_are_valid_and_match_the_runbooks() {
        let c = BreakerConfig::default();
        c.validate().unwrap();
        assert_eq!(c.consecutive_failures, 3);
        assert_eq!(c.wait_duration, Duration::from_secs(60));
        assert_eq!(c.half_open_max_calls, 1);
        assert_eq!(c.max_wait_in_half_open, Duration::from_secs(60));
    }

    #[test]
    fn invalid_values_name_their_field() {
        let base = BreakerConfig::default;
        assert_eq!(
            field_of(BreakerConfig {
                consecutive_failures: 0,
                ..base()
            }),
            "consecutive_failures"
        );
        assert_eq!(
            field_of(BreakerConfig {
                jitter: 1.5,
                ..base()
            }),
            "jitter"
        );
        assert_eq!(
            field_of(BreakerConfig {
                jitter: f64::NAN,
                ..base()
            }),
            "jitter"
        );
        assert_eq!(
            field_of(BreakerConfig {
                wait_multiplier: 0.5,
                ..base()
            }),
            "wait_multiplier"
        );
        assert_eq!(
            field_of(BreakerConfig {
                half_open_max_calls: 0,
                ..base()
            }),
            "half_open_max_calls"
        );
        for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
            assert_eq!(
                field_of(BreakerConfig {
                    max_wait_in_half_open: bad,
                    ..base()
                }),
                "max_wait_in_half_open"
            );
        }
        assert_eq!(
            field_of(BreakerConfig {
                max_wait_duration: Some(Duration::from_secs(1)),
                ..base()
            }),
            "max_wait_duration"
        );
        let rate = |r: FailureRateConfig| BreakerConfig {
            failure_rate: Some(r),
            ..base()
        };
        assert_eq!(
            field_of(rate(FailureRateConfig {
                failure_rate_threshold: 0.0,
                ..Default::default()
            })),
            "failure_rate.failure_rate_threshold"
        );
        assert_eq!(
            field_of(rate(FailureRateConfig {
                minimum_calls: 200,
                ..Default::default()
            })),
            "failure_rate.minimum_calls"
        );
        assert_eq!(
            field_of(rate(FailureRateConfig {
                window: SlidingWindow::Count { size: 0 },
                minimum_calls: 0,
                ..Default::default()
            })),
            "failure_rate.window.size"
        );
        assert_eq!(
            field_of(rate(FailureRateConfig {
                window: SlidingWindow::Time {
                    length: Duration::from_secs(7200)
                },
                ..Default::default()
            })),
            "failure_rate.window.length"
        );
    }

    #[test]
    fn deserializes_from_toml_and_refuses_unknown_fields() {
        let cfg: BreakerConfig = toml::from_str(
            r#"
            consecutive_failures = 5
            wait_duration = "30s"
            max_wait_duration = "5m"
            jitter = 0.1
            max_wait_in_half_open = "90s"
            [failure_rate]
            window = { type = "time", length = "10s" }
            minimum_calls = 20
            slow_call_duration = "2s"
            slow_call_rate_threshold = 80.0
            "#,
        )
        .unwrap();
        cfg.validate().unwrap();
        assert_eq!(cfg.max_wait_duration, Some(Duration::from_secs(300)));
        assert_eq!(cfg.max_wait_in_half_open, Duration::from_secs(90));
        let rate = cfg.failure_rate.unwrap();
        assert_eq!(
            rate.window,
            SlidingWindow::Time {
                length: Duration::from_secs(10)
            }
        );
        assert_eq!(rate.slow_call_duration, Some(Duration::from_secs(2)));
        assert_eq!(rate.failure_rate_threshold, 50.0);

        let err = toml::from_str::<BreakerConfig>("consecutive_failurez = 5").unwrap_err();
        assert!(err.to_string().contains("consecutive_failurez"), "{err}");
        let err =
            serde_json::from_str::<BreakerConfig>(r#"{"wait_duration": "soon"}"#).unwrap_err();
        assert!(err.to_string().contains("soon"), "{err}");
    }

    #[test]
    fn json_round_trip() {
        let cfg = BreakerConfig {
            failure_rate: Some(FailureRateConfig::default()),
            max_wait_duration: Some(Duration::from_secs(600)),
            max_wait_in_half_open: Duration::from_millis(2500),
            ..Default::default()
        };
        let json = serde_json::to_string(&cfg).unwrap();
        assert!(
            json.contains(r#""max_wait_in_half_open":"2500ms""#),
            "{json}"
        );
        assert_eq!(serde_json::from_str::<BreakerConfig>(&json).unwrap(), cfg);
    }

    #[test]
    fn env_errors_name_the_variable() {
        let env = Env::from_fn(|k| (k == "CIRCUIT_BREAKER_THRESHOLD").then(|| "three".to_string()));
        assert_eq!(
            BreakerConfig::from_env_with(&env).unwrap_err().field,
            "CIRCUIT_BREAKER_THRESHOLD"
        );
        let env =
            Env::from_fn(|k| (k == "CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS").then(|| "0".to_string()));
        assert_eq!(
            BreakerConfig::from_env_with(&env).unwrap_err().field,
            "CIRCUIT_BREAKER_HALF_OPEN_MAX_CALLS"
        );
        let env = Env::from_fn(|k| (k == "CIRCUIT_BREAKER_TIMEOUT").then(|| "500ms".to_string()));
        assert_eq!(
            BreakerConfig::from_env_with(&env).unwrap().wait_duration,
            Duration::from_millis(500)
        );
    }

    #[test]
    fn wait_grows_to_its_cap() {
        let cfg = BreakerConfig {
            wait_duration: Duration::from_secs(10),
            max_wait_duration: Some(Duration::from_secs(60)),
            ..Default::default()
        };
        let waits: Vec<u64> = (1..=5).map(|t| cfg.wait_for_trip(t).as_secs()).collect();
        assert_eq!(waits, vec![10, 20, 40, 60, 60]);
        assert_eq!(cfg.wait_for_trip(u32::MAX), Duration::from_secs(60));
        let flat = BreakerConfig {
            wait_duration: Duration::from_secs(10),
            ..Default::default()
        };
        assert_eq!(flat.wait_for_trip(7), Duration::from_secs(10));
    }
}
