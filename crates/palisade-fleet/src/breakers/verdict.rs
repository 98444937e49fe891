//! The pure part of a shared breaker: what one instance reports of its breaker at an
//! exchange ([`Tracker`]), and what the fleet's numbers make it do ([`verdict`]). No Redis,
//! no clock: tested below on plain values.

use palisade_breaker::{BreakerSnapshot, SharedTrip, State};

use super::mode::ShareMode;

/// What one instance reports of one breaker at an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Report {
    /// Calls recorded (successful or failed) since the last exchange.
    pub(crate) calls: u64,
    /// Failed ones among them.
    pub(crate) failures: u64,
    /// The breaker is open or probing after a trip of its own (not on the fleet's word).
    pub(crate) open_on_its_own: bool,
    /// It closed since the last exchange: its view of the fleet's window starts afresh.
    pub(crate) closed: bool,
}

/// What the fleet answered for one breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FleetNumbers {
    /// Calls in the window (from this instance's view: since its breaker last closed).
    pub(crate) calls: u64,
    /// Failed ones.
    pub(crate) failures: u64,
    /// Instances sharing the breaker.
    pub(crate) instances: u32,
    /// Instances open on their own.
    pub(crate) open: u32,
}

/// One breaker's bookkeeping between exchanges.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Counts at the last exchange (`None` before the first).
    last: Option<(u64, u64)>,
    /// When the last transition to `closed` seen happened (ms).
    last_close_ms: Option<u64>,
    /// The current open period started on the fleet's word.
    pub(crate) opened_by_fleet: bool,
}

impl Tracker {
    /// Reads what to report from `snap` and moves on. The first observation reports nothing
    /// counted before sharing began, and no close.
    pub(crate) fn observe(&mut self, snap: &BreakerSnapshot) -> Report {
        let (ok, failed) = (snap.calls.successful, snap.calls.failed);
        let (calls, failures) = match self.last {
            Some((ok0, failed0)) => {
                let failures = failed.saturating_sub(failed0);
                (ok.saturating_sub(ok0) + failures, failures)
            }
            None => (0, 0),
        };
        let first = self.last.is_none();
        self.last = Some((ok, failed));
        let close_ms = snap
            .last_transition
            .as_ref()
            .filter(|t| t.to == State::Closed)
            .map(|t| t.at_unix_ms);
        let closed = !first && close_ms.is_some() && close_ms != self.last_close_ms;
        if close_ms.is_some() {
            self.last_close_ms = close_ms;
        }
        if !matches!(snap.state, State::Open | State::HalfOpen) {
            self.opened_by_fleet = false;
        }
        Report {
            calls,
            failures,
            open_on_its_own: matches!(snap.state, State::Open | State::HalfOpen)
                && !self.opened_by_fleet,
            closed,
        }
    }
}

/// Whether the fleet's numbers open the breaker, and why.
pub(crate) fn verdict(mode: &ShareMode, n: &FleetNumbers) -> Option<SharedTrip> {
    match *mode {
        ShareMode::FailureRate {
            failure_rate_threshold,
            minimum_calls,
            ..
        } => {
            if n.calls == 0 || n.calls < minimum_calls {
                return None;
            }
            let rate = n.failures as f64 * 100.0 / n.calls as f64;
            (rate >= failure_rate_threshold).then_some(SharedTrip::FailureRate {
                rate,
                calls: n.calls,
                instances: n.instances,
            })
        }
        ShareMode::Quorum { quorum } => (n.open >= quorum).then_some(SharedTrip::Quorum {
            open: n.open,
            quorum,
        }),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use palisade_breaker::CircuitBreaker;

    fn numbers(calls: u64, failures: u64, open: u32) -> FleetNumbers {
        FleetNumbers {
            calls,
            failures,
            instances: 3,
            open,
        }
    }

    #[test]
    fn the_fleet_rate_opens_only_with_enough_calls() {
        let mode = ShareMode::failure_rate(50.0, 20);
        assert_eq!(verdict(&mode, &numbers(19, 19, 0)), None);
        assert_eq!(verdict(&mode, &numbers(40, 19, 0)), None);
        assert_eq!(
            verdict(&mode, &numbers(40, 20, 0)),
            Some(SharedTrip::FailureRate {
                rate: 50.0,
                calls: 40,
                instances: 3
            })
        );
        let zero_min = ShareMode::failure_rate(50.0, 0);
        assert_eq!(verdict(&zero_min, &numbers(0, 0, 0)), None);
    }

    #[test]
    fn a_quorum_of_instances_open_on_their_own_opens_the_rest() {
        let mode = ShareMode::Quorum { quorum: 2 };
        assert_eq!(verdict(&mode, &numbers(100, 100, 1)), None);
        assert_eq!(
            verdict(&mode, &numbers(0, 0, 2)),
            Some(SharedTrip::Quorum { open: 2, quorum: 2 })
        );
    }

    #[test]
    fn reports_are_deltas_and_a_close_restarts_the_view() {
        let clock = palisade_core::ManualClock::new();
        let b = CircuitBreaker::builder("t")
            .consecutive_failures(2)
            .wait_duration(std::time::Duration::from_secs(10))
            .half_open_max_calls(1)
            .clock(clock.shared())
            .build()
            .unwrap();
        let mut t = Tracker::default();
        b.try_acquire().unwrap().success();
        // Counted before sharing began: not reported.
        let first = t.observe(&b.snapshot());
        assert_eq!((first.calls, first.failures, first.closed), (0, 0, false));
        for _ in 0..2 {
            b.try_acquire().unwrap().failure();
        }
        let r = t.observe(&b.snapshot());
        assert_eq!((r.calls, r.failures), (2, 2));
        assert!(r.open_on_its_own, "tripped by its own calls");
        assert!(!r.closed);
        // Recovered: one close reported once.
        clock.advance(std::time::Duration::from_secs(10));
        b.try_acquire().unwrap().success();
        let r = t.observe(&b.snapshot());
        assert!(r.closed && !r.open_on_its_own);
        assert_eq!((r.calls, r.failures), (1, 0));
        assert!(!t.observe(&b.snapshot()).closed);
    }

    #[test]
    fn an_open_period_on_the_fleets_word_is_not_reported_as_its_own() {
        let b = CircuitBreaker::builder("t").build().unwrap();
        let mut t = Tracker::default();
        t.observe(&b.snapshot());
        assert!(b.trip_shared(SharedTrip::Quorum { open: 1, quorum: 1 }));
        t.opened_by_fleet = true;
        assert!(!t.observe(&b.snapshot()).open_on_its_own);
        // Closed by an operator: the flag goes with the open period.
        b.reset();
        let r = t.observe(&b.snapshot());
        assert!(r.closed && !t.opened_by_fleet);
        let _ = b.try_acquire().unwrap();
    }
}
