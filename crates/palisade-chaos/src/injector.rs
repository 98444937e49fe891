//! The fault injector: what callers and operators hold.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use palisade_core::config::{ConfigError, check_duration, check_range, format_duration};
use palisade_core::{
    BuildError, ComponentKind, ControlError, EventBus, EventFilter, EventKind, Registry,
    SharedClock, SystemClock,
};
use parking_lot::Mutex;
use pin_project::pin_project;
use tokio::time::Sleep;

use crate::config::{FaultInjectorConfig, MIN_TTL};
use crate::decide::{self, Action, Lease};
use crate::error::Injected;
use crate::fault::Fault;
use crate::random::{RandomSource, SeededRandom};

/// Injects latency, errors or refusals into a share of the calls that pass it, while an
/// operator has switched it on, and never longer than the time-to-live they gave. Cheap to
/// clone: clones share one state.
///
/// Safe by default: built without [`Builder::allow`] (config `enabled_in_config`), it refuses
/// every `enable`, and a switched-off injector costs one atomic load per call. It switches
/// itself off when its time-to-live runs out, checked against its clock on the next call or
/// snapshot (no background task).
///
/// ```
/// use std::time::Duration;
/// use palisade_chaos::{Fault, FaultInjector, Injected};
/// use palisade_core::ManualClock;
///
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let clock = ManualClock::new();
/// let github = FaultInjector::builder("github")
///     .allow(true)
///     .clock(clock.shared())
///     .build()
///     .unwrap();
///
/// // Off: every call passes untouched.
/// assert!(github.inject().await.is_ok());
///
/// // Every call fails, for 30 seconds.
/// github.enable(Fault::error(), 1.0, Duration::from_secs(30)).unwrap();
/// assert!(matches!(github.inject().await, Err(Injected::Error { .. })));
/// assert_eq!(github.snapshot().remaining_ttl_ms, Some(30_000));
///
/// // After the time-to-live it is off again, by itself.
/// clock.advance(Duration::from_secs(30));
/// assert!(github.inject().await.is_ok());
/// assert!(!github.snapshot().enabled);
/// # });
/// ```
#[derive(Clone)]
pub struct FaultInjector {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for FaultInjector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FaultInjector")
            .field("name", &&*self.shared.name)
            .field("allowed", &self.shared.config.enabled_in_config)
            .field("enabled", &self.is_enabled())
            .finish()
    }
}

/// An injection in force.
#[derive(Debug, Clone)]
pub(crate) struct Active {
    pub(crate) fault: Fault,
    pub(crate) rate: f64,
    pub(crate) lease: Lease,
    pub(crate) enabled_at_unix_ms: u64,
    /// The event bus's count when it was switched on: the admin router's audit event of the
    /// `enable` comes after it.
    pub(crate) audit_after_seq: u64,
    /// Who switched it on, from that audit event, once found.
    pub(crate) enabled_by: Option<String>,
}

/// The last time the injector was switched on or off.
#[derive(Debug, Clone)]
pub(crate) struct Transition {
    pub(crate) from: &'static str,
    pub(crate) to: &'static str,
    pub(crate) reason: String,
    pub(crate) at_unix_ms: u64,
}

pub(crate) struct State {
    pub(crate) active: Option<Active>,
    random: Box<dyn RandomSource>,
    pub(crate) last_transition: Option<Transition>,
}

pub(crate) struct Shared {
    pub(crate) name: Arc<str>,
    pub(crate) config: FaultInjectorConfig,
    pub(crate) clock: SharedClock,
    pub(crate) events: EventBus,
    /// The active lease's deadline in clock nanoseconds; 0 when off. The hot path's only read.
    deadline: AtomicU64,
    pub(crate) state: Mutex<State>,
    /// Calls that passed while the injector was on.
    pub(crate) calls: AtomicU64,
    pub(crate) injected_latency: AtomicU64,
    pub(crate) injected_errors: AtomicU64,
    pub(crate) injected_refusals: AtomicU64,
}

/// Builds a [`FaultInjector`]; see [`FaultInjector::builder`].
#[must_use]
pub struct Builder {
    name: String,
    config: FaultInjectorConfig,
    clock: Option<SharedClock>,
    registry: Option<Registry>,
    random: Option<Box<dyn RandomSource>>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("config", &self.config)
            .field("clock", &self.clock)
            .field("registry", &self.registry)
            .field("random", &self.random.as_ref().map(|_| "custom"))
            .finish()
    }
}

impl Builder {
    /// Replaces the whole config (fields set before are overwritten).
    ///
    /// ```
    /// use palisade_chaos::{FaultInjector, FaultInjectorConfig};
    /// let cfg: FaultInjectorConfig = serde_json::from_str(r#"{"enabled_in_config": true}"#).unwrap();
    /// let injector = FaultInjector::builder("github").config(cfg).build().unwrap();
    /// assert!(injector.is_allowed());
    /// ```
    pub fn config(mut self, config: FaultInjectorConfig) -> Self {
        self.config = config;
        self
    }

    /// Whether `enable` commands are accepted (config `enabled_in_config`). Default `false`:
    /// every `enable` is refused.
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").allow(true).build().unwrap();
    /// assert!(injector.is_allowed());
    /// ```
    pub fn allow(mut self, allowed: bool) -> Self {
        self.config.enabled_in_config = allowed;
        self
    }

    /// The longest time-to-live an `enable` may ask for (at most 1 h, the default).
    ///
    /// ```
    /// # use std::time::Duration;
    /// let injector = palisade_chaos::FaultInjector::builder("github")
    ///     .max_ttl(Duration::from_secs(600)).build().unwrap();
    /// assert_eq!(injector.snapshot().max_ttl_ms, 600_000);
    /// ```
    pub fn max_ttl(mut self, max: Duration) -> Self {
        self.config.max_ttl = max;
        self
    }

    /// The clock the time-to-live is measured on (default: the system clock).
    ///
    /// ```
    /// use palisade_core::ManualClock;
    /// let injector = palisade_chaos::FaultInjector::builder("github")
    ///     .clock(ManualClock::new().shared()).build().unwrap();
    /// # let _ = injector;
    /// ```
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Registers the injector in `registry` (so the admin router serves it at
    /// `/admin/fault-injectors/{name}`) and publishes its events on the registry's bus.
    ///
    /// ```
    /// use palisade_core::{ComponentKind, Registry};
    /// let registry = Registry::new();
    /// let _github = palisade_chaos::FaultInjector::builder("github").registry(&registry).build().unwrap();
    /// assert_eq!(registry.list(ComponentKind::FaultInjector), ["github"]);
    /// ```
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Seeds the random source, so the same seed faults the same calls (reproducible runs).
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").seed(42).build().unwrap();
    /// # let _ = injector;
    /// ```
    pub fn seed(mut self, seed: u64) -> Self {
        self.random = Some(Box::new(SeededRandom::new(seed)));
        self
    }

    /// Supplies the random source (default: [`SeededRandom::from_entropy`]).
    ///
    /// ```
    /// // Samples 0.25, 0.75, 0.25, …: at rate 0.5, every other call is faulted.
    /// let mut samples = [0.25, 0.75].into_iter().cycle();
    /// let injector = palisade_chaos::FaultInjector::builder("github")
    ///     .random(move || samples.next().unwrap_or(0.0))
    ///     .build()
    ///     .unwrap();
    /// # let _ = injector;
    /// ```
    pub fn random(mut self, source: impl RandomSource) -> Self {
        self.random = Some(Box::new(source));
        self
    }

    /// Validates the config and builds the injector, switched off (registering it, if a
    /// registry was given).
    ///
    /// ```
    /// let err = palisade_chaos::FaultInjector::builder("no spaces").build().unwrap_err();
    /// assert!(err.to_string().contains("name"));
    /// ```
    pub fn build(self) -> Result<FaultInjector, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        let events = palisade_core::registry::bus_for(self.registry.as_ref(), clock.clone());
        let random = self
            .random
            .unwrap_or_else(|| Box::new(SeededRandom::from_entropy()));
        let injector = FaultInjector {
            shared: Arc::new(Shared {
                name: Arc::from(self.name),
                config: self.config,
                clock,
                events,
                deadline: AtomicU64::new(0),
                state: Mutex::new(State {
                    active: None,
                    random,
                    last_transition: None,
                }),
                calls: AtomicU64::new(0),
                injected_latency: AtomicU64::new(0),
                injected_errors: AtomicU64::new(0),
                injected_refusals: AtomicU64::new(0),
            }),
        };
        if let Some(registry) = self.registry {
            registry.register(Arc::new(injector.clone()))?;
        }
        Ok(injector)
    }
}

impl FaultInjector {
    /// A builder for an injector named `name` (1–128 characters of `A-Z a-z 0-9 - _ . :`),
    /// usually the upstream's or tool's name.
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// assert_eq!(injector.name(), "github");
    /// assert!(!injector.is_allowed());
    /// ```
    pub fn builder(name: impl Into<String>) -> Builder {
        Builder {
            name: name.into(),
            config: FaultInjectorConfig::default(),
            clock: None,
            registry: None,
            random: None,
        }
    }

    /// The injector's name.
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// assert_eq!(injector.name(), "github");
    /// ```
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Whether this instance's config allows switching it on.
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// assert!(!injector.is_allowed());
    /// ```
    pub fn is_allowed(&self) -> bool {
        self.shared.config.enabled_in_config
    }

    /// The config it was built with.
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// assert!(!injector.config().enabled_in_config);
    /// ```
    pub fn config(&self) -> &FaultInjectorConfig {
        &self.shared.config
    }

    /// The event bus it publishes to (its registry's, or a private one).
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// assert_eq!(injector.events().published(), 0);
    /// ```
    pub fn events(&self) -> &EventBus {
        &self.shared.events
    }

    /// Whether faults are being injected now (a time-to-live that has run out switches it off
    /// first).
    ///
    /// ```
    /// let injector = palisade_chaos::FaultInjector::builder("github").build().unwrap();
    /// assert!(!injector.is_enabled());
    /// ```
    pub fn is_enabled(&self) -> bool {
        let s = &*self.shared;
        if s.deadline.load(Ordering::Acquire) == 0 {
            return false;
        }
        s.expire_if_due(s.clock.now_nanos());
        s.deadline.load(Ordering::Acquire) != 0
    }

    /// Call before the real call: waits out an injected delay, or returns the injected error
    /// or refusal (the real call must then not be made). Whether this call is faulted is
    /// decided when `inject` is called; a switched-off injector returns a ready `Ok(())`.
    ///
    /// Injected delays sleep on tokio's timer (so a test's paused clock drives them).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use palisade_chaos::{Fault, FaultInjector, Injected};
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let db = FaultInjector::builder("db").allow(true).build().unwrap();
    /// db.enable(Fault::error(), 1.0, Duration::from_secs(60)).unwrap();
    /// let rows: Result<Vec<u32>, String> = match db.inject().await {
    ///     Ok(()) => Ok(vec![1, 2, 3]), // the real query
    ///     Err(injected) => Err(injected.to_string()),
    /// };
    /// assert!(rows.is_err());
    /// # });
    /// ```
    #[inline]
    pub fn inject(&self) -> Inject {
        match self.decide() {
            None => Inject::ready(Ok(())),
            Some(action) => Inject::from_action(&self.shared.name, action),
        }
    }

    /// Runs `fut` unless a fault stops it: an injected delay is waited out first; an injected
    /// error or refusal is returned as the call's own error type (`E: From<Injected>`), so it
    /// takes the path a real failure would, and `fut` is never polled.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use palisade_chaos::{Fault, FaultInjector, Injected};
    /// #[derive(Debug)]
    /// enum ApiError { Upstream(String), Injected(Injected) }
    /// impl From<Injected> for ApiError {
    ///     fn from(e: Injected) -> Self { ApiError::Injected(e) }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
    /// let github = FaultInjector::builder("github").allow(true).build().unwrap();
    /// let ok = github.call(async { Ok::<_, ApiError>("issue #1") }).await;
    /// assert!(ok.is_ok());
    ///
    /// github.enable(Fault::refuse(Duration::from_secs(1)), 1.0, Duration::from_secs(60)).unwrap();
    /// let refused = github.call(async { Ok::<_, ApiError>("issue #2") }).await;
    /// assert!(matches!(refused, Err(ApiError::Injected(Injected::Refused { .. }))));
    /// # });
    /// ```
    pub fn call<F, T, E>(&self, fut: F) -> Call<F>
    where
        F: Future<Output = Result<T, E>>,
        E: From<Injected>,
    {
        Call {
            inject: self.inject(),
            passed: false,
            fut,
        }
    }

    /// Switches injection on: `fault` for a share `rate` (0 to 1) of the calls, for `ttl`
    /// (at most the config's `max_ttl`, 1 h by default), after which it switches itself off.
    /// Replaces an injection already on (with a new time-to-live).
    ///
    /// Refused with [`ControlError::Rejected`] when the config does not allow fault injection,
    /// and with [`ControlError::InvalidConfig`] naming the field (`rate`, `ttl`, `latency_ms`,
    /// `latency_max_ms`, `retry_after_ms`) when a value is out of range; nothing changes then.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use palisade_chaos::{Fault, FaultInjector};
    /// use palisade_core::ControlError;
    ///
    /// let locked = FaultInjector::builder("github").build().unwrap();
    /// let err = locked.enable(Fault::error(), 1.0, Duration::from_secs(30)).unwrap_err();
    /// assert!(matches!(err, ControlError::Rejected { .. }));
    /// assert!(err.to_string().contains("not allowed on this instance"));
    ///
    /// let github = FaultInjector::builder("github").allow(true).build().unwrap();
    /// let err = github.enable(Fault::error(), 1.5, Duration::from_secs(30)).unwrap_err();
    /// assert!(matches!(err, ControlError::InvalidConfig(ref c) if c.field == "rate"));
    /// github.enable(Fault::latency(Duration::from_millis(200)), 0.5, Duration::from_secs(300)).unwrap();
    /// assert!(github.is_enabled());
    /// ```
    pub fn enable(&self, fault: Fault, rate: f64, ttl: Duration) -> Result<(), ControlError> {
        let s = &*self.shared;
        if !s.config.enabled_in_config {
            return Err(not_allowed(&s.name));
        }
        fault.validate()?;
        validate_rate(rate)?;
        validate_ttl(ttl, s.config.max_ttl)?;
        let now = s.clock.now_nanos();
        // An injection whose ttl ran out unnoticed is recorded as over before the new one.
        s.expire_if_due(now);
        let lease = Lease::new(now, ttl);
        let at = s.clock.unix_millis();
        let what = format!(
            "{fault} at rate {rate} for {}",
            format_duration(lease.ttl())
        );
        let mut st = s.state.lock();
        let was_on = st.active.as_ref().is_some_and(|a| !a.lease.expired(now));
        st.active = Some(Active {
            fault,
            rate,
            lease,
            enabled_at_unix_ms: at,
            audit_after_seq: s.events.published(),
            enabled_by: None,
        });
        s.deadline.store(lease.deadline, Ordering::Release);
        let from = if was_on { "on" } else { "off" };
        st.last_transition = Some(Transition {
            from,
            to: "on",
            reason: format!("enabled: {what}"),
            at_unix_ms: at,
        });
        drop(st);
        tracing::warn!(target: "palisade::chaos", fault_injector = %s.name, fault = %fault, rate,
            ttl_ms = decide::ceil_millis(lease.ttl()), "fault injection switched on");
        let kind = if was_on {
            EventKind::ConfigChanged {
                change: format!("fault injection now {what}"),
            }
        } else {
            EventKind::StateTransition {
                from: "off".into(),
                to: "on".into(),
                reason: format!("enabled: {what}"),
            }
        };
        s.events
            .publish(ComponentKind::FaultInjector, &s.name, kind);
        Ok(())
    }

    /// Switches injection off now. Returns whether it was on. Always accepted, allowed or not.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use palisade_chaos::{Fault, FaultInjector};
    /// let github = FaultInjector::builder("github").allow(true).build().unwrap();
    /// github.enable(Fault::error(), 1.0, Duration::from_secs(30)).unwrap();
    /// assert!(github.disable());
    /// assert!(!github.disable());
    /// assert!(!github.is_enabled());
    /// ```
    pub fn disable(&self) -> bool {
        let s = &*self.shared;
        // One whose ttl ran out unnoticed was not on: it is recorded as over, not as disabled.
        s.expire_if_due(s.clock.now_nanos());
        s.switch_off(None, "disabled")
    }

    /// Whether the call about to be made is faulted, and how. Draws its samples and counts.
    pub(crate) fn decide(&self) -> Option<Action> {
        let s = &*self.shared;
        let deadline = s.deadline.load(Ordering::Acquire);
        if deadline == 0 {
            return None;
        }
        s.decide_slow(deadline)
    }
}

pub(crate) fn not_allowed(name: &str) -> ControlError {
    tracing::warn!(target: "palisade::chaos", fault_injector = %name,
        "fault injection refused: not allowed on this instance");
    ControlError::Rejected {
        action: "enable".into(),
        reason: "fault injection is not allowed on this instance; set `enabled_in_config = true` \
                 in the fault injector's config (FaultInjector::builder(..).allow(true)) and \
                 restart to allow it"
            .into(),
    }
}

pub(crate) fn validate_rate(rate: f64) -> Result<(), ConfigError> {
    if !rate.is_finite() {
        return Err(ConfigError::new(
            "rate",
            "must be a number from 0 to 1 (the share of calls to fault)",
        ));
    }
    check_range("rate", rate, 0.0, 1.0)
}

pub(crate) fn validate_ttl(ttl: Duration, max: Duration) -> Result<(), ConfigError> {
    if ttl.is_zero() {
        return Err(ConfigError::new(
            "ttl",
            format!(
                "must be more than 0: fault injection always switches itself off; give a ttl \
                 such as \"5m\" (at most {})",
                format_duration(max)
            ),
        ));
    }
    check_duration("ttl", ttl, MIN_TTL, max)
}

impl Shared {
    #[cold]
    fn decide_slow(&self, deadline: u64) -> Option<Action> {
        let now = self.clock.now_nanos();
        if now >= deadline {
            self.expire_if_due(now);
            return None;
        }
        let mut st = self.state.lock();
        let (fault, rate) = match &st.active {
            Some(a) if !a.lease.expired(now) => (a.fault, a.rate),
            // Switched off (or re-enabled and already over) since the load above.
            _ => return None,
        };
        let hit = st.random.sample();
        let latency_sample = match fault {
            Fault::Latency { min, max } if max > min => st.random.sample(),
            _ => 0.0,
        };
        drop(st);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let action = decide::decide(&fault, rate, hit, latency_sample)?;
        let counter = match action {
            Action::Delay(_) => &self.injected_latency,
            Action::Error => &self.injected_errors,
            Action::Refuse(_) => &self.injected_refusals,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Some(action)
    }

    /// Switches off an injection whose time-to-live has run out at `now`.
    pub(crate) fn expire_if_due(&self, now: u64) {
        let deadline = self.deadline.load(Ordering::Acquire);
        if deadline == 0 || now < deadline {
            return;
        }
        self.switch_off(Some(now), "");
    }

    /// Switches off: at once (`expired_at: None`, for `reason`), or only if the active lease
    /// has run out at the given time. Returns whether it was on.
    fn switch_off(&self, expired_at: Option<u64>, reason: &str) -> bool {
        let at = self.clock.unix_millis();
        let mut st = self.state.lock();
        let reason = match (&st.active, expired_at) {
            (None, _) => return false,
            (Some(a), Some(now)) if !a.lease.expired(now) => return false,
            (Some(a), Some(_)) => {
                format!("ttl of {} elapsed", format_duration(a.lease.ttl()))
            }
            (Some(_), None) => reason.to_owned(),
        };
        st.active = None;
        self.deadline.store(0, Ordering::Release);
        st.last_transition = Some(Transition {
            from: "on",
            to: "off",
            reason: reason.clone(),
            at_unix_ms: at,
        });
        drop(st);
        tracing::warn!(target: "palisade::chaos", fault_injector = %self.name, reason = %reason,
            "fault injection switched off");
        self.events.publish(
            ComponentKind::FaultInjector,
            &self.name,
            EventKind::StateTransition {
                from: "on".into(),
                to: "off".into(),
                reason,
            },
        );
        true
    }

    /// Fills in who switched the active injection on, from the admin router's audit event of
    /// that `enable` (published on the same bus right after the command was applied). Stays
    /// unknown when it was switched on without the admin API, or the event has left the ring.
    /// Best effort when two operators enable the same injector at the same instant: the
    /// newest `enable` audit is taken (the audit trail itself always has both).
    pub(crate) fn find_enabled_by(&self) {
        let (after, lease) = match &self.state.lock().active {
            Some(a) if a.enabled_by.is_none() => (a.audit_after_seq, a.lease),
            _ => return,
        };
        let filter = EventFilter {
            kind: Some(ComponentKind::FaultInjector),
            component: Some(self.name.to_string()),
            since_seq: Some(after),
            limit: None,
        };
        let events = self.events.recent(&filter);
        let Some(last_seen) = events.last().map(|e| e.seq) else {
            return;
        };
        let found = events.into_iter().rev().find_map(|e| match e.kind {
            EventKind::Audit { actor, action, .. } if action == "enable" => Some(actor),
            _ => None,
        });
        let mut st = self.state.lock();
        // Still the same injection (not switched off or replaced meanwhile)?
        if let Some(a) = st
            .active
            .as_mut()
            .filter(|a| a.lease == lease && a.audit_after_seq == after)
        {
            match found {
                Some(actor) => a.enabled_by = Some(actor),
                // Not yet (or never): the next look starts after what was read.
                None => a.audit_after_seq = last_seen,
            }
        }
    }
}

/// The future returned by [`FaultInjector::inject`]: ready at once unless a delay is
/// injected, which it sleeps out on tokio's timer.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct Inject {
    #[pin]
    step: Step,
}

#[pin_project(project = StepProj)]
enum Step {
    Ready(Option<Result<(), Injected>>),
    Delay(Duration),
    Sleeping(#[pin] Sleep),
}

impl std::fmt::Debug for Inject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let step = match &self.step {
            Step::Ready(Some(Ok(()))) => "pass".to_owned(),
            Step::Ready(Some(Err(e))) => e.to_string(),
            Step::Ready(None) => "done".to_owned(),
            Step::Delay(d) => format!("delay {d:?}"),
            Step::Sleeping(_) => "sleeping".to_owned(),
        };
        f.debug_struct("Inject").field("step", &step).finish()
    }
}

impl Inject {
    pub(crate) fn ready(result: Result<(), Injected>) -> Inject {
        Inject {
            step: Step::Ready(Some(result)),
        }
    }

    pub(crate) fn from_action(name: &Arc<str>, action: Action) -> Inject {
        match action {
            Action::Delay(d) => Inject {
                step: Step::Delay(d),
            },
            Action::Error => Inject::ready(Err(Injected::Error { name: name.clone() })),
            Action::Refuse(retry_after) => Inject::ready(Err(Injected::Refused {
                name: name.clone(),
                retry_after,
            })),
        }
    }
}

impl Future for Inject {
    type Output = Result<(), Injected>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut step = self.project().step;
        loop {
            match step.as_mut().project() {
                // Polled again after completion: nothing more is injected.
                StepProj::Ready(result) => return Poll::Ready(result.take().unwrap_or(Ok(()))),
                StepProj::Delay(d) => {
                    // The timer is made on first poll, inside the runtime.
                    let sleep = tokio::time::sleep(*d);
                    step.set(Step::Sleeping(sleep));
                }
                StepProj::Sleeping(sleep) => {
                    ready!(sleep.poll(cx));
                    step.set(Step::Ready(None));
                    return Poll::Ready(Ok(()));
                }
            }
        }
    }
}

/// The future returned by [`FaultInjector::call`]: the injection first, then the call.
#[pin_project]
#[must_use = "futures do nothing unless polled"]
pub struct Call<F> {
    #[pin]
    inject: Inject,
    passed: bool,
    #[pin]
    fut: F,
}

impl<F> std::fmt::Debug for Call<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("inject", &self.inject)
            .field("running", &self.passed)
            .finish()
    }
}

impl<F> Call<F> {
    /// A call whose injection was decided already (the tower layer's path).
    #[cfg(feature = "tower")]
    pub(crate) fn new(inject: Inject, fut: F) -> Self {
        Call {
            inject,
            passed: false,
            fut,
        }
    }
}

impl<F, T, E> Future for Call<F>
where
    F: Future<Output = Result<T, E>>,
    E: From<Injected>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if !*this.passed {
            if let Err(injected) = ready!(this.inject.poll(cx)) {
                return Poll::Ready(Err(E::from(injected)));
            }
            *this.passed = true;
        }
        this.fut.poll(cx)
    }
}
