//! Retries on tokio's paused clock: backoff bounds, `Retry-After`, attempts, classification,
//! cancellation, and the retry as a registry component (snapshot, commands, events, refusals of
//! bad config naming the field).
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_core::{
    BuildError, ComponentKind, ControlError, EventFilter, EventKind, Registry, TokioClock,
};
use palisade_toolbox::budget::BudgetConfig;
use palisade_toolbox::retry::{Backoff, Decision, Retry, RetryConfig};
use tokio::time::Instant;

/// A budget that never refuses in these tests (a large floor).
fn roomy() -> BudgetConfig {
    BudgetConfig {
        min_retries_per_second: 10_000.0,
        ..Default::default()
    }
}

/// Attempt start times of one call that always fails.
async fn attempt_times(retry: &Retry) -> Vec<Instant> {
    let times = parking_lot::Mutex::new(Vec::new());
    let r: Result<(), &str> = retry
        .call(|| {
            times.lock().push(Instant::now());
            async { Err("down") }
        })
        .await;
    assert_eq!(r, Err("down"));
    times.into_inner()
}

#[tokio::test(start_paused = true)]
async fn backoff_waits_stay_within_zero_and_the_capped_exponential_ceiling() {
    let backoff = Backoff {
        base: Duration::from_millis(100),
        max: Duration::from_secs(1),
        multiplier: 2.0,
    };
    let retry = Retry::builder("bounds")
        .max_attempts(10)
        .backoff(backoff.base, backoff.max)
        .budget_config(roomy())
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let (mut below_half, mut above_half) = (0, 0);
    for _ in 0..30 {
        let times = attempt_times(&retry).await;
        assert_eq!(times.len(), 10);
        for (n, pair) in times.windows(2).enumerate() {
            let waited = pair[1] - pair[0];
            // min(cap, base·2ⁿ): 100, 200, 400, 800 ms, then the 1 s cap.
            let ceiling = Duration::from_millis(100 << n).min(Duration::from_secs(1));
            assert_eq!(backoff.ceiling(n as u32), ceiling);
            // Timers fire on whole milliseconds and every ceiling is one: the wait observed
            // (the jittered delay rounded up to the millisecond) is within it exactly.
            assert!(
                waited <= ceiling,
                "retry {n} waited {waited:?} > {ceiling:?}"
            );
            if waited * 2 < ceiling {
                below_half += 1;
            } else {
                above_half += 1;
            }
        }
    }
    // Full jitter: waits spread over the whole range (270 draws; all on one side is ~2⁻²⁷⁰).
    assert!(
        below_half > 0 && above_half > 0,
        "{below_half} / {above_half}"
    );
    let snap = retry.snapshot();
    assert_eq!(snap.calls_total, 30);
    assert_eq!(snap.retries_total, 30 * 9);
    assert_eq!(snap.exhausted_total, 30);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_exactly_not_before() {
    let retry = Retry::builder("hint")
        .max_attempts(3)
        // A backoff that would retry much sooner than the hint.
        .backoff(Duration::from_millis(1), Duration::from_millis(1))
        .budget_config(roomy())
        .build()
        .unwrap();
    let times = parking_lot::Mutex::new(Vec::new());
    let hint = Duration::from_millis(1500);
    let r = retry
        .call_classified(
            |r: &Result<u32, u32>| match r {
                Err(429) => Decision::RetryAfter(hint),
                _ => Decision::Return,
            },
            || {
                let mut t = times.lock();
                t.push(Instant::now());
                let reply = if t.len() == 1 { Err(429) } else { Ok(200) };
                async move { reply }
            },
        )
        .await;
    assert_eq!(r, Ok(200));
    let times = times.into_inner();
    assert_eq!(times.len(), 2);
    assert_eq!(
        times[1] - times[0],
        hint,
        "the retry came exactly after the hint"
    );
    let snap = retry.snapshot();
    assert_eq!(snap.retry_after_honoured_total, 1);
    assert_eq!(snap.returned_after_retry_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_hint_beyond_max_retry_after_ends_the_call_at_once() {
    let retry = Retry::builder("long-hint")
        .max_retry_after(Duration::from_secs(30))
        .build()
        .unwrap();
    let start = Instant::now();
    let attempts = AtomicU32::new(0);
    let r: Result<(), &str> = retry
        .call_classified(
            |_: &Result<(), &str>| Decision::RetryAfter(Duration::from_secs(60)),
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err("breaker open for 60 s") }
            },
        )
        .await;
    assert_eq!(r, Err("breaker open for 60 s"));
    assert_eq!(start.elapsed(), Duration::ZERO);
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
    let snap = retry.snapshot();
    assert_eq!(snap.retry_after_too_long_total, 1);
    assert_eq!(
        snap.budget.withdrawals_total, 0,
        "no budget spent on a retry not made"
    );
}

#[tokio::test(start_paused = true)]
async fn non_retryable_results_are_returned_at_once() {
    let retry = Retry::builder("classify")
        .budget_config(roomy())
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    let r: Result<(), u16> = retry
        .call_classified(
            |r: &Result<(), u16>| match r {
                Err(400) => Decision::Return,
                _ => Decision::Retry,
            },
            || {
                attempts.fetch_add(1, Ordering::Relaxed);
                async { Err(400) }
            },
        )
        .await;
    assert_eq!(r, Err(400));
    assert_eq!(attempts.load(Ordering::Relaxed), 1);
    // An `Ok` can be retried too (a 503 answered as a response).
    let replies = parking_lot::Mutex::new(vec![Ok(200), Ok(503)]);
    let r: Result<u16, ()> = retry
        .call_classified(
            |r: &Result<u16, ()>| match r {
                Ok(503) => Decision::Retry,
                _ => Decision::Return,
            },
            || std::future::ready(replies.lock().pop().unwrap()),
        )
        .await;
    assert_eq!(r, Ok(200));
}

#[tokio::test(start_paused = true)]
async fn max_attempts_counts_the_first_attempt() {
    for max in [1, 2, 5] {
        let retry = Retry::builder("attempts")
            .max_attempts(max)
            .budget_config(roomy())
            .build()
            .unwrap();
        assert_eq!(attempt_times(&retry).await.len(), max as usize);
    }
}

#[tokio::test(start_paused = true)]
async fn dropping_the_call_cancels_the_attempt_in_flight() {
    struct Guard(Arc<AtomicU32>);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
    let retry = Retry::builder("cancel").build().unwrap();
    let dropped = Arc::new(AtomicU32::new(0));
    let call = retry.call(|| {
        let guard = Guard(dropped.clone());
        async move {
            let _guard = guard;
            std::future::pending::<Result<(), ()>>().await
        }
    });
    let timed_out = tokio::time::timeout(Duration::from_secs(1), call).await;
    assert!(timed_out.is_err());
    assert_eq!(dropped.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn the_retry_is_a_registry_component() {
    let registry = Registry::new();
    let retry = Retry::builder("github")
        .clock(TokioClock::shared())
        .registry(&registry)
        .build()
        .unwrap();
    let _ = retry.call(|| async { Ok::<_, ()>(()) }).await;
    let snap = registry.snapshot(ComponentKind::Retry, "github").unwrap();
    assert_eq!(snap["calls_total"], 1);
    assert_eq!(snap["budget"]["deposits_total"], 1);
    assert_eq!(snap["budget"]["tokens"], 100.2);
    assert_eq!(snap["config"]["budget"]["window"], "10s");

    // update_config: a budget object changes only the fields it names.
    let out = registry
        .control(
            ComponentKind::Retry,
            "github",
            serde_json::json!({"action": "update_config", "config": {"max_attempts": 5, "budget": {"ratio": 0.5}}}),
        )
        .await
        .unwrap();
    assert_eq!(out["config"]["max_attempts"], 5);
    assert_eq!(out["config"]["budget"]["ratio"], 0.5);
    assert_eq!(out["config"]["budget"]["min_retries_per_second"], 10.0);
    // set_budget: the fields given.
    let out = registry
        .control(
            ComponentKind::Retry,
            "github",
            serde_json::json!({"action": "set_budget", "min_retries_per_second": 1, "window": "20s"}),
        )
        .await
        .unwrap();
    assert_eq!(out["config"]["budget"]["ratio"], 0.5);
    assert_eq!(out["config"]["budget"]["window"], "20s");
    assert_eq!(retry.budget().config().min_retries_per_second, 1.0);

    let changes: Vec<String> = registry
        .events()
        .recent(&EventFilter {
            kind: Some(ComponentKind::Retry),
            ..Default::default()
        })
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ConfigChanged { change } => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(
        changes,
        vec![
            "budget.ratio=0.5, max_attempts=5".to_string(),
            r#"budget.min_retries_per_second=1.0, budget.window="20s""#.to_string(),
        ]
    );

    // reset_budget, with its event.
    registry
        .control(
            ComponentKind::Retry,
            "github",
            serde_json::json!({"action": "reset_budget"}),
        )
        .await
        .unwrap();
    assert_eq!(
        retry.budget().tokens(),
        20.0,
        "the new reserve: 1 a second over 20 s"
    );
}

#[tokio::test]
async fn bad_config_is_refused_naming_the_field_and_nothing_changes() {
    let registry = Registry::new();
    let retry = Retry::builder("db").registry(&registry).build().unwrap();
    let before = retry.config();
    let cases = [
        (
            serde_json::json!({"action": "set_budget", "ratio": -0.2}),
            "budget.ratio",
        ),
        (
            serde_json::json!({"action": "update_config", "config": {"base_delay": "2s", "max_delay": "1s"}}),
            "max_delay",
        ),
        (
            serde_json::json!({"action": "update_config", "config": {"max_attempts": 0}}),
            "max_attempts",
        ),
        (
            serde_json::json!({"action": "update_config", "config": {"budget": {"window": "500ms"}}}),
            "budget.window",
        ),
        (
            serde_json::json!({"action": "set_config", "config": {"multiplier": 0.5}}),
            "multiplier",
        ),
    ];
    for (command, field) in cases {
        let err = registry
            .control(ComponentKind::Retry, "db", command.clone())
            .await
            .unwrap_err();
        match err {
            ControlError::InvalidConfig(e) => assert_eq!(e.field, field, "{command}"),
            other => panic!("{command}: {other:?}"),
        }
    }
    assert_eq!(retry.config(), before);
    // A typo is a malformed command, not a silent no-op.
    let err = registry
        .control(
            ComponentKind::Retry,
            "db",
            serde_json::json!({"action": "set_budget", "raito": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, ControlError::MalformedCommand { .. }),
        "{err:?}"
    );

    // The builder refuses the same way.
    let err = Retry::builder("bad")
        .config(RetryConfig {
            base_delay: Duration::from_secs(2),
            max_delay: Duration::from_secs(1),
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::InvalidConfig(ref e) if e.field == "max_delay"),
        "{err}"
    );
    let err = Retry::builder("bad")
        .budget_config(BudgetConfig {
            ratio: -1.0,
            ..Default::default()
        })
        .build()
        .unwrap_err();
    assert!(
        matches!(err, BuildError::InvalidConfig(ref e) if e.field == "budget.ratio"),
        "{err}"
    );
}

#[test]
fn metrics_are_exported_under_palisade_names() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let retry = Retry::builder("exported").build().unwrap();
    metrics::with_local_recorder(&recorder, || {
        palisade_core::Managed::export_metrics(&retry);
    });
    let names: Vec<String> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, ..)| key.key().name().to_string())
        .collect();
    for expected in [
        palisade_toolbox::retry::names::RETRY_CALLS_TOTAL,
        palisade_toolbox::retry::names::RETRY_GIVE_UPS_TOTAL,
        palisade_toolbox::budget::names::BUDGET_TOKENS,
        palisade_toolbox::budget::names::BUDGET_DENIED_TOTAL,
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing from {names:?}"
        );
    }
    assert!(names.iter().all(|n| n.starts_with("palisade_")));
}
