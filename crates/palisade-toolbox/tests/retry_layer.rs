//! `RetryLayer` on tokio's paused clock: retries through a clone of the service made ready
//! first, clones of the request, exact `Retry-After` waits, readiness errors, and the shared
//! component.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use palisade_toolbox::budget::BudgetConfig;
use palisade_toolbox::retry::{Decision, Retry, RetryLayer};
use tokio::time::Instant;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};

/// Fails `failures` calls, then echoes; counts readiness checks and calls across clones; can
/// refuse readiness from the `ready_failures_after`-th check on.
#[derive(Clone)]
struct Flaky {
    failures: Arc<AtomicU32>,
    readies: Arc<AtomicU32>,
    calls: Arc<AtomicU32>,
    ready_failures_after: u32,
    ready: bool,
}

impl Flaky {
    fn new(failures: u32) -> Flaky {
        Flaky {
            failures: Arc::new(AtomicU32::new(failures)),
            readies: Arc::new(AtomicU32::new(0)),
            calls: Arc::new(AtomicU32::new(0)),
            ready_failures_after: u32::MAX,
            ready: false,
        }
    }
}

impl Service<String> for Flaky {
    type Response = String;
    type Error = String;
    type Future = std::future::Ready<Result<String, String>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), String>> {
        let n = self.readies.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= self.ready_failures_after {
            return Poll::Ready(Err("not ready".into()));
        }
        self.ready = true;
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: String) -> Self::Future {
        assert!(std::mem::take(&mut self.ready), "called without readiness");
        self.calls.fetch_add(1, Ordering::Relaxed);
        let fail = self
            .failures
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok();
        std::future::ready(if fail {
            Err(format!("failed {req}"))
        } else {
            Ok(req)
        })
    }
}

fn roomy() -> BudgetConfig {
    BudgetConfig {
        min_retries_per_second: 1000.0,
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn retries_go_through_a_ready_clone_with_a_clone_of_the_request() {
    let retry = Retry::builder("layer")
        .max_attempts(4)
        .budget_config(roomy())
        .build()
        .unwrap();
    let upstream = Flaky::new(2);
    let mut svc = RetryLayer::new(retry.clone()).layer(upstream.clone());
    let reply = svc.ready().await.unwrap().call("hello".into()).await;
    assert_eq!(reply, Ok("hello".to_string()));
    assert_eq!(upstream.calls.load(Ordering::Relaxed), 3);
    assert_eq!(
        upstream.readies.load(Ordering::Relaxed),
        3,
        "one readiness per call"
    );
    let snap = retry.snapshot();
    assert_eq!(
        (
            snap.calls_total,
            snap.retries_total,
            snap.returned_after_retry_total
        ),
        (1, 2, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn exhausted_attempts_return_the_last_error() {
    let retry = Retry::builder("layer")
        .max_attempts(2)
        .budget_config(roomy())
        .build()
        .unwrap();
    let svc = RetryLayer::new(retry.clone()).layer(Flaky::new(5));
    assert_eq!(svc.oneshot("x".into()).await, Err("failed x".to_string()));
    assert_eq!(retry.snapshot().exhausted_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_before_a_retry_ends_the_call() {
    let retry = Retry::builder("layer")
        .budget_config(roomy())
        .build()
        .unwrap();
    let mut upstream = Flaky::new(5);
    upstream.ready_failures_after = 2; // the first readiness passes, the retry's fails
    let svc = RetryLayer::new(retry).layer(upstream.clone());
    assert_eq!(svc.oneshot("x".into()).await, Err("not ready".to_string()));
    assert_eq!(upstream.calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn a_retry_after_from_the_classifier_is_waited_exactly() {
    let retry = Retry::builder("layer")
        .budget_config(roomy())
        .build()
        .unwrap();
    let times = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let log = times.clone();
    let svc = ServiceBuilder::new()
        .layer(
            RetryLayer::new(retry).classify(|r: &Result<u16, ()>| match r {
                Ok(429) => Decision::RetryAfter(Duration::from_millis(2500)),
                _ => Decision::Return,
            }),
        )
        .service_fn(move |_: ()| {
            let mut t = log.lock();
            t.push(Instant::now());
            let status = if t.len() == 1 { 429 } else { 200 };
            async move { Ok::<_, ()>(status) }
        });
    assert_eq!(svc.oneshot(()).await, Ok(200));
    let times = times.lock();
    assert_eq!(times[1] - times[0], Duration::from_millis(2500));
}
