//! Model test: random sequences of calls, outcomes, cancellations, clock advances and operator
//! commands run against the breaker and against a small, obviously-correct reference model.
//! States, admit/refuse decisions and retry-after times must agree at every step.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::collections::VecDeque;
use std::time::Duration;

use palisade_breaker::{
    BreakerConfig, CircuitBreaker, FailureRateConfig, Outcome, Permit, RejectReason, SlidingWindow,
    State,
};
use palisade_core::ManualClock;
use proptest::prelude::*;

const WAIT_MS: u64 = 10_000;
const MAX_WAIT_MS: u64 = 40_000;
const WINDOW: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Acquire,
    Complete(usize, Outcome),
    Cancel(usize),
    Advance(u64),
    Reset,
    ForceOpen,
    Disable,
    MetricsOnly,
}

fn op() -> impl Strategy<Value = Op> {
    let outcome = prop_oneof![
        3 => Just(Outcome::Failure),
        2 => Just(Outcome::Success),
        1 => Just(Outcome::Ignored),
    ];
    prop_oneof![
        6 => Just(Op::Acquire),
        6 => (any::<usize>(), outcome).prop_map(|(i, o)| Op::Complete(i, o)),
        1 => any::<usize>().prop_map(Op::Cancel),
        3 => (0u64..25_000).prop_map(Op::Advance),
        1 => Just(Op::Reset),
        1 => Just(Op::ForceOpen),
        1 => Just(Op::Disable),
        1 => Just(Op::MetricsOnly),
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
struct Model {
    threshold: u32,
    k: u32,
    rate: bool,
    state: State,
    generation: u64,
    open_until_ms: u64,
    consecutive: u32,
    window: VecDeque<bool>,
    trips: u32,
    in_flight: u32,
    successes: u32,
}

impl Model {
    fn new(threshold: u32, k: u32, rate: bool) -> Self {
        Model {
            threshold,
            k,
            rate,
            state: State::Closed,
            generation: 0,
            open_until_ms: 0,
            consecutive: 0,
            window: VecDeque::new(),
            trips: 0,
            in_flight: 0,
            successes: 0,
        }
    }

    fn go(&mut self, to: State, now: u64) {
        match to {
            State::Open => {
                self.trips += 1;
                let wait = (WAIT_MS << (self.trips - 1).min(10)).min(MAX_WAIT_MS);
                self.open_until_ms = now + wait;
            }
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
        if self.state == State::Open && now >= self.open_until_ms {
            self.go(State::HalfOpen, now);
        }
        self.state
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
                Kind::Trial
            }
        };
        Ok(ModelPermit {
            generation: self.generation,
            kind,
        })
    }

    fn complete(&mut self, p: ModelPermit, outcome: Option<Outcome>, now: u64) {
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
            Kind::Trial => match outcome {
                Some(Outcome::Failure) => self.go(State::Open, now),
                Some(Outcome::Success) => {
                    self.in_flight -= 1;
                    self.successes += 1;
                    if self.successes >= self.k {
                        self.go(State::Closed, now);
                    }
                }
                _ => self.in_flight -= 1,
            },
        }
    }

    fn command(&mut self, to: State, now: u64) {
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
}

fn run(threshold: u32, k: u32, rate: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let clock = ManualClock::new();
    let cfg = BreakerConfig {
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
        ..Default::default()
    };
    let cb = CircuitBreaker::builder("model")
        .config(cfg)
        .clock(clock.shared())
        .build()
        .unwrap();
    let mut model = Model::new(threshold, k, rate);
    let mut now = 0u64;
    let mut permits: Vec<(Permit<'_>, ModelPermit)> = Vec::new();

    for (step, op) in ops.into_iter().enumerate() {
        match op {
            Op::Acquire => {
                let real = cb.try_acquire();
                let want = model.acquire(now);
                match (real, want) {
                    (Ok(p), Ok(m)) => {
                        prop_assert_eq!(p.is_trial(), m.kind == Kind::Trial, "step {}", step);
                        permits.push((p, m));
                    }
                    (Err(r), Err((reason, after))) => {
                        prop_assert_eq!(r.reason(), reason, "step {}", step);
                        prop_assert_eq!(
                            r.retry_after(),
                            after.map(Duration::from_millis),
                            "step {}",
                            step
                        );
                    }
                    (real, want) => prop_assert!(
                        false,
                        "step {step}: breaker admitted={} model admitted={}",
                        real.is_ok(),
                        want.is_ok()
                    ),
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
            Op::Complete(..) | Op::Cancel(_) => {}
            Op::Advance(ms) => {
                now += ms;
                clock.advance(Duration::from_millis(ms));
            }
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
        }
        prop_assert_eq!(cb.state(), model.refresh(now), "state after step {}", step);
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
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn breaker_agrees_with_model(
        threshold in 1u32..5,
        k in 1u32..4,
        rate in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..120),
    ) {
        run(threshold, k, rate, ops)?;
    }
}
