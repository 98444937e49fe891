//! What every limiter shares: name, quota, counters, events and time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{
    ComponentKind, EventBus, EventKind, Registry, SharedClock, StripedCounter, SystemClock,
    config::{ConfigError, format_duration},
};
use parking_lot::Mutex;

use crate::error::{RateLimitError, RateLimited};
use crate::quota::{Decision, Gcra, Quota};
use crate::time::Time;

/// Name, quota and counters of one limiter.
#[derive(Debug)]
pub(crate) struct Core {
    pub name: Arc<str>,
    interval: AtomicU64,
    tolerance: AtomicU64,
    quota: Mutex<Quota>,
    pub permitted: StripedCounter,
    pub rejected: StripedCounter,
    pub events: EventBus,
    pub time: Time,
}

impl Core {
    /// Validates `name` and `quota` and builds the shared part of a limiter.
    pub fn new(
        name: String,
        quota: Quota,
        registry: Option<&Registry>,
        clock: Option<SharedClock>,
    ) -> Result<Self, ConfigError> {
        palisade_core::registry::check_name(&name)?;
        quota.validate().map_err(|e| e.within("quota"))?;
        let g = quota.gcra();
        let events = palisade_core::registry::bus_for(
            registry,
            clock.clone().unwrap_or_else(SystemClock::shared),
        );
        Ok(Core {
            name: Arc::from(name),
            interval: AtomicU64::new(g.interval),
            tolerance: AtomicU64::new(g.tolerance),
            quota: Mutex::new(quota),
            permitted: StripedCounter::new(),
            rejected: StripedCounter::new(),
            events,
            time: Time::from_clock(clock),
        })
    }

    /// The GCRA parameters in force.
    #[inline]
    pub fn gcra(&self) -> Gcra {
        Gcra {
            interval: self.interval.load(Ordering::Relaxed),
            tolerance: self.tolerance.load(Ordering::Relaxed),
        }
    }

    /// The quota in force.
    pub fn quota(&self) -> Quota {
        *self.quota.lock()
    }

    /// Validates and applies a new quota, then calls `carry(old, new, now)` with the old and
    /// new parameters, still holding the quota's lock (so concurrent changes carry buckets over
    /// in the order they are applied): the limiter re-expresses its buckets' used fraction of
    /// the burst in the new quota there ([`Gcra::carry`]).
    pub fn set_quota(
        &self,
        quota: Quota,
        carry: impl FnOnce(Gcra, Gcra, u64),
    ) -> Result<(), ConfigError> {
        quota.validate().map_err(|e| e.within("quota"))?;
        let g = quota.gcra();
        let mut cur = self.quota.lock();
        let old = *cur;
        let old_g = self.gcra();
        *cur = quota;
        self.interval.store(g.interval, Ordering::Relaxed);
        self.tolerance.store(g.tolerance, Ordering::Relaxed);
        carry(old_g, g, self.time.now());
        drop(cur);
        if old != quota {
            self.publish(EventKind::ConfigChanged {
                change: format!("quota {} -> {}", describe(&old), describe(&quota)),
            });
        }
        Ok(())
    }

    /// Publishes an event as this limiter.
    pub fn publish(&self, kind: EventKind) {
        self.events
            .publish(ComponentKind::RateLimiter, &self.name, kind);
    }

    /// Counts a denial and builds its error.
    #[cold]
    pub fn limited(&self, g: Gcra, wait_nanos: u64) -> RateLimited {
        self.rejected.incr();
        RateLimited {
            name: Arc::clone(&self.name),
            limit: g.burst(),
            retry_after: Duration::from_nanos(wait_nanos),
        }
    }

    /// `Ok` for an admission, the refusal otherwise.
    pub fn result(&self, d: Decision) -> Result<(), RateLimited> {
        if d.allowed {
            Ok(())
        } else {
            Err(RateLimited {
                name: Arc::clone(&self.name),
                limit: d.limit,
                retry_after: d.retry_after,
            })
        }
    }

    /// A one-cell request's refusal from a decision error. Cannot happen (bursts are at least
    /// one); refuses rather than admits blindly.
    pub fn refusal(&self, e: RateLimitError) -> RateLimited {
        match e {
            RateLimitError::Limited(l) => l,
            RateLimitError::InsufficientCapacity { name, burst, .. } => RateLimited {
                name,
                limit: burst,
                retry_after: Duration::ZERO,
            },
        }
    }

    /// The error for a request larger than the burst, or `None` if it fits.
    #[inline]
    pub fn over_capacity(&self, g: Gcra, n: u32) -> Option<RateLimitError> {
        (u64::from(n).saturating_mul(g.interval) > g.tolerance).then(|| {
            RateLimitError::InsufficientCapacity {
                name: Arc::clone(&self.name),
                requested: n,
                burst: g.burst(),
            }
        })
    }
}

/// `100 per 1m, burst 20`.
pub(crate) fn describe(q: &Quota) -> String {
    format!(
        "{} per {}, burst {}",
        q.rate,
        format_duration(q.period),
        q.burst()
    )
}
