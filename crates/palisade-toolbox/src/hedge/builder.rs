//! Building a hedge.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BuildError, Registry, SharedClock, SystemClock};

use super::config::{HedgeConfig, HedgeDelay, PercentileDelay};
use super::hedge::{Hedge, Shared};
use crate::budget::{BudgetConfig, RetryBudget};

/// Builds a [`Hedge`]; see [`Hedge::builder`].
///
/// ```
/// use std::time::Duration;
/// use palisade_core::{ComponentKind, Registry};
/// use palisade_toolbox::hedge::Hedge;
///
/// let registry = Registry::new();
/// let hedge = Hedge::builder("search")
///     .percentile_delay(95.0, Duration::from_millis(5))
///     .registry(&registry)
///     .build()?;
/// assert_eq!(registry.list(ComponentKind::Hedge), vec!["search"]);
/// # drop(hedge);
/// # Ok::<(), palisade_core::BuildError>(())
/// ```
#[derive(Debug)]
#[must_use]
pub struct HedgeBuilder {
    name: String,
    config: HedgeConfig,
    budget: Option<RetryBudget>,
    clock: Option<SharedClock>,
    registry: Option<Registry>,
}

impl HedgeBuilder {
    pub(crate) fn new(name: String) -> HedgeBuilder {
        HedgeBuilder {
            name,
            config: HedgeConfig::default(),
            budget: None,
            clock: None,
            registry: None,
        }
    }

    /// Replaces the whole config (fields set before are overwritten).
    pub fn config(mut self, config: HedgeConfig) -> Self {
        self.config = config;
        self
    }

    /// Whether idempotent calls are hedged. Default true.
    pub fn enabled(mut self, enabled: bool) -> Self {
        self.config.enabled = enabled;
        self
    }

    /// Sets the delay.
    pub fn delay(mut self, delay: HedgeDelay) -> Self {
        self.config.delay = delay;
        self
    }

    /// Hedges after a fixed delay (zero: both attempts at once).
    pub fn fixed_delay(self, delay: Duration) -> Self {
        self.delay(HedgeDelay::Fixed(delay))
    }

    /// Hedges after the `percentile`-th latency of recent successful calls, never before
    /// `floor` (the other [`PercentileDelay`] settings at their defaults).
    pub fn percentile_delay(self, percentile: f64, floor: Duration) -> Self {
        self.delay(HedgeDelay::Percentile(PercentileDelay {
            percentile,
            floor,
            ..PercentileDelay::default()
        }))
    }

    /// The config of the hedge's own budget (ignored when [`budget`](Self::budget) shares one).
    pub fn budget_config(mut self, budget: BudgetConfig) -> Self {
        self.config.budget = budget;
        self
    }

    /// Draws on `budget`, shared with whatever else holds it (a [`Retry`](crate::retry::Retry)
    /// in front of the same upstream, say), instead of a budget of its own.
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// The clock latencies and the own budget read (default: the system clock). The hedging
    /// delay is a tokio timer, so it follows tokio's clock (and `tokio::time::pause`).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Registers the hedge in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Validates the config and builds the hedge (registering it, if a registry was given).
    pub fn build(self) -> Result<Hedge, BuildError> {
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
        let events = palisade_core::registry::bus_for(self.registry.as_ref(), clock.clone());
        let hedge = Hedge {
            shared: Arc::new(Shared::new(
                Arc::from(self.name),
                config,
                budget,
                clock,
                events,
            )),
        };
        if let Some(registry) = self.registry {
            registry.register(Arc::new(hedge.clone()))?;
        }
        Ok(hedge)
    }
}
