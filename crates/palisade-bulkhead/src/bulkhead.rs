//! The bulkhead: a resizable, FIFO-fair semaphore with bounded waits.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use pin_project::pin_project;
use std::time::Duration;

use palisade_core::{
    BuildError, ComponentKind, ConfigError, EventBus, EventKind, Registry, StripedCounter,
    SystemClock,
};
use parking_lot::Mutex;
use tokio::sync::{Semaphore, SemaphorePermit};

use crate::config::BulkheadConfig;
use crate::error::{BulkheadError, CallError};

const UNBOUNDED: u32 = u32::MAX;

/// A named partition that runs at most `max_concurrent` calls at once. Cheap to clone.
///
/// Waiters are served first come, first served (tokio's fair semaphore). Permits are released on
/// drop, including when a caller's future is cancelled while waiting or while running. The limit
/// can be changed while calls run: growing admits waiters at once; shrinking never interrupts a
/// running call and admits no new one until fewer than the new limit are running.
///
/// ```
/// use std::time::Duration;
/// use palisade_bulkhead::{Bulkhead, BulkheadError};
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let database = Bulkhead::builder("database").max_concurrent(2).build().unwrap();
/// let a = database.acquire().await.unwrap();
/// let b = database.acquire().await.unwrap();
/// // Full, and no wait allowed (the default): refused at once, naming the partition.
/// let err = database.acquire().await.unwrap_err();
/// assert_eq!(err.to_string(), "bulkhead 'database' is full: 2 calls running; retry later or raise its limit");
///
/// // The runbook's "swap the semaphore for a bigger one" is one call, while calls run.
/// database.set_max_concurrent(3).unwrap();
/// let c = database.try_acquire().unwrap();
/// assert_eq!(database.snapshot().active, 3);
/// # drop((a, b, c));
/// # });
/// ```
#[derive(Clone)]
pub struct Bulkhead {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Bulkhead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulkhead")
            .field("name", &&*self.shared.name)
            .field("max_concurrent", &self.max_concurrent())
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    sem: Semaphore,
    /// The limit in force.
    limit: AtomicU32,
    /// Permits still held by running calls that must be retired (not returned) on release,
    /// because the limit shrank below the number of running calls.
    debt: AtomicU32,
    pub(crate) waiting: AtomicU32,
    max_wait_nanos: AtomicU64,
    max_waiting: AtomicU32,
    /// Hot copy of `config.adaptive.enabled`.
    adaptive: AtomicBool,
    /// Good samples since the adaptive limit last moved.
    streak: AtomicU32,
    pub(crate) adjustments: AtomicU64,
    pub(crate) rejected: StripedCounter,
    pub(crate) timeouts: StripedCounter,
    /// Serializes resizes and config replacement.
    pub(crate) config: Mutex<BulkheadConfig>,
    pub(crate) events: EventBus,
}

/// A slot in a bulkhead, released when dropped.
#[must_use = "the slot is released as soon as the permit is dropped"]
pub struct Permit<'a> {
    // The tokio permit is forgotten when taken; this one releases it (or retires it to pay a
    // shrink's debt). One pointer, so moving a permit around costs nothing.
    shared: &'a Shared,
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("bulkhead", &&*self.shared.name)
            .finish()
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        let s = self.shared;
        if s.debt.load(Ordering::Acquire) != 0 && s.take_debt() {
            return; // retired: the limit shrank while this call ran
        }
        s.sem.add_permits(1);
    }
}

type WaitFuture<'a> = Pin<Box<dyn Future<Output = Result<Permit<'a>, BulkheadError>> + Send + 'a>>;

/// The future returned by [`Bulkhead::acquire`].
///
/// When a slot is free it completes on its first poll without allocating; only a caller that
/// has to wait builds (and boxes) the timed wait, so the uncontended future is two words.
#[must_use = "futures do nothing unless polled"]
pub struct Acquire<'a> {
    shared: &'a Shared,
    waiting: Option<WaitFuture<'a>>,
}

impl std::fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquire")
            .field("bulkhead", &&*self.shared.name)
            .field("waiting", &self.waiting.is_some())
            .finish()
    }
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<Permit<'a>, BulkheadError>;

    #[inline]
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let shared = self.shared;
        let waiting = match &mut self.waiting {
            Some(w) => w,
            None => {
                if let Ok(p) = shared.sem.try_acquire() {
                    return Poll::Ready(Ok(shared.permit(p)));
                }
                match shared.join_queue() {
                    Ok(max_wait) => self.waiting.insert(Box::pin(shared.wait(max_wait))),
                    Err(refused) => return Poll::Ready(Err(refused)),
                }
            }
        };
        waiting.as_mut().poll(cx)
    }
}

/// The future returned by [`Bulkhead::call`]: waits for a slot, runs the inner future in it,
/// and releases the slot when the inner future completes or this future is dropped.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct Call<'a, F> {
    bulkhead: &'a Bulkhead,
    acquire: Acquire<'a>,
    permit: Option<Permit<'a>>,
    /// When the call started, if the adaptive mode wants its latency.
    started: Option<tokio::time::Instant>,
    #[pin]
    fut: F,
}

impl<F> std::fmt::Debug for Call<'_, F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("bulkhead", &self.bulkhead.name())
            .field("running", &self.permit.is_some())
            .finish()
    }
}

impl<F, T, E> Future for Call<'_, F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, CallError<E>>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if this.permit.is_none() {
            match ready!(Pin::new(this.acquire).poll(cx)) {
                Ok(p) => *this.permit = Some(p),
                Err(refused) => return Poll::Ready(Err(CallError::Rejected(refused))),
            }
            if this.bulkhead.shared.adaptive.load(Ordering::Relaxed) {
                *this.started = Some(tokio::time::Instant::now());
            }
        }
        let result = ready!(this.fut.poll(cx));
        if let Some(started) = this.started.take() {
            // Observed while the slot is still held, so the call counts as in flight.
            this.bulkhead.observe(started.elapsed(), result.is_ok());
        }
        *this.permit = None;
        Poll::Ready(result.map_err(CallError::Inner))
    }
}

/// Builds a [`Bulkhead`]; see [`Bulkhead::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    name: String,
    config: BulkheadConfig,
    registry: Option<Registry>,
}

impl Builder {
    /// Replaces the whole config.
    pub fn config(mut self, config: BulkheadConfig) -> Self {
        self.config = config;
        self
    }

    /// Calls allowed to run at once. Default 10.
    pub fn max_concurrent(mut self, n: u32) -> Self {
        self.config.max_concurrent = n;
        self
    }

    /// How long a caller may wait for a slot; zero fails fast. Default 0.
    pub fn max_wait(mut self, d: Duration) -> Self {
        self.config.max_wait = d;
        self
    }

    /// At most `n` callers wait at once; more are refused. Default unbounded.
    pub fn max_waiting(mut self, n: u32) -> Self {
        self.config.max_waiting = Some(n);
        self
    }

    /// Registers the bulkhead in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Validates the config and builds the bulkhead (registering it, if a registry was given).
    pub fn build(self) -> Result<Bulkhead, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config.validate()?;
        let cfg = self.config;
        let events =
            palisade_core::registry::bus_for(self.registry.as_ref(), SystemClock::shared());
        let bulkhead = Bulkhead {
            shared: Arc::new(Shared {
                name: Arc::from(self.name),
                sem: Semaphore::new(cfg.max_concurrent as usize),
                limit: AtomicU32::new(cfg.max_concurrent),
                debt: AtomicU32::new(0),
                waiting: AtomicU32::new(0),
                max_wait_nanos: AtomicU64::new(palisade_core::clock::saturating_nanos(
                    cfg.max_wait,
                )),
                max_waiting: AtomicU32::new(cfg.max_waiting.unwrap_or(UNBOUNDED)),
                adaptive: AtomicBool::new(cfg.adaptive.enabled),
                streak: AtomicU32::new(0),
                adjustments: AtomicU64::new(0),
                rejected: StripedCounter::new(),
                timeouts: StripedCounter::new(),
                config: Mutex::new(cfg),
                events,
            }),
        };
        if let Some(registry) = self.registry {
            registry.register(Arc::new(bulkhead.clone()))?;
        }
        Ok(bulkhead)
    }
}

/// Decrements `waiting` when a waiter leaves, however it leaves (served, timed out, cancelled).
struct WaitingGuard<'a>(&'a AtomicU32);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Bulkhead {
    /// A builder for a partition named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            config: BulkheadConfig::default(),
            registry: None,
        }
    }

    /// The partition's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The limit in force.
    pub fn max_concurrent(&self) -> u32 {
        self.shared.limit.load(Ordering::Acquire)
    }

    /// The event bus this bulkhead publishes to (its registry's, or a private one).
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// Takes a slot if one is free now; never waits.
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, BulkheadError> {
        let s = &*self.shared;
        match s.sem.try_acquire() {
            Ok(p) => Ok(s.permit(p)),
            Err(_) => Err(s.full(None)),
        }
    }

    /// Takes a slot, waiting up to `max_wait` in FIFO order. Cancelling the returned future
    /// leaves the queue cleanly.
    pub fn acquire(&self) -> Acquire<'_> {
        Acquire {
            shared: &self.shared,
            waiting: None,
        }
    }

    /// Runs `fut` in a slot, waiting for one as [`acquire`](Self::acquire) does. The slot is
    /// released when `fut` completes or when the returned future is dropped.
    ///
    /// With the adaptive mode on, the call's latency and result feed the limit (`Err` counts as
    /// a sign of overload).
    pub fn call<F, T, E>(&self, fut: F) -> Call<'_, F>
    where
        F: Future<Output = Result<T, E>>,
    {
        Call {
            bulkhead: self,
            acquire: self.acquire(),
            permit: None,
            started: None,
            fut,
        }
    }

    /// Feeds one sample to the adaptive limit (no-op unless adaptive mode is on): a call that
    /// took `latency` and succeeded or not. Use it from code that holds a [`Permit`] instead of
    /// using [`call`](Self::call); report before dropping the permit.
    pub fn observe(&self, latency: Duration, succeeded: bool) {
        let s = &*self.shared;
        if !s.adaptive.load(Ordering::Relaxed) {
            return;
        }
        let mut cfg = s.config.lock();
        if !cfg.adaptive.enabled {
            return;
        }
        let overloaded = !succeeded || latency >= cfg.adaptive.latency_threshold;
        let streak = if overloaded {
            0
        } else {
            s.streak.fetch_add(1, Ordering::AcqRel) + 1
        };
        let limit = cfg.max_concurrent;
        let next = cfg
            .adaptive
            .next_limit(limit, s.active(), overloaded, streak);
        if next != limit || overloaded {
            s.streak.store(0, Ordering::Release);
        }
        if next != limit {
            s.resize(limit, next);
            cfg.max_concurrent = next;
            s.adjustments.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(target: "palisade::bulkhead", bulkhead = %s.name, from = limit, to = next,
                latency_ms = latency.as_millis() as u64, succeeded, "adaptive limit moved");
        }
    }

    /// Switches the adaptive limit on or off. Switching on is refused (naming the field) when
    /// the current limit lies outside the adaptive bounds.
    pub fn set_adaptive(&self, enabled: bool) -> Result<(), ConfigError> {
        let mut cfg = self.shared.config.lock().clone();
        cfg.adaptive.enabled = enabled;
        self.set_config(cfg)
    }

    /// Changes the limit while calls run. Growing admits waiters at once; shrinking lets running
    /// calls finish and admits no new call until fewer than `n` run. Permits are conserved.
    pub fn set_max_concurrent(&self, n: u32) -> Result<(), ConfigError> {
        let mut cfg = self.shared.config.lock().clone();
        cfg.max_concurrent = n;
        self.set_config(cfg)
    }

    /// Changes how long callers may wait (zero: fail fast). Applies to callers arriving from now.
    pub fn set_max_wait(&self, d: Duration) -> Result<(), ConfigError> {
        let mut cfg = self.shared.config.lock().clone();
        cfg.max_wait = d;
        self.set_config(cfg)
    }

    /// The config in force.
    pub fn config(&self) -> BulkheadConfig {
        self.shared.config.lock().clone()
    }

    /// Replaces the whole config after validating it; an invalid config is refused with an error
    /// naming the field, and nothing changes.
    pub fn set_config(&self, new: BulkheadConfig) -> Result<(), ConfigError> {
        new.validate()?;
        let s = &*self.shared;
        let mut cfg = s.config.lock();
        let mut changes = Vec::new();
        if new.max_concurrent != cfg.max_concurrent {
            s.resize(cfg.max_concurrent, new.max_concurrent);
            changes.push(format!(
                "max_concurrent {} -> {}",
                cfg.max_concurrent, new.max_concurrent
            ));
        }
        if new.max_wait != cfg.max_wait {
            s.max_wait_nanos.store(
                palisade_core::clock::saturating_nanos(new.max_wait),
                Ordering::Relaxed,
            );
            changes.push(format!("max_wait {:?} -> {:?}", cfg.max_wait, new.max_wait));
        }
        if new.adaptive != cfg.adaptive {
            s.adaptive.store(new.adaptive.enabled, Ordering::Relaxed);
            s.streak.store(0, Ordering::Relaxed);
            changes.push(format!(
                "adaptive {} (limit {} to {}, latency threshold {:?})",
                if new.adaptive.enabled { "on" } else { "off" },
                new.adaptive.min_concurrent,
                new.adaptive.max_concurrent,
                new.adaptive.latency_threshold
            ));
        }
        if new.max_waiting != cfg.max_waiting {
            s.max_waiting
                .store(new.max_waiting.unwrap_or(UNBOUNDED), Ordering::Relaxed);
            changes.push(format!(
                "max_waiting {:?} -> {:?}",
                cfg.max_waiting, new.max_waiting
            ));
        }
        *cfg = new;
        drop(cfg);
        if !changes.is_empty() {
            s.events.publish(
                ComponentKind::Bulkhead,
                &s.name,
                EventKind::ConfigChanged {
                    change: changes.join(", "),
                },
            );
        }
        Ok(())
    }

    /// Calls holding a slot now.
    pub fn active(&self) -> u32 {
        self.shared.active()
    }

    /// Callers waiting for a slot now.
    pub fn waiting(&self) -> u32 {
        self.shared.waiting.load(Ordering::Acquire)
    }
}

impl Shared {
    #[inline]
    fn permit<'a>(&'a self, p: SemaphorePermit<'a>) -> Permit<'a> {
        // Our `Permit` gives the slot back; dropping tokio's would give it back twice.
        std::mem::forget(p);
        Permit { shared: self }
    }

    /// Admits a caller to the wait queue, or refuses it (no wait allowed, queue full).
    /// Returns how long it may wait; the caller is counted in `waiting` until its guard drops.
    #[cold]
    fn join_queue(&self) -> Result<Duration, BulkheadError> {
        let max_wait = Duration::from_nanos(self.max_wait_nanos.load(Ordering::Relaxed));
        if max_wait.is_zero() {
            return Err(self.full(None));
        }
        let bound = self.max_waiting.load(Ordering::Relaxed);
        if self.waiting.fetch_add(1, Ordering::AcqRel) >= bound {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
            return Err(self.full(Some(bound)));
        }
        Ok(max_wait)
    }

    /// Waits in the FIFO queue for up to `max_wait` (the caller joined it in `join_queue`).
    async fn wait(&self, max_wait: Duration) -> Result<Permit<'_>, BulkheadError> {
        let _guard = WaitingGuard(&self.waiting);
        match tokio::time::timeout(max_wait, self.sem.acquire()).await {
            Ok(Ok(p)) => Ok(self.permit(p)),
            // The semaphore is never closed; treat it as full if it ever is.
            Ok(Err(_)) => Err(self.full(None)),
            Err(_) => {
                self.timeouts.incr();
                let limit = self.limit.load(Ordering::Relaxed);
                tracing::debug!(target: "palisade::bulkhead", bulkhead = %self.name, max_concurrent = limit,
                    waited_ms = max_wait.as_millis() as u64, "bulkhead wait timed out");
                Err(BulkheadError::TimedOut {
                    name: self.name.clone(),
                    max_concurrent: limit,
                    waited: max_wait,
                })
            }
        }
    }

    #[cold]
    fn full(&self, max_waiting: Option<u32>) -> BulkheadError {
        self.rejected.incr();
        let limit = self.limit.load(Ordering::Relaxed);
        tracing::debug!(target: "palisade::bulkhead", bulkhead = %self.name, max_concurrent = limit,
            max_waiting, "bulkhead full; call rejected");
        BulkheadError::Full {
            name: self.name.clone(),
            max_concurrent: limit,
            max_waiting,
        }
    }

    /// Takes one unit of debt if there is any; the caller then retires its permit.
    fn take_debt(&self) -> bool {
        self.debt
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |d| d.checked_sub(1))
            .is_ok()
    }

    /// Moves the limit from `old` to `new`. Called with the config lock held.
    fn resize(&self, old: u32, new: u32) {
        if new > old {
            let mut grow = new - old;
            // Cancel outstanding debt first: those permits may simply be returned again.
            while grow > 0 && self.take_debt() {
                grow -= 1;
            }
            self.sem.add_permits(grow as usize);
        } else {
            let shrink = (old - new) as usize;
            let forgotten = self.sem.forget_permits(shrink);
            let owed = u32::try_from(shrink - forgotten).unwrap_or(u32::MAX);
            self.debt.fetch_add(owed, Ordering::AcqRel);
        }
        self.limit.store(new, Ordering::Release);
    }

    pub(crate) fn active(&self) -> u32 {
        let total = u64::from(self.limit.load(Ordering::Acquire))
            + u64::from(self.debt.load(Ordering::Acquire));
        let free = self.sem.available_permits() as u64;
        u32::try_from(total.saturating_sub(free)).unwrap_or(u32::MAX)
    }
}
