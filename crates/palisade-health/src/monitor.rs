//! The monitor: one loop per component, thresholds, auto-restart with backoff, crash-loop
//! protection, and the aggregate report.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use palisade_core::{
    BuildError, ComponentKind, EventBus, EventKind, Registry, SharedClock, SystemClock,
    config::ConfigError,
};
use parking_lot::{Mutex, RwLock};
use serde::Serialize;
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use crate::check::{CheckResult, HealthCheck, Restartable, Status, format_latency};
use crate::config::{CheckConfig, MonitorConfig};
use crate::restart::{Decision, Restarts, jittered};

/// The crash-loop message operators know from the runbooks.
pub const CRASH_LOOP_MESSAGE: &str =
    "Instance has exceeded max restart attempts. Entering crash loop protection.";

/// Runs health checks, restarts failing components and reports overall health.
///
/// ```
/// use std::time::Duration;
/// use palisade_health::{CheckResult, HealthMonitor, check_fn};
///
/// # tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(async {
/// let monitor = HealthMonitor::builder().build()?;
/// monitor
///     .add("search-api", check_fn(|| async { CheckResult::healthy("200 OK") }))
///     .interval(Duration::from_secs(10))
///     .start()?;
/// let report = monitor.check_all().await;
/// assert!(report.ready && report.live);
/// assert_eq!(report.summary.healthy, 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct HealthMonitor {
    inner: Arc<MonitorInner>,
}

pub(crate) struct MonitorInner {
    components: RwLock<BTreeMap<String, Arc<ComponentState>>>,
    pub auto_restart: AtomicBool,
    pub events: EventBus,
    pub clock: SharedClock,
    registry: Option<Registry>,
    defaults: CheckConfig,
}

impl fmt::Debug for HealthMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HealthMonitor")
            .field("components", &self.inner.components.read().len())
            .field("auto_restart", &self.auto_restart())
            .finish_non_exhaustive()
    }
}

/// Builds a [`HealthMonitor`]; see [`HealthMonitor::builder`].
#[derive(Debug, Default)]
#[must_use]
pub struct MonitorBuilder {
    config: MonitorConfig,
    registry: Option<Registry>,
    clock: Option<SharedClock>,
}

impl MonitorBuilder {
    /// Replaces the config (for example [`MonitorConfig::from_env`]).
    pub fn config(mut self, config: MonitorConfig) -> Self {
        self.config = config;
        self
    }

    /// Registers every component in `registry` (kind `health`) and publishes events there.
    pub fn registry(mut self, registry: &Registry) -> Self {
        self.registry = Some(registry.clone());
        self
    }

    /// Timestamps from `clock` (tests: `TokioClock`). Scheduling always uses tokio's timer.
    pub fn clock(mut self, clock: SharedClock) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Validates and builds the monitor.
    pub fn build(self) -> Result<HealthMonitor, BuildError> {
        self.config.validate()?;
        let clock = self.clock.unwrap_or_else(SystemClock::shared);
        Ok(HealthMonitor {
            inner: Arc::new(MonitorInner {
                components: RwLock::new(BTreeMap::new()),
                auto_restart: AtomicBool::new(self.config.auto_restart),
                events: palisade_core::registry::bus_for(self.registry.as_ref(), clock.clone()),
                clock,
                registry: self.registry,
                defaults: self.config.defaults,
            }),
        })
    }
}

/// Adds a component; see [`HealthMonitor::add`].
#[must_use]
pub struct ComponentBuilder {
    monitor: HealthMonitor,
    name: String,
    check: Arc<dyn HealthCheck>,
    restarter: Option<Arc<dyn Restartable>>,
    config: CheckConfig,
}

impl fmt::Debug for ComponentBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentBuilder")
            .field("name", &self.name)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ComponentBuilder {
    /// Replaces the component's config (default: the monitor's defaults).
    pub fn config(mut self, config: CheckConfig) -> Self {
        self.config = config;
        self
    }

    /// Time between checks.
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// Cancels a check after this long (it counts as unhealthy).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.config.timeout = timeout;
        self
    }

    /// Consecutive failures that make it unhealthy (and restart it).
    pub fn failure_threshold(mut self, n: u32) -> Self {
        self.config.failure_threshold = n;
        self
    }

    /// Whether the service is not ready without it.
    pub fn critical(mut self, critical: bool) -> Self {
        self.config.critical = critical;
        self
    }

    /// Lets the monitor restart it when it fails.
    pub fn restartable(mut self, restarter: Arc<dyn Restartable>) -> Self {
        self.restarter = Some(restarter);
        self
    }

    /// Validates, registers and starts checking it (call inside a tokio runtime).
    pub fn start(self) -> Result<ComponentHandle, BuildError> {
        palisade_core::registry::check_name(&self.name)?;
        self.config
            .validate()
            .map_err(|e| BuildError::InvalidConfig(e.within(&self.name)))?;
        let m = &self.monitor.inner;
        if m.components.read().contains_key(&self.name) {
            return Err(BuildError::InvalidConfig(ConfigError::new(
                "name",
                format!("a component named '{}' is already monitored", self.name),
            )));
        }
        let (stop, stopped) = watch::channel(false);
        let state = Arc::new(ComponentState {
            name: Arc::from(self.name.as_str()),
            check: self.check,
            restarter: self.restarter,
            auto_restart: AtomicBool::new(self.config.auto_restart),
            config: Mutex::new(self.config),
            run: Mutex::new(Runtime::default()),
            running: tokio::sync::Mutex::new(()),
            wake: Notify::new(),
            stop,
            monitor: Arc::downgrade(m),
        });
        let handle = ComponentHandle {
            state: Arc::clone(&state),
        };
        if let Some(registry) = &m.registry {
            registry.register(Arc::new(handle.clone()))?;
        }
        m.components
            .write()
            .insert(self.name.clone(), Arc::clone(&state));
        tokio::spawn(run(state, stopped));
        Ok(handle)
    }
}

/// What a component's loop knows.
#[derive(Debug, Default)]
struct Runtime {
    checked: bool,
    status: Option<Status>,
    message: String,
    latency: Duration,
    last_check_ms: Option<u64>,
    last_success_ms: Option<u64>,
    consecutive_failures: u32,
    consecutive_successes: u32,
    /// The restart history and what the policy makes of it.
    restarts: Restarts,
    healthy_since: Option<Instant>,
    last_restart_error: Option<String>,
}

pub(crate) struct ComponentState {
    pub name: Arc<str>,
    check: Arc<dyn HealthCheck>,
    restarter: Option<Arc<dyn Restartable>>,
    pub auto_restart: AtomicBool,
    config: Mutex<CheckConfig>,
    run: Mutex<Runtime>,
    /// Serializes check rounds (the loop's, `check_now`'s, `check_all`'s).
    running: tokio::sync::Mutex<()>,
    wake: Notify,
    stop: watch::Sender<bool>,
    monitor: Weak<MonitorInner>,
}

/// One component as the report shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ComponentSnapshot {
    /// The component's name.
    pub name: String,
    /// Its status; `None` until the first check.
    pub status: Option<Status>,
    /// The last check's message.
    pub message: String,
    /// The last check's duration in milliseconds.
    pub latency_ms: f64,
    /// When it was last checked (ms since the Unix epoch).
    pub last_check_ms: Option<u64>,
    /// When a check last passed.
    pub last_success_ms: Option<u64>,
    /// Failed checks in a row.
    pub consecutive_failures: u32,
    /// Restarts so far.
    pub restart_count: u64,
    /// The wait before the next restart may happen, in milliseconds.
    pub current_backoff_ms: u64,
    /// Whether it is in crash-loop protection (no longer restarted).
    pub crash_loop: bool,
    /// Whether it can be restarted.
    pub restartable: bool,
    /// Whether it is restarted automatically (this component's switch).
    pub auto_restart: bool,
    /// Whether the service is not ready without it.
    pub critical: bool,
    /// The last restart's error, if it failed.
    pub last_restart_error: Option<String>,
}

/// Counts over all components.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Components monitored.
    pub total: usize,
    /// Healthy ones.
    pub healthy: usize,
    /// Degraded ones.
    pub degraded: usize,
    /// Unhealthy ones.
    pub unhealthy: usize,
    /// Not checked yet.
    pub unknown: usize,
    /// In crash-loop protection.
    pub crash_looping: usize,
}

/// Overall health: what `/health`, `/livez` and `/readyz` answer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HealthReport {
    /// `unhealthy` if a critical component is; `degraded` if any component is degraded,
    /// unhealthy or crash-looping; else `healthy`.
    pub status: Status,
    /// Whether the process is alive (no component marked `liveness` is unhealthy). An open
    /// circuit breaker never fails liveness.
    pub live: bool,
    /// Whether traffic should come here: every critical component checked and not unhealthy.
    pub ready: bool,
    /// Whether auto-restart is on for the whole monitor.
    pub auto_restart: bool,
    /// Counts.
    pub summary: Summary,
    /// Every component.
    pub components: BTreeMap<String, ComponentSnapshot>,
}

impl HealthMonitor {
    /// A builder (config defaults; see [`MonitorConfig::from_env`] for the environment).
    pub fn builder() -> MonitorBuilder {
        MonitorBuilder::default()
    }

    /// Starts describing a component named `name` checked by `check`; finish with
    /// [`ComponentBuilder::start`].
    pub fn add(&self, name: impl Into<String>, check: impl HealthCheck) -> ComponentBuilder {
        self.add_shared(name, Arc::new(check))
    }

    /// [`add`](Self::add) with a shared check.
    pub fn add_shared(
        &self,
        name: impl Into<String>,
        check: Arc<dyn HealthCheck>,
    ) -> ComponentBuilder {
        ComponentBuilder {
            monitor: self.clone(),
            name: name.into(),
            check,
            restarter: None,
            config: self.inner.defaults.clone(),
        }
    }

    /// Turns auto-restart on or off for every component at once (each component's own
    /// switch still applies).
    pub fn set_auto_restart(&self, enabled: bool) {
        let old = self.inner.auto_restart.swap(enabled, Ordering::Relaxed);
        if old != enabled {
            self.inner.events.publish(
                ComponentKind::Health,
                "monitor",
                EventKind::ConfigChanged {
                    change: format!("auto_restart {old} -> {enabled}"),
                },
            );
        }
    }

    /// Whether auto-restart is on for the whole monitor.
    pub fn auto_restart(&self) -> bool {
        self.inner.auto_restart.load(Ordering::Relaxed)
    }

    /// A component's handle.
    pub fn component(&self, name: &str) -> Option<ComponentHandle> {
        self.inner
            .components
            .read()
            .get(name)
            .map(|s| ComponentHandle {
                state: Arc::clone(s),
            })
    }

    /// Runs every check now (restarting what must be), then reports.
    pub async fn check_all(&self) -> HealthReport {
        let states: Vec<_> = self.inner.components.read().values().cloned().collect();
        for s in states {
            round(&s).await;
        }
        self.report()
    }

    /// The report as of the last checks (no check runs).
    pub fn report(&self) -> HealthReport {
        let states: Vec<_> = self.inner.components.read().values().cloned().collect();
        let mut summary = Summary {
            total: states.len(),
            ..Summary::default()
        };
        let (mut status, mut live, mut ready) = (Status::Healthy, true, true);
        let mut components = BTreeMap::new();
        for s in states {
            let snap = s.snapshot();
            let cfg = s.config.lock().clone();
            match snap.status {
                None => summary.unknown += 1,
                Some(Status::Healthy) => summary.healthy += 1,
                Some(Status::Degraded) => summary.degraded += 1,
                Some(Status::Unhealthy) => summary.unhealthy += 1,
            }
            if snap.crash_loop {
                summary.crash_looping += 1;
            }
            let unhealthy = snap.status == Some(Status::Unhealthy);
            if cfg.critical && (unhealthy || snap.status.is_none()) {
                ready = false;
            }
            if cfg.liveness && unhealthy {
                live = false;
            }
            if cfg.critical && unhealthy {
                status = Status::Unhealthy;
            } else if status == Status::Healthy
                && (unhealthy || snap.crash_loop || snap.status == Some(Status::Degraded))
            {
                status = Status::Degraded;
            }
            components.insert(snap.name.clone(), snap);
        }
        HealthReport {
            status,
            live,
            ready,
            auto_restart: self.auto_restart(),
            summary,
            components,
        }
    }

    /// Stops every component's loop.
    pub fn shutdown(&self) {
        for s in self.inner.components.read().values() {
            let _ = s.stop.send(true);
        }
    }

    /// The event bus the monitor publishes to.
    pub fn events(&self) -> &EventBus {
        &self.inner.events
    }
}

/// A monitored component: inspect it, check it now, restart it, reset its crash loop, switch
/// its auto-restart. Registered in the registry (kind `health`) under its name.
#[derive(Clone)]
pub struct ComponentHandle {
    pub(crate) state: Arc<ComponentState>,
}

impl fmt::Debug for ComponentHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ComponentHandle")
            .field("name", &self.state.name)
            .finish_non_exhaustive()
    }
}

impl ComponentHandle {
    /// The component's name.
    pub fn name(&self) -> &str {
        &self.state.name
    }

    /// The component as the report shows it.
    pub fn snapshot(&self) -> ComponentSnapshot {
        self.state.snapshot()
    }

    /// Runs its check now (restarting it if that is due) and returns the snapshot after.
    pub async fn check_now(&self) -> ComponentSnapshot {
        round(&self.state).await;
        self.snapshot()
    }

    /// Restarts it now, whatever its state, backoff or crash loop (an operator's decision).
    pub async fn restart(&self) -> Result<(), String> {
        let s = &self.state;
        let Some(restarter) = s.restarter.clone() else {
            return Err(format!("component '{}' is not restartable", s.name));
        };
        s.publish(EventKind::AdminAction {
            action: "restart".into(),
        });
        let guard = s.running.lock().await;
        let result = restarter.restart().await;
        {
            let mut r = s.run.lock();
            r.restarts.count += 1;
            r.last_restart_error = result.as_ref().err().cloned();
        }
        drop(guard);
        s.wake.notify_one();
        result
    }

    /// Leaves crash-loop protection: the restart history and backoff start over.
    pub fn reset_crash_loop(&self) {
        let s = &self.state;
        let was = s.run.lock().restarts.reset();
        s.publish(EventKind::AdminAction {
            action: "reset_crash_loop".into(),
        });
        if was {
            s.publish(EventKind::StateTransition {
                from: "crash_loop".into(),
                to: "restartable".into(),
                reason: "admin: reset_crash_loop".into(),
            });
        }
        s.wake.notify_one();
    }

    /// Turns this component's auto-restart on or off.
    pub fn set_auto_restart(&self, enabled: bool) {
        let s = &self.state;
        let old = s.auto_restart.swap(enabled, Ordering::Relaxed);
        if old != enabled {
            s.publish(EventKind::ConfigChanged {
                change: format!("auto_restart {old} -> {enabled}"),
            });
        }
        s.wake.notify_one();
    }

    /// Stops checking it.
    pub fn stop(&self) {
        let _ = self.state.stop.send(true);
    }
}

impl ComponentState {
    pub(crate) fn publish(&self, kind: EventKind) {
        if let Some(m) = self.monitor.upgrade() {
            m.events.publish(ComponentKind::Health, &self.name, kind);
        }
    }

    fn now_ms(&self) -> Option<u64> {
        self.monitor.upgrade().map(|m| m.clock.unix_millis())
    }

    pub(crate) fn snapshot(&self) -> ComponentSnapshot {
        let cfg = self.config.lock().clone();
        let r = self.run.lock();
        ComponentSnapshot {
            name: self.name.to_string(),
            status: r.status,
            message: r.message.clone(),
            latency_ms: r.latency.as_secs_f64() * 1000.0,
            last_check_ms: r.last_check_ms,
            last_success_ms: r.last_success_ms,
            consecutive_failures: r.consecutive_failures,
            restart_count: r.restarts.count,
            current_backoff_ms: u64::try_from(r.restarts.backoff.as_millis()).unwrap_or(u64::MAX),
            crash_loop: r.restarts.crash_loop,
            restartable: self.restarter.is_some(),
            auto_restart: self.auto_restart.load(Ordering::Relaxed),
            critical: cfg.critical,
            last_restart_error: r.last_restart_error.clone(),
        }
    }

    fn auto_restart_on(&self) -> bool {
        self.auto_restart.load(Ordering::Relaxed)
            && self
                .monitor
                .upgrade()
                .is_some_and(|m| m.auto_restart.load(Ordering::Relaxed))
    }
}

/// The component's loop: check, restart if due, sleep until the next check or restart, or
/// until woken.
async fn run(state: Arc<ComponentState>, mut stopped: watch::Receiver<bool>) {
    let changes = state.check.changes();
    loop {
        let next = round(&state).await;
        let changed = async {
            match &changes {
                Some(n) => n.notified().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = state.wake.notified() => {}
            _ = changed => {}
            _ = stopped.changed() => {}
        }
        if *stopped.borrow() || state.monitor.strong_count() == 0 {
            return;
        }
    }
}

/// One check round: check, apply thresholds, restart if due. Returns when the loop should run
/// again.
async fn round(s: &ComponentState) -> Instant {
    let _round = s.running.lock().await;
    let cfg = s.config.lock().clone();
    let started = Instant::now();
    let result = match tokio::time::timeout(cfg.timeout, s.check.check()).await {
        Ok(r) => r,
        Err(_) => CheckResult::unhealthy(format!(
            "check timed out after {}",
            format_latency(cfg.timeout)
        )),
    };
    let latency = started.elapsed();
    apply(s, &cfg, result, latency);
    let restart_at = restart_if_due(s, &cfg).await;
    let mut next = Instant::now() + jittered(cfg.interval, cfg.jitter, fastrand::f64());
    if let Some(at) = restart_at {
        next = next.min(at);
    }
    next
}

fn apply(s: &ComponentState, cfg: &CheckConfig, result: CheckResult, latency: Duration) {
    let now_ms = s.now_ms();
    let now = Instant::now();
    let mut r = s.run.lock();
    let before = r.status;
    r.checked = true;
    r.latency = latency;
    r.last_check_ms = now_ms;
    match result.status {
        Status::Unhealthy => {
            r.consecutive_failures = r.consecutive_failures.saturating_add(1);
            r.consecutive_successes = 0;
            r.healthy_since = None;
            if r.consecutive_failures >= cfg.failure_threshold || r.status.is_none() {
                r.status = Some(Status::Unhealthy);
                r.message = result.message;
            } else {
                r.message = format!(
                    "{} ({} of {} failures before unhealthy)",
                    result.message, r.consecutive_failures, cfg.failure_threshold
                );
            }
        }
        ok => {
            r.consecutive_successes = r.consecutive_successes.saturating_add(1);
            r.consecutive_failures = 0;
            r.last_success_ms = now_ms;
            if r.healthy_since.is_none() {
                r.healthy_since = Some(now);
            }
            if r.status == Some(Status::Unhealthy)
                && r.consecutive_successes < cfg.success_threshold
            {
                r.message = format!(
                    "{} ({} of {} passes before healthy)",
                    result.message, r.consecutive_successes, cfg.success_threshold
                );
            } else {
                r.status = Some(ok);
                r.message = result.message;
            }
            // Stable long enough: the backoff starts over.
            if let Some(since) = r.healthy_since {
                r.restarts.healthy(&cfg.restart, since, now);
            }
        }
    }
    let after = r.status;
    let message = r.message.clone();
    drop(r);
    if before != after {
        let name = |st: Option<Status>| st.map_or("unknown", Status::as_str).to_owned();
        tracing::info!(target: "palisade::health", component = %s.name, from = %name(before), to = %name(after), %message, "health changed");
        s.publish(EventKind::StateTransition {
            from: name(before),
            to: name(after),
            reason: message,
        });
    }
}

/// Restarts the component if it is failing, restartable, allowed and not braked (the policy
/// itself is [`Restarts::decide`]). Returns when a restart will next be allowed, if one is
/// waiting for its backoff.
async fn restart_if_due(s: &ComponentState, cfg: &CheckConfig) -> Option<Instant> {
    let restarter = s.restarter.clone()?;
    let policy = &cfg.restart;
    let attempt = {
        let mut r = s.run.lock();
        if r.consecutive_failures < cfg.failure_threshold || !s.auto_restart_on() {
            return None;
        }
        match r.restarts.decide(policy, Instant::now(), fastrand::f64()) {
            Decision::Braked => return None,
            Decision::WaitUntil(at) => return Some(at),
            Decision::CrashLoop { restarts: n } => {
                drop(r);
                tracing::error!(target: "palisade::health", component = %s.name, restarts = n, window = ?policy.window, "{CRASH_LOOP_MESSAGE}");
                s.publish(EventKind::StateTransition {
                    from: "restarting".into(),
                    to: "crash_loop".into(),
                    reason: format!(
                        "{CRASH_LOOP_MESSAGE} ({n} restarts within {:?})",
                        policy.window
                    ),
                });
                return None;
            }
            Decision::Restart { attempt, .. } => attempt,
        }
    };
    let result = restarter.restart().await;
    let backoff = s.run.lock().restarts.backoff;
    match &result {
        Ok(()) => {
            tracing::warn!(target: "palisade::health", component = %s.name, attempt, next_backoff = ?backoff, "restarted");
        }
        Err(e) => {
            tracing::error!(target: "palisade::health", component = %s.name, attempt, error = %e, "restart failed");
        }
    }
    s.run.lock().last_restart_error = result.as_ref().err().cloned();
    s.publish(EventKind::Notice {
        message: match &result {
            Ok(()) => {
                format!("restarted (restart {attempt}); next restart no sooner than {backoff:?}")
            }
            Err(e) => format!("restart {attempt} failed: {e}"),
        },
        details: serde_json::json!({"restart": attempt, "backoff_ms": backoff.as_millis() as u64}),
    });
    // Check again soon to see whether the restart helped.
    Some(Instant::now() + cfg.interval.min(backoff).max(Duration::from_millis(1)))
}
