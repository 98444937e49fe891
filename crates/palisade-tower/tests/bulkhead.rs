//! The bulkhead behind its layer, on tokio's paused clock: the slot is taken in `call` and held
//! until the response future completes or is dropped; full bulkheads refuse at once or after
//! `max_wait`; a waiting caller reaches the inner service only once admitted; cancellation while
//! waiting leaves the queue.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Hanging, Latched, req, upstream};
use palisade_bulkhead::{AdaptiveConfig, Bulkhead, BulkheadConfig, BulkheadError};
use palisade_tower::{BulkheadLayer, HttpClassifier};
use tower::{Layer, Service, ServiceExt};

fn bulkhead(max: u32, wait: Duration) -> Bulkhead {
    Bulkhead::builder("tools")
        .max_concurrent(max)
        .max_wait(wait)
        .build()
        .unwrap()
}

/// Yields until `cond` holds (bounded: the spawned tasks need a few turns of the scheduler).
async fn until(cond: impl Fn() -> bool) {
    for _ in 0..100 {
        if cond() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("condition not reached");
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_released_when_the_response_future_is_dropped() {
    let bh = bulkhead(2, Duration::ZERO);
    let hanging = Hanging::default();
    let mut svc = BulkheadLayer::new(bh.clone()).layer(hanging.clone());

    svc.ready().await.unwrap();
    let never_polled = svc.call(req());
    assert_eq!(bh.active(), 1, "taken in `call`, before the first poll");

    svc.ready().await.unwrap();
    let mut polled = svc.call(req());
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut polled)
            .await
            .is_err()
    );
    assert_eq!(bh.active(), 2);

    drop(never_polled);
    assert_eq!(bh.active(), 1);
    drop(polled);
    assert_eq!(bh.active(), 0);
    assert_eq!(hanging.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn the_slot_is_held_until_the_response_completes() {
    let bh = bulkhead(1, Duration::ZERO);
    let latched = Latched::default();
    let svc = BulkheadLayer::new(bh.clone()).layer(latched.clone());

    let running = tokio::spawn(svc.clone().oneshot(req()));
    until(|| latched.calls.load(Ordering::SeqCst) == 1).await;
    assert_eq!(bh.active(), 1);

    // Full, no wait allowed: refused at once, without reaching the inner service.
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert!(matches!(
        err.downcast_ref::<BulkheadError>(),
        Some(BulkheadError::Full {
            max_concurrent: 1,
            ..
        })
    ));
    assert_eq!(latched.calls.load(Ordering::SeqCst), 1);

    latched.release.notify_one();
    assert_eq!(running.await.unwrap().unwrap().body(), "released");
    assert_eq!(bh.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_waiting_caller_reaches_the_inner_service_once_admitted() {
    let bh = bulkhead(1, Duration::from_secs(5));
    let latched = Latched::default();
    let svc = BulkheadLayer::new(bh.clone()).layer(latched.clone());

    let first = tokio::spawn(svc.clone().oneshot(req()));
    until(|| bh.active() == 1).await;
    let second = tokio::spawn(svc.clone().oneshot(req()));
    until(|| bh.waiting() == 1).await;
    assert_eq!(
        latched.calls.load(Ordering::SeqCst),
        1,
        "not called while waiting"
    );

    latched.release.notify_one();
    first.await.unwrap().unwrap();
    until(|| latched.calls.load(Ordering::SeqCst) == 2).await;
    assert_eq!((bh.active(), bh.waiting()), (1, 0));

    latched.release.notify_one();
    second.await.unwrap().unwrap();
    assert_eq!(bh.active(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_wait_that_times_out_is_refused_without_calling_the_inner_service() {
    let bh = bulkhead(1, Duration::from_millis(200));
    let hanging = Hanging::default();
    let svc = BulkheadLayer::new(bh.clone()).layer(hanging.clone());

    let _running = tokio::spawn(svc.clone().oneshot(req()));
    until(|| bh.active() == 1).await;
    let started = tokio::time::Instant::now();
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_millis(200));
    assert!(matches!(
        err.downcast_ref::<BulkheadError>(),
        Some(BulkheadError::TimedOut { .. })
    ));
    assert_eq!(hanging.calls.load(Ordering::SeqCst), 1);
    assert_eq!(bh.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn cancelling_a_waiting_caller_leaves_the_queue() {
    let bh = bulkhead(1, Duration::from_secs(60));
    let latched = Latched::default();
    let svc = BulkheadLayer::new(bh.clone()).layer(latched.clone());

    let first = tokio::spawn(svc.clone().oneshot(req()));
    until(|| bh.active() == 1).await;
    let waiter = tokio::spawn(svc.clone().oneshot(req()));
    until(|| bh.waiting() == 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    assert_eq!(bh.waiting(), 0);

    latched.release.notify_one();
    first.await.unwrap().unwrap();
    assert_eq!((bh.active(), bh.waiting()), (0, 0));
    assert_eq!(
        latched.calls.load(Ordering::SeqCst),
        1,
        "the cancelled caller never ran"
    );
}

#[tokio::test(start_paused = true)]
async fn adaptive_samples_feed_the_limit() {
    let bh = Bulkhead::builder("llm")
        .config(BulkheadConfig {
            max_concurrent: 8,
            adaptive: AdaptiveConfig {
                enabled: true,
                min_concurrent: 1,
                max_concurrent: 8,
                latency_threshold: Duration::from_millis(100),
                backoff_ratio: 0.5,
            },
            ..BulkheadConfig::default()
        })
        .build()
        .unwrap();
    // Sampling is on because the bulkhead is adaptive; 5xx counts as overload with the HTTP
    // classifier.
    let svc = BulkheadLayer::new(bh.clone())
        .classifier(HttpClassifier)
        .layer(upstream(|_| 503));
    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(
        bh.max_concurrent(),
        4,
        "one overloaded sample halves the limit"
    );

    let off = BulkheadLayer::new(bh.clone())
        .classifier(HttpClassifier)
        .adaptive_samples(false)
        .layer(upstream(|_| 503));
    off.oneshot(req()).await.unwrap();
    assert_eq!(bh.max_concurrent(), 4, "no samples when switched off");
}
