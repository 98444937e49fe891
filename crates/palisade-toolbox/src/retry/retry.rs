//! The retry handle and its shared state.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::clock::saturating_nanos;
use palisade_core::{ComponentKind, ConfigError, EventBus, EventKind, StripedCounter};
use parking_lot::Mutex;

use super::attempts::FnAttempts;
use super::backoff::Backoff;
use super::builder::RetryBuilder;
use super::call::RetryCall;
use super::classify::{Classify, Decision, RetryErrors};
use super::config::RetryConfig;
use super::engine::Engine;
use crate::budget::patch::{current_config, replace_config};
use crate::budget::{RetryBudget, Withdrawal};

/// Retries a failed call with exponential backoff and full jitter, honouring `Retry-After`
/// hints, within a [retry budget](RetryBudget) shared by all its callers. Cheap to clone:
/// clones share one component.
///
/// The first attempt costs a counter increment and a budget deposit (no lock, clock read or
/// allocation); only a failed attempt reads the clock, takes the budget's lock and arms a timer.
/// A retry waits `[0, min(max_delay, base_delay × multiplierⁿ)]` (full jitter), or exactly the
/// wait a [`Decision::RetryAfter`] names, and is made only while attempts remain and the
/// budget allows it; otherwise the last attempt's result is returned as it is.
///
/// ```
/// use std::sync::atomic::{AtomicU32, Ordering};
/// use std::time::Duration;
/// use palisade_core::{ComponentKind, Registry};
/// use palisade_toolbox::retry::Retry;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let registry = Registry::new();
/// let retry = Retry::builder("weather")
///     .max_attempts(3)
///     .backoff(Duration::from_millis(100), Duration::from_secs(2))
///     .registry(&registry)
///     .build()?;
///
/// let calls = AtomicU32::new(0);
/// let forecast = retry
///     .call(|| async {
///         // Fails once, then answers.
///         match calls.fetch_add(1, Ordering::Relaxed) {
///             0 => Err("connection reset"),
///             _ => Ok("sunny"),
///         }
///     })
///     .await;
/// assert_eq!(forecast, Ok("sunny"));
/// assert_eq!(retry.snapshot().retries_total, 1);
///
/// // Operators read and change it through the registry (the admin router does exactly this).
/// registry
///     .control(ComponentKind::Retry, "weather",
///              serde_json::json!({"action": "set_budget", "ratio": 0.1}))
///     .await?;
/// assert_eq!(retry.budget().config().ratio, 0.1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Retry {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Retry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retry")
            .field("name", &&*self.shared.name)
            .field(
                "max_attempts",
                &self.shared.max_attempts.load(Ordering::Relaxed),
            )
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// Hot copies of the config, read on the retry path without the lock.
    max_attempts: AtomicU32,
    base_delay: AtomicU64,
    max_delay: AtomicU64,
    multiplier: AtomicU64,
    max_retry_after: AtomicU64,
    pub(crate) budget: RetryBudget,
    /// The config in force, except `budget` (the budget's own config is authoritative).
    pub(crate) config: Mutex<RetryConfig>,
    pub(crate) counters: Counters,
    pub(crate) events: EventBus,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) calls: StripedCounter,
    pub(crate) retries: AtomicU64,
    pub(crate) returned_after_retry: AtomicU64,
    pub(crate) exhausted: AtomicU64,
    pub(crate) budget_denied: AtomicU64,
    pub(crate) retry_after_honoured: AtomicU64,
    pub(crate) retry_after_too_long: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        name: Arc<str>,
        config: RetryConfig,
        budget: RetryBudget,
        events: EventBus,
    ) -> Shared {
        let shared = Shared {
            name,
            max_attempts: AtomicU32::new(0),
            base_delay: AtomicU64::new(0),
            max_delay: AtomicU64::new(0),
            multiplier: AtomicU64::new(0),
            max_retry_after: AtomicU64::new(0),
            budget,
            config: Mutex::new(config.clone()),
            counters: Counters::default(),
            events,
        };
        shared.store_hot(&config);
        shared
    }

    fn store_hot(&self, c: &RetryConfig) {
        self.max_attempts.store(c.max_attempts, Ordering::Relaxed);
        self.base_delay
            .store(saturating_nanos(c.base_delay), Ordering::Relaxed);
        self.max_delay
            .store(saturating_nanos(c.max_delay), Ordering::Relaxed);
        self.multiplier
            .store(c.multiplier.to_bits(), Ordering::Relaxed);
        self.max_retry_after
            .store(saturating_nanos(c.max_retry_after), Ordering::Relaxed);
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            base: Duration::from_nanos(self.base_delay.load(Ordering::Relaxed)),
            max: Duration::from_nanos(self.max_delay.load(Ordering::Relaxed)),
            multiplier: f64::from_bits(self.multiplier.load(Ordering::Relaxed)),
        }
    }

    /// The first attempt of a call starts: count it, and deposit its share in the budget.
    #[inline]
    pub(crate) fn begin(&self) {
        self.counters.calls.incr();
        self.budget.deposit();
    }

    pub(crate) fn returned_after_retry(&self) {
        self.counters
            .returned_after_retry
            .fetch_add(1, Ordering::Relaxed);
    }

    /// After attempt number `made` asked for a retry: the wait before the next attempt, or
    /// `None` to return this attempt's result (no attempt left, hint too long, no budget).
    #[inline(never)]
    pub(crate) fn plan_retry(&self, decision: Decision, made: u32) -> Option<Duration> {
        let c = &self.counters;
        let hint = match decision {
            Decision::RetryAfter(after) => Some(after),
            _ => None,
        };
        if made >= self.max_attempts.load(Ordering::Relaxed) {
            c.exhausted.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "palisade::toolbox", retry = %self.name, attempts = made, "retry attempts exhausted");
            return None;
        }
        if let Some(after) = hint {
            if saturating_nanos(after) > self.max_retry_after.load(Ordering::Relaxed) {
                c.retry_after_too_long.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(target: "palisade::toolbox", retry = %self.name,
                    retry_after_ms = after.as_millis() as u64, "retry-after beyond max_retry_after; giving up");
                return None;
            }
        }
        match self.budget.withdraw() {
            Withdrawal::Granted { recovered } => {
                if recovered {
                    self.notice("retry budget available again");
                }
            }
            Withdrawal::Denied { first } => {
                c.budget_denied.fetch_add(1, Ordering::Relaxed);
                if first {
                    self.notice("retry budget exhausted; retries are refused until it refills");
                }
                return None;
            }
        }
        c.retries.fetch_add(1, Ordering::Relaxed);
        Some(match hint {
            Some(after) => {
                c.retry_after_honoured.fetch_add(1, Ordering::Relaxed);
                after
            }
            None => self.backoff().jittered(made - 1),
        })
    }

    fn notice(&self, message: &str) {
        let budget = self.budget.snapshot();
        self.events.publish(
            ComponentKind::Retry,
            &self.name,
            EventKind::Notice {
                message: message.to_owned(),
                details: serde_json::json!({
                    "tokens": budget.tokens,
                    "denied_total": budget.denied_total,
                }),
            },
        );
    }
}

impl Retry {
    /// A builder for a retry named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    ///
    /// ```
    /// use palisade_toolbox::retry::Retry;
    ///
    /// let retry = Retry::builder("github").max_attempts(4).build().unwrap();
    /// assert_eq!(retry.config().max_attempts, 4);
    /// assert!(Retry::builder("no spaces").build().is_err());
    /// ```
    pub fn builder(name: impl Into<String>) -> RetryBuilder {
        RetryBuilder::new(name.into())
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The event bus this retry publishes to (its registry's, or a private one).
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// The budget this retry draws on (possibly shared with other components).
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// Runs the call `make` builds, again after failures: every `Err` is retried (see
    /// [`call_classified`](Self::call_classified) to choose). `make` is called once per attempt;
    /// the result of the last attempt is returned as it is.
    ///
    /// The returned future starts nothing until polled; dropping it cancels the attempt in
    /// flight (or the wait).
    ///
    /// ```
    /// use palisade_toolbox::retry::Retry;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let retry = Retry::builder("db").max_attempts(2).build().unwrap();
    /// let r: Result<(), &str> = retry.call(|| async { Err("down") }).await;
    /// assert_eq!(r, Err("down"));
    /// assert_eq!(retry.snapshot().exhausted_total, 1);
    /// # });
    /// ```
    pub fn call<F, Fut, T, E>(&self, make: F) -> RetryCall<'_, RetryErrors, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.call_classified(RetryErrors, make)
    }

    /// Like [`call`](Self::call), with `classify` deciding what each result means: return it,
    /// retry after the backoff, or retry after a given wait.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::retry::{Decision, Retry};
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let retry = Retry::builder("api").build().unwrap();
    /// let start = tokio::time::Instant::now();
    /// let mut replies = vec![Ok(200), Err(429)].into_iter().rev();
    /// let status = retry
    ///     .call_classified(
    ///         |r: &Result<u16, u16>| match r {
    ///             Err(429) => Decision::RetryAfter(Duration::from_secs(1)),
    ///             _ => Decision::Return,
    ///         },
    ///         || std::future::ready(replies.next().unwrap()),
    ///     )
    ///     .await;
    /// assert_eq!(status, Ok(200));
    /// assert_eq!(start.elapsed(), Duration::from_secs(1)); // exactly the hint
    /// # });
    /// ```
    pub fn call_classified<C, F, Fut, T, E>(&self, classify: C, make: F) -> RetryCall<'_, C, F, Fut>
    where
        C: Classify<T, E>,
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        RetryCall::new(&self.shared, Engine::new(FnAttempts(make), classify))
    }

    /// The config in force (its `budget` is the budget's current config).
    ///
    /// ```
    /// use palisade_toolbox::retry::Retry;
    ///
    /// let retry = Retry::builder("db").build().unwrap();
    /// assert_eq!(retry.config().max_attempts, 3);
    /// ```
    pub fn config(&self) -> RetryConfig {
        current_config(&self.shared.config, &self.shared.budget)
    }

    /// Replaces the config after validating it as a whole: an invalid one is refused with an
    /// error naming the field, and nothing changes. Calls in flight use the new values from
    /// their next retry on. The budget's part applies to the budget (for every component
    /// sharing it). Publishes a `config_changed` event naming the fields that changed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::retry::{Retry, RetryConfig};
    ///
    /// let retry = Retry::builder("db").build().unwrap();
    /// let bad = RetryConfig { base_delay: Duration::from_secs(5), max_delay: Duration::from_secs(1), ..retry.config() };
    /// assert_eq!(retry.set_config(bad).unwrap_err().field, "max_delay");
    /// retry.set_config(RetryConfig { max_attempts: 5, ..retry.config() }).unwrap();
    /// assert_eq!(retry.config().max_attempts, 5);
    /// ```
    pub fn set_config(&self, config: RetryConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let s = &*self.shared;
        let change = replace_config(&s.config, &s.budget, config, |c| s.store_hot(c))?;
        if let Some(change) = change {
            s.events.publish(
                ComponentKind::Retry,
                &s.name,
                EventKind::ConfigChanged { change },
            );
        }
        Ok(())
    }
}
