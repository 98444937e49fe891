//! The circuit breaker behind its layer: what opens it (5xx, errors, timeouts) and what does not
//! (4xx, 429), refusals that never reach the inner service, half-open trials and cancellation.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::time::Duration;

use common::{Hanging, req, upstream};
use palisade_breaker::{CircuitBreaker, ErrorsAreFailures, Outcome, RejectReason, Rejected, State};
use palisade_core::ManualClock;
use palisade_tower::CircuitBreakerLayer;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

fn breaker(threshold: u32) -> CircuitBreaker {
    CircuitBreaker::builder("upstream")
        .consecutive_failures(threshold)
        .wait_duration(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test]
async fn opens_on_5xx_then_refuses_without_reaching_the_inner_service() {
    let cb = breaker(3);
    let up = upstream(|_| 503);
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .service(up.clone());

    for _ in 0..3 {
        let reply = svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(reply.status(), 503, "the upstream's reply passes through");
    }
    assert_eq!(cb.state(), State::Open);
    assert_eq!(up.calls(), 3);

    for _ in 0..5 {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        let rejected = err
            .downcast_ref::<Rejected>()
            .expect("a Rejected inside the BoxError");
        assert_eq!(rejected.reason(), RejectReason::Open);
        assert!(rejected.retry_after().unwrap() <= Duration::from_secs(30));
    }
    assert_eq!(up.calls(), 3, "refused calls never reach the inner service");
    assert_eq!(cb.snapshot().calls.not_permitted, 5);
}

#[tokio::test]
async fn client_errors_are_successes_and_never_open_it() {
    let cb = breaker(3);
    let codes = [400, 401, 403, 404, 409, 422];
    let up = upstream(move |n| codes[n % codes.len()]);
    let svc = CircuitBreakerLayer::new(cb.clone()).layer(up.clone());

    for _ in 0..30 {
        let reply = svc.clone().oneshot(req()).await.unwrap();
        assert!(reply.status().is_client_error());
    }
    assert_eq!(cb.state(), State::Closed);
    assert_eq!(cb.snapshot().calls.successful, 30);
    assert_eq!(cb.snapshot().calls.failed, 0);
}

#[tokio::test]
async fn too_many_requests_is_ignored_back_pressure() {
    let cb = breaker(3);
    // Two failures, ten 429s, then a third failure: 429 neither trips nor resets the count.
    let up = upstream(|n| match n {
        0 | 1 | 12 => 500,
        _ => 429,
    });
    let svc = CircuitBreakerLayer::new(cb.clone()).layer(up.clone());

    for _ in 0..12 {
        svc.clone().oneshot(req()).await.unwrap();
        assert_eq!(cb.state(), State::Closed);
    }
    let snap = cb.snapshot();
    assert_eq!((snap.calls.ignored, snap.consecutive_failures), (10, 2));

    svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test]
async fn errors_count_as_failures_and_pass_through_downcastable() {
    let cb = breaker(2);
    let failing = tower::service_fn(|_req: common::Req| async {
        Err::<http::Response<String>, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    });
    let svc = CircuitBreakerLayer::new(cb.clone()).layer(failing);

    for _ in 0..2 {
        let err = svc.clone().oneshot(req()).await.unwrap_err();
        let io = err.downcast_ref::<std::io::Error>().unwrap();
        assert_eq!(io.kind(), std::io::ErrorKind::ConnectionRefused);
    }
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test(start_paused = true)]
async fn timeouts_from_tower_count_as_failures() {
    let cb = breaker(1);
    let slow = tower::service_fn(|_req: common::Req| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, std::io::Error>(http::Response::new(String::new()))
    });
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .timeout(Duration::from_secs(1))
        .service(slow);

    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>());
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test]
async fn other_classifiers_fit_non_http_services() {
    let cb = breaker(1);
    let svc = CircuitBreakerLayer::new(cb.clone())
        .classifier(ErrorsAreFailures)
        .layer(tower::service_fn(|n: u32| async move {
            if n == 0 { Err("zero") } else { Ok(n) }
        }));
    assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
    assert_eq!(cb.state(), State::Closed);
    assert!(svc.clone().oneshot(0).await.is_err());
    assert_eq!(cb.state(), State::Open);

    // A closure classifier: odd answers are failures.
    let cb = breaker(1);
    let classify = |r: &Result<u32, std::convert::Infallible>| match r {
        Ok(n) if n % 2 == 1 => Outcome::Failure,
        _ => Outcome::Success,
    };
    let svc = CircuitBreakerLayer::new(cb.clone())
        .classifier(classify)
        .layer(tower::service_fn(|n: u32| async move {
            Ok::<_, std::convert::Infallible>(n)
        }));
    svc.clone().oneshot(2).await.unwrap();
    assert_eq!(cb.state(), State::Closed);
    svc.clone().oneshot(3).await.unwrap();
    assert_eq!(cb.state(), State::Open);
}

#[tokio::test]
async fn a_cancelled_trial_gives_its_slot_back() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder("upstream")
        .consecutive_failures(1)
        .wait_duration(Duration::from_secs(10))
        .clock(clock.shared())
        .build()
        .unwrap();
    cb.try_acquire().unwrap().failure();
    clock.advance(Duration::from_secs(10));
    assert_eq!(cb.state(), State::HalfOpen);

    let hanging = Hanging::default();
    let mut svc = CircuitBreakerLayer::new(cb.clone()).layer(hanging.clone());

    // The trial is admitted in `call`, so a second one is refused while it runs.
    svc.ready().await.unwrap();
    let trial = svc.call(req());
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<Rejected>().unwrap().reason(),
        RejectReason::HalfOpenFull
    );
    // Dropped unfinished: nothing recorded, the slot is free again.
    drop(trial);
    assert_eq!(cb.state(), State::HalfOpen);
    svc.ready().await.unwrap();
    let again = svc.call(req());
    assert_eq!(hanging.calls.load(std::sync::atomic::Ordering::SeqCst), 2);
    drop(again);

    // A successful trial closes it.
    let ok = CircuitBreakerLayer::new(cb.clone()).layer(upstream(|_| 200));
    ok.oneshot(req()).await.unwrap();
    assert_eq!(cb.state(), State::Closed);
}
