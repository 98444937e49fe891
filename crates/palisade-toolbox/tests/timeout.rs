//! The timeout component: deadlines on tokio's paused clock, cancellation, runtime control
//! through the registry, and how a breaker counts an elapsed deadline.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_breaker::{CircuitBreaker, State};
use palisade_core::{ComponentKind, EventFilter, EventKind, Registry};
use palisade_toolbox::{CountAs, Timeout, TimeoutConfig, TimeoutError};
use serde_json::json;
use tokio::time::Instant;

/// Sets its flag when dropped: the call's future was cancelled.
struct DropGuard(Arc<AtomicBool>);

impl Drop for DropGuard {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_past_its_deadline_ends_at_the_deadline_and_is_dropped() {
    let timeout = Timeout::builder("t")
        .deadline(Duration::from_millis(300))
        .build()
        .unwrap();
    let dropped = Arc::new(AtomicBool::new(false));
    let guard = DropGuard(Arc::clone(&dropped));
    let started = Instant::now();
    let r = timeout
        .call(async move {
            let _guard = guard;
            tokio::time::sleep(Duration::from_secs(10)).await;
            Ok::<_, String>(1)
        })
        .await;
    assert_eq!(started.elapsed(), Duration::from_millis(300));
    match r {
        Err(TimeoutError::Elapsed { name, after }) => {
            assert_eq!(&*name, "t");
            assert_eq!(after, Duration::from_millis(300));
        }
        other => panic!("{other:?}"),
    }
    assert!(dropped.load(Ordering::SeqCst), "the call was cancelled");
    let snap = timeout.snapshot();
    assert_eq!((snap.waited_total, snap.timeouts_total), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn in_time_results_and_errors_pass_through_and_per_call_deadlines_apply() {
    let timeout = Timeout::builder("t")
        .deadline(Duration::from_secs(1))
        .build()
        .unwrap();
    let slow_ok = timeout
        .call(async {
            tokio::time::sleep(Duration::from_millis(999)).await;
            Ok::<_, String>("in time")
        })
        .await;
    assert_eq!(slow_ok.unwrap(), "in time");
    let err = timeout.call(async { Err::<(), _>("refused") }).await;
    assert_eq!(err.unwrap_err().into_inner(), Some("refused"));
    let started = Instant::now();
    let short = timeout
        .call_with(
            Duration::from_millis(50),
            std::future::pending::<Result<(), String>>(),
        )
        .await;
    assert!(short.unwrap_err().is_elapsed());
    assert_eq!(started.elapsed(), Duration::from_millis(50));
    assert_eq!(timeout.snapshot().timeouts_total, 1);
    // Timed: the 999 ms call and the one that ran out at 50 ms (the error came at once).
    let latency = timeout.snapshot().latency;
    assert_eq!(latency.counts.iter().sum::<u64>(), 2);
    assert_eq!(latency.quantile_ms(0.5), Some(50));
    assert_eq!(latency.quantile_ms(0.99), Some(1000));
}

#[test]
fn a_call_ready_at_once_arms_no_timer_and_needs_no_runtime() {
    // Outside any runtime: arming a tokio timer here would panic.
    let timeout = Timeout::builder("t").build().unwrap();
    let mut call = std::pin::pin!(timeout.call(async { Ok::<_, ()>(7) }));
    let mut cx = Context::from_waker(Waker::noop());
    assert_eq!(call.as_mut().poll(&mut cx), Poll::Ready(Ok(7)));
    assert_eq!(timeout.snapshot().waited_total, 0);
}

#[tokio::test(start_paused = true)]
async fn operators_change_the_deadline_through_the_registry() {
    let registry = Registry::new();
    let timeout = Timeout::builder("search")
        .deadline(Duration::from_secs(2))
        .registry(&registry)
        .build()
        .unwrap();
    let snap = registry
        .control(
            ComponentKind::Timeout,
            "search",
            json!({"action": "set_deadline", "deadline": "500ms"}),
        )
        .await
        .unwrap();
    assert_eq!(snap["deadline_ms"], 500);
    assert_eq!(timeout.deadline(), Duration::from_millis(500));
    let snap = registry
        .control(
            ComponentKind::Timeout,
            "search",
            json!({"action": "update_config", "config": {"count_as": "slow"}}),
        )
        .await
        .unwrap();
    assert_eq!(snap["count_as"], "slow");
    let err = registry
        .control(
            ComponentKind::Timeout,
            "search",
            json!({"action": "set_deadline", "deadline": 0}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("deadline"), "{err}");
    let bad = registry
        .control(
            ComponentKind::Timeout,
            "search",
            json!({"action": "set_deadline"}),
        )
        .await
        .unwrap_err();
    assert!(bad.to_string().contains("deadline"), "{bad}");
    assert_eq!(timeout.deadline(), Duration::from_millis(500), "unchanged");
    let changes: Vec<String> = registry
        .events()
        .recent(&EventFilter {
            kind: Some(ComponentKind::Timeout),
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
        ["deadline 2s -> 500ms", "count_as failure -> slow"]
    );
}

#[tokio::test(start_paused = true)]
async fn a_breaker_counts_an_elapsed_deadline_as_the_config_says() {
    let timeout = Timeout::builder("api")
        .deadline(Duration::from_millis(100))
        .build()
        .unwrap();
    let breaker = CircuitBreaker::builder("api")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let hung = || std::future::pending::<Result<(), String>>();
    let _ = breaker
        .call_classified(timeout.classifier(), timeout.call(hung()))
        .await;
    assert_eq!(breaker.snapshot().calls.failed, 1);
    // Switched at runtime: the next timeouts are slow calls, and the breaker stays closed.
    timeout
        .set_config(TimeoutConfig {
            count_as: CountAs::Slow,
            ..timeout.config()
        })
        .unwrap();
    for _ in 0..3 {
        let _ = breaker
            .call_classified(timeout.classifier(), timeout.call(hung()))
            .await;
    }
    let snap = breaker.snapshot();
    assert_eq!((snap.calls.failed, snap.calls.slow), (1, 3));
    assert_eq!(snap.state, State::Closed);
    // Its own errors are failures.
    let _ = breaker
        .call_classified(
            timeout.classifier(),
            timeout.call(async { Err::<(), _>("500".to_owned()) }),
        )
        .await;
    assert_eq!(breaker.state(), State::Open, "1 + 1 consecutive failures");
}
