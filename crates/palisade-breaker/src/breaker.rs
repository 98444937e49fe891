//! The circuit breaker itself.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{
    BuildError, ConfigError, EventBus, EventKind, Registry, SharedClock, StripedCounter,
    SystemClock, metrics as names,
};
use parking_lot::Mutex;

use crate::call::Call;
use crate::classify::{Classifier, ErrorsAreFailures, Outcome};
use crate::config::{BreakerConfig, FailureRateConfig};
use crate::error::{RejectReason, Rejected};
use crate::state::{State, Word};
use crate::window::{Trip, Window};

const NOT_TIMED: u64 = u64::MAX;
const SLOW_OFF: u64 = u64::MAX;

/// A circuit breaker. Cheap to clone: clones share one state machine.
///
/// In the closed state, admitting a call is one atomic load and recording its outcome one
/// atomic read (plus a per-thread counter increment): no lock, no allocation, no clock read
/// unless slow calls or a time window are configured.
///
/// ```
/// use std::time::Duration;
/// use palisade_breaker::{CallError, CircuitBreaker, State};
/// use palisade_core::ManualClock;
///
/// # tokio_test(async {
/// let clock = ManualClock::new();
/// let breaker = CircuitBreaker::builder("slack")
///     .consecutive_failures(3)
///     .wait_duration(Duration::from_secs(30))
///     .clock(clock.shared())
///     .build()
///     .unwrap();
///
/// for _ in 0..3 {
///     let r: Result<(), _> = breaker.call(async { Err::<(), _>("upstream timed out") }).await;
///     assert!(matches!(r, Err(CallError::Inner(_))));
/// }
/// assert_eq!(breaker.state(), State::Open);
///
/// // Refused without running the call, with the time to wait.
/// let err = breaker.call(async { Ok::<_, &str>(()) }).await.unwrap_err();
/// assert_eq!(err.to_string(), "circuit breaker 'slack' is open; retry in 30000 ms");
///
/// // After the wait, one trial call is let through; its success closes the breaker.
/// clock.advance(Duration::from_secs(30));
/// assert_eq!(breaker.state(), State::HalfOpen);
/// breaker.call(async { Ok::<_, &str>(()) }).await.unwrap();
/// assert_eq!(breaker.state(), State::Closed);
/// # });
/// # fn tokio_test<F: std::future::Future>(f: F) -> F::Output {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct CircuitBreaker {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for CircuitBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("name", &&*self.shared.name)
            .field("state", &self.state())
            .finish()
    }
}

pub(crate) struct Counters {
    pub(crate) successful: StripedCounter,
    pub(crate) failed: StripedCounter,
    pub(crate) ignored: StripedCounter,
    pub(crate) slow: StripedCounter,
    pub(crate) not_permitted: StripedCounter,
    pub(crate) transitions: AtomicU64,
}

/// The last transition, for snapshots.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub(crate) from: State,
    pub(crate) to: State,
    pub(crate) reason: String,
    pub(crate) at_unix_ms: u64,
}

/// State changed only under the control mutex (transitions are rare).
pub(crate) struct Ctl {
    pub(crate) config: BreakerConfig,
    /// Trips since the breaker last closed after a successful recovery (drives wait growth).
    pub(crate) trips: u32,
    /// The wait chosen at the last trip (after growth and jitter).
    pub(crate) current_wait: Duration,
    pub(crate) last_transition: Option<Transition>,
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    word: AtomicU64,
    pub(crate) consecutive_failures: AtomicU32,
    /// Clock reading (ns) at which an open breaker turns half-open.
    open_until: AtomicU64,
    // Hot copies of config fields, so the call path never takes the control lock.
    threshold: AtomicU32,
    pub(crate) half_open_max: AtomicU32,
    has_window: AtomicBool,
    timing: AtomicBool,
    slow_nanos: AtomicU64,
    pub(crate) window: Mutex<Option<Window>>,
    pub(crate) ctl: Mutex<Ctl>,
    pub(crate) counters: Counters,
    pub(crate) clock: SharedClock,
    pub(crate) events: EventBus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PermitKind {
    /// Disabled breaker: nothing is recorded.
    Untracked,
    /// Closed or metrics-only breaker.
    Normal,
    /// A half-open trial call holding one of the trial slots.
    Trial,
}

/// Permission to make one call, for code that cannot hand the breaker a future.
///
/// Report how the call went with [`Permit::record`] (or [`success`](Permit::success),
/// [`failure`](Permit::failure), [`ignore`](Permit::ignore)). A permit dropped without a
/// record counts as nothing, and a half-open trial slot it held is given back, so cancelled
/// calls never leak trial slots.
///
/// ```
/// use palisade_breaker::{CircuitBreaker, Outcome};
///
/// let breaker = CircuitBreaker::builder("db").build().unwrap();
/// match breaker.try_acquire() {
///     Ok(permit) => {
///         let ok = true; // ... make the call ...
///         permit.record(if ok { Outcome::Success } else { Outcome::Failure });
///     }
///     Err(refused) => eprintln!("{refused}"),
/// }
/// ```
#[must_use = "a permit records nothing unless its outcome is reported"]
pub struct Permit<'a> {
    shared: &'a Shared,
    /// Generation in the low 32 bits, kind above. Every field is word-sized: a permit is
    /// moved into and out of `call`'s future state, and narrow fields there cost
    /// store-forwarding stalls on the hot path.
    ticket: u64,
    started: u64,
}

impl PermitKind {
    const fn code(self) -> u64 {
        match self {
            PermitKind::Untracked => 0,
            PermitKind::Normal => 1,
            PermitKind::Trial => 2,
        }
    }

    const fn from_code(code: u64) -> PermitKind {
        match code {
            1 => PermitKind::Normal,
            2 => PermitKind::Trial,
            _ => PermitKind::Untracked,
        }
    }
}

impl Permit<'_> {
    #[inline]
    fn kind(&self) -> PermitKind {
        PermitKind::from_code(self.ticket >> 32)
    }

    /// The permit's ticket and start time, without running its `Drop`: the caller takes over
    /// the duty to report (see [`Shared::on_ticket`]).
    #[inline]
    pub(crate) fn into_ticket(self) -> (u64, u64) {
        let parts = (self.ticket, self.started);
        std::mem::forget(self);
        parts
    }
}

impl std::fmt::Debug for Permit<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("breaker", &&*self.shared.name)
            .field("trial", &(self.kind() == PermitKind::Trial))
            .finish()
    }
}

impl Permit<'_> {
    /// Reports the call's outcome.
    #[inline]
    pub fn record(self, outcome: Outcome) {
        let shared = self.shared;
        let (ticket, started) = self.into_ticket();
        shared.on_ticket(ticket, started, Some(outcome));
    }

    /// Reports a success.
    #[inline]
    pub fn success(self) {
        self.record(Outcome::Success)
    }

    /// Reports a failure.
    #[inline]
    pub fn failure(self) {
        self.record(Outcome::Failure)
    }

    /// Reports an outcome that says nothing about the upstream (see [`Outcome::Ignored`]).
    #[inline]
    pub fn ignore(self) {
        self.record(Outcome::Ignored)
    }

    /// Whether this permit holds a half-open trial slot.
    pub fn is_trial(&self) -> bool {
        self.kind() == PermitKind::Trial
    }
}

impl Drop for Permit<'_> {
    #[inline]
    fn drop(&mut self) {
        self.shared.on_ticket(self.ticket, self.started, None);
    }
}

/// Builds a [`CircuitBreaker`]; see [`CircuitBreaker::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    name: String,
    config: BreakerConfig,
    clock: Option<SharedClock>,
    registry: Option<Registry>,
}

impl Builder {
    /// Replaces the whole config (fields set before are overwritten).
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens after `n` consecutive failures (0 turns the trigger off). Default 3.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// Also opens on a failure or slow-call rate over a sliding window.
    pub fn failure_rate(mut self, rate: FailureRateConfig) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }

    /// Time spent open before trial calls are let through. Default 60 s.
    pub fn wait_duration(mut self, d: Duration) -> Self {
        self.config.wait_duration = d;
        self
    }

    /// Grows the wait on repeated trips (by `wait_multiplier`, default 2) up to `max`.
    pub fn max_wait_duration(mut self, max: Duration) -> Self {
        self.config.max_wait_duration = Some(max);
        self
    }

    /// Growth factor of the wait between consecutive trips. Default 2.
    pub fn wait_multiplier(mut self, m: f64) -> Self {
        self.config.wait_multiplier = m;
        self
    }

    /// Random spread of each wait as a fraction (0 to 1). Default 0.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = fraction;
        self
    }

    /// Trial calls admitted at once while half-open, and successes needed to close. Default 1.
    pub fn half_open_max_calls(mut self, k: u32) -> Self {
        self.config.half_open_max_calls = k;
        self
    }

    /// The clock to read (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Registers the breaker in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Validates the config and builds the breaker (registering it, if a registry was given).
    pub fn build(self) -> Result<CircuitBreaker, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let events = palisade_core::registry::bus_for(self.registry.as_ref(), clock.clone());
        let cfg = self.config;
        let shared = Shared {
            name: Arc::from(self.name),
            word: AtomicU64::new(Word::new(State::Closed, 0).0),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: AtomicU32::new(0),
            half_open_max: AtomicU32::new(1),
            has_window: AtomicBool::new(false),
            timing: AtomicBool::new(false),
            slow_nanos: AtomicU64::new(SLOW_OFF),
            window: Mutex::new(None),
            ctl: Mutex::new(Ctl {
                current_wait: cfg.wait_duration,
                config: cfg.clone(),
                trips: 0,
                last_transition: None,
            }),
            counters: Counters {
                successful: StripedCounter::new(),
                failed: StripedCounter::new(),
                ignored: StripedCounter::new(),
                slow: StripedCounter::new(),
                not_permitted: StripedCounter::new(),
                transitions: AtomicU64::new(0),
            },
            clock,
            events,
        };
        shared.apply_hot_config(&cfg, None);
        let breaker = CircuitBreaker {
            shared: Arc::new(shared),
        };
        breaker.shared.export_state_gauge(State::Closed);
        if let Some(registry) = self.registry {
            registry.register(Arc::new(breaker.clone()))?;
        }
        Ok(breaker)
    }
}

impl CircuitBreaker {
    /// A builder for a breaker named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            config: BreakerConfig::default(),
            clock: None,
            registry: None,
        }
    }

    /// The breaker's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The event bus this breaker publishes to (its registry's, or a private one).
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// Runs `fut` if the breaker admits it; `Err` results count as failures.
    ///
    /// If the returned future is dropped before `fut` completes, nothing is recorded and a
    /// half-open trial slot is given back.
    pub fn call<F, T, E>(&self, fut: F) -> Call<'_, F, ErrorsAreFailures>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.call_classified(ErrorsAreFailures, fut)
    }

    /// Runs `fut` if the breaker admits it, counting its result as `classifier` says
    /// (for instance: a 429 or a caller's bad input is [`Outcome::Ignored`]).
    ///
    /// If the returned future is dropped before `fut` completes, nothing is recorded and a
    /// half-open trial slot is given back.
    pub fn call_classified<C, F, T, E>(&self, classifier: C, fut: F) -> Call<'_, F, C>
    where
        C: Classifier<T, E>,
        F: Future<Output = Result<T, E>>,
    {
        Call::new(self, fut, classifier)
    }

    /// Asks for permission to make one call; see [`Permit`].
    #[inline]
    pub fn try_acquire(&self) -> Result<Permit<'_>, Rejected> {
        let s = &*self.shared;
        let w = Word(s.word.load(Ordering::Acquire));
        match w.state() {
            State::Closed | State::MetricsOnly => Ok(s.permit(w.generation(), PermitKind::Normal)),
            _ => s.acquire_slow(w),
        }
    }

    /// The current state. An open breaker whose wait has elapsed is moved to half-open first,
    /// so this never reports a stale `open`.
    pub fn state(&self) -> State {
        self.shared.refresh().state()
    }

    /// How long until an open breaker admits a trial call (`None` unless `open`).
    pub fn retry_after(&self) -> Option<Duration> {
        let w = self.shared.refresh();
        (w.state() == State::Open).then(|| self.shared.remaining_open())
    }

    /// Closes the breaker and clears its failure counts and wait growth (operators: "reset").
    pub fn reset(&self) {
        self.shared.force_state(State::Closed, "admin: reset");
    }

    /// Opens the breaker until [`reset`](Self::reset), refusing every call.
    pub fn force_open(&self) {
        self.shared
            .force_state(State::ForcedOpen, "admin: force_open");
    }

    /// Admits every call and records nothing until [`reset`](Self::reset).
    pub fn disable(&self) {
        self.shared.force_state(State::Disabled, "admin: disable");
    }

    /// Admits every call and records outcomes, but never trips, until [`reset`](Self::reset).
    pub fn metrics_only(&self) {
        self.shared
            .force_state(State::MetricsOnly, "admin: metrics_only");
    }

    /// The config in force.
    pub fn config(&self) -> BreakerConfig {
        self.shared.ctl.lock().config.clone()
    }

    /// Replaces the config as a whole after validating it; an invalid config is refused with
    /// an error naming the field and nothing changes. The state is kept: an open breaker keeps
    /// its current wait; a changed window starts empty.
    pub fn set_config(&self, config: BreakerConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let mut ctl = self.shared.ctl.lock();
        let change = describe_change(&ctl.config, &config);
        self.shared.apply_hot_config(&config, Some(&ctl.config));
        ctl.config = config;
        drop(ctl);
        if let Some(change) = change {
            self.shared.publish(EventKind::ConfigChanged { change });
        }
        Ok(())
    }
}

fn describe_change(old: &BreakerConfig, new: &BreakerConfig) -> Option<String> {
    let (Ok(serde_json::Value::Object(a)), Ok(serde_json::Value::Object(b))) =
        (serde_json::to_value(old), serde_json::to_value(new))
    else {
        return Some("config replaced".into());
    };
    let changed: Vec<String> = b
        .iter()
        .filter(|(k, v)| a.get(*k) != Some(*v))
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    (!changed.is_empty()).then(|| changed.join(", "))
}

impl Shared {
    fn apply_hot_config(&self, cfg: &BreakerConfig, old: Option<&BreakerConfig>) {
        self.threshold
            .store(cfg.consecutive_failures, Ordering::Relaxed);
        self.half_open_max
            .store(cfg.half_open_max_calls, Ordering::Relaxed);
        let slow = cfg
            .failure_rate
            .as_ref()
            .and_then(|r| r.slow_call_duration)
            .map_or(SLOW_OFF, palisade_core::clock::saturating_nanos);
        self.slow_nanos.store(slow, Ordering::Relaxed);
        self.timing.store(cfg.timing_needed(), Ordering::Relaxed);
        let window_changed = old.is_none_or(|o| o.failure_rate != cfg.failure_rate);
        if window_changed {
            *self.window.lock() = cfg.failure_rate.as_ref().map(Window::new);
            self.has_window
                .store(cfg.failure_rate.is_some(), Ordering::Release);
        }
    }

    #[inline]
    fn permit(&self, generation: u32, kind: PermitKind) -> Permit<'_> {
        let started = if kind != PermitKind::Untracked && self.timing.load(Ordering::Relaxed) {
            self.clock.now_nanos()
        } else {
            NOT_TIMED
        };
        Permit {
            shared: self,
            ticket: u64::from(generation) | (kind.code() << 32),
            started,
        }
    }

    fn reject(&self, reason: RejectReason, retry_after: Option<Duration>) -> Rejected {
        self.counters.not_permitted.incr();
        Rejected {
            name: self.name.clone(),
            reason,
            retry_after,
        }
    }

    pub(crate) fn remaining_open(&self) -> Duration {
        let until = self.open_until.load(Ordering::Acquire);
        Duration::from_nanos(until.saturating_sub(self.clock.now_nanos()))
    }

    #[cold]
    fn acquire_slow(&self, mut w: Word) -> Result<Permit<'_>, Rejected> {
        loop {
            match w.state() {
                State::Closed | State::MetricsOnly => {
                    return Ok(self.permit(w.generation(), PermitKind::Normal));
                }
                State::Disabled => return Ok(self.permit(w.generation(), PermitKind::Untracked)),
                State::ForcedOpen => return Err(self.reject(RejectReason::ForcedOpen, None)),
                State::Open => {
                    let until = self.open_until.load(Ordering::Acquire);
                    let now = self.clock.now_nanos();
                    if now < until {
                        let after = Duration::from_nanos(until - now);
                        return Err(self.reject(RejectReason::Open, Some(after)));
                    }
                    w = self.half_open_if_due(w);
                }
                State::HalfOpen => {
                    let max = self.half_open_max.load(Ordering::Relaxed);
                    let (inf, ok) = (w.in_flight(), w.successes());
                    if inf >= max || inf + ok >= max {
                        return Err(self.reject(RejectReason::HalfOpenFull, None));
                    }
                    let next = w.with_trials(inf + 1, ok);
                    match self.word.compare_exchange_weak(
                        w.0,
                        next.0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => return Ok(self.permit(w.generation(), PermitKind::Trial)),
                        Err(actual) => w = Word(actual),
                    }
                }
            }
        }
    }

    /// Moves an open breaker whose wait has elapsed to half-open; returns the current word.
    fn half_open_if_due(&self, seen: Word) -> Word {
        let mut ctl = self.ctl.lock();
        let cur = Word(self.word.load(Ordering::Acquire));
        if cur == seen && self.clock.now_nanos() >= self.open_until.load(Ordering::Acquire) {
            self.transition(
                &mut ctl,
                cur,
                State::HalfOpen,
                "wait duration elapsed".into(),
            );
        }
        Word(self.word.load(Ordering::Acquire))
    }

    /// The current word after applying a due open → half-open transition.
    pub(crate) fn refresh(&self) -> Word {
        let w = Word(self.word.load(Ordering::Acquire));
        if w.state() == State::Open
            && self.clock.now_nanos() >= self.open_until.load(Ordering::Acquire)
        {
            return self.half_open_if_due(w);
        }
        w
    }

    /// Reports the outcome of the call a permit ticket was issued for (`None`: cancelled).
    #[inline]
    pub(crate) fn on_ticket(&self, ticket: u64, started: u64, outcome: Option<Outcome>) {
        self.on_outcome(
            PermitKind::from_code(ticket >> 32),
            ticket as u32,
            started,
            outcome,
        );
    }

    #[inline]
    fn on_outcome(
        &self,
        kind: PermitKind,
        generation: u32,
        started: u64,
        outcome: Option<Outcome>,
    ) {
        match kind {
            PermitKind::Untracked => {}
            PermitKind::Normal => {
                if let Some(outcome) = outcome {
                    self.on_normal(generation, started, outcome);
                }
            }
            PermitKind::Trial => self.on_trial(generation, started, outcome),
        }
    }

    /// Whether a timed call was slow, counting it if so.
    fn check_slow(&self, started: u64, outcome: Outcome) -> bool {
        if started == NOT_TIMED || outcome == Outcome::Ignored {
            return false;
        }
        let slow = self.slow_nanos.load(Ordering::Relaxed);
        let is_slow = slow != SLOW_OFF && self.clock.now_nanos().saturating_sub(started) >= slow;
        if is_slow {
            self.counters.slow.incr();
        }
        is_slow
    }

    fn count(&self, outcome: Outcome) {
        match outcome {
            Outcome::Success => self.counters.successful.incr(),
            Outcome::Failure => self.counters.failed.incr(),
            Outcome::Ignored => self.counters.ignored.incr(),
        }
    }

    #[inline]
    fn on_normal(&self, generation: u32, started: u64, outcome: Outcome) {
        self.count(outcome);
        if outcome == Outcome::Ignored {
            return;
        }
        let slow = self.check_slow(started, outcome);
        let w = Word(self.word.load(Ordering::Acquire));
        if w.generation() != generation || !matches!(w.state(), State::Closed | State::MetricsOnly)
        {
            // A late outcome of a call admitted before the last transition: counted above,
            // but it says nothing about the current state.
            return;
        }
        let failed = outcome == Outcome::Failure;
        if self.has_window.load(Ordering::Acquire) {
            self.record_in_window(w, failed, slow);
        }
        if failed {
            let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            let threshold = self.threshold.load(Ordering::Relaxed);
            if threshold > 0 && n >= threshold && w.state() == State::Closed {
                self.trip(w, format!("{n} consecutive failures"));
            }
        } else if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Release);
        }
    }

    #[cold]
    fn record_in_window(&self, w: Word, failed: bool, slow: bool) {
        let now = self.clock.now();
        let trip = match self.window.lock().as_mut() {
            Some(window) => window.record(now, failed, slow),
            None => None,
        };
        if let Some(trip) = trip
            && w.state() == State::Closed
        {
            let reason = match trip {
                Trip::FailureRate(r) => format!("failure rate {r:.1}% over the window"),
                Trip::SlowCallRate(r) => format!("slow-call rate {r:.1}% over the window"),
            };
            self.trip(w, reason);
        }
    }

    #[cold]
    fn trip(&self, seen: Word, reason: String) {
        let mut ctl = self.ctl.lock();
        self.transition(&mut ctl, seen, State::Open, reason);
    }

    #[cold]
    fn on_trial(&self, generation: u32, started: u64, outcome: Option<Outcome>) {
        if let Some(o) = outcome {
            self.count(o);
        }
        let slow = outcome.is_some_and(|o| self.check_slow(started, o));
        let effective = match outcome {
            Some(Outcome::Success) if slow => Some(Outcome::Failure),
            other => other,
        };
        let mut w = Word(self.word.load(Ordering::Acquire));
        loop {
            if w.state() != State::HalfOpen || w.generation() != generation {
                return; // the trial's state is gone; its slot went with it
            }
            if effective == Some(Outcome::Failure) {
                let mut ctl = self.ctl.lock();
                self.transition(&mut ctl, w, State::Open, "trial call failed".into());
                return;
            }
            // A success frees the slot and counts; ignored or cancelled only frees the slot.
            let success = effective == Some(Outcome::Success);
            let next = w.with_trials(
                w.in_flight().saturating_sub(1),
                w.successes() + u32::from(success),
            );
            match self
                .word
                .compare_exchange_weak(w.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => {
                    if success && next.successes() >= self.half_open_max.load(Ordering::Relaxed) {
                        let mut ctl = self.ctl.lock();
                        let reason = format!("{} trial calls succeeded", next.successes());
                        self.transition(&mut ctl, next, State::Closed, reason);
                    }
                    return;
                }
                Err(actual) => w = Word(actual),
            }
        }
    }

    /// Moves from `from` (matched on state and generation; trial counters may have moved) to
    /// `to`. Must be called with the control lock held. Returns whether it happened.
    fn transition(&self, ctl: &mut Ctl, from: Word, to: State, reason: String) -> bool {
        let mut cur = Word(self.word.load(Ordering::Acquire));
        if cur.state() != from.state() || cur.generation() != from.generation() {
            return false;
        }
        // Prepare what readers of the new state will look at, before publishing it.
        match to {
            State::Open => {
                ctl.trips = ctl.trips.saturating_add(1);
                let wait = jittered(ctl.config.wait_for_trip(ctl.trips), ctl.config.jitter);
                ctl.current_wait = wait;
                let until = self
                    .clock
                    .now_nanos()
                    .saturating_add(palisade_core::clock::saturating_nanos(wait));
                self.open_until.store(until, Ordering::Release);
            }
            State::Closed | State::MetricsOnly => self.clear_counts(ctl, to == State::Closed),
            State::HalfOpen | State::ForcedOpen | State::Disabled => {}
        }
        loop {
            let next = cur.next(to);
            match self
                .word
                .compare_exchange(cur.0, next.0, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(actual) => {
                    cur = Word(actual);
                    // Only trial counters can move without the lock.
                    debug_assert_eq!(cur.generation(), from.generation());
                }
            }
        }
        let from_state = cur.state();
        self.counters.transitions.fetch_add(1, Ordering::Relaxed);
        let at_unix_ms = self.clock.unix_millis();
        ctl.last_transition = Some(Transition {
            from: from_state,
            to,
            reason: reason.clone(),
            at_unix_ms,
        });
        self.export_state_gauge(to);
        metrics::counter!(
            names::BREAKER_TRANSITIONS_TOTAL,
            "name" => self.name.to_string(),
            "from" => from_state.as_str(),
            "to" => to.as_str()
        )
        .increment(1);
        self.publish(EventKind::StateTransition {
            from: from_state.as_str().into(),
            to: to.as_str().into(),
            reason,
        });
        true
    }

    /// Operator command: move to `to` from whatever state the breaker is in.
    fn force_state(&self, to: State, reason: &str) {
        let mut ctl = self.ctl.lock();
        let cur = Word(self.word.load(Ordering::Acquire));
        if cur.state() == to {
            if to == State::Closed {
                // Reset of a closed breaker: clear what it has counted so far.
                self.clear_counts(&mut ctl, true);
            }
            return;
        }
        self.transition(&mut ctl, cur, to, reason.into());
    }

    /// Clears the failure counts of the closed state; with `forget_trips`, also the wait growth
    /// (on entering `closed`). Called with the control lock held.
    fn clear_counts(&self, ctl: &mut Ctl, forget_trips: bool) {
        if forget_trips {
            ctl.trips = 0;
            ctl.current_wait = ctl.config.wait_for_trip(1);
        }
        self.consecutive_failures.store(0, Ordering::Release);
        if let Some(w) = self.window.lock().as_mut() {
            w.clear();
        }
    }

    pub(crate) fn publish(&self, kind: EventKind) {
        self.events.publish(
            palisade_core::ComponentKind::CircuitBreaker,
            &self.name,
            kind,
        );
    }

    pub(crate) fn export_state_gauge(&self, current: State) {
        for s in State::ALL {
            metrics::gauge!(
                names::BREAKER_STATE,
                "name" => self.name.to_string(),
                "state" => s.as_str()
            )
            .set(if s == current { 1.0 } else { 0.0 });
        }
    }
}

fn jittered(wait: Duration, jitter: f64) -> Duration {
    if jitter <= 0.0 || wait.is_zero() {
        return wait;
    }
    let factor = 1.0 + jitter * (fastrand::f64() * 2.0 - 1.0);
    Duration::try_from_secs_f64(wait.as_secs_f64() * factor.max(0.0)).unwrap_or(wait)
}
