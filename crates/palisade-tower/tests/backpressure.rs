//! `poll_ready` passes through every layer: an inner service that is not ready makes the layer
//! not ready (and wakes the caller when it becomes ready), and a readiness error comes out as the
//! layer's error. Runs on tokio's paused clock, so "still pending" is a timeout that costs no
//! real time.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{Gate, GateBroken, Req, req};
use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_ratelimit::{KeyedRateLimiter, Quota};
use palisade_tower::ratelimit::GlobalKey;
use palisade_tower::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

/// Checks that `svc` (over `gate`) is pending while the gate is closed, becomes ready (woken)
/// when it opens, and then serves.
async fn passes_readiness_through<S>(gate: Gate, mut svc: S)
where
    S: Service<Req, Error = BoxError>,
{
    let pending = tokio::time::timeout(Duration::from_secs(5), svc.ready()).await;
    assert!(pending.is_err(), "ready while the inner service is not");

    let opener = gate.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        opener.open();
    });
    // Woken by the inner service's waker, well before this timeout.
    tokio::time::timeout(Duration::from_secs(2), svc.ready())
        .await
        .expect("woken when the inner service became ready")
        .unwrap();
    svc.call(req()).await.unwrap();
    assert_eq!(gate.calls.load(Ordering::SeqCst), 1);
}

/// Checks that a readiness error of `gate` is `svc`'s readiness error.
async fn passes_readiness_errors_through<S>(gate: Gate, mut svc: S)
where
    S: Service<Req, Error = BoxError>,
{
    gate.break_it();
    let err = svc.ready().await.err().expect("a readiness error");
    assert!(err.is::<GateBroken>());
}

fn breaker() -> CircuitBreaker {
    CircuitBreaker::builder("gate").build().unwrap()
}

fn bulkhead() -> Bulkhead {
    Bulkhead::builder("gate").max_concurrent(4).build().unwrap()
}

fn limiter() -> KeyedRateLimiter<String> {
    KeyedRateLimiter::<String>::builder("gate")
        .quota(Quota::per_second(100))
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn circuit_breaker_layer() {
    let gate = Gate::default();
    passes_readiness_through(
        gate.clone(),
        CircuitBreakerLayer::new(breaker()).layer(gate),
    )
    .await;
    let gate = Gate::default();
    passes_readiness_errors_through(
        gate.clone(),
        CircuitBreakerLayer::new(breaker()).layer(gate),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn bulkhead_layer() {
    let gate = Gate::default();
    passes_readiness_through(gate.clone(), BulkheadLayer::new(bulkhead()).layer(gate)).await;
    let gate = Gate::default();
    passes_readiness_errors_through(gate.clone(), BulkheadLayer::new(bulkhead()).layer(gate)).await;
}

#[tokio::test(start_paused = true)]
async fn rate_limit_layer() {
    let gate = Gate::default();
    passes_readiness_through(
        gate.clone(),
        RateLimitLayer::new(limiter(), GlobalKey).layer(gate),
    )
    .await;
    let gate = Gate::default();
    passes_readiness_errors_through(
        gate.clone(),
        RateLimitLayer::new(limiter(), GlobalKey).layer(gate),
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_whole_stack() {
    let stack = || {
        ServiceBuilder::new()
            .layer(RateLimitLayer::new(limiter(), GlobalKey))
            .layer(BulkheadLayer::new(bulkhead()))
            .layer(CircuitBreakerLayer::new(breaker()))
    };
    let gate = Gate::default();
    passes_readiness_through(gate.clone(), stack().service(gate)).await;
    let gate = Gate::default();
    passes_readiness_errors_through(gate.clone(), stack().service(gate)).await;
}

#[tokio::test(start_paused = true)]
async fn a_not_ready_inner_service_takes_no_permit() {
    // Admission happens in `call`: waiting for readiness holds no bulkhead slot, spends no
    // quota and takes no breaker permit.
    let bulkhead = Bulkhead::builder("gate").max_concurrent(1).build().unwrap();
    let limiter = KeyedRateLimiter::<String>::builder("gate")
        .quota(Quota::per_minute(1))
        .build()
        .unwrap();
    let gate = Gate::default();
    let mut svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter.clone(), GlobalKey))
        .layer(BulkheadLayer::new(bulkhead.clone()))
        .service(gate.clone());
    let pending = tokio::time::timeout(Duration::from_secs(5), svc.ready()).await;
    assert!(pending.is_err());
    assert_eq!(bulkhead.active(), 0);
    assert!(
        limiter.check_key("global").is_ok(),
        "the quota is untouched"
    );
}
