//! Building a retry.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BuildError, Registry, SharedClock, SystemClock};

use super::config::RetryConfig;
use super::retry::{Retry, Shared};
use crate::budget::{BudgetConfig, RetryBudget};

/// Builds a [`Retry`]; see [`Retry::builder`].
///
/// ```
/// use std::time::Duration;
/// use palisade_core::Registry;
/// use palisade_toolbox::budget::BudgetConfig;
/// use palisade_toolbox::retry::Retry;
///
/// let registry = Registry::new();
/// let retry = Retry::builder("payments")
///     .max_attempts(4)
///     .backoff(Duration::from_millis(50), Duration::from_secs(5))
///     .max_retry_after(Duration::from_secs(10))
///     .budget_config(BudgetConfig { ratio: 0.1, ..Default::default() })
///     .registry(&registry)
///     .build()?;
/// assert_eq!(registry.list(palisade_core::ComponentKind::Retry), vec!["payments"]);
/// # drop(retry);
/// # Ok::<(), palisade_core::BuildError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct RetryBuilder {
    name: String,
    config: RetryConfig,
    budget: Option<RetryBudget>,
    clock: Option<SharedClock>,
    registry: Option<Registry>,
}

impl RetryBuilder {
    pub(crate) fn new(name: String) -> RetryBuilder {
        RetryBuilder {
            name,
            config: RetryConfig::default(),
            budget: None,
            clock: None,
            registry: None,
        }
    }

    /// Replaces the whole config (fields set before are overwritten).
    pub fn config(mut self, config: RetryConfig) -> Self {
        self.config = config;
        self
    }

    /// Attempts in all, the first included (1 never retries). Default 3.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.config.max_attempts = n;
        self
    }

    /// The first retry's wait ceiling (`base`) and every wait's cap (`max`). Default 100 ms
    /// and 10 s.
    pub fn backoff(mut self, base: Duration, max: Duration) -> Self {
        self.config.base_delay = base;
        self.config.max_delay = max;
        self
    }

    /// Growth of the wait's ceiling from one retry to the next. Default 2.
    pub fn multiplier(mut self, multiplier: f64) -> Self {
        self.config.multiplier = multiplier;
        self
    }

    /// The longest `Retry-After` hint honoured; a longer one ends the call. Default 30 s.
    pub fn max_retry_after(mut self, max: Duration) -> Self {
        self.config.max_retry_after = max;
        self
    }

    /// The config of the retry's own budget (ignored when [`budget`](Self::budget) shares one).
    pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = budget;
        self
    }

    /// Draws on `budget`, shared with whatever else holds it (another retry, a hedge), instead
    /// of a budget of its own. The shared budget keeps its config.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The clock the retry's own budget reads (default: the system clock). Backoff waits are
    /// tokio timers, so they follow tokio's clock (and `tokio::time::pause`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Registers the retry in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Validates the config and builds the retry (registering it, if a registry was given).
    pub fn build(self) -> Result<Retry, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        let mut config = self.config;
        if let Some(shared) = &self.budget {
            config.budget = shared.config();
        }
        config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let budget = match self.budget {
            Some(shared) => shared,
            None => RetryBudget::builder()
                .config(config.budget.clone())
                .clock(clock.clone())
                .build()
                .map_err(|e| e.within("budget"))?,
        };
        let events = palisade_core::registry::bus_for(self.registry.as_ref(), clock);
        let retry = Retry {
            shared: Arc::new(Shared::new(Arc::from(self.name), config, budget, events)),
        };
        if let Some(registry) = self.registry {
            registry.register(Arc::new(retry.clone()))?;
        }
        Ok(retry)
    }
}
