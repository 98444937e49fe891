//! Building a breaker.

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{BuildError, Registry, SharedClock, SystemClock};

use crate::breaker::CircuitBreaker;
use crate::config::{BreakerConfig, FailureRateConfig};
use crate::shared::Shared;
use crate::state::State;

/// Builds a [`CircuitBreaker`]; see [`CircuitBreaker::builder`].
#[derive(Debug)]
#[must_use]
pub struct Builder {
    name: String,
    config: BreakerConfig,
    clock: Option<SharedClock>,
    registry: Option<Registry>,
}

impl Builder {
    pub(crate) fn new(name: String) -> Builder {
        Builder {
            name,
            config: BreakerConfig::default(),
            clock: None,
            registry: None,
        }
    }

    /// Replaces the whole config (fields set before are overwritten).
    pub fn config(mut self, config: BreakerConfig) -> Self {
        self.config = config;
        self
    }

    /// Opens after `n` consecutive failures (0 turns the trigger off). Default 3.
    pub fn consecutive_failures(mut self, n: u32) -> Self {
        self.config.consecutive_failures = n;
        self
    }

    /// Also opens on a failure or slow-call rate over a sliding window.
    pub fn failure_rate(mut self, rate: FailureRateConfig) -> Self {
        self.config.failure_rate = Some(rate);
        self
    }

    /// Time spent open before trial calls are let through. Default 60 s.
    pub fn wait_duration(mut self, d: Duration) -> Self {
        self.config.wait_duration = d;
        self
    }

    /// Grows the wait on repeated trips (by `wait_multiplier`, default 2) up to `max`.
    pub fn max_wait_duration(mut self, max: Duration) -> Self {
        self.config.max_wait_duration = Some(max);
        self
    }

    /// Growth factor of the wait between consecutive trips. Default 2.
    pub fn wait_multiplier(mut self, m: f64) -> Self {
        self.config.wait_multiplier = m;
        self
    }

    /// Random spread of each wait as a fraction (0 to 1). Default 0.
    pub fn jitter(mut self, fraction: f64) -> Self {
        self.config.jitter = fraction;
        self
    }

    /// Trial calls admitted at once while half-open, and successes needed to close. Default 1.
    pub fn half_open_max_calls(mut self, k: u32) -> Self {
        self.config.half_open_max_calls = k;
        self
    }

    /// How long trial calls in flight may go without news before they are presumed hung and
    /// the breaker re-opens (see [`BreakerConfig::max_wait_in_half_open`]). Default 60 s.
    pub fn max_wait_in_half_open(mut self, d: Duration) -> Self {
        self.config.max_wait_in_half_open = d;
        self
    }

    /// The clock to read (default: the system clock).
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Registers the breaker in `registry` and publishes its events on the registry's bus.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Validates the config and builds the breaker (registering it, if a registry was given).
    pub fn build(self) -> Result<CircuitBreaker, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let events = palisade_core::registry::bus_for(self.registry.as_ref(), clock.clone());
        let shared = Shared::new(Arc::from(self.name), self.config, clock, events);
        let breaker = CircuitBreaker {
            shared: Arc::new(shared),
        };
        breaker.shared.export_state_gauge(State::Closed);
        if let Some(registry) = self.registry {
            registry.register(Arc::new(breaker.clone()))?;
        }
        Ok(breaker)
    }
}
