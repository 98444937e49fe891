//! The front door: a keyed limiter on the backend the config chooses (`RATE_LIMIT_BACKEND`).

use std::str::FromStr;
use std::time::Duration;

use palisade_core::{
    BuildError, Env, Registry, SharedClock,
    config::{ConfigError, check_duration, check_range},
};
use serde::{Deserialize, Serialize};

use crate::error::{RateLimitError, RateLimited};
use crate::keyed::{DEFAULT_MAX_KEYS, KeyedRateLimiter};
use crate::quota::{Decision, Quota};
#[cfg(feature = "redis")]
use crate::redis::RedisRateLimiter;

/// Where a limiter keeps its buckets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// In this process: one instance, or a per-instance limit. Default.
    #[default]
    Memory,
    /// In Redis: every instance shares one limit.
    Redis,
}

impl FromStr for Backend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "memory" => Ok(Backend::Memory),
            "redis" => Ok(Backend::Redis),
            other => Err(format!(
                "unknown backend '{other}'; expected memory or redis"
            )),
        }
    }
}

/// What a distributed limiter does when Redis is unreachable or slower than its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Admit every request (Envoy's default): availability over protection.
    FailOpen,
    /// Refuse every request until Redis answers again: protection over availability.
    FailClosed,
    /// Decide locally with this instance's share of the quota (`quota / instances`). Default.
    #[default]
    LocalFallback,
}

impl FailurePolicy {
    /// The snake_case name used in config, JSON and metrics.
    pub const fn as_str(self) -> &'static str {
        match self {
            FailurePolicy::FailOpen => "fail_open",
            FailurePolicy::FailClosed => "fail_closed",
            FailurePolicy::LocalFallback => "local_fallback",
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            0 => FailurePolicy::FailOpen,
            1 => FailurePolicy::FailClosed,
            _ => FailurePolicy::LocalFallback,
        }
    }

    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            FailurePolicy::FailOpen => 0,
            FailurePolicy::FailClosed => 1,
            FailurePolicy::LocalFallback => 2,
        }
    }
}

impl std::str::FromStr for FailurePolicy {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().replace('-', "_").as_str() {
            "fail_open" | "open" => Ok(FailurePolicy::FailOpen),
            "fail_closed" | "closed" => Ok(FailurePolicy::FailClosed),
            "local_fallback" | "local" => Ok(FailurePolicy::LocalFallback),
            other => Err(format!(
                "unknown policy '{other}'; expected fail_open, fail_closed or local_fallback"
            )),
        }
    }
}

/// How a distributed limiter talks to Redis and what it does when Redis fails.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisOptions {
    /// What to do when Redis fails. Default `local_fallback`.
    pub failure_policy: FailurePolicy,
    /// The longest a decision waits for Redis before applying the policy (1 ms to 10 s).
    /// Default 50 ms: far below a socket timeout, far above a loaded Redis's tail latency
    /// (p99.9 of about 4 ms at 64 concurrent callers on a 2-core machine). One slower answer
    /// switches the limiter to its policy for `retry_interval`.
    #[serde(with = "palisade_core::config::duration")]
    pub timeout: Duration,
    /// After a failure, decisions skip Redis (and apply the policy at once) for this long,
    /// then try again; so a dead Redis costs one timeout per interval, not one per request.
    /// Default 500 ms.
    #[serde(with = "palisade_core::config::duration")]
    pub retry_interval: Duration,
    /// How many instances share the quota; `local_fallback` gives each `quota / instances`.
    /// Default 1.
    pub instances: u32,
    /// Prefix of every key. Default `palisade:rl`.
    pub key_prefix: String,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            failure_policy: FailurePolicy::LocalFallback,
            timeout: Duration::from_millis(50),
            retry_interval: Duration::from_millis(500),
            instances: 1,
            key_prefix: "palisade:rl".into(),
        }
    }
}

impl RedisOptions {
    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_duration(
            "timeout",
            self.timeout,
            Duration::from_millis(1),
            Duration::from_secs(10),
        )?;
        check_duration(
            "retry_interval",
            self.retry_interval,
            Duration::from_millis(1),
            Duration::from_secs(600),
        )?;
        check_range("instances", self.instances, 1, 100_000)?;
        if self.key_prefix.is_empty()
            || self.key_prefix.len() > 64
            || self.key_prefix.contains(['{', '}', ' '])
        {
            return Err(ConfigError::new(
                "key_prefix",
                "must be 1-64 characters without braces or spaces",
            ));
        }
        Ok(())
    }
}

/// A rate limiter's whole configuration, as read from a config file or the environment.
///
/// ```
/// use palisade_core::Env;
/// use palisade_ratelimit::{Backend, RateLimitConfig};
///
/// let env = Env::from_fn(|k| match k {
///     "RATE_LIMIT_BACKEND" => Some("memory".into()),
///     "RATE_LIMIT_REQUESTS" => Some("60".into()),
///     "RATE_LIMIT_PERIOD" => Some("1m".into()),
///     _ => None,
/// });
/// let cfg = RateLimitConfig::from_env_with(&env).unwrap();
/// assert_eq!((cfg.backend, cfg.quota.rate), (Backend::Memory, 60));
///
/// let bad = Env::from_fn(|k| (k == "RATE_LIMIT_BACKEND").then(|| "etcd".to_string()));
/// assert_eq!(RateLimitConfig::from_env_with(&bad).unwrap_err().field, "RATE_LIMIT_BACKEND");
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// `memory` or `redis`. Default `memory`.
    pub backend: Backend,
    /// The quota of each key. Default 100 per minute.
    pub quota: Quota,
    /// Memory backend: at most this many keys are tracked. Default 100 000.
    pub max_keys: usize,
    /// Redis backend: failure policy, budget, key prefix.
    pub redis: RedisOptions,
    /// Redis backend: where Redis is (one node, Sentinel or Cluster; see
    /// [`RedisConfig`](palisade_core::redis::RedisConfig)). Set in code or from `REDIS_URL` and
    /// the `REDIS_SENTINEL_*` / `REDIS_TLS_*` variables; never serialized (it may carry a
    /// password). In a config file, `redis_url = "redis+sentinel://…"` sets it.
    #[cfg(feature = "redis")]
    #[serde(
        skip_serializing,
        rename = "redis_url",
        deserialize_with = "redis_from_url"
    )]
    pub redis_server: Option<palisade_core::redis::RedisConfig>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        RateLimitConfig {
            backend: Backend::Memory,
            quota: Quota::default(),
            max_keys: DEFAULT_MAX_KEYS,
            redis: RedisOptions::default(),
            #[cfg(feature = "redis")]
            redis_server: None,
        }
    }
}

impl RateLimitConfig {
    /// Checks every field; the error names the offending one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.quota.validate().map_err(|e| e.within("quota"))?;
        self.redis.validate().map_err(|e| e.within("redis"))?;
        #[cfg(feature = "redis")]
        let missing = self.redis_server.is_none();
        #[cfg(not(feature = "redis"))]
        let missing = false;
        if self.backend == Backend::Redis && missing {
            return Err(ConfigError::new(
                "redis_url",
                "the redis backend needs a URL (REDIS_URL)",
            ));
        }
        Ok(())
    }

    /// The defaults overridden by the process environment; see
    /// [`RateLimitConfig::from_env_with`].
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_env_with(&Env::process())
    }

    /// The defaults overridden by `RATE_LIMIT_BACKEND` (`memory` or `redis`),
    /// `RATE_LIMIT_REQUESTS` (per period), `RATE_LIMIT_PERIOD` (seconds unless a unit is
    /// given), `RATE_LIMIT_BURST`, `RATE_LIMIT_FAILURE_POLICY`, `RATE_LIMIT_INSTANCES`,
    /// `RATE_LIMIT_TIMEOUT` (milliseconds unless a unit is given) and `REDIS_URL`, then
    /// validated. Errors name the variable.
    pub fn from_env_with<F: Fn(&str) -> Option<String>>(env: &Env<F>) -> Result<Self, ConfigError> {
        let mut cfg = Self::default();
        if let Some(v) = env.parse("RATE_LIMIT_BACKEND")? {
            cfg.backend = v;
        }
        if let Some(v) = env.parse("RATE_LIMIT_REQUESTS")? {
            cfg.quota.rate = v;
        }
        if let Some(v) = env.parse_duration("RATE_LIMIT_PERIOD", Duration::from_secs(1))? {
            cfg.quota.period = v;
        }
        if let Some(v) = env.parse("RATE_LIMIT_BURST")? {
            cfg.quota.burst = Some(v);
        }
        if let Some(v) = env.parse("RATE_LIMIT_FAILURE_POLICY")? {
            cfg.redis.failure_policy = v;
        }
        if let Some(v) = env.parse("RATE_LIMIT_INSTANCES")? {
            cfg.redis.instances = v;
        }
        if let Some(v) = env.parse_duration("RATE_LIMIT_TIMEOUT", Duration::from_millis(1))? {
            cfg.redis.timeout = v;
        }
        #[cfg(feature = "redis")]
        {
            cfg.redis_server = palisade_core::redis::RedisConfig::from_env_with(env)?;
        }
        cfg.validate().map_err(|e| {
            let var = match e.field.as_str() {
                "quota.rate" => "RATE_LIMIT_REQUESTS",
                "quota.period" => "RATE_LIMIT_PERIOD",
                "quota.burst" => "RATE_LIMIT_BURST",
                "redis.instances" => "RATE_LIMIT_INSTANCES",
                "redis.timeout" => "RATE_LIMIT_TIMEOUT",
                "redis_url" => "REDIS_URL",
                _ => return e,
            };
            ConfigError::new(var, e.reason)
        })?;
        Ok(cfg)
    }

    /// Builds the limiter this config describes, named `name`.
    pub fn build(&self, name: impl Into<String>) -> LimiterBuilder {
        LimiterBuilder {
            name: name.into(),
            config: self.clone(),
            registry: None,
            clock: None,
        }
    }
}

/// A keyed limiter on the backend its config chose: the type services hold when operators pick
/// the backend (`RATE_LIMIT_BACKEND=memory|redis`). Cloning is cheap.
///
/// ```
/// use palisade_ratelimit::{Limiter, Quota, RateLimitConfig};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let cfg = RateLimitConfig { quota: Quota::per_minute(2), ..Default::default() };
/// let per_client = cfg.build("mcp-clients").finish()?;
/// assert!(per_client.check("10.0.0.1").await.is_ok());
/// assert!(per_client.check("10.0.0.1").await.is_ok());
/// let refused = per_client.check("10.0.0.1").await.unwrap_err();
/// assert!(refused.retry_after.as_secs() <= 30);
/// # Ok::<(), palisade_core::BuildError>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub enum Limiter {
    /// Buckets in this process.
    Memory(KeyedRateLimiter<String>),
    /// Buckets in Redis.
    #[cfg(feature = "redis")]
    Redis(RedisRateLimiter),
}

/// Builds a [`Limiter`]; see [`RateLimitConfig::build`].
#[derive(Debug)]
#[must_use]
pub struct LimiterBuilder {
    name: String,
    config: RateLimitConfig,
    registry: Option<Registry>,
    clock: Option<SharedClock>,
}

impl LimiterBuilder {
    /// Registers the limiter in `registry`.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Reads local time from `clock`.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates and builds (connecting to Redis lazily); registers the limiter if asked.
    pub fn finish(self) -> Result<Limiter, BuildError> {
        let cfg = self.config;
        cfg.validate()?;
        let limiter = match cfg.backend {
            Backend::Memory => {
                let mut b = KeyedRateLimiter::<String>::builder(self.name)
                    .quota(cfg.quota)
                    .max_keys(cfg.max_keys);
                if let Some(c) = self.clock {
                    b = b.clock(c);
                }
                if let Some(r) = &self.registry {
                    b = b.registry(r);
                }
                Limiter::Memory(b.build_unregistered()?)
            }
            #[cfg(feature = "redis")]
            Backend::Redis => {
                let server = cfg.redis_server.ok_or_else(|| {
                    ConfigError::new("redis_url", "the redis backend needs a URL (REDIS_URL)")
                })?;
                let mut b = RedisRateLimiter::builder(self.name, server)
                    .quota(cfg.quota)
                    .options(cfg.redis);
                if let Some(c) = self.clock {
                    b = b.clock(c);
                }
                if let Some(r) = &self.registry {
                    b = b.registry(r);
                }
                Limiter::Redis(b.build_unregistered()?)
            }
            #[cfg(not(feature = "redis"))]
            Backend::Redis => {
                return Err(ConfigError::new(
                    "backend",
                    "Redis support is not compiled in; enable palisade-ratelimit's `redis` feature",
                )
                .into());
            }
        };
        if let Some(registry) = self.registry {
            registry.register(std::sync::Arc::new(limiter.clone()))?;
        }
        Ok(limiter)
    }
}

impl Limiter {
    /// Admits one request of `key`, or refuses it with the time to wait. An admission's
    /// [`Decision`] carries `remaining` and `reset_after` for `RateLimit-*` headers.
    pub async fn check(&self, key: &str) -> Result<Decision, RateLimited> {
        match self {
            Limiter::Memory(l) => {
                let d = l.decide_key(key, 1).map_err(|e| l.core().refusal(e))?;
                l.core().result(d).map(|()| d)
            }
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.check(key).await,
        }
    }

    /// Decides on `n` requests of `key`. Errors only when `n` exceeds the burst.
    pub async fn decide(&self, key: &str, n: u32) -> Result<Decision, RateLimitError> {
        match self {
            Limiter::Memory(l) => l.decide_key(key, n),
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.decide(key, n).await,
        }
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        match self {
            Limiter::Memory(_) => Backend::Memory,
            #[cfg(feature = "redis")]
            Limiter::Redis(_) => Backend::Redis,
        }
    }

    /// The quota of each key.
    pub fn quota(&self) -> Quota {
        match self {
            Limiter::Memory(l) => l.quota(),
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.quota(),
        }
    }

    /// Changes rate and burst while running. Validated first.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        match self {
            Limiter::Memory(l) => l.set_quota(quota),
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.set_quota(quota),
        }
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        match self {
            Limiter::Memory(l) => l.name(),
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.name(),
        }
    }
}

#[cfg(feature = "redis")]
fn redis_from_url<'de, D>(d: D) -> Result<Option<palisade_core::redis::RedisConfig>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let url: Option<String> = Option::deserialize(d)?;
    url.map(|u| palisade_core::redis::RedisConfig::from_url(&u).map_err(serde::de::Error::custom))
        .transpose()
}
