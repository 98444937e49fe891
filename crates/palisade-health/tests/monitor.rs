//! The monitor on tokio's paused clock: thresholds, flapping, backoff growth and reset, the
//! crash-loop brake and its manual reset, and the auto-restart switches.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use palisade_core::{ComponentKind, EventFilter, EventKind, Registry, TokioClock};
use palisade_health::{
    CRASH_LOOP_MESSAGE, CheckConfig, CheckResult, ComponentHandle, HealthCheck, HealthMonitor,
    MonitorConfig, RestartPolicy, Restartable, Status, async_trait,
};
use parking_lot::Mutex;
use tokio::time::{Instant, sleep};

/// A check whose answer the test sets: 0 healthy, 1 degraded, 2 unhealthy.
#[derive(Clone, Default)]
struct Dial(Arc<AtomicU8>);

impl Dial {
    fn set(&self, s: Status) {
        self.0.store(
            match s {
                Status::Healthy => 0,
                Status::Degraded => 1,
                Status::Unhealthy => 2,
            },
            Ordering::SeqCst,
        );
    }
}

#[async_trait]
impl HealthCheck for Dial {
    async fn check(&self) -> CheckResult {
        match self.0.load(Ordering::SeqCst) {
            0 => CheckResult::healthy("fine"),
            1 => CheckResult::degraded("slow"),
            _ => CheckResult::unhealthy("down"),
        }
    }
}

/// Records when it was restarted (seconds since `start`).
struct Recorder {
    start: Instant,
    at: Mutex<Vec<f64>>,
}

impl Recorder {
    fn new() -> Arc<Self> {
        Arc::new(Recorder {
            start: Instant::now(),
            at: Mutex::new(Vec::new()),
        })
    }

    fn times(&self) -> Vec<f64> {
        self.at.lock().clone()
    }
}

#[async_trait]
impl Restartable for Recorder {
    async fn restart(&self) -> Result<(), String> {
        self.at.lock().push(self.start.elapsed().as_secs_f64());
        Ok(())
    }
}

fn config(interval_ms: u64, failure_threshold: u32, restart: RestartPolicy) -> CheckConfig {
    CheckConfig {
        interval: Duration::from_millis(interval_ms),
        jitter: 0.0,
        failure_threshold,
        restart,
        ..CheckConfig::default()
    }
}

fn policy(initial_ms: u64, factor: f64, max_ms: u64, max_restarts: u32) -> RestartPolicy {
    RestartPolicy {
        initial_backoff: Duration::from_millis(initial_ms),
        factor,
        max_backoff: Duration::from_millis(max_ms),
        jitter: 0.0,
        reset_after: Duration::from_secs(60),
        max_restarts,
        window: Duration::from_secs(600),
    }
}

fn monitor(registry: &Registry) -> HealthMonitor {
    HealthMonitor::builder()
        .registry(registry)
        .clock(TokioClock::shared())
        .build()
        .unwrap()
}

/// A monitor with one restartable component `name` under `cfg`, whose check starts unhealthy:
/// the registry, the monitor, the dial that steers the check, the recorder of restarts and the
/// component's handle.
fn failing(
    name: &str,
    cfg: CheckConfig,
) -> (
    Registry,
    HealthMonitor,
    Dial,
    Arc<Recorder>,
    ComponentHandle,
) {
    let registry = Registry::new();
    let m = monitor(&registry);
    let dial = Dial::default();
    dial.set(Status::Unhealthy);
    let rec = Recorder::new();
    let c = m
        .add(name, dial.clone())
        .config(cfg)
        .restartable(rec.clone())
        .start()
        .unwrap();
    (registry, m, dial, rec, c)
}

/// Lets the loops run at the current instant, then steps to just after `secs` more.
async fn step(secs: f64) {
    sleep(Duration::from_secs_f64(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn thresholds_decide_and_flapping_never_trips() {
    let registry = Registry::new();
    let m = monitor(&registry);
    let dial = Dial::default();
    let mut cfg = config(10_000, 3, RestartPolicy::default());
    cfg.success_threshold = 2;
    let c = m.add("search", dial.clone()).config(cfg).start().unwrap();
    step(0.001).await;
    assert_eq!(c.snapshot().status, Some(Status::Healthy));

    dial.set(Status::Unhealthy);
    step(10.0).await;
    let s = c.snapshot();
    assert_eq!(s.status, Some(Status::Healthy), "one failure is not enough");
    assert!(s.message.contains("1 of 3"), "{}", s.message);
    step(10.0).await;
    assert_eq!(c.snapshot().consecutive_failures, 2);
    step(10.0).await;
    assert_eq!(c.snapshot().status, Some(Status::Unhealthy));

    dial.set(Status::Healthy);
    step(10.0).await;
    let s = c.snapshot();
    assert_eq!(s.status, Some(Status::Unhealthy), "one pass is not enough");
    assert!(s.message.contains("1 of 2 passes"), "{}", s.message);
    step(10.0).await;
    assert_eq!(c.snapshot().status, Some(Status::Healthy));

    // Flapping: fail, pass, fail, pass... never three failures in a row.
    for i in 0..10 {
        dial.set(if i % 2 == 0 {
            Status::Unhealthy
        } else {
            Status::Healthy
        });
        step(10.0).await;
        assert_eq!(c.snapshot().status, Some(Status::Healthy), "flap {i}");
    }
    let transitions: Vec<_> = m
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StateTransition { from, to, .. } => Some(format!("{from}->{to}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        transitions,
        [
            "unknown->healthy",
            "healthy->unhealthy",
            "unhealthy->healthy"
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn restart_backoff_grows_to_its_cap_and_resets_after_a_stable_period() {
    let (_registry, _m, dial, rec, c) =
        failing("worker", config(100, 1, policy(1000, 2.0, 8000, 100)));
    step(30.5).await;
    // First restart at once, then 1 s, 2 s, 4 s, 8 s, 8 s (capped) apart.
    assert_eq!(rec.times(), [0.0, 1.0, 3.0, 7.0, 15.0, 23.0]);
    assert_eq!(c.snapshot().current_backoff_ms, 8000);

    // Healthy for longer than reset_after (60 s): the backoff starts over.
    dial.set(Status::Healthy);
    step(61.0).await;
    dial.set(Status::Unhealthy);
    let before = rec.times().len();
    step(1.05).await;
    let times = rec.times();
    assert_eq!(times.len(), before + 2, "{times:?}");
    let (a, b) = (times[before], times[before + 1]);
    assert!(
        (b - a - 1.0).abs() < 1e-9,
        "restarts {a} and {b} should be 1 s apart"
    );
    assert_eq!(c.snapshot().restart_count, times.len() as u64);
}

#[tokio::test(start_paused = true)]
async fn too_many_restarts_enter_crash_loop_until_an_operator_resets_it() {
    let (registry, m, _dial, rec, c) =
        failing("mcp-github", config(100, 1, policy(1000, 1.0, 1000, 3)));
    step(3.5).await;
    assert_eq!(rec.times(), [0.0, 1.0, 2.0]);
    let s = c.snapshot();
    assert!(s.crash_loop);
    assert_eq!(s.restart_count, 3);
    let events = m.events().recent(&EventFilter::default());
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::StateTransition { to, reason, .. } if to == "crash_loop" && reason.contains(CRASH_LOOP_MESSAGE))));
    let report = m.report();
    assert_eq!(report.summary.crash_looping, 1);

    // No more restarts, however long it fails.
    step(120.0).await;
    assert_eq!(rec.times().len(), 3);

    // An operator restarts it by hand, then resets the brake.
    let out = registry
        .control(
            ComponentKind::Health,
            "mcp-github",
            serde_json::json!({"action": "restart"}),
        )
        .await
        .unwrap();
    assert_eq!(out["restart_count"], 4);
    assert_eq!(
        out["crash_loop"], true,
        "a manual restart does not lift the brake"
    );
    let out = registry
        .control(
            ComponentKind::Health,
            "mcp-github",
            serde_json::json!({"action": "reset_crash_loop"}),
        )
        .await
        .unwrap();
    assert_eq!(out["crash_loop"], false);
    step(0.05).await;
    assert_eq!(
        rec.times().len(),
        5,
        "restarts resume at once after the reset"
    );
    let err = registry
        .control(
            ComponentKind::Health,
            "mcp-github",
            serde_json::json!({"action": "reboot"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn auto_restart_can_be_switched_off_globally_and_per_component() {
    let registry = Registry::new();
    let m = HealthMonitor::builder()
        .registry(&registry)
        .clock(TokioClock::shared())
        .config(MonitorConfig {
            auto_restart: false, // HEALTH_MONITOR_AUTO_RESTART=false
            ..MonitorConfig::default()
        })
        .build()
        .unwrap();
    let dial = Dial::default();
    dial.set(Status::Unhealthy);
    let rec = Recorder::new();
    let c = m
        .add("scraper", dial.clone())
        .config(config(1000, 1, policy(1000, 2.0, 8000, 5)))
        .restartable(rec.clone())
        .start()
        .unwrap();
    step(30.0).await;
    assert!(rec.times().is_empty(), "global switch off");
    assert_eq!(c.snapshot().status, Some(Status::Unhealthy));
    let report = m.report();
    assert!(!report.ready && report.live);
    assert!(!report.auto_restart);

    m.set_auto_restart(true);
    step(1.0).await;
    assert_eq!(rec.times().len(), 1, "global switch on");

    registry
        .control(
            ComponentKind::Health,
            "scraper",
            serde_json::json!({"action": "set_auto_restart", "enabled": false}),
        )
        .await
        .unwrap();
    step(60.0).await;
    assert_eq!(rec.times().len(), 1, "component switch off");
    c.set_auto_restart(true);
    step(0.01).await;
    assert_eq!(rec.times().len(), 2, "component switch on");
}

#[tokio::test(start_paused = true)]
async fn a_slow_check_times_out_as_unhealthy_and_degraded_never_restarts() {
    let registry = Registry::new();
    let m = monitor(&registry);
    let slow = m
        .add(
            "slow",
            palisade_health::check_fn(|| async {
                sleep(Duration::from_secs(60)).await;
                CheckResult::healthy("late")
            }),
        )
        .config(CheckConfig {
            timeout: Duration::from_secs(2),
            failure_threshold: 1,
            critical: false,
            ..config(10_000, 1, RestartPolicy::default())
        })
        .start()
        .unwrap();
    let dial = Dial::default();
    dial.set(Status::Degraded);
    let rec = Recorder::new();
    m.add("replica", dial.clone())
        .config(config(1000, 1, RestartPolicy::default()))
        .restartable(rec.clone())
        .start()
        .unwrap();
    step(2.5).await;
    let s = slow.snapshot();
    assert_eq!(s.status, Some(Status::Unhealthy));
    assert!(s.message.contains("timed out after"), "{}", s.message);
    step(30.0).await;
    assert!(
        rec.times().is_empty(),
        "degraded is not a reason to restart"
    );
    let report = m.report();
    // A non-critical component down and a degraded one: degraded overall, still ready and live.
    assert_eq!(report.status, Status::Degraded);
    assert!(report.ready && report.live);
    assert_eq!((report.summary.unhealthy, report.summary.degraded), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn readiness_and_liveness_follow_critical_and_liveness_components() {
    let registry = Registry::new();
    let m = monitor(&registry);
    let db = Dial::default();
    let wedge = Dial::default();
    m.add("db", db.clone())
        .config(config(1000, 1, RestartPolicy::default()))
        .start()
        .unwrap();
    m.add("event-loop", wedge.clone())
        .config(CheckConfig {
            liveness: true,
            ..config(1000, 1, RestartPolicy::default())
        })
        .start()
        .unwrap();
    let report = m.check_all().await;
    assert!(report.ready && report.live);
    assert_eq!(report.status, Status::Healthy);
    db.set(Status::Unhealthy);
    let report = m.check_all().await;
    assert!(
        !report.ready && report.live,
        "a dependency never fails liveness"
    );
    assert_eq!(report.status, Status::Unhealthy);
    wedge.set(Status::Unhealthy);
    assert!(!m.check_all().await.live);
    let snap = registry.snapshot(ComponentKind::Health, "db").unwrap();
    assert_eq!(snap["status"], "unhealthy");
    assert_eq!(snap["message"], "down");
}

#[cfg(feature = "breaker")]
#[tokio::test(start_paused = true)]
async fn an_open_breaker_is_a_degraded_dependency_not_a_dead_process() {
    let registry = Registry::new();
    let m = monitor(&registry);
    let breaker = palisade_breaker::CircuitBreaker::builder("slack")
        .build()
        .unwrap();
    let rec = Recorder::new();
    m.add(
        "slack",
        palisade_health::checks::BreakerCheck::new(breaker.clone()),
    )
    .config(CheckConfig {
        liveness: true,
        ..config(1000, 1, RestartPolicy::default())
    })
    .restartable(rec.clone())
    .start()
    .unwrap();
    breaker.force_open();
    let report = m.check_all().await;
    assert_eq!(report.components["slack"].status, Some(Status::Degraded));
    assert!(report.live && report.ready);
    step(30.0).await;
    assert!(rec.times().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_manual_restart_answers_with_the_component_after_the_restart() {
    let (registry, _m, dial, rec, c) = failing(
        "notes",
        CheckConfig {
            auto_restart: false,
            ..config(60_000, 1, policy(1000, 2.0, 8000, 5))
        },
    );
    step(0.1).await;
    assert_eq!(c.snapshot().status, Some(Status::Unhealthy));

    // The restart fixes it (the dial stands for the restarted process); the next scheduled
    // check is a minute away, yet the answer already shows the component as it is now.
    dial.set(Status::Healthy);
    let out = registry
        .control(
            ComponentKind::Health,
            "notes",
            serde_json::json!({"action": "restart"}),
        )
        .await
        .unwrap();
    assert_eq!(rec.times().len(), 1);
    assert_eq!(out["status"], "healthy", "{out}");
    assert_eq!(out["restart_count"], 1, "{out}");
}
