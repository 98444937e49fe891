//! The circuit breaker handle: what callers and operators hold.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::EventBus;

use crate::builder::Builder;
use crate::call::Call;
use crate::classify::{Classifier, ErrorsAreFailures};
use crate::config::BreakerConfig;
use crate::error::Rejected;
use crate::permit::{Permit, PermitKind};
use crate::shared::Shared;
use crate::state::State;

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

impl CircuitBreaker {
    /// A builder for a breaker named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder::new(name.into())
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
    /// (for instance: a 429 or a caller's bad input is
    /// [`Outcome::Ignored`](crate::Outcome::Ignored)).
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
        let w = s.load();
        // The closed path, inline: one load, no clock (every other state: `machine::admit`).
        match w.state() {
            State::Closed | State::MetricsOnly => Ok(s.permit(w.generation(), PermitKind::Normal)),
            _ => s.acquire_slow(w),
        }
    }

    /// The current state. Transitions that have fallen due are made first (an open breaker
    /// whose wait has elapsed turns half-open; a half-open one whose trials have gone
    /// `max_wait_in_half_open` without news re-opens), so this never reports a stale state.
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
}
