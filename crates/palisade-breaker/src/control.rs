//! Snapshots, operator commands and metrics export: the breaker as a registry component.

use std::time::Duration;

use palisade_core::{
    ComponentKind, Control, ControlError, Inspect, Managed, async_trait, metrics as names,
};
use serde::{Deserialize, Serialize};

use crate::breaker::CircuitBreaker;
use crate::config::BreakerConfig;
use crate::error::ceil_millis;
use crate::machine;
use crate::sharing::SharingSnapshot;
use crate::state::State;
use crate::window::WindowSnapshot;

/// Operator commands, as sent to `POST /admin/circuit-breakers/{name}`:
/// `{"action": "reset"}`, `{"action": "force_open"}`, `{"action": "set_config", "config": {…}}`,
/// `{"action": "update_config", "config": {"wait_duration": "30s"}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum BreakerCommand {
    /// Close the breaker and clear its counts (`"close"` is accepted too).
    #[serde(alias = "close")]
    Reset,
    /// Refuse every call until reset.
    ForceOpen,
    /// Admit every call, record nothing, until reset.
    Disable,
    /// Admit every call and record outcomes, never trip, until reset.
    MetricsOnly,
    /// Replace the whole config (validated first; a bad field is named and nothing changes).
    /// Fields it leaves out take the library defaults: to change a few, use `update_config`.
    SetConfig {
        /// The new config.
        config: BreakerConfig,
    },
    /// Change the named top-level fields and keep the others:
    /// `{"action": "update_config", "config": {"wait_duration": "30s"}}` (validated first).
    UpdateConfig {
        /// The fields to change.
        config: serde_json::Map<String, serde_json::Value>,
    },
}

/// Calls counted since the breaker was built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CallCounts {
    /// Calls that succeeded.
    pub successful: u64,
    /// Calls that failed.
    pub failed: u64,
    /// Calls whose outcome was ignored.
    pub ignored: u64,
    /// Slow calls: slower than `slow_call_duration` (also counted as successful or failed), or
    /// reported as [`Outcome::Slow`](crate::Outcome::Slow) (counted here only).
    pub slow: u64,
    /// Calls refused without running.
    pub not_permitted: u64,
}

/// Half-open trial accounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct HalfOpenSnapshot {
    /// Trial calls running now.
    pub in_flight: u32,
    /// Trial calls that succeeded so far.
    pub successes: u32,
    /// Trial calls allowed at once, and successes needed to close.
    pub max_calls: u32,
    /// With trial calls in flight: milliseconds left for news of one (a trial admitted or
    /// reported) before they are presumed hung and the breaker re-opens
    /// (`max_wait_in_half_open`). `None` with no trial in flight: nothing is awaited.
    pub reopen_in_ms: Option<u64>,
}

/// The last state transition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TransitionSnapshot {
    /// Previous state.
    pub from: State,
    /// New state.
    pub to: State,
    /// Why it happened.
    pub reason: String,
    /// When (milliseconds since the Unix epoch).
    pub at_unix_ms: u64,
}

/// Everything an operator needs to see about a breaker.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BreakerSnapshot {
    /// The breaker's name.
    pub name: String,
    /// The true current state (a due open → half-open move is applied first).
    pub state: State,
    /// When open: milliseconds until a trial call is admitted.
    pub retry_after_ms: Option<u64>,
    /// Current run of consecutive failures (closed and metrics-only states).
    pub consecutive_failures: u32,
    /// Trips since the last successful recovery (drives wait growth).
    pub consecutive_trips: u32,
    /// The wait of the current (or next) open period, in milliseconds.
    pub open_wait_ms: u64,
    /// Trial accounting, when half-open.
    pub half_open: Option<HalfOpenSnapshot>,
    /// Sliding-window aggregates, when a failure rate is configured.
    pub window: Option<WindowSnapshot>,
    /// Call counters.
    pub calls: CallCounts,
    /// Transitions since the breaker was built.
    pub transitions_total: u64,
    /// The most recent transition.
    pub last_transition: Option<TransitionSnapshot>,
    /// The config in force.
    pub config: BreakerConfig,
    /// How sharing with other instances goes, when the breaker is shared (palisade-fleet);
    /// absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shared: Option<SharingSnapshot>,
}

impl CircuitBreaker {
    /// A snapshot of state, counters and config (also available as [`Inspect::snapshot`]).
    pub fn snapshot(&self) -> BreakerSnapshot {
        let s = &*self.shared;
        let w = s.refresh();
        let state = w.state();
        let now = s.clock.now();
        let window = s.window.lock().as_mut().map(|win| win.snapshot(now));
        let ctl = s.ctl.lock();
        let c = &s.counters;
        BreakerSnapshot {
            name: s.name.to_string(),
            state,
            retry_after_ms: (state == State::Open)
                .then(|| u64::try_from(ceil_millis(s.remaining_open())).unwrap_or(u64::MAX)),
            consecutive_failures: s
                .consecutive_failures
                .load(std::sync::atomic::Ordering::Acquire),
            consecutive_trips: ctl.trips,
            open_wait_ms: u64::try_from(ctl.current_wait.as_millis()).unwrap_or(u64::MAX),
            half_open: (state == State::HalfOpen).then(|| {
                let v = s.inputs();
                HalfOpenSnapshot {
                    in_flight: w.in_flight(),
                    successes: w.successes(),
                    max_calls: v.half_open_max,
                    reopen_in_ms: machine::hung_deadline(w, &v).map(|d| {
                        let left = Duration::from_nanos(d.saturating_sub(v.now));
                        u64::try_from(ceil_millis(left)).unwrap_or(u64::MAX)
                    }),
                }
            }),
            window,
            calls: CallCounts {
                successful: c.successful.get(),
                failed: c.failed.get(),
                ignored: c.ignored.get(),
                slow: c.slow.get(),
                not_permitted: c.not_permitted.get(),
            },
            transitions_total: c.transitions.load(std::sync::atomic::Ordering::Relaxed),
            last_transition: ctl.last_transition.as_ref().map(|t| TransitionSnapshot {
                from: t.from,
                to: t.to,
                reason: t.reason.clone(),
                at_unix_ms: t.at_unix_ms,
            }),
            config: ctl.config.clone(),
            shared: s.sharing.lock().clone(),
        }
    }

    /// Applies an operator command; returns the snapshot after it.
    pub fn apply(&self, command: BreakerCommand) -> Result<BreakerSnapshot, ControlError> {
        match command {
            BreakerCommand::Reset => self.reset(),
            BreakerCommand::ForceOpen => self.force_open(),
            BreakerCommand::Disable => self.disable(),
            BreakerCommand::MetricsOnly => self.metrics_only(),
            BreakerCommand::SetConfig { config } => self.set_config(config)?,
            BreakerCommand::UpdateConfig { config } => {
                self.set_config(palisade_core::config::merge_config(&self.config(), config)?)?
            }
        }
        Ok(self.snapshot())
    }
}

impl Inspect for CircuitBreaker {
    type Snapshot = BreakerSnapshot;

    fn snapshot(&self) -> BreakerSnapshot {
        CircuitBreaker::snapshot(self)
    }
}

#[async_trait]
impl Control for CircuitBreaker {
    type Command = BreakerCommand;
    type Output = BreakerSnapshot;

    async fn control(&self, command: BreakerCommand) -> Result<BreakerSnapshot, ControlError> {
        self.apply(command)
    }
}

impl Managed for CircuitBreaker {
    const KIND: ComponentKind = ComponentKind::CircuitBreaker;

    fn name(&self) -> &str {
        CircuitBreaker::name(self)
    }

    fn export_metrics(&self) {
        let snap = self.snapshot();
        let name = snap.name.clone();
        self.shared.export_state_gauge(snap.state);
        for (outcome, n) in [
            ("success", snap.calls.successful),
            ("failure", snap.calls.failed),
            ("ignored", snap.calls.ignored),
            ("slow", snap.calls.slow),
        ] {
            metrics::counter!(names::BREAKER_CALLS_TOTAL, "name" => name.clone(), "outcome" => outcome)
                .absolute(n);
        }
        metrics::counter!(names::BREAKER_NOT_PERMITTED_TOTAL, "name" => name.clone())
            .absolute(snap.calls.not_permitted);
        if let Some(w) = snap.window {
            metrics::gauge!(names::BREAKER_FAILURE_RATE, "name" => name.clone())
                .set(w.failure_rate.unwrap_or(-1.0));
            metrics::gauge!(names::BREAKER_SLOW_CALL_RATE, "name" => name)
                .set(w.slow_call_rate.unwrap_or(-1.0));
        }
    }
}
