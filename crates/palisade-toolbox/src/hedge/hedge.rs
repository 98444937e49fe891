//! The hedge handle and its shared state.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::clock::saturating_nanos;
use palisade_core::{ComponentKind, ConfigError, EventBus, EventKind, SharedClock, StripedCounter};
use parking_lot::Mutex;

use super::builder::HedgeBuilder;
use super::call::{HedgedCall, SingleCall};
use super::config::{HedgeConfig, HedgeDelay};
use super::latency::LatencyTracker;
use super::race::Race;
use crate::budget::patch::{current_config, replace_config};
use crate::budget::{RetryBudget, Withdrawal};
use crate::retry::attempts::FnAttempts;

/// Hedged requests ("The Tail at Scale"): when an idempotent call has not answered after a
/// delay, a second attempt is sent, the first answer wins, and the other attempt is cancelled
/// (its future dropped, releasing whatever it held). Cheap to clone: clones share one component.
///
/// Only calls made with [`call_idempotent`](Self::call_idempotent) are ever hedged; it takes a
/// closure that can make the call twice. [`call`](Self::call) takes a single future and so
/// cannot be hedged, whatever the config: a call that must not run twice is not hedged by
/// accident. Every hedge spends one token of the [retry budget](RetryBudget), which can be
/// shared with a [`Retry`](crate::retry::Retry), so hedging cannot double the load on a
/// struggling upstream.
///
/// The delay is fixed, or a percentile of the latencies of recent successful calls (see
/// [`PercentileDelay`](super::PercentileDelay)). A call that answers before the delay costs a
/// few counter increments (and, in percentile mode, two clock reads for the calls whose
/// latency is sampled): no timer, no allocation.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::hedge::Hedge;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
/// let hedge = Hedge::builder("search").fixed_delay(Duration::from_millis(50)).build()?;
///
/// let mut attempt = 0;
/// let answer = hedge
///     .call_idempotent(|| {
///         attempt += 1;
///         // The first attempt hangs for 10 s; the hedge answers in 20 ms.
///         let latency = if attempt == 1 { Duration::from_secs(10) } else { Duration::from_millis(20) };
///         async move {
///             tokio::time::sleep(latency).await;
///             Ok::<_, ()>(latency)
///         }
///     })
///     .await;
/// assert_eq!(answer, Ok(Duration::from_millis(20)));
/// let snap = hedge.snapshot();
/// assert_eq!((snap.hedges_sent_total, snap.hedges_won_total, snap.cancelled_losers_total), (1, 1, 1));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct Hedge {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Hedge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hedge")
            .field("name", &&*self.shared.name)
            .field("enabled", &self.shared.enabled.load(Ordering::Relaxed))
            .field("delay", &self.current_delay())
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) budget: RetryBudget,
    clock: SharedClock,
    pub(crate) events: EventBus,
    /// Hot copies of the config.
    enabled: AtomicBool,
    timing: AtomicBool,
    half_window: AtomicU64,
    /// The delay in force, in nanoseconds (recomputed as latencies come in).
    delay: AtomicU64,
    tracker: LatencyTracker,
    /// The config in force, except `budget` (the budget's own config is authoritative).
    pub(crate) config: Mutex<HedgeConfig>,
    pub(crate) counters: Counters,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) calls: StripedCounter,
    pub(crate) idempotent: StripedCounter,
    pub(crate) sent: AtomicU64,
    pub(crate) won: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) denied: AtomicU64,
}

impl Shared {
    pub(crate) fn new(
        name: Arc<str>,
        config: HedgeConfig,
        budget: RetryBudget,
        clock: SharedClock,
        events: EventBus,
    ) -> Shared {
        let now = clock.now_nanos();
        let shared = Shared {
            name,
            budget,
            clock,
            events,
            enabled: AtomicBool::new(false),
            timing: AtomicBool::new(false),
            half_window: AtomicU64::new(1),
            delay: AtomicU64::new(0),
            tracker: LatencyTracker::new(now, half_window(&config)),
            config: Mutex::new(config.clone()),
            counters: Counters::default(),
        };
        shared.store_hot(&config);
        shared.recompute_delay();
        shared
    }

    fn store_hot(&self, c: &HedgeConfig) {
        self.enabled.store(c.enabled, Ordering::Relaxed);
        self.timing.store(
            matches!(c.delay, HedgeDelay::Percentile(_)),
            Ordering::Relaxed,
        );
        self.half_window.store(half_window(c), Ordering::Relaxed);
    }

    /// A call that is never hedged starts: count it; its start time if latencies are tracked.
    #[inline]
    pub(crate) fn begin_single(&self) -> Option<u64> {
        self.counters.calls.incr();
        self.start_time()
    }

    /// An idempotent call starts: count it and, if hedging is on, deposit its share in the
    /// budget. Returns its start time (if latencies are tracked) and whether it may be hedged.
    #[inline]
    pub(crate) fn begin_idempotent(&self) -> (Option<u64>, bool) {
        self.counters.calls.incr();
        self.counters.idempotent.incr();
        let hedge = self.enabled.load(Ordering::Relaxed);
        if hedge {
            self.budget.deposit();
        }
        (self.start_time(), hedge)
    }

    pub(crate) fn now_nanos(&self) -> u64 {
        self.clock.now_nanos()
    }

    /// The start time of a call whose latency is sampled: every call while the window's newer
    /// half holds fewer than [`FULL_RATE_SAMPLES`] latencies, then one call in
    /// [`SAMPLE_EVERY`] per thread (a latency costs two clock reads; a busy upstream gives
    /// plenty of samples at a fraction of the calls).
    #[inline]
    fn start_time(&self) -> Option<u64> {
        if !self.timing.load(Ordering::Relaxed) {
            return None;
        }
        let sampled = self.tracker.current_samples() < FULL_RATE_SAMPLES
            || SAMPLE_TICK.with(|t| {
                let n = t.get().wrapping_add(1);
                t.set(n);
                n % SAMPLE_EVERY == 0
            });
        sampled.then(|| self.clock.now_nanos())
    }

    /// A successful attempt that started at `started` answered now.
    #[inline]
    pub(crate) fn record_success(&self, started: Option<u64>) {
        if let Some(started) = started {
            let now = self.clock.now_nanos();
            let micros = now.saturating_sub(started) / 1_000;
            let half = self.half_window.load(Ordering::Relaxed);
            if self.tracker.record(micros, now, half) {
                self.recompute_delay();
            }
        }
    }

    /// The hedging delay in force.
    #[inline]
    pub(crate) fn delay(&self) -> Duration {
        Duration::from_nanos(self.delay.load(Ordering::Relaxed))
    }

    /// Recomputes the delay from the config and the latencies held.
    pub(crate) fn recompute_delay(&self) {
        let delay = self.config.lock().delay.clone();
        let d = match delay {
            HedgeDelay::Fixed(d) => d,
            HedgeDelay::Percentile(p) => {
                let half = self.half_window.load(Ordering::Relaxed);
                self.tracker.rotate_if_due(self.clock.now_nanos(), half);
                match self.tracker.percentile(p.percentile) {
                    Some((micros, samples)) if samples >= u64::from(p.min_samples) => {
                        Duration::from_micros(micros).clamp(p.floor, p.ceiling)
                    }
                    _ => p.ceiling,
                }
            }
        };
        self.delay.store(saturating_nanos(d), Ordering::Relaxed);
    }

    /// Latencies held for the percentile.
    pub(crate) fn latency_samples(&self) -> u64 {
        self.tracker.samples()
    }

    /// The delay is up: may a hedge be sent? Spends a budget token if so.
    pub(crate) fn try_hedge(&self) -> bool {
        match self.budget.withdraw() {
            Withdrawal::Granted { recovered } => {
                if recovered {
                    self.notice("retry budget available again; hedging resumes");
                }
                true
            }
            Withdrawal::Denied { first } => {
                self.counters.denied.fetch_add(1, Ordering::Relaxed);
                if first {
                    self.notice("retry budget exhausted; no hedge is sent until it refills");
                }
                false
            }
        }
    }

    /// The backup attempt started.
    pub(crate) fn hedge_sent(&self) {
        self.counters.sent.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn hedge_won(&self) {
        self.counters.won.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn loser_cancelled(&self) {
        self.counters.cancelled.fetch_add(1, Ordering::Relaxed);
    }

    fn notice(&self, message: &str) {
        let budget = self.budget.snapshot();
        self.events.publish(
            ComponentKind::Hedge,
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

/// Below this many latencies in the window's newer half, every call is timed.
pub(crate) const FULL_RATE_SAMPLES: u64 = 256;
/// Beyond [`FULL_RATE_SAMPLES`], one call in this many (per thread) is timed.
pub(crate) const SAMPLE_EVERY: u32 = 16;

thread_local! {
    /// Calls made on this thread, for sampling latencies.
    static SAMPLE_TICK: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

fn half_window(c: &HedgeConfig) -> u64 {
    match &c.delay {
        HedgeDelay::Percentile(p) => (saturating_nanos(p.window) / 2).max(1),
        HedgeDelay::Fixed(_) => u64::MAX / 4,
    }
}

impl Hedge {
    /// A builder for a hedge named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::hedge::Hedge;
    ///
    /// let hedge = Hedge::builder("search").fixed_delay(Duration::from_millis(30)).build().unwrap();
    /// assert_eq!(hedge.current_delay(), Duration::from_millis(30));
    /// ```
    pub fn builder(name: impl Into<String>) -> HedgeBuilder {
        HedgeBuilder::new(name.into())
    }

    /// The component's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The event bus this hedge publishes to (its registry's, or a private one).
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// The budget hedges draw on (possibly shared with other components).
    pub fn budget(&self) -> &RetryBudget {
        &self.shared.budget
    }

    /// The delay after which an idempotent call is hedged now.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::hedge::Hedge;
    ///
    /// // Percentile mode, no latency known yet: the ceiling (1 s by default).
    /// let hedge = Hedge::builder("search").build().unwrap();
    /// assert_eq!(hedge.current_delay(), Duration::from_secs(1));
    /// ```
    pub fn current_delay(&self) -> Duration {
        self.shared.delay()
    }

    /// Runs `fut` once: never hedged (it cannot be: there is only one future). Counted, and
    /// its latency (when successful) feeds the percentile delay.
    ///
    /// ```
    /// use palisade_toolbox::hedge::Hedge;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let hedge = Hedge::builder("payments").build().unwrap();
    /// let charged = hedge.call(async { Ok::<_, ()>("charged once") }).await;
    /// assert_eq!(charged, Ok("charged once"));
    /// assert_eq!(hedge.snapshot().calls_total, 1);
    /// # });
    /// ```
    pub fn call<Fut, T, E>(&self, fut: Fut) -> SingleCall<'_, Fut>
    where
        Fut: Future<Output = Result<T, E>>,
    {
        SingleCall::new(&self.shared, fut)
    }

    /// Runs the call `make` builds and, if it has not answered after the delay and the budget
    /// allows, a second one: the first `Ok` wins and the other attempt's future is dropped. An
    /// `Err` before the hedge is sent is returned at once (hedging is not retrying); an `Err`
    /// while the other attempt runs waits for that one. `make` must be safe to call twice.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicU32, Ordering};
    /// use std::time::Duration;
    /// use palisade_toolbox::hedge::Hedge;
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap().block_on(async {
    /// let hedge = Hedge::builder("dns").fixed_delay(Duration::from_millis(10)).build().unwrap();
    /// let made = AtomicU32::new(0);
    /// // Answers in 1 ms: before the delay, so never hedged.
    /// let ip = hedge
    ///     .call_idempotent(|| {
    ///         made.fetch_add(1, Ordering::Relaxed);
    ///         async {
    ///             tokio::time::sleep(Duration::from_millis(1)).await;
    ///             Ok::<_, ()>("10.0.0.1")
    ///         }
    ///     })
    ///     .await;
    /// assert_eq!((ip, made.load(Ordering::Relaxed)), (Ok("10.0.0.1"), 1));
    /// # });
    /// ```
    pub fn call_idempotent<F, Fut, T, E>(&self, make: F) -> HedgedCall<'_, F, Fut>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        HedgedCall::new(&self.shared, Race::lazy(FnAttempts(make)))
    }

    /// The config in force (its `budget` is the budget's current config).
    pub fn config(&self) -> HedgeConfig {
        current_config(&self.shared.config, &self.shared.budget)
    }

    /// Replaces the config after validating it as a whole: an invalid one is refused with an
    /// error naming the field, and nothing changes. The latencies already tracked are kept.
    /// Publishes a `config_changed` event naming the fields that changed.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::hedge::{Hedge, HedgeConfig, HedgeDelay};
    ///
    /// let hedge = Hedge::builder("search").build().unwrap();
    /// hedge.set_config(HedgeConfig { delay: HedgeDelay::Fixed(Duration::from_millis(5)), ..hedge.config() }).unwrap();
    /// assert_eq!(hedge.current_delay(), Duration::from_millis(5));
    /// ```
    pub fn set_config(&self, config: HedgeConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let s = &*self.shared;
        let change = replace_config(&s.config, &s.budget, config, |c| s.store_hot(c))?;
        s.recompute_delay();
        if let Some(change) = change {
            s.events.publish(
                ComponentKind::Hedge,
                &s.name,
                EventKind::ConfigChanged { change },
            );
        }
        Ok(())
    }

    /// Switches hedging on or off (off: idempotent calls run once, like any other).
    ///
    /// ```
    /// use palisade_toolbox::hedge::Hedge;
    ///
    /// let hedge = Hedge::builder("search").build().unwrap();
    /// hedge.set_enabled(false).unwrap();
    /// assert!(!hedge.snapshot().enabled);
    /// ```
    pub fn set_enabled(&self, enabled: bool) -> Result<(), ConfigError> {
        self.set_config(HedgeConfig {
            enabled,
            ..self.config()
        })
    }

    /// Changes the delay.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::hedge::{Hedge, HedgeDelay};
    ///
    /// let hedge = Hedge::builder("search").build().unwrap();
    /// hedge.set_delay(HedgeDelay::Fixed(Duration::from_millis(80))).unwrap();
    /// assert_eq!(hedge.current_delay(), Duration::from_millis(80));
    /// ```
    pub fn set_delay(&self, delay: HedgeDelay) -> Result<(), ConfigError> {
        self.set_config(HedgeConfig {
            delay,
            ..self.config()
        })
    }
}
