//! Check and restart configuration.

use std::time::Duration;

use palisade_core::{
    Env,
    config::{ConfigError, check_duration, check_range, duration},
};
use serde::{Deserialize, Serialize};

/// How a failing restartable component is restarted: growing backoff between restarts (as
/// Kubernetes' CrashLoopBackOff) and an intensity brake (as OTP supervisors and systemd's
/// `StartLimitBurst`): more than `max_restarts` restarts within `window` enter crash-loop
/// protection, and the component is no longer restarted until an operator resets it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RestartPolicy {
    /// The wait after the first restart before a second one. The first restart is immediate.
    /// Default 1 s.
    #[serde(with = "duration")]
    pub initial_backoff: Duration,
    /// Growth of the wait per restart (1 to 10). Default 2.
    pub factor: f64,
    /// The cap of the wait. Default 5 min.
    #[serde(with = "duration")]
    pub max_backoff: Duration,
    /// Relative jitter of each wait (0 to 1). Default 0.1.
    pub jitter: f64,
    /// Healthy this long, the backoff starts over. Default 10 min.
    #[serde(with = "duration")]
    pub reset_after: Duration,
    /// Restarts allowed within `window` (1 to 1000). Default 5.
    pub max_restarts: u32,
    /// The window of `max_restarts`. Default 10 min.
    #[serde(with = "duration")]
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            initial_backoff: Duration::from_secs(1),
            factor: 2.0,
            max_backoff: Duration::from_secs(300),
            jitter: 0.1,
            reset_after: Duration::from_secs(600),
            max_restarts: 5,
            window: Duration::from_secs(600),
        }
    }
}

impl RestartPolicy {
    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let day = Duration::from_secs(86_400);
        check_duration("initial_backoff", self.initial_backoff, Duration::ZERO, day)?;
        check_duration("max_backoff", self.max_backoff, self.initial_backoff, day)?;
        if !(1.0..=10.0).contains(&self.factor) {
            return Err(ConfigError::new(
                "factor",
                format!("{} is out of range; expected 1 to 10", self.factor),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                "jitter",
                format!("{} is out of range; expected 0 to 1", self.jitter),
            ));
        }
        check_duration(
            "reset_after",
            self.reset_after,
            Duration::from_millis(1),
            30 * day,
        )?;
        check_range("max_restarts", self.max_restarts, 1, 1000)?;
        check_duration("window", self.window, Duration::from_millis(1), 30 * day)?;
        Ok(())
    }
}

/// How one component is checked and restarted.
///
/// ```
/// use palisade_health::CheckConfig;
///
/// let cfg: CheckConfig = serde_json::from_str(
///     r#"{"interval": "10s", "failure_threshold": 2, "restart": {"max_restarts": 3, "window": "1m"}}"#,
/// ).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.interval.as_secs(), 10);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CheckConfig {
    /// Time between checks. Default 60 s (`HEALTH_CHECK_INTERVAL`).
    #[serde(with = "duration")]
    pub interval: Duration,
    /// Relative jitter of the interval (0 to 1), so checks of many components spread out.
    /// Default 0.1.
    pub jitter: f64,
    /// A check taking longer is cancelled and counts as unhealthy. Default 5 s.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Consecutive failed checks that make the component unhealthy (and, if restartable,
    /// restart it). Default 3.
    pub failure_threshold: u32,
    /// Consecutive passed checks that make an unhealthy component healthy again. Default 1.
    pub success_threshold: u32,
    /// Whether the service is not ready without it. Default true.
    pub critical: bool,
    /// Whether its failure means the process itself is wedged (fails liveness). Default
    /// false: dependencies never fail liveness, since restarting the process cannot fix them.
    pub liveness: bool,
    /// Whether the monitor restarts it when it fails (if it is restartable). Default true.
    pub auto_restart: bool,
    /// Backoff and crash-loop brake.
    pub restart: RestartPolicy,
}

impl Default for CheckConfig {
    fn default() -> Self {
        CheckConfig {
            interval: Duration::from_secs(60),
            jitter: 0.1,
            timeout: Duration::from_secs(5),
            failure_threshold: 3,
            success_threshold: 1,
            critical: true,
            liveness: false,
            auto_restart: true,
            restart: RestartPolicy::default(),
        }
    }
}

impl CheckConfig {
    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let day = Duration::from_secs(86_400);
        check_duration("interval", self.interval, Duration::from_millis(1), day)?;
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(ConfigError::new(
                "jitter",
                format!("{} is out of range; expected 0 to 1", self.jitter),
            ));
        }
        check_duration("timeout", self.timeout, Duration::from_millis(1), day)?;
        check_range("failure_threshold", self.failure_threshold, 1, 1000)?;
        check_range("success_threshold", self.success_threshold, 1, 1000)?;
        self.restart.validate().map_err(|e| e.within("restart"))
    }
}

/// The monitor's own settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MonitorConfig {
    /// Auto-restart for every component (`HEALTH_MONITOR_AUTO_RESTART`). Default true.
    pub auto_restart: bool,
    /// Defaults for components added without a config of their own.
    pub defaults: CheckConfig,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            auto_restart: true,
            defaults: CheckConfig::default(),
        }
    }
}

impl MonitorConfig {
    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.defaults.validate().map_err(|e| e.within("defaults"))
    }

    /// The defaults overridden by the process environment; see
    /// [`MonitorConfig::from_env_with`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// The defaults overridden by `HEALTH_MONITOR_AUTO_RESTART` (true/false) and
    /// `HEALTH_CHECK_INTERVAL` (seconds unless a unit is given), then validated. Errors name
    /// the variable.
    ///
    /// ```
    /// use palisade_core::Env;
    /// use palisade_health::MonitorConfig;
    ///
    /// let env = Env::from_fn(|k| match k {
    ///     "HEALTH_MONITOR_AUTO_RESTART" => Some("false".into()),
    ///     "HEALTH_CHECK_INTERVAL" => Some("30".into()),
    ///     _ => None,
    /// });
    /// let cfg = MonitorConfig::from_env_with(&env).unwrap();
    /// assert!(!cfg.auto_restart);
    /// assert_eq!(cfg.defaults.interval.as_secs(), 30);
    /// ```
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        if let Some(v) = env.parse_bool("HEALTH_MONITOR_AUTO_RESTART")? {
            cfg.auto_restart = v;
        }
        if let Some(v) = env.parse_duration("HEALTH_CHECK_INTERVAL", Duration::from_secs(1))? {
            cfg.defaults.interval = v;
        }
        cfg.validate().map_err(|e| {
            if e.field == "defaults.interval" {
                ConfigError::new("HEALTH_CHECK_INTERVAL", e.reason)
            } else {
                e
            }
        })?;
        Ok(cfg)
    }
}
