//! Every transition and operator state, on the manual clock.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use palisade_breaker::{
    BreakerCommand, BreakerConfig, CallError, CircuitBreaker, FailureRateConfig, Outcome,
    RejectReason, SlidingWindow, State,
};
use palisade_core::{EventFilter, EventKind, ManualClock};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn breaker(clock: &ManualClock, cfg: BreakerConfig) -> CircuitBreaker {
    CircuitBreaker::builder("upstream")
        .config(cfg)
        .clock(clock.shared())
        .build()
        .unwrap()
}

fn fail(cb: &CircuitBreaker) {
    cb.try_acquire().expect("admitted").failure();
}

fn succeed(cb: &CircuitBreaker) {
    cb.try_acquire().expect("admitted").success();
}

fn transitions(cb: &CircuitBreaker) -> Vec<String> {
    cb.events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StateTransition { from, to, .. } => Some(format!("{from}->{to}")),
            _ => None,
        })
        .collect()
}

#[test]
fn consecutive_failures_open_and_successes_reset_the_run() {
    let clock = ManualClock::new();
    let cb = breaker(&clock, BreakerConfig::default());
    fail(&cb);
    fail(&cb);
    succeed(&cb);
    fail(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().consecutive_failures, 2);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    let snap = cb.snapshot();
    assert_eq!(snap.calls.failed, 5);
    assert_eq!(snap.calls.successful, 1);
    assert_eq!(
        snap.last_transition.unwrap().reason,
        "3 consecutive failures"
    );
}

#[test]
fn open_refuses_with_retry_after_then_turns_half_open() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 1,
            ..Default::default()
        },
    );
    fail(&cb);
    let err = cb.try_acquire().unwrap_err();
    assert_eq!(err.reason(), RejectReason::Open);
    assert_eq!(err.retry_after(), Some(secs(60)));
    assert_eq!(
        err.to_string(),
        "circuit breaker 'upstream' is open; retry in 60000 ms"
    );

    clock.advance(Duration::from_millis(59_999));
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.retry_after(), Some(Duration::from_millis(1)));
    assert_eq!(cb.snapshot().retry_after_ms, Some(1));
    assert!(cb.try_acquire().is_err());
    assert_eq!(cb.snapshot().calls.not_permitted, 2);

    // The snapshot shows the true state without any call having been made.
    clock.advance(Duration::from_millis(1));
    let snap = cb.snapshot();
    assert_eq!(snap.state, State::HalfOpen);
    assert_eq!(snap.retry_after_ms, None);
    assert_eq!(snap.half_open.unwrap().max_calls, 1);
    assert_eq!(transitions(&cb), vec!["closed->open", "open->half_open"]);
}

#[test]
fn half_open_admits_k_trials_and_k_successes_close() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 1,
            half_open_max_calls: 2,
            ..Default::default()
        },
    );
    fail(&cb);
    clock.advance(secs(60));
    let a = cb.try_acquire().unwrap();
    let b = cb.try_acquire().unwrap();
    assert!(a.is_trial() && b.is_trial());
    let full = cb.try_acquire().unwrap_err();
    assert_eq!(full.reason(), RejectReason::HalfOpenFull);
    assert_eq!(full.retry_after(), None);
    a.success();
    // One success, one in flight: still no room (K successes are all it needs).
    assert!(cb.try_acquire().is_err());
    assert_eq!(cb.state(), State::HalfOpen);
    b.success();
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(
        cb.snapshot().last_transition.unwrap().reason,
        "2 trial calls succeeded"
    );
}

#[test]
fn dropped_or_ignored_trials_give_their_slot_back() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 1,
            ..Default::default()
        },
    );
    fail(&cb);
    clock.advance(secs(60));
    let p = cb.try_acquire().unwrap();
    assert!(cb.try_acquire().is_err());
    drop(p); // cancelled
    assert_eq!(cb.snapshot().half_open.unwrap().in_flight, 0);
    cb.try_acquire().unwrap().ignore();
    assert_eq!(cb.state(), State::HalfOpen);
    succeed(&cb);
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn a_failed_trial_reopens_and_waits_grow_to_the_cap() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 1,
            wait_duration: secs(10),
            max_wait_duration: Some(secs(30)),
            ..Default::default()
        },
    );
    fail(&cb);
    let mut waits = Vec::new();
    for _ in 0..4 {
        let wait = cb.retry_after().unwrap();
        waits.push(wait.as_secs());
        clock.advance(wait);
        assert_eq!(cb.state(), State::HalfOpen);
        fail(&cb); // the trial fails
        assert_eq!(cb.state(), State::Open);
    }
    assert_eq!(waits, vec![10, 20, 30, 30]);
    assert_eq!(cb.snapshot().consecutive_trips, 5);

    // A successful recovery resets the growth.
    clock.advance(secs(30));
    succeed(&cb);
    assert_eq!(cb.state(), State::Closed);
    fail(&cb);
    assert_eq!(cb.retry_after(), Some(secs(10)));
}

#[test]
fn jitter_spreads_waits_within_bounds() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 1,
            jitter: 0.5,
            ..Default::default()
        },
    );
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..20 {
        fail(&cb);
        let wait = cb.retry_after().unwrap();
        assert!(wait >= secs(30) && wait <= secs(90), "{wait:?}");
        seen.insert(wait);
        cb.reset();
    }
    assert!(seen.len() > 1, "jitter produced one value only");
}

#[test]
fn forced_open_refuses_until_reset() {
    let clock = ManualClock::new();
    let cb = breaker(&clock, BreakerConfig::default());
    cb.force_open();
    let err = cb.try_acquire().unwrap_err();
    assert_eq!(err.reason(), RejectReason::ForcedOpen);
    assert_eq!(
        err.to_string(),
        "circuit breaker 'upstream' is forced open by an operator; retry after it is reset"
    );
    clock.advance(secs(3600));
    assert_eq!(cb.state(), State::ForcedOpen);
    cb.reset();
    assert_eq!(cb.state(), State::Closed);
    succeed(&cb);
    assert_eq!(
        transitions(&cb),
        vec!["closed->forced_open", "forced_open->closed"]
    );
}

#[test]
fn disabled_admits_everything_and_records_nothing() {
    let clock = ManualClock::new();
    let cb = breaker(&clock, BreakerConfig::default());
    cb.disable();
    for _ in 0..10 {
        fail(&cb);
    }
    let snap = cb.snapshot();
    assert_eq!(snap.state, State::Disabled);
    assert_eq!(snap.calls.failed, 0);
    assert_eq!(snap.consecutive_failures, 0);
}

#[test]
fn metrics_only_records_but_never_trips() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            failure_rate: Some(FailureRateConfig {
                window: SlidingWindow::Count { size: 10 },
                minimum_calls: 5,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    cb.metrics_only();
    for _ in 0..10 {
        fail(&cb);
    }
    let snap = cb.snapshot();
    assert_eq!(snap.state, State::MetricsOnly);
    assert_eq!(snap.calls.failed, 10);
    assert_eq!(snap.consecutive_failures, 10);
    assert_eq!(snap.window.unwrap().failure_rate, Some(100.0));
    // Back to normal: counts start afresh.
    cb.reset();
    assert_eq!(cb.snapshot().consecutive_failures, 0);
    assert_eq!(cb.snapshot().window.unwrap().calls, 0);
}

#[test]
fn failure_rate_over_a_count_window_trips() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 0,
            failure_rate: Some(FailureRateConfig {
                window: SlidingWindow::Count { size: 10 },
                minimum_calls: 10,
                failure_rate_threshold: 50.0,
                ..Default::default()
            }),
            ..Default::default()
        },
    );
    // Alternating outcomes: 50 % once ten calls are in, not before.
    for i in 0..9 {
        if i % 2 == 0 { fail(&cb) } else { succeed(&cb) }
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().window.unwrap().failure_rate, None);
    succeed(&cb);
    assert_eq!(cb.state(), State::Open);
    assert_eq!(
        cb.snapshot().last_transition.unwrap().reason,
        "failure rate 50.0% over the window"
    );
}

#[test]
fn slow_calls_trip_on_a_time_window_and_fail_trials() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 0,
            failure_rate: Some(FailureRateConfig {
                window: SlidingWindow::Time { length: secs(10) },
                minimum_calls: 3,
                slow_call_duration: Some(secs(2)),
                slow_call_rate_threshold: 60.0,
                ..Default::default()
            }),
            wait_duration: secs(5),
            ..Default::default()
        },
    );
    let slow_call = |cb: &CircuitBreaker| {
        let p = cb.try_acquire().unwrap();
        clock.advance(secs(2));
        p.success();
    };
    slow_call(&cb);
    succeed(&cb);
    assert_eq!(cb.state(), State::Closed);
    slow_call(&cb); // 2 of 3 slow: 66 %
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.snapshot().calls.slow, 2);
    clock.advance(secs(5));
    // A slow trial counts as a failed trial.
    slow_call(&cb);
    assert_eq!(cb.state(), State::Open);
}

#[test]
fn calls_reported_slow_count_as_slow_whatever_their_duration() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 2,
            failure_rate: Some(FailureRateConfig {
                window: SlidingWindow::Count { size: 4 },
                minimum_calls: 4,
                slow_call_duration: Some(secs(60)),
                slow_call_rate_threshold: 50.0,
                ..Default::default()
            }),
            wait_duration: secs(5),
            ..Default::default()
        },
    );
    // A timeout reported as slow: neither a failure nor a success.
    fail(&cb);
    cb.try_acquire().unwrap().record(Outcome::Slow);
    let snap = cb.snapshot();
    assert_eq!(snap.consecutive_failures, 1, "the run of failures stands");
    assert_eq!(
        (snap.calls.slow, snap.calls.successful, snap.calls.failed),
        (1, 0, 1)
    );
    succeed(&cb);
    assert_eq!(cb.state(), State::Closed);
    cb.try_acquire().unwrap().record(Outcome::Slow); // 2 of 4 slow: 50 %
    assert_eq!(cb.state(), State::Open);
    assert_eq!(
        cb.snapshot().last_transition.unwrap().reason,
        "slow-call rate 50.0% over the window"
    );
    clock.advance(secs(5));
    // A trial reported slow re-opens, as a slow success does.
    cb.try_acquire().unwrap().record(Outcome::Slow);
    assert_eq!(cb.state(), State::Open);
}

#[test]
fn late_outcomes_from_before_a_transition_are_ignored() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 2,
            ..Default::default()
        },
    );
    let stale = cb.try_acquire().unwrap();
    fail(&cb);
    fail(&cb);
    assert_eq!(cb.state(), State::Open);
    cb.reset();
    stale.failure(); // admitted before the trip and the reset
    assert_eq!(cb.snapshot().consecutive_failures, 0);
    assert_eq!(
        cb.snapshot().calls.failed,
        3,
        "still counted as a call that ran"
    );
}

#[tokio::test]
async fn classifier_decides_what_counts() {
    let clock = ManualClock::new();
    let cb = breaker(
        &clock,
        BreakerConfig {
            consecutive_failures: 1,
            ..Default::default()
        },
    );
    let ignore_4xx = |r: &Result<(), u16>| match r {
        Ok(()) => Outcome::Success,
        Err(code) if *code < 500 => Outcome::Ignored,
        Err(_) => Outcome::Failure,
    };
    for code in [400, 404, 429] {
        let r = cb
            .call_classified(ignore_4xx, async move { Err(code) })
            .await;
        assert_eq!(r, Err(CallError::Inner(code)));
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().calls.ignored, 3);
    let _ = cb.call_classified(ignore_4xx, async { Err(503) }).await;
    assert_eq!(cb.state(), State::Open);
    let r = cb.call(async { Ok::<_, u16>(()) }).await;
    assert!(matches!(r, Err(CallError::Rejected(_))));
}

#[test]
fn set_config_validates_applies_and_reports() {
    let clock = ManualClock::new();
    let cb = breaker(&clock, BreakerConfig::default());
    let bad = BreakerConfig {
        jitter: 2.0,
        ..Default::default()
    };
    assert_eq!(cb.set_config(bad).unwrap_err().field, "jitter");
    assert_eq!(cb.config(), BreakerConfig::default());

    let new = BreakerConfig {
        consecutive_failures: 1,
        ..Default::default()
    };
    let snap = cb
        .apply(BreakerCommand::SetConfig {
            config: new.clone(),
        })
        .unwrap();
    assert_eq!(snap.config, new);
    fail(&cb);
    assert_eq!(cb.state(), State::Open, "the new threshold is in force");
    let changes: Vec<String> = cb
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ConfigChanged { change } => Some(change),
            _ => None,
        })
        .collect();
    assert_eq!(changes, vec!["consecutive_failures=1"]);
}

#[test]
fn update_config_changes_only_the_named_fields() {
    let clock = ManualClock::new();
    let start = BreakerConfig {
        consecutive_failures: 5,
        wait_duration: secs(10),
        ..Default::default()
    };
    let cb = breaker(&clock, start.clone());
    let update = |json: &str| {
        let cmd: BreakerCommand = serde_json::from_str(json).unwrap();
        cb.apply(cmd)
    };
    let snap = update(r#"{"action":"update_config","config":{"wait_duration":"30s"}}"#).unwrap();
    assert_eq!(snap.config.wait_duration, secs(30));
    assert_eq!(
        snap.config.consecutive_failures, 5,
        "the other fields are kept"
    );

    // A misspelt field or a bad value is named, and nothing changes.
    let e = update(r#"{"action":"update_config","config":{"wait_durations":"1s"}}"#).unwrap_err();
    assert!(e.to_string().contains("wait_durations"), "{e}");
    let e = update(r#"{"action":"update_config","config":{"half_open_max_calls":0}}"#).unwrap_err();
    assert!(e.to_string().contains("half_open_max_calls"), "{e}");
    assert_eq!(cb.config().wait_duration, secs(30));
    assert_eq!(cb.config().half_open_max_calls, start.half_open_max_calls);
}

#[test]
fn commands_parse_from_json_as_operators_send_them() {
    let cmd: BreakerCommand = serde_json::from_str(r#"{"action":"close"}"#).unwrap();
    assert_eq!(cmd, BreakerCommand::Reset);
    let cmd: BreakerCommand =
        serde_json::from_str(r#"{"action":"set_config","config":{"wait_duration":"30s"}}"#)
            .unwrap();
    assert!(
        matches!(cmd, BreakerCommand::SetConfig { config } if config.wait_duration == secs(30))
    );
    assert!(serde_json::from_str::<BreakerCommand>(r#"{"action":"explode"}"#).is_err());
}

#[test]
fn snapshot_json_shape() {
    let clock = ManualClock::new();
    let cb = breaker(&clock, BreakerConfig::default());
    let v = serde_json::to_value(cb.snapshot()).unwrap();
    assert_eq!(v["name"], "upstream");
    assert_eq!(v["state"], "closed");
    assert_eq!(v["config"]["wait_duration"], "60s");
    assert_eq!(v["calls"]["not_permitted"], 0);
    assert!(v["half_open"].is_null());
}
