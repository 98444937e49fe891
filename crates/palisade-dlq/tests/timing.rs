//! Backoff, Retry-After and retention on tokio's paused clock (in-memory store).
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use palisade_core::{EventFilter, EventKind, TokioClock};
use palisade_dlq::{
    Backoff, DeadLetterQueue, DlqConfig, EntryState, Failure, FailureKind, RetryPolicy,
};
use parking_lot::Mutex;
use tokio::time::Instant;

fn queue(config: DlqConfig) -> DeadLetterQueue<u32> {
    DeadLetterQueue::builder("timing")
        .clock(TokioClock::shared())
        .config(config)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn retries_follow_the_exponential_backoff_then_park() {
    let mut config = DlqConfig {
        poll_interval: Duration::from_millis(1),
        ..DlqConfig::default()
    };
    config.policies.set(
        FailureKind::Timeout,
        RetryPolicy {
            max_attempts: 4,
            backoff: Backoff::Exponential {
                initial: Duration::from_secs(1),
                factor: 2.0,
                max: Duration::from_secs(3),
                jitter: 0.0,
            },
        },
    );
    let dlq = queue(config);
    let start = Instant::now();
    let id = dlq.push("op", &7, Failure::timeout("t")).await.unwrap();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let c = calls.clone();
    let worker = dlq.worker(move |_| {
        let c = c.clone();
        async move {
            c.lock().push(start.elapsed());
            Err(Failure::timeout("still slow"))
        }
    });
    tokio::time::sleep(Duration::from_secs(60)).await;
    worker.shutdown(Duration::from_secs(1)).await;
    let calls = calls.lock().clone();
    // Retries after 1 s, then 2 s, then 3 s (capped); the 4th failure parks it.
    let expected = [1000u128, 3000, 6000];
    assert_eq!(calls.len(), 3, "{calls:?}");
    for (got, want) in calls.iter().zip(expected) {
        let ms = got.as_millis();
        assert!(
            (want..=want + 5).contains(&ms),
            "retry at {ms} ms, expected {want}"
        );
    }
    let e = dlq.get(id).await.unwrap().unwrap();
    assert_eq!((e.state, e.attempts), (EntryState::Parked, 4));
    let events = dlq.events().recent(&EventFilter::default());
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::Notice { message, .. } if message.contains("parked after 4 attempts"))));
}

#[tokio::test(start_paused = true)]
async fn a_rate_limited_entry_waits_for_the_upstreams_retry_after() {
    let dlq = queue(DlqConfig {
        poll_interval: Duration::from_millis(1),
        ..DlqConfig::default()
    });
    let start = Instant::now();
    dlq.push(
        "op",
        &1,
        Failure::rate_limited("429", Duration::from_secs(90)),
    )
    .await
    .unwrap();
    let at = Arc::new(Mutex::new(None));
    let a = at.clone();
    let worker = dlq.worker(move |_| {
        let a = a.clone();
        async move {
            *a.lock() = Some(start.elapsed());
            Ok(())
        }
    });
    tokio::time::sleep(Duration::from_secs(120)).await;
    worker.shutdown(Duration::from_secs(1)).await;
    let at = at.lock().unwrap();
    assert!(
        at >= Duration::from_secs(90) && at < Duration::from_millis(90_010),
        "{at:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn retention_removes_old_entries_and_counts_them() {
    let dlq = queue(DlqConfig {
        retention: Duration::from_secs(3600),
        trim_interval: Duration::from_secs(60),
        ..DlqConfig::default()
    });
    for n in 0..3 {
        dlq.push("op", &n, Failure::client_error("400"))
            .await
            .unwrap();
    }
    let worker = dlq.worker(|_| async { Ok(()) });
    tokio::time::sleep(Duration::from_secs(1800)).await;
    dlq.push("op", &9, Failure::client_error("400"))
        .await
        .unwrap();
    assert_eq!(dlq.stats().await.unwrap().store.total, 4);
    tokio::time::sleep(Duration::from_secs(1800 + 120)).await;
    let stats = dlq.stats().await.unwrap();
    assert_eq!(stats.store.total, 1, "the three old entries expired");
    assert_eq!(stats.store.totals.expired, 3);
    worker.shutdown(Duration::from_secs(1)).await;
    let events = dlq.events().recent(&EventFilter::default());
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::Notice { message, .. } if message.contains("3 expired"))));
}

#[tokio::test(start_paused = true)]
async fn thresholds_report_warn_and_critical() {
    let dlq = queue(DlqConfig {
        warn_threshold: 2,
        critical_threshold: 3,
        ..DlqConfig::default()
    });
    let level = |dlq: DeadLetterQueue<u32>| async move { dlq.stats().await.unwrap().level };
    dlq.push("op", &1, Failure::client_error("x"))
        .await
        .unwrap();
    assert_eq!(level(dlq.clone()).await, palisade_dlq::Level::Ok);
    dlq.push("op", &2, Failure::client_error("x"))
        .await
        .unwrap();
    assert_eq!(level(dlq.clone()).await, palisade_dlq::Level::Warn);
    dlq.push("op", &3, Failure::client_error("x"))
        .await
        .unwrap();
    assert_eq!(level(dlq.clone()).await, palisade_dlq::Level::Critical);
}

#[tokio::test(start_paused = true)]
async fn the_worker_keeps_the_snapshot_counts_fresh_without_any_command() {
    let config = DlqConfig {
        trim_interval: Duration::from_secs(10),
        ..DlqConfig::default()
    };
    let dlq = queue(config);
    assert!(dlq.snapshot().stats.is_none(), "nothing has counted yet");
    // Parked at once: the worker never takes it, so only the refresh can count it.
    dlq.push("op", &1, Failure::client_error("bad input"))
        .await
        .unwrap();
    let worker = dlq.worker(|_| async { Ok::<(), Failure>(()) });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(dlq.snapshot().stats.map(|s| s.store.total), Some(1));

    dlq.push("op", &2, Failure::client_error("bad input"))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        dlq.snapshot().stats.map(|s| s.store.total),
        Some(1),
        "not before the interval"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        dlq.snapshot().stats.map(|s| s.store.total),
        Some(2),
        "refreshed every trim_interval"
    );
    worker.shutdown(Duration::from_secs(1)).await;
}
