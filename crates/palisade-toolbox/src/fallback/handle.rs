//! The [`Fallback`] handle and its builder.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use palisade_core::{
    BuildError, ComponentKind, ConfigError, EventBus, EventKind, Registry, StripedCounter,
    SystemClock,
};

use super::kind::FailureKind;

type Classify<E> = Box<dyn Fn(&E) -> FailureKind + Send + Sync>;
type Answer<T, E> = Box<dyn Fn(E) -> Result<T, E> + Send + Sync>;

/// What a fallback does for one kind.
enum Handler<T, E> {
    Value(T),
    With(Answer<T, E>),
}

pub(crate) struct Shared<T, E> {
    pub(crate) name: Arc<str>,
    classify: Classify<E>,
    /// By [`FailureKind::index`].
    handlers: [Option<Handler<T, E>>; 7],
    pub(crate) enabled: AtomicBool,
    /// Errors answered, by kind index.
    pub(crate) used: [StripedCounter; 7],
    /// Errors let through (no handler for their kind, or switched off).
    pub(crate) passed: StripedCounter,
    pub(crate) events: EventBus,
}

impl<T, E> Shared<T, E> {
    pub(crate) fn kinds(&self) -> Vec<FailureKind> {
        FailureKind::ALL
            .into_iter()
            .filter(|k| self.handlers[k.index()].is_some())
            .collect()
    }
}

/// An answer used when a call fails, by kind of failure: see the
/// [module documentation](crate::fallback). Cheap to clone.
pub struct Fallback<T, E> {
    pub(crate) shared: Arc<Shared<T, E>>,
}

impl<T, E> Clone for Fallback<T, E> {
    fn clone(&self) -> Self {
        Fallback {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<T, E> std::fmt::Debug for Fallback<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fallback")
            .field("name", &&*self.shared.name)
            .field("kinds", &self.shared.kinds())
            .field("enabled", &self.shared.enabled.load(Ordering::Relaxed))
            .finish()
    }
}

/// Builds a [`Fallback`].
#[must_use]
pub struct FallbackBuilder<T, E> {
    name: String,
    classify: Option<Classify<E>>,
    handlers: [Option<Handler<T, E>>; 7],
    registry: Option<Registry>,
}

impl<T, E> std::fmt::Debug for FallbackBuilder<T, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FallbackBuilder")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl<T, E> FallbackBuilder<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// What kind each error is (required).
    pub fn classify(
        mut self,
        classify: impl Fn(&E) -> FailureKind + Send + Sync + 'static,
    ) -> Self {
        self.classify = Some(Box::new(classify));
        self
    }

    /// Answers errors of `kind` with `value`.
    pub fn value(mut self, kind: FailureKind, value: T) -> Self {
        self.handlers[kind.index()] = Some(Handler::Value(value));
        self
    }

    /// Answers errors of `kind` with what `answer` makes of the error (which may be another
    /// error).
    pub fn with(
        mut self,
        kind: FailureKind,
        answer: impl Fn(E) -> Result<T, E> + Send + Sync + 'static,
    ) -> Self {
        self.handlers[kind.index()] = Some(Handler::With(Box::new(answer)));
        self
    }

    /// Registers the fallback in `registry` (snapshots, commands, events, metrics).
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Builds the fallback: it needs a classifier and at least one kind to answer.
    pub fn build(self) -> Result<Fallback<T, E>, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        let classify = self.classify.ok_or_else(|| {
            ConfigError::new("classify", "a fallback needs a classifier of its errors")
        })?;
        if self.handlers.iter().all(Option::is_none) {
            return Err(ConfigError::new(
                "kinds",
                "a fallback needs a value or a function for one kind at least",
            )
            .into());
        }
        let fallback = Fallback {
            shared: Arc::new(Shared {
                name: self.name.into(),
                classify,
                handlers: self.handlers,
                enabled: AtomicBool::new(true),
                used: std::array::from_fn(|_| StripedCounter::new()),
                passed: StripedCounter::new(),
                events: palisade_core::registry::bus_for(
                    self.registry.as_ref(),
                    SystemClock::shared(),
                ),
            }),
        };
        if let Some(registry) = &self.registry {
            registry.register(Arc::new(fallback.clone()))?;
        }
        Ok(fallback)
    }
}

impl<T, E> Fallback<T, E>
where
    T: Clone + Send + Sync + 'static,
    E: Send + Sync + 'static,
{
    /// A builder for a fallback named `name`.
    pub fn builder(name: impl Into<String>) -> FallbackBuilder<T, E> {
        FallbackBuilder {
            name: name.into(),
            classify: None,
            handlers: std::array::from_fn(|_| None),
            registry: None,
        }
    }
}

impl<T: Clone, E> Fallback<T, E> {
    /// The fallback's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Runs `fut`; an error of a kind the fallback answers is replaced by its answer.
    pub async fn call<F>(&self, fut: F) -> Result<T, E>
    where
        F: Future<Output = Result<T, E>>,
    {
        self.apply(fut.await)
    }

    /// Answers `result`'s error if its kind has an answer (a success passes through).
    pub fn apply(&self, result: Result<T, E>) -> Result<T, E> {
        let error = match result {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        let s = &*self.shared;
        if !s.enabled.load(Ordering::Relaxed) {
            s.passed.incr();
            return Err(error);
        }
        let kind = (s.classify)(&error);
        match &s.handlers[kind.index()] {
            Some(Handler::Value(v)) => {
                s.used[kind.index()].incr();
                Ok(v.clone())
            }
            Some(Handler::With(answer)) => {
                s.used[kind.index()].incr();
                answer(error)
            }
            None => {
                s.passed.incr();
                Err(error)
            }
        }
    }

    /// Switches the fallback on or off (off: every error passes through); publishes a
    /// `config_changed` event when that changes anything.
    pub fn set_enabled(&self, enabled: bool) {
        let s = &*self.shared;
        if s.enabled.swap(enabled, Ordering::AcqRel) != enabled {
            s.events.publish(
                ComponentKind::Fallback,
                &s.name,
                EventKind::ConfigChanged {
                    change: format!("enabled {} -> {enabled}", !enabled),
                },
            );
        }
    }

    /// Whether the fallback answers errors now.
    pub fn enabled(&self) -> bool {
        self.shared.enabled.load(Ordering::Relaxed)
    }
}
