//! The [`Timeout`] handle, its shared state and its builder.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use palisade_core::{
    BuildError, ComponentKind, ConfigError, EventBus, EventKind, Registry, StripedCounter,
    SystemClock,
};
use parking_lot::Mutex;

use super::config::{CountAs, TimeoutConfig, check_deadline};
use super::future::{Handle, TimeoutCall};

/// What every clone of a timeout shares.
pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    /// The deadline in force (ns), read by every call.
    deadline_nanos: AtomicU64,
    /// [`CountAs`] in force (0 failure, 1 slow).
    count_as: AtomicU8,
    config: Mutex<TimeoutConfig>,
    /// Calls that were not ready at their first poll (their timer was armed).
    pub(crate) waited: StripedCounter,
    pub(crate) timeouts: StripedCounter,
    /// How long the calls that waited took.
    pub(crate) latencies: super::latency::Latencies,
    events: EventBus,
}

impl Shared {
    pub(crate) fn deadline(&self) -> Duration {
        Duration::from_nanos(self.deadline_nanos.load(Ordering::Relaxed))
    }

    pub(crate) fn count_as(&self) -> CountAs {
        match self.count_as.load(Ordering::Relaxed) {
            1 => CountAs::Slow,
            _ => CountAs::Failure,
        }
    }

    fn store_hot(&self, config: &TimeoutConfig) {
        let nanos = u64::try_from(config.deadline.as_nanos()).unwrap_or(u64::MAX);
        self.deadline_nanos.store(nanos, Ordering::Relaxed);
        let code = match config.count_as {
            CountAs::Slow => 1,
            _ => 0,
        };
        self.count_as.store(code, Ordering::Relaxed);
    }
}

/// A per-call deadline, as a named component: see the [module documentation](crate::timeout).
/// Cheap to clone; clones share the deadline and the counters.
#[derive(Clone)]
pub struct Timeout {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Timeout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timeout")
            .field("name", &&*self.shared.name)
            .field("deadline", &self.shared.deadline())
            .finish()
    }
}

/// Builds a [`Timeout`].
#[derive(Debug)]
#[must_use]
pub struct TimeoutBuilder {
    name: String,
    config: TimeoutConfig,
    registry: Option<Registry>,
}

impl TimeoutBuilder {
    /// The deadline (default 10 s).
    pub fn deadline(mut self, deadline: Duration) -> Self {
        self.config.deadline = deadline;
        self
    }

    /// How a breaker counts an elapsed deadline (default [`CountAs::Failure`]).
    pub fn count_as(mut self, count_as: CountAs) -> Self {
        self.config.count_as = count_as;
        self
    }

    /// The whole config.
    pub fn config(mut self, config: TimeoutConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers the timeout in `registry` (snapshots, commands, events, metrics).
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Validates the config and builds the timeout (registering it, if a registry was given).
    pub fn build(self) -> Result<Timeout, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config.validate()?;
        let shared = Shared {
            name: self.name.into(),
            deadline_nanos: AtomicU64::new(0),
            count_as: AtomicU8::new(0),
            config: Mutex::new(self.config.clone()),
            waited: StripedCounter::new(),
            timeouts: StripedCounter::new(),
            latencies: Default::default(),
            events: palisade_core::registry::bus_for(self.registry.as_ref(), SystemClock::shared()),
        };
        shared.store_hot(&self.config);
        let timeout = Timeout {
            shared: Arc::new(shared),
        };
        if let Some(registry) = &self.registry {
            registry.register(Arc::new(timeout.clone()))?;
        }
        Ok(timeout)
    }
}

impl Timeout {
    /// A builder for a timeout named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`).
    pub fn builder(name: impl Into<String>) -> TimeoutBuilder {
        TimeoutBuilder {
            name: name.into(),
            config: TimeoutConfig::default(),
            registry: None,
        }
    }

    /// The timeout's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The deadline in force.
    pub fn deadline(&self) -> Duration {
        self.shared.deadline()
    }

    /// How a breaker counts an elapsed deadline now (one atomic load).
    pub fn count_as(&self) -> CountAs {
        self.shared.count_as()
    }

    /// The config in force.
    pub fn config(&self) -> TimeoutConfig {
        self.shared.config.lock().clone()
    }

    /// Runs `fut` under the deadline in force, counted from the call's first poll. Must be
    /// polled inside a tokio runtime with its timer enabled.
    #[inline]
    pub fn call<F, T, E>(&self, fut: F) -> TimeoutCall<'_, F>
    where
        F: Future<Output = Result<T, E>>,
    {
        TimeoutCall::new(Handle::Borrowed(&self.shared), None, fut)
    }

    /// Runs `fut` under `deadline` instead of the one in force (a per-call deadline; counted
    /// in this timeout's snapshot all the same).
    pub fn call_with<F, T, E>(&self, deadline: Duration, fut: F) -> TimeoutCall<'_, F>
    where
        F: Future<Output = Result<T, E>>,
    {
        TimeoutCall::new(Handle::Borrowed(&self.shared), Some(deadline), fut)
    }

    /// [`call`](Self::call) for a future that must own its timeout (`'static`): one reference
    /// count per call.
    pub fn call_owned<F, T, E>(&self, fut: F) -> TimeoutCall<'static, F>
    where
        F: Future<Output = Result<T, E>>,
    {
        TimeoutCall::new(Handle::Owned(Arc::clone(&self.shared)), None, fut)
    }

    /// Replaces the config (validated first: a bad field is named and nothing changes), and
    /// publishes a `config_changed` event naming what changed.
    pub fn set_config(&self, new: TimeoutConfig) -> Result<(), ConfigError> {
        new.validate()?;
        let s = &*self.shared;
        let mut cfg = s.config.lock();
        let mut changes = Vec::new();
        if new.deadline != cfg.deadline {
            changes.push(format!("deadline {:?} -> {:?}", cfg.deadline, new.deadline));
        }
        if new.count_as != cfg.count_as {
            changes.push(format!(
                "count_as {} -> {}",
                cfg.count_as.as_str(),
                new.count_as.as_str()
            ));
        }
        s.store_hot(&new);
        *cfg = new;
        drop(cfg);
        if !changes.is_empty() {
            s.events.publish(
                ComponentKind::Timeout,
                &s.name,
                EventKind::ConfigChanged {
                    change: changes.join(", "),
                },
            );
        }
        Ok(())
    }

    /// Changes the deadline only.
    pub fn set_deadline(&self, deadline: Duration) -> Result<(), ConfigError> {
        check_deadline(deadline)?;
        self.set_config(TimeoutConfig {
            deadline,
            ..self.config()
        })
    }

    /// A breaker classifier for the results of this timeout's calls: success is
    /// `Success`, an elapsed deadline counts as the config's [`CountAs`] says (read at each
    /// call, so a runtime change applies at once), and the call's own error as `Failure`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_breaker::{CircuitBreaker, Outcome};
    /// use palisade_toolbox::{CountAs, Timeout, TimeoutError};
    ///
    /// # #[tokio::main(flavor = "current_thread", start_paused = true)]
    /// # async fn main() {
    /// let timeout = Timeout::builder("search")
    ///     .deadline(Duration::from_millis(500))
    ///     .count_as(CountAs::Slow)
    ///     .build()
    ///     .unwrap();
    /// let breaker = CircuitBreaker::builder("search").build().unwrap();
    /// let hung = std::future::pending::<Result<(), std::io::Error>>();
    /// let r = breaker
    ///     .call_classified(timeout.classifier(), timeout.call(hung))
    ///     .await;
    /// assert!(r.is_err());
    /// let calls = breaker.snapshot().calls;
    /// assert_eq!((calls.slow, calls.failed), (1, 0));
    /// # }
    /// ```
    #[cfg(feature = "breaker")]
    pub fn classifier<T, E>(
        &self,
    ) -> impl Fn(&Result<T, super::TimeoutError<E>>) -> palisade_breaker::Outcome + Clone + use<T, E>
    {
        let shared = Arc::clone(&self.shared);
        move |r: &Result<T, super::TimeoutError<E>>| match r {
            Ok(_) => palisade_breaker::Outcome::Success,
            Err(super::TimeoutError::Elapsed { .. }) => match shared.count_as() {
                CountAs::Slow => palisade_breaker::Outcome::Slow,
                _ => palisade_breaker::Outcome::Failure,
            },
            Err(_) => palisade_breaker::Outcome::Failure,
        }
    }
}
