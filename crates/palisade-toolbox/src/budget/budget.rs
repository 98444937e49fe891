//! The shared budget handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{ConfigError, SharedClock, StripedCounter, SystemClock};
use parking_lot::Mutex;
use serde::Serialize;

use super::config::BudgetConfig;
use super::ledger::{Ledger, MICRO};

/// A retry budget shared by every caller of the components that hold it: retries (and hedges)
/// are allowed up to [`ratio`](BudgetConfig::ratio) × the calls of the last
/// [`window`](BudgetConfig::window), plus [`min_retries_per_second`](BudgetConfig::min_retries_per_second),
/// so an upstream that fails for everyone sees at most `1 + ratio` times its normal traffic
/// instead of `max_attempts` times. Cheap to clone: clones share one budget.
///
/// A [`Retry`](crate::retry::Retry) or [`Hedge`](crate::hedge::Hedge) builds its own budget
/// unless given one with `.budget(handle)`; hand the same handle to several components to make
/// them draw on one budget (a retry and a hedge in front of the same upstream, say).
///
/// A call's deposit is a counter increment (no clock read, no lock, no allocation); a retry's
/// withdrawal takes a short lock and reads the clock. The accounting is exact: over any run of
/// `T` the budget grants at most `min_retries_per_second × (window + T + window / 10) + ratio ×
/// calls` retries (the first term is the reserve a new budget starts with).
///
/// ```
/// use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
///
/// let budget = RetryBudget::new(BudgetConfig { ratio: 0.5, min_retries_per_second: 0.0, ..Default::default() })?;
/// assert!(!budget.try_withdraw(), "no traffic and no floor: no retry");
/// for _ in 0..4 {
///     budget.deposit(); // one per call
/// }
/// assert!(budget.try_withdraw());
/// assert!(budget.try_withdraw());
/// assert!(!budget.try_withdraw(), "4 calls × 0.5 = 2 retries");
/// let snap = budget.snapshot();
/// assert_eq!((snap.deposits_total, snap.withdrawals_total, snap.denied_total), (4, 2, 2));
/// # Ok::<(), palisade_core::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct RetryBudget {
    inner: Arc<Inner>,
}

struct Inner {
    deposits: StripedCounter,
    withdrawals: AtomicU64,
    denied: AtomicU64,
    clock: SharedClock,
    state: Mutex<State>,
}

struct State {
    ledger: Ledger,
    /// Deposits already handed to the ledger.
    folded: u64,
    config: BudgetConfig,
    /// When a withdrawal was last refused.
    last_denied: Option<u64>,
    /// Exhaustion was reported and recovery not yet: the notices come in pairs, with a
    /// window without refusals between exhaustion and recovery, so a budget that trickles
    /// tokens under a storm does not flap.
    announced: bool,
}

/// The result of a withdrawal, with whether it changed the budget's exhausted state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Withdrawal {
    /// Granted; `recovered` if the budget had been reported exhausted and nothing was refused
    /// for a whole window since.
    Granted { recovered: bool },
    /// Refused; `first` if the budget had not been reported exhausted yet.
    Denied { first: bool },
}

/// What an operator sees of a budget (inside a retry's or a hedge's snapshot).
///
/// ```
/// use palisade_toolbox::budget::RetryBudget;
///
/// let budget = RetryBudget::new(Default::default()).unwrap();
/// let snap = budget.snapshot();
/// assert_eq!(snap.tokens, 100.0); // the default reserve: 10 a second over 10 s
/// assert!(!snap.exhausted);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetSnapshot {
    /// Retries that may be made now.
    pub tokens: f64,
    /// The floor's full reserve: `min_retries_per_second` × `window`.
    pub reserve: f64,
    /// Whether a retry was refused within the last window.
    pub exhausted: bool,
    /// Calls counted (one deposit each), by every holder of the budget.
    pub deposits_total: u64,
    /// Retries and hedges granted, by every holder of the budget.
    pub withdrawals_total: u64,
    /// Retries and hedges refused, by every holder of the budget.
    pub denied_total: u64,
}

impl std::fmt::Debug for RetryBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryBudget")
            .field("config", &self.config())
            .field("tokens", &self.tokens())
            .finish()
    }
}

/// Builds a [`RetryBudget`]; see [`RetryBudget::builder`].
#[derive(Debug)]
#[must_use]
pub struct BudgetBuilder {
    config: BudgetConfig,
    clock: Option<SharedClock>,
}

impl BudgetBuilder {
    /// Replaces the whole config.
    pub fn config(mut self, config: BudgetConfig) -> Self {
        self.config = config;
        self
    }

    /// Retries allowed per call over the window. Default 0.2.
    pub fn ratio(mut self, ratio: f64) -> Self {
        self.config.ratio = ratio;
        self
    }

    /// Retries allowed per second whatever the traffic. Default 10.
    pub fn min_retries_per_second(mut self, n: f64) -> Self {
        self.config.min_retries_per_second = n;
        self
    }

    /// How long a call's share of retries stays available. Default 10 s.
    pub fn window(mut self, window: Duration) -> Self {
        self.config.window = window;
        self
    }

    /// The clock to read (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates the config and builds the budget, with its whole reserve available.
    pub fn build(self) -> Result<RetryBudget, ConfigError> {
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let ledger = Ledger::new(&self.config, clock.now_nanos());
        Ok(RetryBudget {
            inner: Arc::new(Inner {
                deposits: StripedCounter::new(),
                withdrawals: AtomicU64::new(0),
                denied: AtomicU64::new(0),
                clock,
                state: Mutex::new(State {
                    ledger,
                    folded: 0,
                    config: self.config,
                    last_denied: None,
                    announced: false,
                }),
            }),
        })
    }
}

impl RetryBudget {
    /// A budget with `config`, reading the system clock.
    ///
    /// ```
    /// use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
    ///
    /// let err = RetryBudget::new(BudgetConfig { ratio: -1.0, ..Default::default() }).unwrap_err();
    /// assert_eq!(err.field, "ratio");
    /// ```
    pub fn new(config: BudgetConfig) -> Result<RetryBudget, ConfigError> {
        Self::builder().config(config).build()
    }

    /// A builder, for a budget on another clock or with settings by name.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_core::ManualClock;
    /// use palisade_toolbox::budget::RetryBudget;
    ///
    /// let clock = ManualClock::new();
    /// let budget = RetryBudget::builder()
    ///     .ratio(0.1)
    ///     .min_retries_per_second(1.0)
    ///     .window(Duration::from_secs(10))
    ///     .clock(clock.shared())
    ///     .build()?;
    /// for _ in 0..10 {
    ///     assert!(budget.try_withdraw()); // the reserve: 1 a second over 10 s
    /// }
    /// assert!(!budget.try_withdraw());
    /// clock.advance(Duration::from_secs(1));
    /// assert!(budget.try_withdraw(), "the floor refilled one");
    /// # Ok::<(), palisade_core::ConfigError>(())
    /// ```
    pub fn builder() -> BudgetBuilder {
        BudgetBuilder {
            config: BudgetConfig::default(),
            clock: None,
        }
    }

    /// Counts one call (a first attempt): it earns `ratio` retries for the window. A counter
    /// increment in a stripe of the calling thread: no lock, no clock read, no allocation.
    #[inline]
    pub fn deposit(&self) {
        self.inner.deposits.incr();
    }

    /// Asks for one retry: `true` (and one token spent) if the budget allows it.
    pub fn try_withdraw(&self) -> bool {
        matches!(self.withdraw(), Withdrawal::Granted { .. })
    }

    pub(crate) fn withdraw(&self) -> Withdrawal {
        let now = self.inner.clock.now_nanos();
        let mut state = self.inner.state.lock();
        self.settle(&mut state, now);
        if state.ledger.withdraw() {
            let quiet = !recently_denied(&state, now);
            let recovered = state.announced && quiet;
            if recovered {
                state.announced = false;
            }
            drop(state);
            self.inner.withdrawals.fetch_add(1, Ordering::Relaxed);
            Withdrawal::Granted { recovered }
        } else {
            let first = !state.announced;
            state.announced = true;
            state.last_denied = Some(now);
            drop(state);
            self.inner.denied.fetch_add(1, Ordering::Relaxed);
            Withdrawal::Denied { first }
        }
    }

    /// Hands the deposits made since the last look to the ledger, and moves it to `now`.
    fn settle(&self, state: &mut State, now: u64) {
        let total = self.inner.deposits.get();
        let new = total.wrapping_sub(state.folded);
        state.folded = total;
        state.ledger.settle(now, new);
    }

    /// Retries that may be made now.
    ///
    /// ```
    /// use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
    ///
    /// let budget = RetryBudget::new(BudgetConfig { min_retries_per_second: 2.0, ..Default::default() }).unwrap();
    /// assert_eq!(budget.tokens(), 20.0);
    /// ```
    pub fn tokens(&self) -> f64 {
        self.snapshot().tokens
    }

    /// Tokens, reserve and counters.
    ///
    /// ```
    /// use palisade_toolbox::budget::RetryBudget;
    ///
    /// let budget = RetryBudget::new(Default::default()).unwrap();
    /// budget.deposit();
    /// assert_eq!(budget.snapshot().deposits_total, 1);
    /// ```
    pub fn snapshot(&self) -> BudgetSnapshot {
        let now = self.inner.clock.now_nanos();
        let mut state = self.inner.state.lock();
        self.settle(&mut state, now);
        let tokens = state.ledger.balance() as f64 / MICRO as f64;
        let reserve = state.ledger.reserve() as f64 / MICRO as f64;
        let exhausted = recently_denied(&state, now);
        drop(state);
        BudgetSnapshot {
            tokens,
            reserve,
            exhausted,
            deposits_total: self.inner.deposits.get(),
            withdrawals_total: self.inner.withdrawals.load(Ordering::Relaxed),
            denied_total: self.inner.denied.load(Ordering::Relaxed),
        }
    }

    /// The config in force.
    ///
    /// ```
    /// use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
    ///
    /// let budget = RetryBudget::new(BudgetConfig::default()).unwrap();
    /// assert_eq!(budget.config(), BudgetConfig::default());
    /// ```
    pub fn config(&self) -> BudgetConfig {
        self.inner.state.lock().config.clone()
    }

    /// Replaces the config after validating it (an invalid one is refused naming the field,
    /// and nothing changes). Tokens held are kept: with the same window the new rates apply
    /// to what is earned from now on; with another window the buckets start over and the
    /// tokens held are carried into the newest one. Every holder of the budget sees the change.
    ///
    /// ```
    /// use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
    ///
    /// let budget = RetryBudget::new(BudgetConfig::default()).unwrap();
    /// let err = budget.set_config(BudgetConfig { ratio: f64::INFINITY, ..Default::default() }).unwrap_err();
    /// assert_eq!(err.field, "ratio");
    /// budget.set_config(BudgetConfig { ratio: 0.5, ..Default::default() }).unwrap();
    /// assert_eq!(budget.config().ratio, 0.5);
    /// ```
    pub fn set_config(&self, config: BudgetConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let now = self.inner.clock.now_nanos();
        let mut state = self.inner.state.lock();
        self.settle(&mut state, now);
        state.ledger.reconfigure(&config, now);
        state.config = config;
        Ok(())
    }

    /// Starts over: the whole reserve available again, earlier calls' tokens and the
    /// exhausted state forgotten (an operator's "let retries through again"). Counters stay.
    ///
    /// ```
    /// use palisade_toolbox::budget::{BudgetConfig, RetryBudget};
    ///
    /// let budget = RetryBudget::new(BudgetConfig { min_retries_per_second: 0.1, ..Default::default() }).unwrap();
    /// assert!(budget.try_withdraw());
    /// assert!(!budget.try_withdraw());
    /// budget.reset();
    /// assert!(budget.try_withdraw());
    /// ```
    pub fn reset(&self) {
        let now = self.inner.clock.now_nanos();
        let mut state = self.inner.state.lock();
        state.folded = self.inner.deposits.get();
        state.ledger = Ledger::new(&state.config, now);
        state.last_denied = None;
        state.announced = false;
    }

    /// Whether `self` and `other` are handles on the same budget.
    ///
    /// ```
    /// use palisade_toolbox::budget::RetryBudget;
    ///
    /// let a = RetryBudget::new(Default::default()).unwrap();
    /// assert!(a.ptr_eq(&a.clone()));
    /// assert!(!a.ptr_eq(&RetryBudget::new(Default::default()).unwrap()));
    /// ```
    pub fn ptr_eq(&self, other: &RetryBudget) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Whether a withdrawal was refused less than a window before `now`.
fn recently_denied(state: &State, now: u64) -> bool {
    let window = palisade_core::clock::saturating_nanos(state.config.window);
    state
        .last_denied
        .is_some_and(|at| now.saturating_sub(at) < window)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use palisade_core::ManualClock;

    use super::*;

    #[test]
    fn exhaustion_and_recovery_are_reported_once_each() {
        let clock = ManualClock::new();
        let budget = RetryBudget::builder()
            .ratio(0.0)
            .min_retries_per_second(1.0)
            .window(Duration::from_secs(1))
            .clock(clock.shared())
            .build()
            .unwrap();
        assert_eq!(budget.withdraw(), Withdrawal::Granted { recovered: false });
        assert_eq!(budget.withdraw(), Withdrawal::Denied { first: true });
        assert_eq!(budget.withdraw(), Withdrawal::Denied { first: false });
        assert!(budget.snapshot().exhausted);
        clock.advance(Duration::from_secs(1));
        assert_eq!(budget.withdraw(), Withdrawal::Granted { recovered: true });
        assert!(!budget.snapshot().exhausted);
    }

    #[test]
    fn a_trickle_of_tokens_under_a_storm_does_not_flap() {
        let clock = ManualClock::new();
        let budget = RetryBudget::builder()
            .ratio(0.0)
            .min_retries_per_second(10.0)
            .window(Duration::from_secs(1))
            .clock(clock.shared())
            .build()
            .unwrap();
        let mut notices = Vec::new();
        for _ in 0..50 {
            // Ten tokens a second, twenty retries wanted a second.
            clock.advance(Duration::from_millis(50));
            match budget.withdraw() {
                Withdrawal::Granted { recovered: true } => notices.push("recovered"),
                Withdrawal::Denied { first: true } => notices.push("exhausted"),
                _ => {}
            }
        }
        assert_eq!(notices, vec!["exhausted"]);
    }

    #[test]
    fn deposits_from_many_threads_all_count() {
        let budget = RetryBudget::new(BudgetConfig {
            ratio: 0.01,
            min_retries_per_second: 0.0,
            ..Default::default()
        })
        .unwrap();
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2500 {
                        budget.deposit();
                    }
                });
            }
        });
        let snap = budget.snapshot();
        assert_eq!(snap.deposits_total, 10_000);
        assert_eq!(snap.tokens, 100.0);
    }
}
