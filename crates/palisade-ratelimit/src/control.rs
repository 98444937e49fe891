//! Snapshots, operator commands and metrics export: every limiter as a registry component.

use palisade_core::{
    ComponentKind, Control, ControlError, EventKind, Inspect, Managed, async_trait,
    metrics as names,
};
use serde::{Deserialize, Serialize};

use crate::core::Core;
use crate::keyed::KeyedRateLimiter;
use crate::limiter::{Backend, FailurePolicy, Limiter};
use crate::local::RateLimiter;
use crate::quota::Quota;
#[cfg(feature = "redis")]
use crate::redis::{RedisRateLimiter, RedisStatus};

/// Operator commands, as sent to `POST /admin/rate-limiters/{name}`:
/// `{"action": "set_quota", "quota": {"rate": 200, "period": "1m", "burst": 50}}`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum RateLimiterCommand {
    /// Change rate and burst while running.
    SetQuota {
        /// The new quota.
        quota: Quota,
    },
    /// Give a client its burst back (`key`), or every client (no key).
    Reset {
        /// The key to forget (a client IP, a tenant); all keys when absent.
        #[serde(default)]
        key: Option<String>,
    },
    /// Change what a Redis-backed limiter does when Redis fails.
    SetFailurePolicy {
        /// `fail_open`, `fail_closed` or `local_fallback`.
        failure_policy: FailurePolicy,
    },
}

/// Keys tracked by a local keyed limiter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct KeysStatus {
    /// Keys tracked now.
    pub tracked: usize,
    /// The bound on tracked keys.
    pub max_keys: usize,
    /// Idle keys dropped (nothing lost).
    pub evicted_idle_total: u64,
    /// Active keys dropped at the bound (their debt forgiven).
    pub evicted_active_total: u64,
}

/// What an operator sees of a rate limiter.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RateLimiterSnapshot {
    /// The limiter's name.
    pub name: String,
    /// Where buckets live: `memory` or `redis`.
    pub backend: Backend,
    /// Whether the limiter keeps one bucket per key (client) or one in all.
    pub keyed: bool,
    /// The quota in force (per key when keyed).
    pub quota: Quota,
    /// Requests admitted.
    pub permitted_total: u64,
    /// Requests refused.
    pub rejected_total: u64,
    /// Local keyed limiters: the keys tracked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<KeysStatus>,
    /// Redis-backed limiters: the backend's health and the failure policy.
    #[cfg(feature = "redis")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<RedisStatus>,
}

impl Core {
    fn snapshot(&self, backend: Backend, keyed: bool) -> RateLimiterSnapshot {
        RateLimiterSnapshot {
            name: self.name.to_string(),
            backend,
            keyed,
            quota: self.quota(),
            permitted_total: self.permitted.get(),
            rejected_total: self.rejected.get(),
            keys: None,
            #[cfg(feature = "redis")]
            redis: None,
        }
    }

    fn admin(&self, action: &str) {
        self.publish(EventKind::AdminAction {
            action: action.to_owned(),
        });
    }
}

fn unsupported(action: &str, reason: &str) -> ControlError {
    ControlError::Rejected {
        action: action.to_owned(),
        reason: reason.to_owned(),
    }
}

impl RateLimiter {
    /// A snapshot of quota and counters.
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        self.core().snapshot(Backend::Memory, false)
    }

    /// Applies an operator command; returns the snapshot after it.
    pub fn apply(&self, command: RateLimiterCommand) -> Result<RateLimiterSnapshot, ControlError> {
        match command {
            RateLimiterCommand::SetQuota { quota } => self.set_quota(quota)?,
            RateLimiterCommand::Reset { key: None } => self.reset(),
            RateLimiterCommand::Reset { key: Some(_) } => {
                return Err(unsupported(
                    "reset",
                    "this limiter has one bucket, not one per key; send reset without a key",
                ));
            }
            RateLimiterCommand::SetFailurePolicy { .. } => {
                return Err(unsupported(
                    "set_failure_policy",
                    "a local limiter has no backend to fail",
                ));
            }
        }
        Ok(self.snapshot())
    }
}

impl KeyedRateLimiter<String> {
    /// A snapshot of quota, counters and tracked keys.
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        let mut snap = self.core().snapshot(Backend::Memory, true);
        snap.keys = Some(KeysStatus {
            tracked: self.len(),
            max_keys: self.max_keys(),
            evicted_idle_total: self.evicted_idle_keys(),
            evicted_active_total: self.evicted_active_keys(),
        });
        snap
    }

    /// Applies an operator command; returns the snapshot after it.
    pub fn apply(&self, command: RateLimiterCommand) -> Result<RateLimiterSnapshot, ControlError> {
        match command {
            RateLimiterCommand::SetQuota { quota } => self.set_quota(quota)?,
            RateLimiterCommand::Reset { key: None } => self.reset_all(),
            RateLimiterCommand::Reset { key: Some(key) } => {
                self.reset_key(key.as_str());
                self.core().admin(&format!("reset key {key}"));
            }
            RateLimiterCommand::SetFailurePolicy { .. } => {
                return Err(unsupported(
                    "set_failure_policy",
                    "a memory-backed limiter has no backend to fail",
                ));
            }
        }
        Ok(self.snapshot())
    }
}

#[cfg(feature = "redis")]
impl RedisRateLimiter {
    /// A snapshot of quota, counters and the Redis side.
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        let mut snap = self.core().snapshot(Backend::Redis, true);
        snap.redis = Some(self.redis_status());
        snap
    }

    /// Applies an operator command; returns the snapshot after it.
    pub async fn apply(
        &self,
        command: RateLimiterCommand,
    ) -> Result<RateLimiterSnapshot, ControlError> {
        match command {
            RateLimiterCommand::SetQuota { quota } => self.set_quota(quota)?,
            RateLimiterCommand::Reset { key: Some(key) } => {
                self.reset_key(&key)
                    .await
                    .map_err(|e| ControlError::Backend {
                        reason: e.to_string(),
                    })?
            }
            RateLimiterCommand::Reset { key: None } => {
                return Err(unsupported(
                    "reset",
                    "a Redis-backed limiter resets one key at a time; send {\"action\": \"reset\", \"key\": \"...\"}",
                ));
            }
            RateLimiterCommand::SetFailurePolicy { failure_policy } => {
                self.set_failure_policy(failure_policy);
            }
        }
        Ok(self.snapshot())
    }
}

impl Limiter {
    /// A snapshot of whichever backend is in use.
    pub fn snapshot(&self) -> RateLimiterSnapshot {
        match self {
            Limiter::Memory(l) => l.snapshot(),
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.snapshot(),
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    pub async fn apply(
        &self,
        command: RateLimiterCommand,
    ) -> Result<RateLimiterSnapshot, ControlError> {
        match self {
            Limiter::Memory(l) => l.apply(command),
            #[cfg(feature = "redis")]
            Limiter::Redis(l) => l.apply(command).await,
        }
    }
}

fn export(snap: RateLimiterSnapshot) {
    let name = snap.name;
    metrics::counter!(names::RATE_LIMITER_PERMITTED_TOTAL, "name" => name.clone())
        .absolute(snap.permitted_total);
    metrics::counter!(names::RATE_LIMITER_REJECTED_TOTAL, "name" => name.clone())
        .absolute(snap.rejected_total);
    if let Some(keys) = &snap.keys {
        metrics::gauge!(names::RATE_LIMITER_KEYS, "name" => name.clone()).set(keys.tracked as f64);
    }
    #[cfg(feature = "redis")]
    if let Some(redis) = &snap.redis {
        metrics::counter!(names::RATE_LIMITER_BACKEND_ERRORS_TOTAL, "name" => name.clone())
            .absolute(redis.backend_errors_total);
        metrics::gauge!(names::RATE_LIMITER_BACKEND_UP, "name" => name).set(if redis.available {
            1.0
        } else {
            0.0
        });
    }
}

/// Implements the registry traits for a limiter type with `snapshot` and `apply` methods
/// (`apply` synchronous or `async`).
macro_rules! managed {
    (@apply sync, $l:ident, $c:ident) => { $l.apply($c) };
    (@apply async, $l:ident, $c:ident) => { $l.apply($c).await };
    ($ty:ty, $mode:ident) => {
        impl Inspect for $ty {
            type Snapshot = RateLimiterSnapshot;

            fn snapshot(&self) -> RateLimiterSnapshot {
                <$ty>::snapshot(self)
            }
        }

        #[async_trait]
        impl Control for $ty {
            type Command = RateLimiterCommand;
            type Output = RateLimiterSnapshot;

            async fn control(
                &self,
                command: RateLimiterCommand,
            ) -> Result<RateLimiterSnapshot, ControlError> {
                managed!(@apply $mode, self, command)
            }
        }

        impl Managed for $ty {
            const KIND: ComponentKind = ComponentKind::RateLimiter;

            fn name(&self) -> &str {
                <$ty>::name(self)
            }

            fn export_metrics(&self) {
                export(<$ty>::snapshot(self));
            }
        }
    };
}

managed!(RateLimiter, sync);
managed!(KeyedRateLimiter<String>, sync);
#[cfg(feature = "redis")]
managed!(RedisRateLimiter, async);
managed!(Limiter, async);
