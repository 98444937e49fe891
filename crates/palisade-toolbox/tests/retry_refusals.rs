//! Palisade's own refusals and HTTP answers as retry hints (features `refusals`, `http`,
//! `tower`), on tokio's paused clock: an open breaker's `retry_after` is waited exactly, a
//! breaker forced open is not retried, a rate limiter's hint is honoured, hints are found in a
//! `BoxError`'s source chain, and `Retry-After` headers are honoured through `RetryLayer`.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::BulkheadError;
use palisade_core::TokioClock;
use palisade_ratelimit::{RateLimitError, RateLimited};
use palisade_toolbox::budget::BudgetConfig;
use palisade_toolbox::retry::{
    Classify, Decision, HintedErrors, HttpResponses, Retry, RetryHint, RetryLayer, hint_in_chain,
};
use tokio::time::Instant;
use tower::{BoxError, ServiceBuilder, ServiceExt};

fn roomy() -> BudgetConfig {
    BudgetConfig {
        min_retries_per_second: 1000.0,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn an_open_breakers_retry_after_is_waited_exactly_then_its_trial_passes() {
    let breaker = CircuitBreaker::builder("upstream")
        .consecutive_failures(1)
        .wait_duration(Duration::from_secs(2))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let retry = Retry::builder("through-breaker")
        .max_attempts(3)
        .backoff(Duration::from_millis(100), Duration::from_millis(100))
        .budget_config(roomy())
        .build()
        .unwrap();
    let times = parking_lot::Mutex::new(Vec::new());
    let upstream_calls = AtomicU32::new(0);
    let start = Instant::now();
    let r = retry
        .call_classified(HintedErrors, || {
            times.lock().push(Instant::now());
            breaker.call(async {
                // The upstream fails once (opening the breaker), then answers.
                match upstream_calls.fetch_add(1, Ordering::Relaxed) {
                    0 => Err("timeout"),
                    _ => Ok("answer"),
                }
            })
        })
        .await;
    assert_eq!(r.unwrap(), "answer");
    let times = times.into_inner();
    assert_eq!(times.len(), 3, "fail, refused by the open breaker, trial");
    assert!(
        times[1] - times[0] <= Duration::from_millis(100),
        "backoff after the failure"
    );
    assert_eq!(
        times[2] - start,
        Duration::from_secs(2),
        "exactly when the breaker half-opens"
    );
    assert_eq!(
        upstream_calls.load(Ordering::Relaxed),
        2,
        "the refused attempt never ran"
    );
    assert_eq!(retry.snapshot().retry_after_honoured_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_forced_open_is_not_retried_and_a_long_wait_ends_the_call() {
    let breaker = CircuitBreaker::builder("upstream").build().unwrap();
    breaker.force_open();
    let retry = Retry::builder("forced")
        .budget_config(roomy())
        .build()
        .unwrap();
    let attempts = AtomicU32::new(0);
    let r = retry
        .call_classified(HintedErrors, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            breaker.call(async { Ok::<_, ()>(()) })
        })
        .await;
    assert!(r.unwrap_err().rejected().is_some());
    assert_eq!(attempts.load(Ordering::Relaxed), 1);

    // Open with its default 60 s wait: beyond max_retry_after (30 s), so no retry either.
    let breaker = CircuitBreaker::builder("slow-to-heal")
        .consecutive_failures(1)
        .build()
        .unwrap();
    let _ = breaker.call(async { Err::<(), _>("boom") }).await;
    let attempts = AtomicU32::new(0);
    let start = Instant::now();
    let r = retry
        .call_classified(HintedErrors, || {
            attempts.fetch_add(1, Ordering::Relaxed);
            breaker.call(async { Ok::<_, &str>(()) })
        })
        .await;
    assert!(r.is_err());
    assert_eq!(
        (attempts.load(Ordering::Relaxed), start.elapsed()),
        (1, Duration::ZERO)
    );
    assert_eq!(retry.snapshot().retry_after_too_long_total, 1);
}

#[test]
fn refusals_map_to_decisions() {
    let limited = RateLimited {
        name: "per-client".into(),
        limit: 10,
        retry_after: Duration::from_millis(1500),
    };
    assert_eq!(
        limited.retry_hint(),
        Some(Decision::RetryAfter(Duration::from_millis(1500)))
    );
    let never = RateLimitError::InsufficientCapacity {
        name: "per-client".into(),
        requested: 20,
        burst: 10,
    };
    assert_eq!(never.retry_hint(), Some(Decision::Return));
    let full = BulkheadError::Full {
        name: "db".into(),
        max_concurrent: 4,
        max_waiting: None,
    };
    assert_eq!(full.retry_hint(), Some(Decision::Retry));
    let inner: palisade_breaker::CallError<&str> = palisade_breaker::CallError::Inner("io");
    assert_eq!(inner.retry_hint(), None, "the classifier's default applies");
    assert_eq!(HintedErrors.classify(&Err::<(), _>(inner)), Decision::Retry);
}

#[test]
fn hints_are_found_along_a_box_errors_source_chain() {
    #[derive(Debug)]
    struct Wrapped(RateLimited);
    impl std::fmt::Display for Wrapped {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("upstream call failed")
        }
    }
    impl std::error::Error for Wrapped {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }
    let err: BoxError = Box::new(Wrapped(RateLimited {
        name: "api".into(),
        limit: 1,
        retry_after: Duration::from_secs(3),
    }));
    assert_eq!(
        err.retry_hint(),
        Some(Decision::RetryAfter(Duration::from_secs(3)))
    );
    assert_eq!(
        hint_in_chain(&*err),
        Some(Decision::RetryAfter(Duration::from_secs(3)))
    );
    let plain: BoxError = "connection reset".into();
    assert_eq!(plain.retry_hint(), None);
}

#[tokio::test(start_paused = true)]
async fn retry_after_headers_are_honoured_through_the_layer() {
    let retry = Retry::builder("http")
        .max_attempts(4)
        .budget_config(roomy())
        .build()
        .unwrap();
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = times.clone();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry.clone()).classify(HttpResponses))
        .service_fn(move |_: ()| {
            let mut t = log.lock();
            t.push(Instant::now());
            let response = match t.len() {
                1 => http::Response::builder()
                    .status(503)
                    .header("retry-after", "3")
                    .body(()),
                2 => http::Response::builder()
                    .status(429)
                    .header("retry-after", "1")
                    .body(()),
                _ => http::Response::builder().status(200).body(()),
            };
            async move { Ok::<_, BoxError>(response.unwrap()) }
        });
    let response = svc.clone().oneshot(()).await.unwrap();
    assert_eq!(response.status(), 200);
    let times = times.lock().clone();
    assert_eq!(times[1] - times[0], Duration::from_secs(3));
    assert_eq!(times[2] - times[1], Duration::from_secs(1));
    assert_eq!(retry.snapshot().retry_after_honoured_total, 2);

    // A refusal inside the BoxError: a rate limiter's hint is waited out exactly.
    let attempts = Arc::new(AtomicU32::new(0));
    let a = attempts.clone();
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry.clone()).classify(HttpResponses))
        .service_fn(move |_: ()| {
            let n = a.fetch_add(1, Ordering::Relaxed);
            async move {
                if n == 0 {
                    Err::<http::Response<()>, BoxError>(Box::new(RateLimited {
                        name: "api".into(),
                        limit: 1,
                        retry_after: Duration::from_millis(700),
                    }))
                } else {
                    Ok(http::Response::new(()))
                }
            }
        });
    let start = Instant::now();
    svc.oneshot(()).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_millis(700));
    assert_eq!(attempts.load(Ordering::Relaxed), 2);
}
