//! Model test: random sequences of calls, outcomes, cancellations, clock advances, operator
//! commands and config changes run against the breaker and against a small, obviously-correct
//! reference model. States, admit/refuse decisions and retry-after times must agree at every
//! step, half-open must never be stranded (no trial in flight yet no trial admitted), and at the
//! end, with every call still running left hung forever, the breaker must admit a call again
//! after enough time (unless an operator forced it open).
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::collections::VecDeque;
use std::time::Duration;

use palisade_breaker::{
    BreakerCommand, BreakerConfig, CircuitBreaker, FailureRateConfig, Outcome, Permit,
    RejectReason, SlidingWindow, State,
};
use palisade_core::ManualClock;
use proptest::prelude::*;

const WAIT_MS: u64 = 10_000;
const MAX_WAIT_MS: u64 = 40_000;
const WINDOW: usize = 4;
const HOUR_MS: u64 = 3_600_000;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Complete(usize, Outcome),
    Cancel(usize),
    /// A permit forgotten (`mem::forget`): it will never report nor give its slot back.
    Leak(usize),
    Advance(u64),
    Reset,
    ForceOpen,
    Disable,
    MetricsOnly,
    /// `update_config` of `half_open_max_calls`.
    SetHalfOpenMax(u32),
    /// `set_config` of the whole config with another `consecutive_failures`.
    SetThreshold(u32),
    /// `update_config` of `max_wait_in_half_open` (milliseconds).
    SetHalfOpenWait(u64),
    /// Compare states and snapshots (after every step anyway when the case is `eager`).
    Observe,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Failure),
        2 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ];
    // Operator states other than closed last until a reset: rare enough that most of a
    // sequence runs the closed → open → half-open cycle.
    prop_oneof![
        12 => Just(Op::Acquire),
        12 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Complete(i, o)),
        2 => any::<usize>().prop_map(Op::Cancel),
        1 => any::<usize>().prop_map(Op::Leak),
        8 => (0u64..25_000).prop_map(Op::Advance),
        2 => Just(Op::Reset),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::MetricsOnly),
        3 => (1u32..5).prop_map(Op::SetHalfOpenMax),
        1 => (1u32..5).prop_map(Op::SetThreshold),
        3 => (1u64..40_000).prop_map(Op::SetHalfOpenWait),
        3 => Just(Op::Observe),
    ]
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Untracked,
    Normal,
    Trial,
}

#[derive(Debug, Clone, Copy)]
struct ModelPermit {
    generation: u64,
    kind: Kind,
}

/// The reference: plain fields, no atomics, every rule spelled out once.
///
/// Time-driven transitions happen at the instant they fall due, whoever notices them later:
/// an open breaker turns half-open at `open_until`, and a half-open breaker with trials in
/// flight and no trial admitted or reported for `max_wait` re-opens at that deadline.
struct Model {
    threshold: u32,
    k: u32,
    max_wait: u64,
    rate: bool,
    state: State,
    generation: u64,
    open_until_ms: u64,
    /// Last trial admitted or reported (or entry into half-open).
    last_trial_ms: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    trips: u32,
    in_flight: u32,
    successes: u32,
}

impl Model {
    fn new(threshold: u32, k: u32, max_wait: u64, rate: bool) -> Self {
        Model {
            threshold,
            k,
            max_wait,
            rate,
            state: State::Closed,
            generation: 0,
            open_until_ms: 0,
            last_trial_ms: 0,
            consecutive: 0,
            window: VecDeque::new(),
            trips: 0,
            in_flight: 0,
            successes: 0,
        }
    }

    fn go(&mut self, to: State, at: u64) {
        match to {
            State::Open => {
                self.trips += 1;
                let wait = (WAIT_MS << (self.trips - 1).min(10)).min(MAX_WAIT_MS);
                self.open_until_ms = at + wait;
            }
            State::HalfOpen => self.last_trial_ms = at,
            State::Closed => {
                self.trips = 0;
                self.consecutive = 0;
                self.window.clear();
            }
            State::MetricsOnly => {
                self.consecutive = 0;
                self.window.clear();
            }
            _ => {}
        }
        self.state = to;
        self.generation += 1;
        self.in_flight = 0;
        self.successes = 0;
    }

    fn refresh(&mut self, now: u64) -> State {
        loop {
            if self.state == State::Open && now >= self.open_until_ms {
                self.go(State::HalfOpen, self.open_until_ms);
            } else if self.state == State::HalfOpen
                && self.in_flight > 0
                && now >= self.last_trial_ms + self.max_wait
            {
                self.go(State::Open, self.last_trial_ms + self.max_wait);
            } else {
                return self.state;
            }
        }
    }

    fn acquire(&mut self, now: u64) -> Result<ModelPermit, (RejectReason, Option<u64>)> {
        let kind = match self.refresh(now) {
            State::Closed | State::MetricsOnly => Kind::Normal,
            State::Disabled => Kind::Untracked,
            State::ForcedOpen => return Err((RejectReason::ForcedOpen, None)),
            State::Open => return Err((RejectReason::Open, Some(self.open_until_ms - now))),
            State::HalfOpen => {
                if self.in_flight >= self.k || self.in_flight + self.successes >= self.k {
                    return Err((RejectReason::HalfOpenFull, None));
                }
                self.in_flight += 1;
                self.last_trial_ms = now;
                Kind::Trial
            }
        };
        Ok(ModelPermit {
            generation: self.generation,
            kind,
        })
    }

    fn complete(&mut self, p: ModelPermit, outcome: Option<Outcome>, now: u64) {
        self.refresh(now);
        if p.generation != self.generation {
            return;
        }
        match p.kind {
            Kind::Untracked => {}
            Kind::Normal => {
                let failed = match outcome {
                    Some(Outcome::Failure) => true,
                    Some(Outcome::Success) => false,
                    _ => return,
                };
                let trips = self.state == State::Closed;
                if self.rate {
                    self.window.push_back(failed);
                    if self.window.len() > WINDOW {
                        self.window.pop_front();
                    }
                    let fails = self.window.iter().filter(|f| **f).count();
                    if trips && self.window.len() == WINDOW && fails * 2 >= WINDOW {
                        self.go(State::Open, now);
                        return;
                    }
                }
                if failed {
                    self.consecutive += 1;
                    if trips && self.consecutive >= self.threshold {
                        self.go(State::Open, now);
                    }
                } else {
                    self.consecutive = 0;
                }
            }
            Kind::Trial => {
                self.last_trial_ms = now;
                match outcome {
                    Some(Outcome::Failure) => self.go(State::Open, now),
                    Some(Outcome::Success) => {
                        self.in_flight -= 1;
                        self.successes += 1;
                        if self.successes >= self.k {
                            self.go(State::Closed, now);
                        }
                    }
                    _ => self.in_flight -= 1,
                }
            }
        }
    }

    fn command(&mut self, to: State, now: u64) {
        self.refresh(now);
        if self.state == to {
            if to == State::Closed {
                self.trips = 0;
                self.consecutive = 0;
                self.window.clear();
            }
            return;
        }
        self.go(to, now);
    }

    /// A config change: what fell due under the old config happened first; then the new
    /// values apply from `now`.
    fn configure(&mut self, now: u64, threshold: u32, k: u32, max_wait: u64) {
        self.refresh(now);
        self.threshold = threshold;
        self.k = k;
        self.max_wait = max_wait;
        if self.state == State::HalfOpen {
            if self.successes >= self.k {
                self.go(State::Closed, now);
            } else if self.in_flight > 0 && now >= self.last_trial_ms + self.max_wait {
                self.go(State::Open, now);
            }
        }
    }

    /// Half-open with nothing in flight must admit a trial: nothing else could move it.
    fn stranded(&self) -> bool {
        self.state == State::HalfOpen && self.in_flight == 0 && self.successes >= self.k
    }
}

fn config(threshold: u32, k: u32, half_open_wait_ms: u64, rate: bool) -> BreakerConfig {
    BreakerConfig {
        consecutive_failures: threshold,
        failure_rate: rate.then(|| FailureRateConfig {
            window: SlidingWindow::Count {
                size: WINDOW as u32,
            },
            minimum_calls: WINDOW as u32,
            failure_rate_threshold: 50.0,
            ..Default::default()
        }),
        wait_duration: Duration::from_millis(WAIT_MS),
        max_wait_duration: Some(Duration::from_millis(MAX_WAIT_MS)),
        half_open_max_calls: k,
        max_wait_in_half_open: Duration::from_millis(half_open_wait_ms),
        ..Default::default()
    }
}

fn compare_acquire(
    step: usize,
    real: Result<Permit<'_>, palisade_breaker::Rejected>,
    want: Result<ModelPermit, (RejectReason, Option<u64>)>,
) -> Result<Option<(Permit<'_>, ModelPermit)>, TestCaseError> {
    match (real, want) {
        (Ok(p), Ok(m)) => {
            prop_assert_eq!(p.is_trial(), m.kind == Kind::Trial, "step {}", step);
            Ok(Some((p, m)))
        }
        (Err(r), Err((reason, after))) => {
            prop_assert_eq!(r.reason(), reason, "step {}", step);
            prop_assert_eq!(
                r.retry_after(),
                after.map(Duration::from_millis),
                "step {}",
                step
            );
            Ok(None)
        }
        (real, want) => {
            prop_assert!(
                false,
                "step {step}: breaker admitted={} model admitted={}",
                real.is_ok(),
                want.is_ok()
            );
            unreachable!()
        }
    }
}

fn check_state(
    cb: &CircuitBreaker,
    model: &mut Model,
    now: u64,
    step: usize,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(cb.state(), model.refresh(now), "state after step {}", step);
    prop_assert!(!model.stranded(), "model stranded after step {}", step);
    if model.state == State::HalfOpen {
        let snap = cb.snapshot().half_open.expect("half-open snapshot");
        prop_assert_eq!(
            snap.in_flight,
            model.in_flight,
            "in flight after step {}",
            step
        );
        prop_assert_eq!(
            snap.successes,
            model.successes,
            "successes after step {}",
            step
        );
        prop_assert_eq!(snap.max_calls, model.k, "max calls after step {}", step);
        prop_assert_eq!(
            snap.reopen_in_ms,
            (model.in_flight > 0).then(|| model.last_trial_ms + model.max_wait - now),
            "reopen in after step {}",
            step
        );
        prop_assert!(
            snap.in_flight > 0 || snap.successes < snap.max_calls,
            "half-open stranded after step {}: {:?}",
            step,
            snap
        );
    }
    Ok(())
}

/// One case. With `eager`, states are compared after every step, so the breaker applies every
/// time-driven transition as soon as it falls due; without, only at `Observe` and `Acquire`, so
/// outcomes, commands and config changes meet transitions that fell due unnoticed, which must
/// change nothing (they happened at their deadline). Without `operators`, operator commands are
/// skipped, so the whole sequence exercises the closed → open → half-open cycle.
fn run(
    threshold: u32,
    k: u32,
    half_open_wait_ms: u64,
    rate: bool,
    eager: bool,
    operators: bool,
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder("model")
        .config(config(threshold, k, half_open_wait_ms, rate))
        .clock(clock.shared())
        .build()
        .unwrap();
    let mut model = Model::new(threshold, k, half_open_wait_ms, rate);
    let mut now = 0u64;
    let mut permits: Vec<(Permit<'_>, ModelPermit)> = Vec::new();
    let steps = ops.len();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Acquire => {
                let want = model.acquire(now);
                if let Some(pair) = compare_acquire(step, cb.try_acquire(), want)? {
                    permits.push(pair);
                }
            }
            Op::Complete(i, outcome) if !permits.is_empty() => {
                let (p, m) = permits.remove(i % permits.len());
                p.record(outcome);
                model.complete(m, Some(outcome), now);
            }
            Op::Cancel(i) if !permits.is_empty() => {
                let (p, m) = permits.remove(i % permits.len());
                drop(p);
                model.complete(m, None, now);
            }
            Op::Leak(i) if !permits.is_empty() => {
                let (p, _) = permits.remove(i % permits.len());
                std::mem::forget(p);
            }
            Op::Complete(..) | Op::Cancel(_) | Op::Leak(_) => {}
            Op::Advance(ms) => {
                now += ms;
                clock.advance(Duration::from_millis(ms));
            }
            Op::Reset | Op::ForceOpen | Op::Disable | Op::MetricsOnly if !operators => {}
            Op::Reset => {
                cb.reset();
                model.command(State::Closed, now);
            }
            Op::ForceOpen => {
                cb.force_open();
                model.command(State::ForcedOpen, now);
            }
            Op::Disable => {
                cb.disable();
                model.command(State::Disabled, now);
            }
            Op::MetricsOnly => {
                cb.metrics_only();
                model.command(State::MetricsOnly, now);
            }
            Op::SetHalfOpenMax(k) => {
                let cmd = serde_json::json!({
                    "action": "update_config",
                    "config": {"half_open_max_calls": k},
                });
                cb.apply(serde_json::from_value::<BreakerCommand>(cmd).unwrap())
                    .unwrap();
                model.configure(now, model.threshold, k, model.max_wait);
            }
            Op::SetThreshold(t) => {
                let mut cfg = cb.config();
                cfg.consecutive_failures = t;
                cb.set_config(cfg).unwrap();
                model.configure(now, t, model.k, model.max_wait);
            }
            Op::SetHalfOpenWait(ms) => {
                let cmd = serde_json::json!({
                    "action": "update_config",
                    "config": {"max_wait_in_half_open": ms},
                });
                cb.apply(serde_json::from_value::<BreakerCommand>(cmd).unwrap())
                    .unwrap();
                model.configure(now, model.threshold, model.k, ms);
            }
            Op::Observe => check_state(&cb, &mut model, now, step)?,
        }
        model.refresh(now);
        prop_assert!(!model.stranded(), "model stranded after step {}", step);
        if eager {
            check_state(&cb, &mut model, now, step)?;
        }
    }

    // Liveness: every call still running hangs forever. Time alone must bring the breaker back
    // to admitting calls, unless an operator forced it open.
    let mut admitted = false;
    for round in 0..3 {
        let step = steps + round;
        if model.refresh(now) == State::ForcedOpen {
            break;
        }
        let want = model.acquire(now);
        if let Some(pair) = compare_acquire(step, cb.try_acquire(), want)? {
            permits.push(pair);
            admitted = true;
            break;
        }
        now += HOUR_MS;
        clock.advance(Duration::from_millis(HOUR_MS));
        check_state(&cb, &mut model, now, step)?;
    }
    prop_assert!(
        admitted || cb.state() == State::ForcedOpen,
        "stranded: {:?}",
        cb.snapshot()
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_model(
        threshold in 1u32..5,
        k in 1u32..4,
        half_open_wait_ms in prop_oneof![1u64..5_000, 1u64..90_000],
        rate in any::<bool>(),
        eager in any::<bool>(),
        operators in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..160),
    ) {
        run(threshold, k, half_open_wait_ms, rate, eager, operators, ops)?;
    }
}
