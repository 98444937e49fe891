//! A breaker shared with other instances: how an outside party (palisade-fleet's shared
//! breakers) opens it on the fleet's word, and reports how the sharing goes in its snapshot.
//!
//! The breaker itself stays local: it admits and records without any round trip, and its own
//! rules still trip it. Sharing adds one input — [`CircuitBreaker::trip_shared`], called by
//! the sharing task when the fleet's numbers say so — and one output, the `shared` part of
//! the snapshot ([`CircuitBreaker::report_sharing`]).

use std::fmt;

use serde::Serialize;

use crate::breaker::CircuitBreaker;
use crate::machine::{Cause, Move};
use crate::state::State;

/// Why a breaker was opened by the instances it is shared with rather than by its own calls.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum SharedTrip {
    /// The failure rate over the fleet's window reached the threshold.
    FailureRate {
        /// The fleet's failure percentage.
        rate: f64,
        /// Calls in the fleet's window.
        calls: u64,
        /// Instances that reported calls in it.
        instances: u32,
    },
    /// At least `quorum` instances opened this breaker on their own.
    Quorum {
        /// Instances open on their own.
        open: u32,
        /// The quorum.
        quorum: u32,
    },
}

impl fmt::Display for SharedTrip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            SharedTrip::FailureRate {
                rate,
                calls,
                instances,
            } => write!(
                f,
                "fleet failure rate {rate:.1}% over {calls} calls from {instances} instances"
            ),
            SharedTrip::Quorum { open, quorum } => write!(
                f,
                "{open} instances of the fleet opened on their own (quorum {quorum})"
            ),
        }
    }
}

/// How a shared breaker's sharing goes, as its snapshot shows it under `shared`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SharingSnapshot {
    /// What it is shared with (`fleet mcp-gateway`).
    pub scope: String,
    /// `failure_rate` or `quorum`.
    pub mode: String,
    /// `shared` while the fleet's numbers arrive; `local` when they cannot (Redis down): the
    /// breaker then decides on its own calls only, as an unshared one does.
    pub status: SharingStatus,
    /// Why it is local, or what the fleet last said, in words.
    pub detail: String,
    /// Calls in the fleet's window at the last exchange (failure-rate mode).
    pub fleet_calls: Option<u64>,
    /// Failed calls among them.
    pub fleet_failures: Option<u64>,
    /// Instances open on their own at the last exchange (quorum mode).
    pub instances_open: Option<u32>,
    /// Instances sharing this breaker at the last exchange.
    pub instances: Option<u32>,
    /// When the fleet last answered (ms since the Unix epoch, Redis time).
    pub last_exchange_unix_ms: Option<u64>,
}

/// Whether a shared breaker hears from its fleet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SharingStatus {
    /// The fleet's numbers arrive.
    Shared,
    /// They do not: the breaker decides on its own calls only.
    Local,
}

impl CircuitBreaker {
    /// Opens a **closed** breaker because the instances it is shared with say its upstream is
    /// failing; returns whether it opened. The open period is the breaker's own (its wait,
    /// growth and jitter), and half-open trials decide locally when it closes again.
    ///
    /// A breaker in any other state is left alone: already open or probing, or held by an
    /// operator (`forced_open`, `disabled`, `metrics_only`).
    ///
    /// ```
    /// use palisade_breaker::{CircuitBreaker, SharedTrip, State};
    ///
    /// let breaker = CircuitBreaker::builder("github").build().unwrap();
    /// let why = SharedTrip::Quorum { open: 2, quorum: 2 };
    /// assert!(breaker.trip_shared(why));
    /// assert_eq!(breaker.state(), State::Open);
    /// let last = breaker.snapshot().last_transition.unwrap();
    /// assert_eq!(last.reason, "2 instances of the fleet opened on their own (quorum 2)");
    /// assert!(!breaker.trip_shared(why)); // already open
    /// ```
    pub fn trip_shared(&self, why: SharedTrip) -> bool {
        let s = &*self.shared;
        let mut ctl = s.ctl.lock();
        let w = s.settle(&mut ctl);
        if w.state() != State::Closed {
            return false;
        }
        let at = s.clock.now_nanos();
        s.transition(
            &mut ctl,
            w,
            Move {
                to: State::Open,
                at,
                cause: Cause::Shared(why),
            },
        )
    }

    /// Records how the sharing of this breaker goes (`None`: not shared), shown in its
    /// snapshot under `shared`. Called by the party that shares it (palisade-fleet).
    pub fn report_sharing(&self, sharing: Option<SharingSnapshot>) {
        *self.shared.sharing.lock() = sharing;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn operator_states_are_not_tripped_and_sharing_shows_in_the_snapshot() {
        let b = CircuitBreaker::builder("github").build().unwrap();
        let why = SharedTrip::FailureRate {
            rate: 62.5,
            calls: 40,
            instances: 3,
        };
        for hold in [
            CircuitBreaker::force_open,
            CircuitBreaker::disable,
            CircuitBreaker::metrics_only,
        ] {
            hold(&b);
            let state = b.state();
            assert!(!b.trip_shared(why));
            assert_eq!(b.state(), state);
        }
        b.reset();
        assert!(
            serde_json::to_value(b.snapshot())
                .unwrap()
                .get("shared")
                .is_none()
        );
        b.report_sharing(Some(SharingSnapshot {
            scope: "fleet mcp".into(),
            mode: "failure_rate".into(),
            status: SharingStatus::Local,
            detail: "cannot reach the fleet".into(),
            fleet_calls: None,
            fleet_failures: None,
            instances_open: None,
            instances: None,
            last_exchange_unix_ms: None,
        }));
        let json = serde_json::to_value(b.snapshot()).unwrap();
        assert_eq!(json["shared"]["status"], "local");
        assert!(b.trip_shared(why));
        assert_eq!(
            b.snapshot().last_transition.unwrap().reason,
            "fleet failure rate 62.5% over 40 calls from 3 instances"
        );
    }
}
