//! Retry policies per failure kind.

use std::collections::BTreeMap;
use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, duration};
use serde::{Deserialize, Serialize};

use crate::failure::{Failure, FailureKind};

/// The longest accepted backoff step.
pub const MAX_BACKOFF: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long to wait before the next attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Backoff {
    /// `initial × factor^(attempt−1)`, capped at `max`, each wait drawn at random within
    /// `± jitter` of its value (0 to 1).
    Exponential {
        /// The first wait.
        #[serde(with = "duration")]
        initial: Duration,
        /// Growth per attempt (1 to 10).
        factor: f64,
        /// The cap.
        #[serde(with = "duration")]
        max: Duration,
        /// Relative jitter (0 to 1).
        jitter: f64,
    },
    /// Fixed waits: the n-th retry waits `schedule[n−1]` (the last one repeats).
    Fixed {
        /// The waits, as `["1s", "30s", "5m"]`.
        #[serde(with = "durations")]
        schedule: Vec<Duration>,
    },
}

mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct D(#[serde(with = "palisade_core::config::duration")] Duration);

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        v.iter().map(|d| D(*d)).collect::<Vec<_>>().serialize(s)
    }

    pub fn deserialize<'de, De: Deserializer<'de>>(d: De) -> Result<Vec<Duration>, De::Error> {
        Ok(Vec::<D>::deserialize(d)?
            .into_iter()
            .map(|D(d)| d)
            .collect())
    }
}

impl Backoff {
    /// Exponential from `initial`, doubling, capped at `max`, ±20% jitter.
    pub fn exponential(initial: Duration, max: Duration) -> Self {
        Backoff::Exponential {
            initial,
            factor: 2.0,
            max,
            jitter: 0.2,
        }
    }

    /// The wait before retry number `retry` (1 for the first retry), with jitter from `rand`
    /// (a number in `[0, 1)`).
    pub fn delay(&self, retry: u32, rand: f64) -> Duration {
        match self {
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let base = (initial.as_secs_f64() * factor.powi(exp)).min(max.as_secs_f64());
                let spread = base * jitter * (2.0 * rand - 1.0);
                Duration::try_from_secs_f64((base + spread).clamp(0.0, max.as_secs_f64()))
                    .unwrap_or(*max)
            }
            Backoff::Fixed { schedule } => {
                let i = usize::try_from(retry.saturating_sub(1)).unwrap_or(usize::MAX);
                schedule
                    .get(i)
                    .or(schedule.last())
                    .copied()
                    .unwrap_or_default()
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                check_duration("initial", *initial, Duration::ZERO, MAX_BACKOFF)?;
                check_duration("max", *max, *initial, MAX_BACKOFF)?;
                if !(1.0..=10.0).contains(factor) {
                    return Err(ConfigError::new(
                        "factor",
                        format!("{factor} is out of range; expected 1 to 10"),
                    ));
                }
                if !(0.0..=1.0).contains(jitter) {
                    return Err(ConfigError::new(
                        "jitter",
                        format!("{jitter} is out of range; expected 0 to 1"),
                    ));
                }
            }
            Backoff::Fixed { schedule } => {
                if schedule.is_empty() || schedule.len() > 100 {
                    return Err(ConfigError::new("schedule", "expected 1 to 100 waits"));
                }
                for d in schedule {
                    check_duration("schedule", *d, Duration::ZERO, MAX_BACKOFF)?;
                }
            }
        }
        Ok(())
    }
}

/// How often and how fast one kind of failure is retried. `max_attempts` counts the original
/// failure: 5 means the first failure plus up to 4 retries; 1 (or 0) parks at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Attempts in all, the first failure included (0 to 1000).
    pub max_attempts: u32,
    /// The wait before each retry.
    pub backoff: Backoff,
}

impl RetryPolicy {
    /// Never retried: parked at once.
    pub fn park() -> Self {
        RetryPolicy {
            max_attempts: 1,
            backoff: Backoff::Fixed {
                schedule: vec![Duration::ZERO],
            },
        }
    }

    /// Up to `max_attempts` in all, exponential backoff from `initial` capped at `max`.
    pub fn exponential(max_attempts: u32, initial: Duration, max: Duration) -> Self {
        RetryPolicy {
            max_attempts,
            backoff: Backoff::exponential(initial, max),
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        check_range("max_attempts", self.max_attempts, 0, 1000)?;
        self.backoff.validate().map_err(|e| e.within("backoff"))
    }
}

/// What happens to an entry after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Try again after this long.
    RetryIn(Duration),
    /// Retries are exhausted or pointless: keep it for an operator.
    Park,
}

/// A retry policy per failure kind.
///
/// Defaults: timeouts, unavailable upstreams and server errors 5 attempts, exponential from
/// 1 s to 5 min; rate-limited 5 attempts, exponential from 5 s, never before the upstream's
/// `Retry-After`; client errors parked at once; others 3 attempts.
///
/// ```
/// use std::time::Duration;
/// use palisade_dlq::{Failure, Policies, Schedule};
///
/// let p = Policies::default();
/// assert_eq!(p.schedule(1, &Failure::client_error("400 bad arguments"), 0.5), Schedule::Park);
/// assert_eq!(p.schedule(1, &Failure::timeout("slow"), 0.5), Schedule::RetryIn(Duration::from_secs(1)));
/// assert_eq!(p.schedule(5, &Failure::timeout("slow"), 0.5), Schedule::Park);
/// let limited = Failure::rate_limited("429", Duration::from_secs(60));
/// assert_eq!(p.schedule(1, &limited, 0.5), Schedule::RetryIn(Duration::from_secs(60)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Policies(pub BTreeMap<FailureKind, RetryPolicy>);

impl Default for Policies {
    fn default() -> Self {
        let transient =
            RetryPolicy::exponential(5, Duration::from_secs(1), Duration::from_secs(300));
        let mut m = BTreeMap::new();
        m.insert(FailureKind::Timeout, transient.clone());
        m.insert(FailureKind::Unavailable, transient.clone());
        m.insert(FailureKind::ServerError, transient);
        m.insert(
            FailureKind::RateLimited,
            RetryPolicy::exponential(5, Duration::from_secs(5), Duration::from_secs(600)),
        );
        m.insert(FailureKind::ClientError, RetryPolicy::park());
        m.insert(
            FailureKind::Other,
            RetryPolicy::exponential(3, Duration::from_secs(1), Duration::from_secs(300)),
        );
        Policies(m)
    }
}

impl Policies {
    /// The policy for `kind` (parked at once when none is set).
    pub fn get(&self, kind: FailureKind) -> RetryPolicy {
        self.0.get(&kind).cloned().unwrap_or_else(RetryPolicy::park)
    }

    /// Sets the policy for `kind`.
    pub fn set(&mut self, kind: FailureKind, policy: RetryPolicy) -> &mut Self {
        self.0.insert(kind, policy);
        self
    }

    /// What to do after the `attempts`-th failure (1 for the original one), with jitter drawn
    /// from `rand` in `[0, 1)`.
    pub fn schedule(&self, attempts: u32, failure: &Failure, rand: f64) -> Schedule {
        let policy = self.get(failure.kind);
        if attempts >= policy.max_attempts {
            return Schedule::Park;
        }
        let wait = policy.backoff.delay(attempts, rand);
        Schedule::RetryIn(wait.max(failure.retry_after.unwrap_or_default()))
    }

    /// Checks every policy; the error names the kind and field (`timeout.backoff.factor`).
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (kind, p) in &self.0 {
            p.validate().map_err(|e| e.within(kind.as_str()))?;
        }
        Ok(())
    }
}
