//! The state every clone of a breaker shares, and the engine that applies the state machine's
//! decisions ([`crate::machine`]) to it: atomics for the hot path, a mutex for transitions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{EventBus, EventKind, SharedClock, StripedCounter, metrics as names};
use parking_lot::Mutex;

use crate::classify::Outcome;
use crate::config::BreakerConfig;
use crate::error::{RejectReason, Rejected};
use crate::machine::{self, Admit, Cause, Inputs, Move, TrialStep};
use crate::permit::{self, Permit, PermitKind};
use crate::state::{State, Word};
use crate::window::{Trip, Window};

/// `Permit::started` of a call that is not timed.
pub(crate) const NOT_TIMED: u64 = u64::MAX;
/// `Shared::slow_nanos` when slow calls are not tracked.
pub(crate) const SLOW_OFF: u64 = u64::MAX;

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
    pub(crate) word: AtomicU64,
    pub(crate) consecutive_failures: AtomicU32,
    /// Clock reading (ns) at which an open breaker turns half-open.
    pub(crate) open_until: AtomicU64,
    /// Clock reading (ns) of the last half-open trial admitted or reported (or of the move to
    /// half-open). Only ever raised while half-open (`fetch_max`); set on entering half-open.
    pub(crate) last_trial: AtomicU64,
    // Hot copies of config fields, so the call path never takes the control lock.
    pub(crate) threshold: AtomicU32,
    pub(crate) half_open_max: AtomicU32,
    pub(crate) half_open_wait: AtomicU64,
    pub(crate) has_window: AtomicBool,
    pub(crate) timing: AtomicBool,
    pub(crate) slow_nanos: AtomicU64,
    pub(crate) window: Mutex<Option<Window>>,
    pub(crate) ctl: Mutex<Ctl>,
    /// How sharing goes, when the breaker is shared (reported from outside; snapshots only).
    pub(crate) sharing: Mutex<Option<crate::sharing::SharingSnapshot>>,
    pub(crate) counters: Counters,
    pub(crate) clock: SharedClock,
    pub(crate) events: EventBus,
}

impl Shared {
    /// A closed breaker with `config` (already validated).
    pub(crate) fn new(
        name: Arc<str>,
        config: BreakerConfig,
        clock: SharedClock,
        events: EventBus,
    ) -> Shared {
        let shared = Shared {
            name,
            word: AtomicU64::new(Word::new(State::Closed, 0).0),
            consecutive_failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            last_trial: AtomicU64::new(0),
            threshold: AtomicU32::new(0),
            half_open_max: AtomicU32::new(0),
            half_open_wait: AtomicU64::new(0),
            has_window: AtomicBool::new(false),
            timing: AtomicBool::new(false),
            slow_nanos: AtomicU64::new(SLOW_OFF),
            window: Mutex::new(None),
            ctl: Mutex::new(Ctl {
                current_wait: config.wait_duration,
                config: config.clone(),
                trips: 0,
                last_transition: None,
            }),
            sharing: Mutex::new(None),
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
        shared.apply_hot_config(&config, None);
        shared
    }

    #[inline]
    pub(crate) fn load(&self) -> Word {
        Word(self.word.load(Ordering::Acquire))
    }

    /// What the state machine reads besides the word.
    pub(crate) fn inputs(&self) -> Inputs {
        Inputs {
            now: self.clock.now_nanos(),
            open_until: self.open_until.load(Ordering::Acquire),
            last_trial: self.last_trial.load(Ordering::Acquire),
            half_open_max: self.half_open_max.load(Ordering::Relaxed),
            half_open_wait: self.half_open_wait.load(Ordering::Relaxed),
        }
    }

    #[inline]
    pub(crate) fn permit(&self, generation: u32, kind: PermitKind) -> Permit<'_> {
        let started = if kind != PermitKind::Untracked && self.timing.load(Ordering::Relaxed) {
            self.clock.now_nanos()
        } else {
            NOT_TIMED
        };
        Permit {
            shared: self,
            ticket: permit::ticket(generation, kind),
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

    /// Admission in every state but the ones `try_acquire` admits inline.
    #[cold]
    pub(crate) fn acquire_slow(&self, mut w: Word) -> Result<Permit<'_>, Rejected> {
        loop {
            match machine::admit(w, || self.inputs()) {
                Admit::Permit(kind) => return Ok(self.permit(w.generation(), kind)),
                Admit::Refuse(reason, after) => {
                    return Err(self.reject(reason, after.map(Duration::from_nanos)));
                }
                Admit::Due(_) => w = self.settle_now(),
                Admit::Trial { next, now } => {
                    // Note the activity before publishing the slot: whoever sees the trial in
                    // flight also sees its deadline start afresh.
                    self.last_trial.fetch_max(now, Ordering::AcqRel);
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

    /// The current word after applying every transition that has fallen due (lock-free unless
    /// one has).
    pub(crate) fn refresh(&self) -> Word {
        let w = self.load();
        if machine::due(w, || self.inputs()).is_none() {
            return w;
        }
        self.settle_now()
    }

    fn settle_now(&self) -> Word {
        let mut ctl = self.ctl.lock();
        self.settle(&mut ctl)
    }

    /// Applies every transition that has fallen due; returns the word after them. Called with
    /// the control lock held, so the state and generation cannot change under it.
    pub(crate) fn settle(&self, ctl: &mut Ctl) -> Word {
        loop {
            let w = self.load();
            match machine::due(w, || self.inputs()) {
                // A transition resets the trial counters, so this ends within two moves
                // (half-open → open → half-open).
                Some(m) => {
                    self.transition(ctl, w, m);
                }
                None => return w,
            }
        }
    }

    /// Reports the outcome of the call a permit ticket was issued for (`None`: cancelled).
    #[inline]
    pub(crate) fn on_ticket(&self, ticket: u64, started: u64, outcome: Option<Outcome>) {
        let (generation, kind) = permit::unpack(ticket);
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

    /// Whether a call was slow (an [`Outcome::Slow`], or a timed call that took at least
    /// `slow_call_duration`), counting it if so.
    fn check_slow(&self, started: u64, outcome: Outcome) -> bool {
        if outcome == Outcome::Slow {
            self.counters.slow.incr();
            return true;
        }
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
            // Counted as slow only (in `check_slow`).
            Outcome::Slow => {}
        }
    }

    #[inline]
    fn on_normal(&self, generation: u32, started: u64, outcome: Outcome) {
        self.count(outcome);
        if outcome == Outcome::Ignored {
            return;
        }
        let slow = self.check_slow(started, outcome);
        let w = self.load();
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
        if outcome == Outcome::Slow {
            // Neither a failure nor a success: the run of consecutive failures stands.
            return;
        }
        if failed {
            let n = self.consecutive_failures.fetch_add(1, Ordering::AcqRel) + 1;
            let threshold = self.threshold.load(Ordering::Relaxed);
            if machine::consecutive_failures_trip(w.state(), n, threshold) {
                self.trip(w, Cause::ConsecutiveFailures(n));
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
            self.trip(
                w,
                match trip {
                    Trip::FailureRate(r) => Cause::FailureRate(r),
                    Trip::SlowCallRate(r) => Cause::SlowCallRate(r),
                },
            );
        }
    }

    #[cold]
    fn trip(&self, seen: Word, cause: Cause) {
        let mut ctl = self.ctl.lock();
        let at = self.clock.now_nanos();
        self.transition(
            &mut ctl,
            seen,
            Move {
                to: State::Open,
                at,
                cause,
            },
        );
    }

    #[cold]
    fn on_trial(&self, generation: u32, started: u64, outcome: Option<Outcome>) {
        if let Some(o) = outcome {
            self.count(o);
        }
        let slow = outcome.is_some_and(|o| self.check_slow(started, o));
        let effective = match outcome {
            Some(Outcome::Success | Outcome::Slow) if slow => Some(Outcome::Failure),
            other => other,
        };
        let mut w = self.load();
        loop {
            match machine::trial_outcome(w, generation, effective, || self.inputs()) {
                TrialStep::Stale => return,
                TrialStep::Due(_) => w = self.settle_now(),
                TrialStep::Reopen(m) => {
                    let mut ctl = self.ctl.lock();
                    self.transition(&mut ctl, w, m);
                    return;
                }
                TrialStep::Release { next, now } => {
                    self.last_trial.fetch_max(now, Ordering::AcqRel);
                    match self.word.compare_exchange_weak(
                        w.0,
                        next.0,
                        Ordering::AcqRel,
                        Ordering::Acquire,
                    ) {
                        Ok(_) => {
                            // Read the limit after the swap: a concurrent config change either
                            // sees this success in the word or has stored its limit before
                            // (see `CircuitBreaker::set_config`), so one of us closes.
                            let max = self.half_open_max.load(Ordering::Acquire);
                            if let Some(m) = machine::enough_successes(next, max, now) {
                                let mut ctl = self.ctl.lock();
                                self.transition(&mut ctl, next, m);
                            }
                            return;
                        }
                        Err(actual) => w = Word(actual),
                    }
                }
            }
        }
    }

    /// Makes `m` from `from` (matched on state and generation; trial counters may have moved).
    /// Must be called with the control lock held. Returns whether it happened.
    pub(crate) fn transition(&self, ctl: &mut Ctl, from: Word, m: Move) -> bool {
        let mut cur = self.load();
        if cur.state() != from.state() || cur.generation() != from.generation() {
            return false;
        }
        let to = m.to;
        // Prepare what readers of the new state will look at, before publishing it.
        match to {
            State::Open => {
                ctl.trips = ctl.trips.saturating_add(1);
                let wait = machine::jittered(
                    ctl.config.wait_for_trip(ctl.trips),
                    ctl.config.jitter,
                    fastrand::f64(),
                );
                ctl.current_wait = wait;
                let until =
                    m.at.saturating_add(palisade_core::clock::saturating_nanos(wait));
                self.open_until.store(until, Ordering::Release);
            }
            State::HalfOpen => self.last_trial.store(m.at, Ordering::Release),
            State::Closed | State::MetricsOnly => self.clear_counts(ctl, to == State::Closed),
            State::ForcedOpen | State::Disabled => {}
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
        let reason = m.cause.to_string();
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

    /// Operator command: move to `to` from whatever state the breaker is in (after whatever
    /// had fallen due).
    pub(crate) fn force_state(&self, to: State, reason: &'static str) {
        let mut ctl = self.ctl.lock();
        let cur = self.settle(&mut ctl);
        if cur.state() == to {
            if to == State::Closed {
                // Reset of a closed breaker: clear what it has counted so far.
                self.clear_counts(&mut ctl, true);
            }
            return;
        }
        let at = self.clock.now_nanos();
        self.transition(
            &mut ctl,
            cur,
            Move {
                to,
                at,
                cause: Cause::Admin(reason),
            },
        );
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
