//! Half-open can never be stranded: not by a config change, not by a trial call that never
//! reports. Everything on the manual clock.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use palisade_breaker::{
    BreakerCommand, BreakerConfig, CircuitBreaker, Permit, RejectReason, State,
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

/// A breaker tripped once (one failure) and moved to half-open by the clock.
fn half_open(clock: &ManualClock, cfg: BreakerConfig) -> CircuitBreaker {
    let cb = breaker(
        clock,
        BreakerConfig {
            consecutive_failures: 1,
            ..cfg
        },
    );
    cb.try_acquire().unwrap().failure();
    clock.advance(cb.retry_after().unwrap());
    assert_eq!(cb.state(), State::HalfOpen);
    cb
}

fn trials(cb: &CircuitBreaker, n: usize) -> Vec<Permit<'_>> {
    (0..n)
        .map(|_| {
            let p = cb.try_acquire().unwrap();
            assert!(p.is_trial());
            p
        })
        .collect()
}

fn update(cb: &CircuitBreaker, json: serde_json::Value) {
    let cmd: BreakerCommand =
        serde_json::from_value(serde_json::json!({"action": "update_config", "config": json}))
            .unwrap();
    cb.apply(cmd).unwrap();
}

fn reasons(cb: &CircuitBreaker) -> Vec<String> {
    cb.events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::StateTransition { from, to, reason } => {
                Some(format!("{from}->{to}: {reason}"))
            }
            _ => None,
        })
        .collect()
}

/// Some time later, the breaker admits a call again (it may need one open wait first).
fn admits_eventually(clock: &ManualClock, cb: &CircuitBreaker) -> bool {
    for _ in 0..4 {
        if let Ok(p) = cb.try_acquire() {
            drop(p);
            return true;
        }
        clock.advance(secs(3600));
    }
    false
}

#[test]
fn lowering_half_open_max_calls_below_the_successes_closes() {
    let clock = ManualClock::new();
    let cb = half_open(
        &clock,
        BreakerConfig {
            half_open_max_calls: 3,
            ..Default::default()
        },
    );
    let mut running = trials(&cb, 3);
    running.pop().unwrap().success(); // 1 of 3 successes, 2 trials in flight
    update(&cb, serde_json::json!({"half_open_max_calls": 1}));
    drop(running); // the other two are cancelled: no outcome will ever arrive
    assert!(
        admits_eventually(&clock, &cb),
        "stranded: {:?}",
        cb.snapshot().half_open
    );
    // One success is all the new config asks for, so the change itself closes the breaker.
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(
        reasons(&cb).last().unwrap(),
        "half_open->closed: 1 trial calls succeeded (half_open_max_calls is now 1)"
    );
}

#[test]
fn lowering_half_open_max_calls_below_the_trials_in_flight_cannot_strand() {
    let clock = ManualClock::new();
    let cb = half_open(
        &clock,
        BreakerConfig {
            half_open_max_calls: 3,
            ..Default::default()
        },
    );
    let mut running = trials(&cb, 3);
    cb.set_config(BreakerConfig {
        consecutive_failures: 1,
        half_open_max_calls: 1,
        ..Default::default()
    })
    .unwrap();
    // Three trials in flight, one allowed: refused until they report.
    assert_eq!(
        cb.try_acquire().unwrap_err().reason(),
        RejectReason::HalfOpenFull
    );
    running.pop().unwrap().ignore();
    running.pop().unwrap().ignore();
    // The last one is ignored too: nothing in flight, no success yet: a trial is admitted.
    running.pop().unwrap().ignore();
    let p = cb.try_acquire().unwrap();
    assert!(p.is_trial());
    p.success();
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn lowering_half_open_max_calls_with_hung_trials_still_recovers() {
    let clock = ManualClock::new();
    let cb = half_open(
        &clock,
        BreakerConfig {
            half_open_max_calls: 3,
            ..Default::default()
        },
    );
    let mut running = trials(&cb, 3);
    running.pop().unwrap().success();
    update(&cb, serde_json::json!({"half_open_max_calls": 2}));
    // 1 success + 2 in flight that hang forever (held, never reported).
    assert!(admits_eventually(&clock, &cb));
    drop(running);
}

#[test]
fn a_hung_trial_does_not_keep_the_breaker_half_open_forever() {
    let clock = ManualClock::new();
    let cb = half_open(&clock, BreakerConfig::default());
    let hung = cb.try_acquire().unwrap();
    assert!(hung.is_trial());
    clock.advance(Duration::from_millis(59_999));
    assert_eq!(cb.state(), State::HalfOpen);
    assert_eq!(
        cb.try_acquire().unwrap_err().reason(),
        RejectReason::HalfOpenFull
    );
    // The default wait in half-open is 60 s: the trial is presumed hung and the breaker
    // re-opens, as if the trial had failed.
    clock.advance(Duration::from_millis(1));
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.retry_after(), Some(secs(60)));
    clock.advance(secs(60));
    let trial = cb.try_acquire().unwrap();
    assert!(trial.is_trial());
    // The hung call finally answers: too late, it moves nothing.
    hung.success();
    assert_eq!(cb.state(), State::HalfOpen);
    trial.success();
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn a_leaked_trial_permit_does_not_strand_the_breaker() {
    let clock = ManualClock::new();
    let cb = half_open(&clock, BreakerConfig::default());
    std::mem::forget(cb.try_acquire().unwrap()); // never reported, never dropped
    assert!(admits_eventually(&clock, &cb));
}

#[test]
fn hung_trials_reopen_at_their_deadline_even_when_nobody_looks() {
    let clock = ManualClock::new();
    let cb = half_open(
        &clock,
        BreakerConfig {
            wait_duration: secs(60),
            max_wait_in_half_open: secs(30),
            ..Default::default()
        },
    );
    let hung = cb.try_acquire().unwrap();
    // Nobody calls or looks for 50 s: the breaker re-opened at 30 s, so 40 s of its
    // 60 s wait are left.
    clock.advance(secs(50));
    // The late outcome arrives first: the re-open fell due before it, so it changes nothing.
    hung.success();
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.retry_after(), Some(secs(40)));
    assert_eq!(
        reasons(&cb).last().unwrap(),
        "half_open->open: 1 trial calls in flight with no outcome for 30000 ms (max_wait_in_half_open)"
    );
    assert_eq!(cb.snapshot().consecutive_trips, 2, "a failed recovery");
}

#[test]
fn an_idle_half_open_breaker_waits_for_nothing() {
    let clock = ManualClock::new();
    let cb = half_open(&clock, BreakerConfig::default());
    // No traffic for an hour: nothing is in flight, so nothing is hung.
    clock.advance(secs(3600));
    let snap = cb.snapshot();
    assert_eq!(snap.state, State::HalfOpen);
    assert_eq!(snap.half_open.unwrap().reopen_in_ms, None);
    // The first call after the quiet hour gets its full wait.
    let trial = cb.try_acquire().unwrap();
    assert!(trial.is_trial());
    assert_eq!(cb.snapshot().half_open.unwrap().reopen_in_ms, Some(60_000));
    clock.advance(secs(59));
    assert_eq!(cb.snapshot().half_open.unwrap().reopen_in_ms, Some(1_000));
    trial.success();
    assert_eq!(cb.state(), State::Closed);
}

#[test]
fn news_from_any_trial_restarts_the_wait() {
    let clock = ManualClock::new();
    let cb = half_open(
        &clock,
        BreakerConfig {
            half_open_max_calls: 3,
            max_wait_in_half_open: secs(10),
            ..Default::default()
        },
    );
    let mut running = trials(&cb, 2);
    clock.advance(secs(8));
    running.pop().unwrap().success(); // news at 8 s: the other may take until 18 s
    clock.advance(secs(9));
    assert_eq!(cb.state(), State::HalfOpen);
    let third = cb.try_acquire().unwrap(); // admitted at 17 s: until 27 s
    clock.advance(secs(9));
    assert_eq!(cb.state(), State::HalfOpen);
    clock.advance(secs(1));
    assert_eq!(cb.state(), State::Open);
    drop((running, third));
}

#[test]
fn lowering_max_wait_in_half_open_reopens_at_the_change() {
    let clock = ManualClock::new();
    let cb = half_open(
        &clock,
        BreakerConfig {
            wait_duration: secs(60),
            ..Default::default()
        },
    );
    let hung = cb.try_acquire().unwrap();
    clock.advance(secs(45));
    assert_eq!(cb.state(), State::HalfOpen);
    update(&cb, serde_json::json!({"max_wait_in_half_open": "30s"}));
    // 45 s without news is past the new 30 s: re-opened now, its wait counted from now.
    assert_eq!(cb.state(), State::Open);
    assert_eq!(cb.retry_after(), Some(secs(60)));
    let events: Vec<String> = cb
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter_map(|e| match e.kind {
            EventKind::ConfigChanged { change } => Some(format!("config: {change}")),
            EventKind::StateTransition { from, to, .. } => Some(format!("{from}->{to}")),
            _ => None,
        })
        .collect();
    assert_eq!(
        events[events.len() - 2..],
        [
            r#"config: max_wait_in_half_open="30s""#.to_string(),
            "half_open->open".to_string()
        ]
    );
    drop(hung);
}

#[test]
fn the_new_setting_reads_from_config_and_is_validated() {
    let cfg: BreakerConfig = serde_json::from_str(r#"{"max_wait_in_half_open": "90s"}"#).unwrap();
    assert_eq!(cfg.max_wait_in_half_open, secs(90));
    let cfg: BreakerConfig = toml::from_str("max_wait_in_half_open = 250").unwrap();
    assert_eq!(cfg.max_wait_in_half_open, Duration::from_millis(250));
    assert_eq!(
        BreakerConfig::default().max_wait_in_half_open,
        secs(60),
        "default"
    );

    let clock = ManualClock::new();
    let cb = breaker(&clock, BreakerConfig::default());
    let cmd: BreakerCommand = serde_json::from_str(
        r#"{"action":"update_config","config":{"max_wait_in_half_open":"0s"}}"#,
    )
    .unwrap();
    let err = cb.apply(cmd).unwrap_err();
    assert!(err.to_string().contains("max_wait_in_half_open"), "{err}");
    assert_eq!(
        cb.config().max_wait_in_half_open,
        secs(60),
        "nothing changed"
    );

    let built = CircuitBreaker::builder("b")
        .max_wait_in_half_open(secs(5))
        .build()
        .unwrap();
    let snap = serde_json::to_value(built.snapshot()).unwrap();
    assert_eq!(snap["config"]["max_wait_in_half_open"], "5s");
}
