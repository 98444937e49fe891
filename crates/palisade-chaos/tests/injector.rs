//! The injector on a manual clock or tokio's paused clock: time-to-live, rates, faults,
//! safety, commands, snapshots, events and metrics.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_chaos::{
    Fault, FaultCommand, FaultInjector, FaultMode, Injected, metric_names as names,
};
use palisade_core::{
    ComponentKind, ControlError, EventFilter, EventKind, Managed, ManualClock, Registry, TokioClock,
};
use serde_json::{Value, json};

const SECOND: Duration = Duration::from_secs(1);
const MS: Duration = Duration::from_millis(1);

fn allowed(clock: &ManualClock) -> FaultInjector {
    FaultInjector::builder("github")
        .allow(true)
        .clock(clock.shared())
        .build()
        .unwrap()
}

/// Runs `n` injections (without waiting out delays) and returns which were faulted.
async fn faulted(injector: &FaultInjector, n: usize) -> Vec<bool> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(injector.inject().await.is_err());
    }
    out
}

#[tokio::test]
async fn switches_itself_off_at_its_ttl_on_a_manual_clock() {
    let clock = ManualClock::new();
    clock.advance(5 * SECOND);
    let github = allowed(&clock);
    github.enable(Fault::error(), 1.0, 30 * SECOND).unwrap();
    assert!(github.is_enabled());
    assert_eq!(github.snapshot().remaining_ttl_ms, Some(30_000));

    clock.advance(30 * SECOND - MS);
    assert!(
        github.inject().await.is_err(),
        "1 ms before the ttl: still on"
    );
    let snap = github.snapshot();
    assert!(snap.enabled);
    assert_eq!(snap.remaining_ttl_ms, Some(1));

    clock.advance(MS);
    // The snapshot alone shows it off: no call, no background task needed.
    let snap = github.snapshot();
    assert!(!snap.enabled);
    assert_eq!(snap.mode, None);
    assert_eq!(snap.remaining_ttl_ms, None);
    let last = snap.last_transition.unwrap();
    assert_eq!((last.from.as_str(), last.to.as_str()), ("on", "off"));
    assert_eq!(last.reason, "ttl of 30s elapsed");
    assert!(github.inject().await.is_ok());
    assert!(!github.is_enabled());

    // One event for the switch-off, however many readers noticed it.
    let offs: Vec<_> = github
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::StateTransition { to, .. } if to == "off"))
        .collect();
    assert_eq!(offs.len(), 1, "{offs:?}");
}

#[tokio::test(start_paused = true)]
async fn switches_itself_off_at_its_ttl_on_tokios_paused_clock() {
    let github = FaultInjector::builder("github")
        .allow(true)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    github
        .enable(Fault::refuse(2 * SECOND), 1.0, 60 * SECOND)
        .unwrap();
    tokio::time::advance(59 * SECOND).await;
    let refused = github.inject().await.unwrap_err();
    assert_eq!(refused.retry_after(), Some(2 * SECOND));
    assert_eq!(github.snapshot().remaining_ttl_ms, Some(1000));
    tokio::time::advance(SECOND).await;
    assert!(!github.snapshot().enabled);
    assert!(github.inject().await.is_ok());
}

#[test]
fn an_expiry_nobody_noticed_is_recorded_as_such() {
    let clock = ManualClock::new();
    let github = allowed(&clock);
    let transitions = || -> Vec<String> {
        github
            .events()
            .recent(&EventFilter::default())
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::StateTransition { from, to, reason } => {
                    Some(format!("{from} -> {to}: {reason}"))
                }
                _ => None,
            })
            .collect()
    };
    // Nothing reads the injector during its ttl; then someone disables it: it was not on.
    github.enable(Fault::error(), 1.0, 10 * SECOND).unwrap();
    clock.advance(11 * SECOND);
    assert!(!github.disable());
    // Same when it is switched on again after an unnoticed expiry.
    github.enable(Fault::error(), 1.0, 10 * SECOND).unwrap();
    clock.advance(10 * SECOND);
    github.enable(Fault::error(), 1.0, 10 * SECOND).unwrap();
    assert_eq!(
        transitions(),
        [
            "off -> on: enabled: error at rate 1 for 10s",
            "on -> off: ttl of 10s elapsed",
            "off -> on: enabled: error at rate 1 for 10s",
            "on -> off: ttl of 10s elapsed",
            "off -> on: enabled: error at rate 1 for 10s",
        ]
    );
}

#[tokio::test]
async fn re_enabling_replaces_the_injection_and_its_ttl() {
    let clock = ManualClock::new();
    let github = allowed(&clock);
    github.enable(Fault::error(), 1.0, 10 * SECOND).unwrap();
    clock.advance(8 * SECOND);
    github
        .enable(Fault::refuse(SECOND), 1.0, 10 * SECOND)
        .unwrap();
    clock.advance(8 * SECOND);
    assert!(github.inject().await.unwrap_err().is_refusal());
    assert_eq!(github.snapshot().remaining_ttl_ms, Some(2000));
    clock.advance(2 * SECOND);
    assert!(!github.is_enabled());
}

#[tokio::test]
async fn rate_zero_injects_nothing_and_rate_one_every_call() {
    let clock = ManualClock::new();
    let github = allowed(&clock);
    github.enable(Fault::error(), 0.0, 60 * SECOND).unwrap();
    assert!(faulted(&github, 1000).await.iter().all(|f| !f));
    github.enable(Fault::error(), 1.0, 60 * SECOND).unwrap();
    assert!(faulted(&github, 1000).await.iter().all(|f| *f));
    let snap = github.snapshot();
    assert_eq!(snap.calls_while_enabled_total, 2000);
    assert_eq!(snap.injected_errors_total, 1000);
}

#[tokio::test]
async fn rate_half_with_a_scripted_source_faults_every_other_call() {
    let mut samples = [0.25, 0.75].into_iter().cycle();
    let github = FaultInjector::builder("github")
        .allow(true)
        .clock(ManualClock::new().shared())
        .random(move || samples.next().unwrap_or(0.0))
        .build()
        .unwrap();
    github.enable(Fault::error(), 0.5, 60 * SECOND).unwrap();
    let hits = faulted(&github, 1000).await;
    assert_eq!(hits.iter().filter(|f| **f).count(), 500);
    assert!(hits.iter().step_by(2).all(|f| *f), "0.25 < 0.5: faulted");
    assert!(
        hits.iter().skip(1).step_by(2).all(|f| !f),
        "0.75: untouched"
    );
}

#[tokio::test]
async fn rate_half_with_a_seed_is_reproducible() {
    let run = |seed| async move {
        let injector = FaultInjector::builder("github")
            .allow(true)
            .clock(ManualClock::new().shared())
            .seed(seed)
            .build()
            .unwrap();
        injector.enable(Fault::error(), 0.5, 60 * SECOND).unwrap();
        faulted(&injector, 1000).await
    };
    let a = run(42).await;
    assert_eq!(a, run(42).await, "same seed, same calls faulted");
    assert_ne!(a, run(43).await);
    let hits = a.iter().filter(|f| **f).count();
    assert!((430..=570).contains(&hits), "{hits} of 1000 at rate 0.5");
}

#[tokio::test(start_paused = true)]
async fn latency_is_waited_out_then_the_call_runs() {
    let github = FaultInjector::builder("github")
        .allow(true)
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    github
        .enable(Fault::latency(200 * MS), 1.0, 60 * SECOND)
        .unwrap();
    let start = tokio::time::Instant::now();
    let answer = github.call(async { Ok::<_, Injected>(7) }).await.unwrap();
    assert_eq!(answer, 7);
    assert_eq!(start.elapsed(), 200 * MS);
    assert_eq!(github.snapshot().injected_latency_total, 1);
}

#[tokio::test(start_paused = true)]
async fn ranged_latency_falls_where_the_sample_says() {
    // Per call: one sample for "faulted?" (0.0: yes), one for where in the range (0.5).
    let mut samples = [0.0, 0.5].into_iter().cycle();
    let github = FaultInjector::builder("github")
        .allow(true)
        .random(move || samples.next().unwrap_or(0.0))
        .build()
        .unwrap();
    github
        .enable(Fault::latency_between(100 * MS, 500 * MS), 1.0, 60 * SECOND)
        .unwrap();
    let snap = github.snapshot();
    assert_eq!(
        (snap.mode, snap.latency_ms, snap.latency_max_ms),
        (Some(FaultMode::Latency), Some(100), Some(500))
    );
    let start = tokio::time::Instant::now();
    github.inject().await.unwrap();
    assert_eq!(start.elapsed(), 300 * MS);
}

#[tokio::test]
async fn errors_and_refusals_stop_the_call_before_it_runs() {
    #[derive(Debug)]
    enum ApiError {
        Injected(Injected),
    }
    impl From<Injected> for ApiError {
        fn from(e: Injected) -> Self {
            ApiError::Injected(e)
        }
    }
    let ran = Arc::new(AtomicU32::new(0));
    let call = |ran: Arc<AtomicU32>| async move {
        ran.fetch_add(1, Ordering::Relaxed);
        Ok::<_, ApiError>(())
    };
    let clock = ManualClock::new();
    let github = allowed(&clock);
    github.call(call(ran.clone())).await.unwrap();
    assert_eq!(ran.load(Ordering::Relaxed), 1, "off: the call runs");

    github.enable(Fault::error(), 1.0, 60 * SECOND).unwrap();
    let ApiError::Injected(e) = github.call(call(ran.clone())).await.unwrap_err();
    assert_eq!(
        e,
        Injected::Error {
            name: "github".into()
        }
    );
    github
        .enable(Fault::refuse(3 * SECOND), 1.0, 60 * SECOND)
        .unwrap();
    let ApiError::Injected(e) = github.call(call(ran.clone())).await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "fault injector 'github' refused the call (injected fault); retry in 3000 ms"
    );
    assert_eq!(ran.load(Ordering::Relaxed), 1, "faulted calls never ran");
    let snap = github.snapshot();
    assert_eq!(
        (snap.injected_errors_total, snap.injected_refusals_total),
        (1, 1)
    );
}

#[tokio::test]
async fn refused_when_the_config_does_not_allow_it() {
    let registry = Registry::new();
    let github = FaultInjector::builder("github")
        .registry(&registry)
        .build()
        .unwrap();
    for command in [
        json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "30s"}),
        // Refused for what it is, whatever else is wrong with it.
        json!({"action": "enable", "mode": "latency", "rate": 7}),
    ] {
        let err = registry
            .control(ComponentKind::FaultInjector, "github", command)
            .await
            .unwrap_err();
        let ControlError::Rejected { action, reason } = &err else {
            panic!("{err:?}");
        };
        assert_eq!(action, "enable");
        assert!(
            reason.contains("not allowed on this instance") && reason.contains("enabled_in_config"),
            "{reason}"
        );
    }
    assert!(
        github
            .enable(Fault::error(), 1.0, 30 * SECOND)
            .unwrap_err()
            .to_string()
            .contains("not allowed on this instance")
    );
    let snap = github.snapshot();
    assert!(!snap.enabled && !snap.allowed);
    assert!(github.inject().await.is_ok());
    // Switching off is always accepted.
    let out = registry
        .control(
            ComponentKind::FaultInjector,
            "github",
            json!({"action": "disable"}),
        )
        .await
        .unwrap();
    assert_eq!(out["enabled"], false);
}

#[tokio::test]
async fn bad_commands_are_refused_naming_the_field() {
    let registry = Registry::new();
    let github = FaultInjector::builder("github")
        .allow(true)
        .max_ttl(Duration::from_secs(600))
        .clock(ManualClock::new().shared())
        .registry(&registry)
        .build()
        .unwrap();
    let enable = |extra: Value| {
        let mut cmd = json!({"action": "enable", "mode": "error", "rate": 0.5, "ttl": "30s"});
        for (k, v) in extra.as_object().unwrap() {
            if v.is_null() {
                cmd.as_object_mut().unwrap().remove(k);
            } else {
                cmd[k] = v.clone();
            }
        }
        cmd
    };
    let invalid = [
        (enable(json!({"rate": 1.5})), "rate"),
        (enable(json!({"rate": -0.1})), "rate"),
        (enable(json!({"ttl": "0s"})), "ttl"),
        (enable(json!({"ttl": 0})), "ttl"),
        (enable(json!({"ttl": null})), "ttl"),
        (enable(json!({"ttl": "11m"})), "ttl"),
        (enable(json!({"mode": "latency"})), "latency_ms"),
        (
            enable(json!({"mode": "latency", "latency_ms": 120000})),
            "latency_ms",
        ),
        (
            enable(json!({"mode": "latency", "latency_ms": 500, "latency_max_ms": 100})),
            "latency_max_ms",
        ),
        (enable(json!({"latency_ms": 200})), "latency_ms"),
        (
            enable(json!({"mode": "refuse", "retry_after_ms": 0})),
            "retry_after_ms",
        ),
    ];
    for (command, field) in invalid {
        let err = registry
            .control(ComponentKind::FaultInjector, "github", command.clone())
            .await
            .unwrap_err();
        match &err {
            ControlError::InvalidConfig(c) => assert_eq!(c.field, field, "{command}: {err}"),
            other => panic!("{command}: expected an invalid `{field}`, got {other:?}"),
        }
    }
    let malformed = [
        (enable(json!({"mode": "explode"})), "mode"),
        (enable(json!({"mode": null})), "mode"),
        (enable(json!({"rate": null})), "rate"),
        (enable(json!({"ttl": "forever"})), "forever"),
        (enable(json!({"colour": "red"})), "colour"),
    ];
    for (command, named) in malformed {
        let err = registry
            .control(ComponentKind::FaultInjector, "github", command.clone())
            .await
            .unwrap_err();
        match &err {
            ControlError::MalformedCommand { reason, .. } => {
                assert!(reason.contains(named), "{command}: {reason}")
            }
            other => panic!("{command}: expected a malformed command, got {other:?}"),
        }
    }
    assert!(!github.is_enabled(), "nothing refused changed anything");
    assert_eq!(github.events().published(), 1, "only the registration");
}

#[tokio::test]
async fn commands_enable_each_mode_and_disable() {
    let registry = Registry::new();
    let clock = ManualClock::new();
    let _github = FaultInjector::builder("github")
        .allow(true)
        .clock(clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    let control = |cmd: Value| registry.control(ComponentKind::FaultInjector, "github", cmd);

    let out =
        control(json!({"action":"enable","mode":"latency","latency_ms":200,"rate":0.5,"ttl":"5m"}))
            .await
            .unwrap();
    assert_eq!(out["enabled"], true);
    assert_eq!(out["mode"], "latency");
    assert_eq!(out["latency_ms"], 200);
    assert_eq!(out["latency_max_ms"], 200);
    assert_eq!(out["rate"], 0.5);
    assert_eq!(out["ttl_ms"], 300_000);
    assert_eq!(out["remaining_ttl_ms"], 300_000);
    assert_eq!(
        out["enabled_at_unix_ms"],
        palisade_core::clock::MANUAL_CLOCK_EPOCH_MILLIS
    );
    assert_eq!(
        out["expires_at_unix_ms"],
        palisade_core::clock::MANUAL_CLOCK_EPOCH_MILLIS + 300_000
    );
    assert_eq!(out["enabled_by"], Value::Null, "not through the admin API");

    let out = control(json!({"action":"enable","mode":"error","rate":1,"ttl":"30s"}))
        .await
        .unwrap();
    assert_eq!(
        (out["mode"].clone(), out["rate"].clone()),
        (json!("error"), json!(1.0))
    );
    assert_eq!(out["latency_ms"], Value::Null);

    let out = control(json!({"action":"enable","mode":"refuse","rate":0.2,"ttl":60000}))
        .await
        .unwrap();
    assert_eq!(out["mode"], "refuse");
    assert_eq!(out["retry_after_ms"], 1000);
    assert_eq!(out["ttl_ms"], 60_000);

    let out = control(json!({"action":"disable"})).await.unwrap();
    assert_eq!(out["enabled"], false);
    assert_eq!(out["last_transition"]["reason"], "disabled");
    assert_eq!(out["allowed"], true);
    assert_eq!(out["max_ttl_ms"], 3_600_000);

    // Events: registered, off -> on, two changes while on, on -> off (plus the registry's
    // admin actions).
    let mine: Vec<EventKind> = registry
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .map(|e| e.kind)
        .filter(|k| !matches!(k, EventKind::AdminAction { .. }))
        .collect();
    assert!(matches!(&mine[0], EventKind::Notice { message, .. } if message == "registered"));
    assert!(
        matches!(&mine[1], EventKind::StateTransition { from, to, reason }
        if from == "off" && to == "on" && reason == "enabled: latency 200 ms at rate 0.5 for 300s"),
        "{:?}",
        mine[1]
    );
    assert!(
        matches!(&mine[2], EventKind::ConfigChanged { change } if change.contains("error at rate 1"))
    );
    assert!(matches!(&mine[3], EventKind::ConfigChanged { change } if change.contains("refuse")));
    assert!(
        matches!(&mine[4], EventKind::StateTransition { from, to, reason }
        if from == "on" && to == "off" && reason == "disabled")
    );
    assert_eq!(mine.len(), 5);
}

#[test]
fn the_rust_command_type_round_trips() {
    let cmd = FaultCommand::Enable {
        mode: FaultMode::Latency,
        rate: 0.5,
        ttl: Some(Duration::from_secs(300)),
        latency_ms: Some(200),
        latency_max_ms: None,
        retry_after_ms: None,
    };
    let json = serde_json::to_value(&cmd).unwrap();
    assert_eq!(
        json,
        json!({"action": "enable", "mode": "latency", "rate": 0.5, "ttl": "300s", "latency_ms": 200})
    );
    assert_eq!(serde_json::from_value::<FaultCommand>(json).unwrap(), cmd);
}

#[test]
fn a_config_out_of_range_is_refused_at_build() {
    let err = FaultInjector::builder("github")
        .max_ttl(Duration::from_secs(7200))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("max_ttl"), "{err}");
}

#[test]
fn figures_reach_the_metrics_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let clock = ManualClock::new();
    let github = allowed(&clock);
    github.enable(Fault::error(), 1.0, 90 * SECOND).unwrap();
    for _ in 0..3 {
        // `inject` decides at once; the error is in the (unpolled) future.
        drop(github.inject());
    }
    metrics::with_local_recorder(&recorder, || github.export_metrics());
    let snap = snapshotter.snapshot().into_vec();
    let value = |name: &str, fault: Option<&str>| {
        snap.iter().find_map(|(k, _, _, v)| {
            let key = k.key();
            let labels: Vec<_> = key.labels().map(|l| (l.key(), l.value())).collect();
            (key.name() == name
                && labels.contains(&("name", "github"))
                && fault.is_none_or(|f| labels.contains(&("fault", f))))
            .then_some(match v {
                DebugValue::Counter(n) => *n as f64,
                DebugValue::Gauge(g) => g.0,
                DebugValue::Histogram(_) => f64::NAN,
            })
        })
    };
    assert_eq!(value(names::ENABLED, None), Some(1.0));
    assert_eq!(value(names::REMAINING_TTL_SECONDS, None), Some(90.0));
    assert_eq!(value(names::CALLS_TOTAL, None), Some(3.0));
    assert_eq!(value(names::INJECTED_TOTAL, Some("error")), Some(3.0));
    assert_eq!(value(names::INJECTED_TOTAL, Some("latency")), Some(0.0));
    assert_eq!(value(names::INJECTED_TOTAL, Some("refuse")), Some(0.0));
}

mod model {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Step {
        Enable { rate_pct: u8, ttl_ms: u64 },
        Disable,
        Advance(u64),
        Inject,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            (0u8..=100, 1u64..5_000)
                .prop_map(|(rate_pct, ttl_ms)| Step::Enable { rate_pct, ttl_ms }),
            Just(Step::Disable),
            (0u64..3_000).prop_map(Step::Advance),
            Just(Step::Inject),
            Just(Step::Inject),
        ]
    }

    proptest! {
        /// Against a model: on exactly until the ttl since the last enable (or a disable);
        /// rate 0 never and rate 1 always faults; counts add up.
        #[test]
        fn follows_the_model(steps in proptest::collection::vec(step(), 1..60)) {
            let clock = ManualClock::new();
            let injector = allowed(&clock);
            let rt = tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap();
            let (mut now, mut until, mut rate) = (0u64, None::<u64>, 0u8);
            let (mut calls, mut faults) = (0u64, 0u64);
            for step in steps {
                match step {
                    Step::Enable { rate_pct, ttl_ms } => {
                        injector.enable(Fault::error(), f64::from(rate_pct) / 100.0, Duration::from_millis(ttl_ms)).unwrap();
                        until = Some(now + ttl_ms);
                        rate = rate_pct;
                    }
                    Step::Disable => {
                        prop_assert_eq!(injector.disable(), until.is_some_and(|u| now < u));
                        until = None;
                    }
                    Step::Advance(ms) => {
                        clock.advance(Duration::from_millis(ms));
                        now += ms;
                    }
                    Step::Inject => {
                        let on = until.is_some_and(|u| now < u);
                        let hit = rt.block_on(injector.inject()).is_err();
                        if on {
                            calls += 1;
                            faults += u64::from(hit);
                            if rate == 0 { prop_assert!(!hit); }
                            if rate == 100 { prop_assert!(hit); }
                        } else {
                            prop_assert!(!hit);
                        }
                    }
                }
                let on = until.is_some_and(|u| now < u);
                let snap = injector.snapshot();
                prop_assert_eq!(snap.enabled, on);
                prop_assert_eq!(snap.remaining_ttl_ms, until.filter(|_| on).map(|u| u - now));
                prop_assert_eq!(snap.calls_while_enabled_total, calls);
                prop_assert_eq!(snap.injected_errors_total, faults);
            }
        }
    }
}
