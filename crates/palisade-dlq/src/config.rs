//! Queue configuration.

use std::time::Duration;

use palisade_core::{
    Env,
    config::{ConfigError, check_duration, check_range, duration},
};
use serde::{Deserialize, Serialize};

use crate::policy::Policies;

/// How a dead-letter queue retries, retains and bounds its entries.
///
/// ```
/// use palisade_dlq::DlqConfig;
///
/// let cfg: DlqConfig = serde_json::from_str(r#"{
///     "retention": "3d",
///     "max_entries": 5000,
///     "policies": {
///         "timeout": {"max_attempts": 3, "backoff": {"type": "fixed", "schedule": ["10s", "1m"]}},
///         "client_error": {"max_attempts": 1, "backoff": {"type": "fixed", "schedule": ["0s"]}}
///     }
/// }"#).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.retention.as_secs(), 3 * 86_400);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DlqConfig {
    /// Entries kept at most; at the bound the oldest are evicted (and counted). Default 10 000.
    pub max_entries: u64,
    /// Entries older than this (by original failure) are removed (and counted). Default 7 days
    /// (`DLQ_RETENTION_DAYS`).
    #[serde(with = "duration")]
    pub retention: Duration,
    /// Retry policy per failure kind. Kinds without one are parked at once.
    pub policies: Policies,
    /// How long a worker holds an entry before another may take it; extended while its handler
    /// runs. Default 30 s.
    #[serde(with = "duration")]
    pub lease: Duration,
    /// Deliveries without an outcome after which an entry is quarantined as poison: each time
    /// its holder died (the handler crashed the worker process, or it was killed) it is
    /// claimed again, and past this many claims the worker quarantines it instead of running
    /// it once more. Default 5.
    pub max_deliveries: u32,
    /// Entries a worker handles at once. Default 4.
    pub concurrency: u32,
    /// How often an idle worker looks for due entries. Default 250 ms.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// How often a worker applies retention. Default 60 s.
    #[serde(with = "duration")]
    pub trim_interval: Duration,
    /// Error messages are truncated to this many bytes. Default 1024.
    pub max_error_len: usize,
    /// Larger payloads are refused with an error. Default 1 MiB.
    pub max_payload_bytes: usize,
    /// Entries at which health reports `warn`. Default 50.
    pub warn_threshold: u64,
    /// Entries at which health reports `critical`. Default 100.
    pub critical_threshold: u64,
    /// Redis store only: make every write wait until this many replicas have it (Redis
    /// `WAIT`), so that an entry whose `push` returned survives a failover to a replica. Off by
    /// default. Read when the queue is built ([`Builder::redis`](crate::Builder::redis)); see
    /// [`RedisStore::wait_for_replicas`](crate::RedisStore::wait_for_replicas) for what a
    /// write that reached fewer replicas means.
    pub wait_for_replicas: Option<ReplicaWait>,
}

/// How many replicas a Redis write waits for, and how long ([`DlqConfig::wait_for_replicas`]).
///
/// ```
/// use palisade_dlq::DlqConfig;
///
/// let cfg: DlqConfig = serde_json::from_str(
///     r#"{"wait_for_replicas": {"replicas": 1, "timeout": "50ms"}}"#,
/// ).unwrap();
/// cfg.validate().unwrap();
/// assert_eq!(cfg.wait_for_replicas.unwrap().replicas, 1);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaWait {
    /// Replicas that must acknowledge each write (1 to 16).
    pub replicas: u32,
    /// How long a write waits for them (1 ms to 10 s). Default 100 ms.
    #[serde(with = "duration", default = "default_wait_timeout")]
    pub timeout: Duration,
}

fn default_wait_timeout() -> Duration {
    Duration::from_millis(100)
}

impl Default for DlqConfig {
    fn default() -> Self {
        DlqConfig {
            max_entries: 10_000,
            retention: Duration::from_secs(7 * 86_400),
            policies: Policies::default(),
            lease: Duration::from_secs(30),
            max_deliveries: 5,
            concurrency: 4,
            poll_interval: Duration::from_millis(250),
            trim_interval: Duration::from_secs(60),
            max_error_len: 1024,
            max_payload_bytes: 1 << 20,
            warn_threshold: 50,
            critical_threshold: 100,
            wait_for_replicas: None,
        }
    }
}

impl DlqConfig {
    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_range("max_entries", self.max_entries, 1, 100_000_000)?;
        check_duration(
            "retention",
            self.retention,
            Duration::from_secs(1),
            Duration::from_secs(3650 * 86_400),
        )?;
        self.policies.validate().map_err(|e| e.within("policies"))?;
        check_duration(
            "lease",
            self.lease,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        check_range("concurrency", self.concurrency, 1, 10_000)?;
        check_range("max_deliveries", self.max_deliveries, 1, 1_000_000)?;
        check_duration(
            "poll_interval",
            self.poll_interval,
            Duration::from_millis(1),
            Duration::from_secs(3600),
        )?;
        check_duration(
            "trim_interval",
            self.trim_interval,
            Duration::from_millis(10),
            Duration::from_secs(86_400),
        )?;
        check_range("max_error_len", self.max_error_len, 16, 1 << 20)?;
        check_range("max_payload_bytes", self.max_payload_bytes, 16, 512 << 20)?;
        if let Some(w) = &self.wait_for_replicas {
            check_range("wait_for_replicas.replicas", w.replicas, 1, 16)?;
            check_duration(
                "wait_for_replicas.timeout",
                w.timeout,
                Duration::from_millis(1),
                Duration::from_secs(10),
            )?;
        }
        if self.critical_threshold < self.warn_threshold {
            return Err(ConfigError::new(
                "critical_threshold",
                format!(
                    "{} is below warn_threshold {}",
                    self.critical_threshold, self.warn_threshold
                ),
            ));
        }
        Ok(())
    }

    /// The defaults overridden by the process environment; see [`DlqConfig::from_env_with`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// The defaults overridden by `DLQ_RETENTION_DAYS` (days, fractions allowed),
    /// `DLQ_MAX_ENTRIES`, `DLQ_WARN_THRESHOLD` and `DLQ_CRITICAL_THRESHOLD`, then validated.
    /// Errors name the variable.
    ///
    /// ```
    /// use palisade_core::Env;
    /// use palisade_dlq::DlqConfig;
    ///
    /// let env = Env::from_fn(|k| (k == "DLQ_RETENTION_DAYS").then(|| "2".to_string()));
    /// assert_eq!(DlqConfig::from_env_with(&env).unwrap().retention.as_secs(), 2 * 86_400);
    /// let bad = Env::from_fn(|k| (k == "DLQ_RETENTION_DAYS").then(|| "a week".to_string()));
    /// assert_eq!(DlqConfig::from_env_with(&bad).unwrap_err().field, "DLQ_RETENTION_DAYS");
    /// ```
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        if let Some(days) = env.parse::<f64>("DLQ_RETENTION_DAYS")? {
            cfg.retention = Duration::try_from_secs_f64(days * 86_400.0)
                .map_err(|e| ConfigError::new("DLQ_RETENTION_DAYS", e.to_string()))?;
        }
        if let Some(v) = env.parse("DLQ_MAX_ENTRIES")? {
            cfg.max_entries = v;
        }
        if let Some(v) = env.parse("DLQ_WARN_THRESHOLD")? {
            cfg.warn_threshold = v;
        }
        if let Some(v) = env.parse("DLQ_CRITICAL_THRESHOLD")? {
            cfg.critical_threshold = v;
        }
        cfg.validate().map_err(|e| {
            let var = match e.field.as_str() {
                "retention" => "DLQ_RETENTION_DAYS",
                "max_entries" => "DLQ_MAX_ENTRIES",
                "critical_threshold" => "DLQ_CRITICAL_THRESHOLD",
                _ => return e,
            };
            ConfigError::new(var, e.reason)
        })?;
        Ok(cfg)
    }
}
