//! The state machine as pure functions: given the packed state word, the instants and limits it
//! depends on, and an event, what happens next.
//!
//! Nothing here reads a clock, touches an atomic or takes a lock. The handle
//! ([`Shared`](crate::shared::Shared)) loads the word and the [`Inputs`], asks here, and applies
//! the answer: a compare-and-swap of the word for trial accounting, or a [`Move`] (a
//! transition, under the control lock). So every rule is tested below without a clock or a
//! runtime, the way governor separates its GCRA state, clock and quota.
//!
//! Time-driven transitions happen at the instant they fall due, whoever notices them later: an
//! open breaker turns half-open at `open_until`, and a half-open breaker whose trials in flight
//! have gone `half_open_wait` without news re-opens at that deadline. A [`Move`] carries that
//! instant, so what the breaker does never depends on when a snapshot happened to look.

use std::fmt;
use std::time::Duration;

use crate::classify::Outcome;
use crate::error::RejectReason;
use crate::permit::PermitKind;
use crate::state::{State, Word};

/// What the machine reads besides the word: instants on the breaker's clock (nanoseconds) and
/// the limits in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Inputs {
    /// The clock now.
    pub(crate) now: u64,
    /// When an open breaker turns half-open.
    pub(crate) open_until: u64,
    /// When a half-open breaker last admitted a trial or heard from one (or turned half-open).
    pub(crate) last_trial: u64,
    /// `half_open_max_calls`: trials at once, and successes that close.
    pub(crate) half_open_max: u32,
    /// `max_wait_in_half_open`.
    pub(crate) half_open_wait: u64,
}

/// A transition to make.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Move {
    /// The state to move to.
    pub(crate) to: State,
    /// When it happens (clock nanoseconds): an open period starts here.
    pub(crate) at: u64,
    /// Why, for the transition event and the snapshot.
    pub(crate) cause: Cause,
}

/// Why a transition happens; displayed as the transition's reason.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Cause {
    /// Open long enough: trial calls may go.
    WaitElapsed,
    /// Trials in flight with no news for `waited`: presumed hung.
    TrialsHung { in_flight: u32, waited: u64 },
    /// A trial call failed (or was slow).
    TrialFailed,
    /// Enough trial calls succeeded.
    TrialsSucceeded { successes: u32 },
    /// `half_open_max_calls` was lowered to no more than the successes already seen.
    MaxCallsLowered { successes: u32, max: u32 },
    /// The consecutive-failure threshold was reached.
    ConsecutiveFailures(u32),
    /// The failure rate over the window reached its threshold.
    FailureRate(f64),
    /// The slow-call rate over the window reached its threshold.
    SlowCallRate(f64),
    /// An operator command.
    Admin(&'static str),
    /// The instances the breaker is shared with.
    Shared(crate::sharing::SharedTrip),
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Cause::WaitElapsed => f.write_str("wait duration elapsed"),
            Cause::TrialsHung { in_flight, waited } => write!(
                f,
                "{in_flight} trial calls in flight with no outcome for {} ms (max_wait_in_half_open)",
                Duration::from_nanos(waited).as_millis()
            ),
            Cause::TrialFailed => f.write_str("trial call failed"),
            Cause::TrialsSucceeded { successes } => {
                write!(f, "{successes} trial calls succeeded")
            }
            Cause::MaxCallsLowered { successes, max } => write!(
                f,
                "{successes} trial calls succeeded (half_open_max_calls is now {max})"
            ),
            Cause::ConsecutiveFailures(n) => write!(f, "{n} consecutive failures"),
            Cause::FailureRate(r) => write!(f, "failure rate {r:.1}% over the window"),
            Cause::SlowCallRate(r) => write!(f, "slow-call rate {r:.1}% over the window"),
            Cause::Admin(what) => f.write_str(what),
            Cause::Shared(why) => why.fmt(f),
        }
    }
}

/// The deadline by which a half-open breaker's trials in flight must give news, if any are in
/// flight.
pub(crate) fn hung_deadline(w: Word, v: &Inputs) -> Option<u64> {
    (w.state() == State::HalfOpen && w.in_flight() > 0)
        .then(|| v.last_trial.saturating_add(v.half_open_wait))
}

/// The time-driven transition due now, if any. `inputs` is only called for states whose
/// transitions depend on the time.
pub(crate) fn due(w: Word, inputs: impl FnOnce() -> Inputs) -> Option<Move> {
    match w.state() {
        State::Open => {
            let v = inputs();
            (v.now >= v.open_until).then_some(Move {
                to: State::HalfOpen,
                at: v.open_until,
                cause: Cause::WaitElapsed,
            })
        }
        State::HalfOpen if w.in_flight() > 0 => {
            let v = inputs();
            let deadline = hung_deadline(w, &v)?;
            (v.now >= deadline).then_some(Move {
                to: State::Open,
                at: deadline,
                cause: Cause::TrialsHung {
                    in_flight: w.in_flight(),
                    waited: v.half_open_wait,
                },
            })
        }
        _ => None,
    }
}

/// The answer to "may I make a call?".
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Admit {
    /// Yes, with a permit of this kind; the word does not change.
    Permit(PermitKind),
    /// Yes, as a trial: swap the word for `next` (one more in flight), noting trial activity at
    /// `now`.
    Trial { next: Word, now: u64 },
    /// No (retry after this many nanoseconds, when known).
    Refuse(RejectReason, Option<u64>),
    /// A time-driven transition is due: make it, then ask again.
    Due(Move),
}

/// Whether a half-open breaker has no room for another trial.
#[inline]
const fn trials_full(w: Word, max: u32) -> bool {
    let (inf, ok) = (w.in_flight(), w.successes());
    inf >= max || inf + ok >= max
}

/// Admission. `inputs` is only called in the open and half-open states.
pub(crate) fn admit(w: Word, inputs: impl FnOnce() -> Inputs) -> Admit {
    match w.state() {
        State::Closed | State::MetricsOnly => Admit::Permit(PermitKind::Normal),
        State::Disabled => Admit::Permit(PermitKind::Untracked),
        State::ForcedOpen => Admit::Refuse(RejectReason::ForcedOpen, None),
        State::Open | State::HalfOpen => {
            let v = inputs();
            if let Some(m) = due(w, || v) {
                return Admit::Due(m);
            }
            if w.state() == State::Open {
                return Admit::Refuse(RejectReason::Open, Some(v.open_until.saturating_sub(v.now)));
            }
            if trials_full(w, v.half_open_max) {
                return Admit::Refuse(RejectReason::HalfOpenFull, None);
            }
            Admit::Trial {
                next: w.with_trials(w.in_flight() + 1, w.successes()),
                now: v.now,
            }
        }
    }
}

/// What a trial's outcome does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum TrialStep {
    /// The trial belongs to a state that is gone (its slot went with it): nothing.
    Stale,
    /// A time-driven transition fell due before this outcome: make it, then ask again (the
    /// trial will then be stale).
    Due(Move),
    /// The trial failed: re-open.
    Reopen(Move),
    /// Give the slot back (counting a success if it was one): swap the word for `next`, noting
    /// trial activity at `now`; then see [`enough_successes`].
    Release { next: Word, now: u64 },
}

/// A trial call of `generation` ended: `outcome` is what it counts as (a slow success counts as
/// a failure), `None` if it was cancelled. `inputs` is only called if the trial is current.
pub(crate) fn trial_outcome(
    w: Word,
    generation: u32,
    outcome: Option<Outcome>,
    inputs: impl FnOnce() -> Inputs,
) -> TrialStep {
    if w.state() != State::HalfOpen || w.generation() != generation {
        return TrialStep::Stale;
    }
    let v = inputs();
    if let Some(m) = due(w, || v) {
        return TrialStep::Due(m);
    }
    match outcome {
        Some(Outcome::Failure) => TrialStep::Reopen(Move {
            to: State::Open,
            at: v.now,
            cause: Cause::TrialFailed,
        }),
        // A success frees the slot and counts; ignored or cancelled only frees the slot.
        _ => {
            let success = outcome == Some(Outcome::Success);
            TrialStep::Release {
                next: w.with_trials(
                    w.in_flight().saturating_sub(1),
                    w.successes() + u32::from(success),
                ),
                now: v.now,
            }
        }
    }
}

/// After a trial success was counted into `w`: close if that makes `max` successes.
pub(crate) fn enough_successes(w: Word, max: u32, now: u64) -> Option<Move> {
    (w.state() == State::HalfOpen && w.successes() >= max).then_some(Move {
        to: State::Closed,
        at: now,
        cause: Cause::TrialsSucceeded {
            successes: w.successes(),
        },
    })
}

/// After a config change (whatever fell due under the old config already applied): restore the
/// half-open invariants under the new limits, so no change can strand the breaker.
///
/// - Successes already at or above a lowered `half_open_max_calls` close the breaker: the new
///   config says they are enough (and no trial could be admitted to add one).
/// - Trials in flight already past a lowered `max_wait_in_half_open` re-open it now (the open
///   period starts at the change, not in the past).
///
/// Otherwise the half-open breaker either has room for a trial or trials in flight whose
/// outcome (or deadline) will move it.
pub(crate) fn after_config(w: Word, v: &Inputs) -> Option<Move> {
    if w.state() != State::HalfOpen {
        return None;
    }
    if w.successes() >= v.half_open_max {
        return Some(Move {
            to: State::Closed,
            at: v.now,
            cause: Cause::MaxCallsLowered {
                successes: w.successes(),
                max: v.half_open_max,
            },
        });
    }
    let deadline = hung_deadline(w, v)?;
    (v.now >= deadline).then_some(Move {
        to: State::Open,
        at: v.now,
        cause: Cause::TrialsHung {
            in_flight: w.in_flight(),
            waited: v.half_open_wait,
        },
    })
}

/// Whether a closed breaker's run of `n` consecutive failures trips it (`threshold` 0: never).
#[inline]
pub(crate) const fn consecutive_failures_trip(state: State, n: u32, threshold: u32) -> bool {
    threshold > 0 && n >= threshold && matches!(state, State::Closed)
}

/// Whether a half-open breaker could never move again: no trial in flight to report, and no
/// room to admit one. [`after_config`] and [`enough_successes`] keep this from ever holding.
#[cfg(test)]
const fn stranded(w: Word, max: u32) -> bool {
    matches!(w.state(), State::HalfOpen) && w.in_flight() == 0 && trials_full(w, max)
}

/// `wait` spread by `jitter` (a fraction, 0 to 1) using `sample`, uniform in `[0, 1)`.
pub(crate) fn jittered(wait: Duration, jitter: f64, sample: f64) -> Duration {
    if jitter <= 0.0 || wait.is_zero() {
        return wait;
    }
    let factor = 1.0 + jitter * (sample * 2.0 - 1.0);
    Duration::try_from_secs_f64(wait.as_secs_f64() * factor.max(0.0)).unwrap_or(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn inputs(now: u64) -> Inputs {
        Inputs {
            now,
            open_until: 60 * S,
            last_trial: 60 * S,
            half_open_max: 2,
            half_open_wait: 30 * S,
        }
    }

    fn half_open(in_flight: u32, successes: u32) -> Word {
        Word::new(State::HalfOpen, 7).with_trials(in_flight, successes)
    }

    #[test]
    fn closed_and_operator_states_never_read_the_time() {
        let no_clock = || -> Inputs { panic!("read the clock") };
        for s in [State::Closed, State::MetricsOnly] {
            assert_eq!(
                admit(Word::new(s, 1), no_clock),
                Admit::Permit(PermitKind::Normal)
            );
        }
        assert_eq!(
            admit(Word::new(State::Disabled, 1), no_clock),
            Admit::Permit(PermitKind::Untracked)
        );
        assert_eq!(
            admit(Word::new(State::ForcedOpen, 1), no_clock),
            Admit::Refuse(RejectReason::ForcedOpen, None)
        );
        for s in [State::Closed, State::ForcedOpen, State::Disabled] {
            assert_eq!(due(Word::new(s, 1), no_clock), None);
        }
        // Half-open with nothing in flight waits for nothing.
        assert_eq!(due(half_open(0, 1), no_clock), None);
    }

    #[test]
    fn open_refuses_until_its_wait_then_turns_half_open_at_the_deadline() {
        let open = Word::new(State::Open, 3);
        assert_eq!(
            admit(open, || inputs(59 * S)),
            Admit::Refuse(RejectReason::Open, Some(S))
        );
        let m = Move {
            to: State::HalfOpen,
            at: 60 * S,
            cause: Cause::WaitElapsed,
        };
        // Noticed late, it still happened at 60 s.
        assert_eq!(admit(open, || inputs(75 * S)), Admit::Due(m));
        assert_eq!(due(open, || inputs(60 * S)), Some(m));
    }

    #[test]
    fn half_open_admits_up_to_max_trials() {
        let v = inputs(61 * S);
        assert_eq!(
            admit(half_open(0, 0), || v),
            Admit::Trial {
                next: half_open(1, 0),
                now: 61 * S
            }
        );
        assert_eq!(
            admit(half_open(1, 0), || v),
            Admit::Trial {
                next: half_open(2, 0),
                now: 61 * S
            }
        );
        for full in [half_open(2, 0), half_open(1, 1), half_open(0, 2)] {
            assert_eq!(
                admit(full, || v),
                Admit::Refuse(RejectReason::HalfOpenFull, None)
            );
        }
    }

    #[test]
    fn trials_with_no_news_for_the_wait_are_hung_and_reopen_at_the_deadline() {
        let w = half_open(1, 1);
        assert_eq!(due(w, || inputs(90 * S - 1)), None);
        let hung = Move {
            to: State::Open,
            at: 90 * S,
            cause: Cause::TrialsHung {
                in_flight: 1,
                waited: 30 * S,
            },
        };
        assert_eq!(due(w, || inputs(90 * S)), Some(hung));
        assert_eq!(due(w, || inputs(500 * S)), Some(hung));
        assert_eq!(admit(w, || inputs(90 * S)), Admit::Due(hung));
        // A late outcome finds the transition due first.
        assert_eq!(
            trial_outcome(w, 7, Some(Outcome::Success), || inputs(91 * S)),
            TrialStep::Due(hung)
        );
        assert_eq!(
            hung.cause.to_string(),
            "1 trial calls in flight with no outcome for 30000 ms (max_wait_in_half_open)"
        );
    }

    #[test]
    fn trial_outcomes() {
        let w = half_open(2, 0);
        let v = || inputs(70 * S);
        assert_eq!(
            trial_outcome(w, 6, Some(Outcome::Success), v),
            TrialStep::Stale
        );
        assert_eq!(
            trial_outcome(Word::new(State::Closed, 7), 7, None, v),
            TrialStep::Stale
        );
        assert_eq!(
            trial_outcome(w, 7, Some(Outcome::Failure), v),
            TrialStep::Reopen(Move {
                to: State::Open,
                at: 70 * S,
                cause: Cause::TrialFailed
            })
        );
        let release = |next| TrialStep::Release { next, now: 70 * S };
        assert_eq!(
            trial_outcome(w, 7, Some(Outcome::Success), v),
            release(half_open(1, 1))
        );
        assert_eq!(
            trial_outcome(w, 7, Some(Outcome::Ignored), v),
            release(half_open(1, 0))
        );
        assert_eq!(trial_outcome(w, 7, None, v), release(half_open(1, 0)));
        assert_eq!(enough_successes(half_open(1, 1), 2, 70 * S), None);
        assert_eq!(
            enough_successes(half_open(0, 2), 2, 70 * S).map(|m| m.to),
            Some(State::Closed)
        );
    }

    #[test]
    fn config_changes_cannot_strand_half_open() {
        // Every reachable half-open shape, every new max: after the re-check, either the
        // breaker moved, or it has room for a trial, or a trial in flight will move it.
        for in_flight in 0..6 {
            for successes in 0..6 {
                for max in 1..6 {
                    let w = half_open(in_flight, successes);
                    let v = Inputs {
                        half_open_max: max,
                        ..inputs(61 * S)
                    };
                    match after_config(w, &v) {
                        Some(m) => assert_eq!(m.at, v.now),
                        None => assert!(!stranded(w, max), "{in_flight} {successes} {max}"),
                    }
                }
            }
        }
        // Lowered below the successes: closes, saying why.
        let m = after_config(
            half_open(2, 1),
            &Inputs {
                half_open_max: 1,
                ..inputs(61 * S)
            },
        )
        .unwrap();
        assert_eq!(m.to, State::Closed);
        assert_eq!(
            m.cause.to_string(),
            "1 trial calls succeeded (half_open_max_calls is now 1)"
        );
        // The wait lowered below the silence so far: re-opens now, not in the past.
        let m = after_config(
            half_open(1, 0),
            &Inputs {
                half_open_wait: S,
                ..inputs(80 * S)
            },
        )
        .unwrap();
        assert_eq!((m.to, m.at), (State::Open, 80 * S));
        assert_eq!(after_config(Word::new(State::Open, 1), &inputs(0)), None);
    }

    #[test]
    fn consecutive_failures_trip_only_a_closed_breaker() {
        assert!(consecutive_failures_trip(State::Closed, 3, 3));
        assert!(!consecutive_failures_trip(State::Closed, 2, 3));
        assert!(!consecutive_failures_trip(State::Closed, 9, 0));
        assert!(!consecutive_failures_trip(State::MetricsOnly, 9, 3));
    }

    #[test]
    fn jitter_spreads_within_the_fraction() {
        let w = Duration::from_secs(60);
        assert_eq!(jittered(w, 0.0, 0.9), w);
        assert_eq!(jittered(w, 0.5, 0.0), Duration::from_secs(30));
        assert_eq!(jittered(w, 0.5, 0.5), w);
        assert!(jittered(w, 0.5, 0.999_999) <= Duration::from_secs(90));
        assert_eq!(jittered(Duration::ZERO, 0.5, 0.9), Duration::ZERO);
    }
}
