//! The recommended stack with tower's own `Retry` (with a budget) and `Timeout`: rate limit →
//! bulkhead → retry → circuit breaker → timeout → upstream. Each attempt passes through the
//! breaker, refusals are not retried, and one request holds one bulkhead slot across its
//! attempts.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Req, req};
use http::Response;
use palisade_breaker::{CircuitBreaker, Rejected, State};
use palisade_bulkhead::Bulkhead;
use palisade_ratelimit::{KeyedRateLimiter, Quota};
use palisade_tower::ratelimit::GlobalKey;
use palisade_tower::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer, classify};
use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer};
use tower::{BoxError, ServiceBuilder, ServiceExt};

#[derive(Clone)]
struct RetryFailures {
    budget: Arc<TpsBudget>,
    left: u32,
}

impl<R> Policy<Req, Response<R>, BoxError> for RetryFailures {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _: &mut Req,
        result: &mut Result<Response<R>, BoxError>,
    ) -> Option<Self::Future> {
        let failed = match result {
            Ok(reply) => reply.status().is_server_error(),
            Err(err) => !classify::is_refusal(err),
        };
        if !failed {
            self.budget.deposit();
            return None;
        }
        if self.left == 0 || !self.budget.withdraw() {
            return None;
        }
        self.left -= 1;
        Some(std::future::ready(()))
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}

fn retry(attempts: u32) -> RetryFailures {
    RetryFailures {
        budget: Arc::new(TpsBudget::new(Duration::from_secs(10), 100, 0.2)),
        left: attempts,
    }
}

#[tokio::test(start_paused = true)]
async fn attempts_pass_through_the_breaker_and_hold_one_bulkhead_slot() {
    let limiter = KeyedRateLimiter::<String>::builder("gateway")
        .quota(Quota::per_second(100))
        .build()
        .unwrap();
    let bh = Bulkhead::builder("upstream")
        .max_concurrent(1)
        .build()
        .unwrap();
    let cb = CircuitBreaker::builder("upstream")
        .consecutive_failures(3)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen_active = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let (calls, bh, seen_active) = (calls.clone(), bh.clone(), seen_active.clone());
        tower::service_fn(move |_req: Req| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            seen_active.fetch_max(bh.active() as usize, Ordering::SeqCst);
            async move {
                match n {
                    // A slow first attempt (timed out), a 503, then success.
                    0 => {
                        tokio::time::sleep(Duration::from_secs(60)).await;
                        Ok(Response::new("late".to_string()))
                    }
                    1 => Ok(Response::builder().status(503).body(String::new()).unwrap()),
                    _ => Ok::<_, std::io::Error>(Response::new("done".to_string())),
                }
            }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(RateLimitLayer::new(limiter, GlobalKey))
        .layer(BulkheadLayer::new(bh.clone()))
        .layer(RetryLayer::new(retry(3)))
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .timeout(Duration::from_secs(1))
        .service(upstream);

    let reply = svc.oneshot(req()).await.unwrap();
    assert_eq!(reply.body(), "done");
    assert_eq!(calls.load(Ordering::SeqCst), 3);
    let snap = cb.snapshot();
    assert_eq!((snap.calls.failed, snap.calls.successful), (2, 1));
    assert_eq!(
        seen_active.load(Ordering::SeqCst),
        1,
        "one slot for all three attempts"
    );
    assert_eq!(bh.active(), 0);
}

#[tokio::test]
async fn once_the_breaker_opens_the_retries_stop() {
    let cb = CircuitBreaker::builder("upstream")
        .consecutive_failures(2)
        .build()
        .unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let upstream = {
        let calls = calls.clone();
        tower::service_fn(move |_req: Req| {
            calls.fetch_add(1, Ordering::SeqCst);
            async {
                Ok::<_, std::io::Error>(
                    Response::builder().status(500).body(String::new()).unwrap(),
                )
            }
        })
    };
    let svc = ServiceBuilder::new()
        .layer(RetryLayer::new(retry(5)))
        .layer(CircuitBreakerLayer::new(cb.clone()))
        .service(upstream);

    let err = svc.oneshot(req()).await.unwrap_err();
    assert!(err.is::<Rejected>(), "the refusal ended the retries: {err}");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(cb.state(), State::Open);
}
