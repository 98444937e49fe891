//! The direct limiter: one bucket, one atomic.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{BuildError, EventBus, EventKind, Registry, SharedClock, config::ConfigError};

use crate::core::Core;
use crate::error::{RateLimitError, RateLimited};
use crate::quota::{Decision, Quota, Verdict, admit, carry_cell};

/// A local GCRA limiter with one bucket (for a whole process, or one upstream), lock-free: one
/// `AtomicU64` holds the bucket's state and every decision is one compare-and-swap.
///
/// Cloning is cheap and clones share the bucket.
///
/// ```
/// use palisade_ratelimit::{Quota, RateLimiter};
///
/// let limiter = RateLimiter::builder("openai").quota(Quota::per_second(10).with_burst(2)).build()?;
/// assert!(limiter.check().is_ok());
/// assert!(limiter.check().is_ok());
/// let refused = limiter.check().unwrap_err();
/// assert!(refused.retry_after.as_millis() <= 100); // one cell every 100 ms
/// # Ok::<(), palisade_core::BuildError>(())
/// ```
#[derive(Clone)]
pub struct RateLimiter {
    inner: Arc<Direct>,
}

struct Direct {
    /// Theoretical arrival time, in nanoseconds since the time source's origin (0: full).
    tat: AtomicU64,
    core: Core,
}

impl fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RateLimiter")
            .field("name", &self.inner.core.name)
            .field("quota", &self.inner.core.quota())
            .finish_non_exhaustive()
    }
}

/// Builds a [`RateLimiter`]; see [`RateLimiter::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    name: String,
    quota: Quota,
    registry: Option<Registry>,
    clock: Option<SharedClock>,
}

impl Builder {
    /// The quota. Default 100 per minute.
    pub fn quota(mut self, quota: Quota) -> Self {
        self.quota = quota;
        self
    }

    /// Registers the limiter in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Reads time from `clock` instead of the CPU's time-stamp counter (tests: `ManualClock`,
    /// or `TokioClock` to follow tokio's paused clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the quota and name and builds the limiter (registering it, if asked).
    pub fn build(self) -> Result<RateLimiter, BuildError> {
        let core = Core::new(self.name, self.quota, self.registry.as_ref(), self.clock)?;
        let limiter = RateLimiter {
            inner: Arc::new(Direct {
                tat: AtomicU64::new(0),
                core,
            }),
        };
        if let Some(registry) = self.registry {
            registry.register(Arc::new(limiter.clone()))?;
        }
        Ok(limiter)
    }
}

impl RateLimiter {
    /// A builder for a limiter named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            quota: Quota::default(),
            registry: None,
            clock: None,
        }
    }

    /// Admits one request, or refuses it with the exact time to wait.
    #[inline]
    pub fn check(&self) -> Result<(), RateLimited> {
        let core = &self.inner.core;
        match admit(&self.inner.tat, || core.gcra(), core.time.now(), 1) {
            (_, _, _, Verdict::Allow(_)) => {
                core.permitted.incr();
                Ok(())
            }
            (g, _, _, Verdict::Deny(wait)) => Err(core.limited(g, wait)),
        }
    }

    /// Admits `n` requests at once (all or none).
    pub fn check_n(&self, n: u32) -> Result<(), RateLimitError> {
        let d = self.decide(n)?;
        Ok(self.inner.core.result(d)?)
    }

    /// Decides on `n` requests and reports the full outcome (remaining, reset time), as
    /// `RateLimit-*` headers need. A denial changes nothing; `n = 0` only inspects.
    pub fn decide(&self, n: u32) -> Result<Decision, RateLimitError> {
        let core = &self.inner.core;
        let g = core.gcra();
        if let Some(e) = core.over_capacity(g, n) {
            return Err(e);
        }
        let (g, tat, now, verdict) = admit(&self.inner.tat, || core.gcra(), core.time.now(), n);
        match verdict {
            Verdict::Allow(_) => {
                core.permitted.add(u64::from(n));
            }
            Verdict::Deny(_) => core.rejected.add(u64::from(n)),
        }
        Ok(g.decision(tat, now, verdict))
    }

    /// Waits until one request is admitted (sleeping on tokio's timer), then admits it.
    pub async fn until_ready(&self) {
        while let Err(e) = self.check() {
            tokio::time::sleep(e.retry_after).await;
        }
    }

    /// Waits until `n` requests are admitted at once, then admits them. Fails at once if `n`
    /// exceeds the burst, since waiting would never help.
    pub async fn until_n_ready(&self, n: u32) -> Result<(), RateLimitError> {
        loop {
            match self.check_n(n) {
                Ok(()) => return Ok(()),
                Err(RateLimitError::Limited(l)) => tokio::time::sleep(l.retry_after).await,
                Err(e) => return Err(e),
            }
        }
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        self.inner.core.quota()
    }

    /// Changes rate and burst while running. Validated first; on error nothing changes.
    ///
    /// The bucket keeps the fraction of its burst it has used: raising the quota helps a
    /// limited client at once, lowering it leaves the unused share of the new burst (never
    /// more than the new burst). A decision racing the change is decided under one quota or
    /// the other.
    pub fn set_quota(&self, quota: Quota) -> Result<(), ConfigError> {
        let tat = &self.inner.tat;
        self.inner
            .core
            .set_quota(quota, |old, new, now| carry_cell(tat, old, new, now))
    }

    /// Refills the bucket: the next `burst` requests pass.
    pub fn reset(&self) {
        self.inner.tat.store(0, Ordering::Relaxed);
        self.inner.core.publish(EventKind::AdminAction {
            action: "reset".into(),
        });
    }

    /// The limiter's name.
    pub fn name(&self) -> &str {
        &self.inner.core.name
    }

    /// The event bus this limiter publishes to.
    pub fn events(&self) -> &EventBus {
        &self.inner.core.events
    }

    pub(crate) fn core(&self) -> &Core {
        &self.inner.core
    }

    /// Requests admitted so far.
    pub fn permitted_total(&self) -> u64 {
        self.inner.core.permitted.get()
    }

    /// How long until the bucket is full again; zero when idle.
    pub fn reset_after(&self) -> Duration {
        let now = self.inner.core.time.now();
        Duration::from_nanos(self.inner.tat.load(Ordering::Relaxed).saturating_sub(now))
    }
}
