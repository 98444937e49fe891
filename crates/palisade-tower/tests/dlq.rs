//! Dead-letter capture behind its layer (memory store): what is captured (5xx, 429 with its
//! `Retry-After`, errors by kind, refusals of inner layers) and what is not (successes, 4xx,
//! requests the capture closure skips), and that the entry is in the queue when the caller gets
//! the failure.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::borrow::Cow;
use std::time::Duration;

use common::{Req, upstream};
use palisade_breaker::CircuitBreaker;
use palisade_dlq::{DeadLetterQueue, EntryView, FailureKind, Filter};
use palisade_tower::CircuitBreakerLayer;
use palisade_tower::dlq::{Captured, DeadLetterLayer, HttpFailures};
use serde_json::{Value, json};
use tower::{ServiceBuilder, ServiceExt};

fn queue() -> DeadLetterQueue<Value> {
    DeadLetterQueue::<Value>::builder("tool-calls")
        .build()
        .unwrap()
}

/// Captures every request whose body is not empty, as `tools.call` with the body as payload.
fn capture(req: &Req) -> Captured<Value> {
    (!req.body().is_empty()).then(|| (Cow::Borrowed("tools.call"), json!({"body": req.body()})))
}

fn call(body: &str) -> Req {
    http::Request::new(body.to_string())
}

async fn entries(q: &DeadLetterQueue<Value>) -> Vec<EntryView> {
    q.list(&Filter::default(), None, 100).await.unwrap().entries
}

#[tokio::test]
async fn server_errors_and_rate_limits_are_captured_with_their_kind() {
    let q = queue();
    let statuses = [200, 503, 404, 429, 201];
    let up = tower::service_fn(move |req: Req| async move {
        let n: usize = req.body().parse().unwrap();
        let mut reply = http::Response::builder().status(statuses[n]);
        if statuses[n] == 429 {
            reply = reply.header("retry-after", "30");
        }
        Ok::<_, std::convert::Infallible>(reply.body(String::new()).unwrap())
    });
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(q.clone(), capture))
        .service(up);

    for (n, status) in statuses.iter().enumerate() {
        let reply = svc.clone().oneshot(call(&n.to_string())).await.unwrap();
        assert_eq!(
            reply.status(),
            *status,
            "the reply passes through unchanged"
        );
    }
    let got = entries(&q).await;
    assert_eq!(got.len(), 2, "only the 503 and the 429: {got:?}");
    assert_eq!(got[0].kind, FailureKind::ServerError);
    assert_eq!(got[0].operation, "tools.call");
    assert_eq!(got[0].payload, json!({"body": "1"}));
    assert_eq!(got[0].error, "HTTP 503 Service Unavailable");
    assert_eq!(got[1].kind, FailureKind::RateLimited);
    // Not retried before the upstream's Retry-After.
    let due = got[1].next_attempt_ms.unwrap();
    assert!(due >= got[1].last_failed_ms + 30_000, "{:?}", got[1]);
}

#[tokio::test]
async fn client_errors_only_when_asked() {
    let q = queue();
    let svc = ServiceBuilder::new()
        .layer(
            DeadLetterLayer::new(q.clone(), capture)
                .classifier(HttpFailures::new().with_client_errors()),
        )
        .service(upstream(|_| 422));
    svc.oneshot(call("bad input")).await.unwrap();
    let got = entries(&q).await;
    assert_eq!(got[0].kind, FailureKind::ClientError);
}

#[tokio::test]
async fn uncaptured_requests_are_never_pushed() {
    let q = queue();
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(q.clone(), capture))
        .service(upstream(|_| 500));
    svc.oneshot(call("")).await.unwrap();
    assert!(entries(&q).await.is_empty());
}

#[tokio::test(start_paused = true)]
async fn errors_are_captured_by_kind() {
    // A timeout (tower's Timeout inside the layer).
    let q = queue();
    let slow = tower::service_fn(|_req: Req| async {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Ok::<_, std::io::Error>(http::Response::new(String::new()))
    });
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(q.clone(), capture))
        .timeout(Duration::from_secs(1))
        .service(slow);
    let err = svc.oneshot(call("slow")).await.unwrap_err();
    assert!(
        err.is::<tower::timeout::error::Elapsed>(),
        "the error passes through"
    );
    assert_eq!(entries(&q).await[0].kind, FailureKind::Timeout);

    // A refused connection.
    let q = queue();
    let refused = tower::service_fn(|_req: Req| async {
        Err::<http::Response<String>, _>(std::io::Error::new(
            std::io::ErrorKind::ConnectionRefused,
            "connection refused",
        ))
    });
    let svc = DeadLetterLayer::new(q.clone(), capture);
    let svc = ServiceBuilder::new().layer(svc).service(refused);
    svc.oneshot(call("x")).await.unwrap_err();
    let got = entries(&q).await;
    assert_eq!(got[0].kind, FailureKind::Unavailable);
    assert_eq!(got[0].error, "connection refused");

    // An open breaker inside: the upstream is unavailable.
    let q = queue();
    let cb = CircuitBreaker::builder("upstream").build().unwrap();
    cb.force_open();
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(q.clone(), capture))
        .layer(CircuitBreakerLayer::new(cb))
        .service(upstream(|_| 200));
    svc.oneshot(call("x")).await.unwrap_err();
    assert_eq!(entries(&q).await[0].kind, FailureKind::Unavailable);
}

#[tokio::test]
async fn a_custom_classifier_decides() {
    let q = queue();
    let only_502 = |r: &Result<http::Response<String>, std::convert::Infallible>| match r {
        Ok(reply) if reply.status() == 502 => {
            Some(palisade_dlq::Failure::unavailable("bad gateway"))
        }
        _ => None,
    };
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(q.clone(), capture).classifier(only_502))
        .service(upstream(|n| if n == 0 { 500 } else { 502 }));
    svc.clone().oneshot(call("a")).await.unwrap();
    svc.clone().oneshot(call("b")).await.unwrap();
    let got = entries(&q).await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].kind, got[0].payload.clone()),
        (FailureKind::Unavailable, json!({"body": "b"}))
    );
}

/// A store whose `enqueue` never answers (a frozen Redis, say); nothing else is used here.
struct FrozenStore;

#[palisade_core::async_trait]
impl palisade_dlq::Store for FrozenStore {
    fn backend(&self) -> &'static str {
        "frozen"
    }
    async fn enqueue(
        &self,
        _: palisade_dlq::NewEntry,
        _: u64,
    ) -> Result<palisade_dlq::EntryId, palisade_dlq::StoreError> {
        std::future::pending().await
    }
    async fn claim(
        &self,
        _: usize,
        _: Duration,
    ) -> Result<Vec<palisade_dlq::Lease>, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn ack(
        &self,
        _: palisade_dlq::EntryId,
        _: u64,
    ) -> Result<bool, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn extend(
        &self,
        _: palisade_dlq::EntryId,
        _: u64,
        _: Duration,
    ) -> Result<bool, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn fail(
        &self,
        _: palisade_dlq::EntryId,
        _: u64,
        _: FailureKind,
        _: &str,
        _: palisade_dlq::Schedule,
    ) -> Result<bool, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn quarantine(
        &self,
        _: palisade_dlq::EntryId,
        _: Option<u64>,
        _: &str,
    ) -> Result<bool, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn get(
        &self,
        _: palisade_dlq::EntryId,
    ) -> Result<Option<palisade_dlq::StoredEntry>, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn list(
        &self,
        _: &Filter,
        _: Option<palisade_dlq::EntryId>,
        _: usize,
    ) -> Result<palisade_dlq::Page<palisade_dlq::StoredEntry>, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn retry(&self, _: palisade_dlq::EntryId) -> Result<bool, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn discard(&self, _: palisade_dlq::EntryId) -> Result<bool, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn trim(
        &self,
        _: Duration,
        _: u64,
    ) -> Result<palisade_dlq::Trimmed, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn purge(&self) -> Result<u64, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
    async fn stats(&self) -> Result<palisade_dlq::StoreStats, palisade_dlq::StoreError> {
        unimplemented!("not used")
    }
}

#[tokio::test(start_paused = true)]
async fn a_frozen_store_delays_the_failure_by_the_push_timeout_only() {
    let q = DeadLetterQueue::<Value>::builder("frozen")
        .store(std::sync::Arc::new(FrozenStore))
        .build()
        .unwrap();
    let svc = ServiceBuilder::new()
        .layer(DeadLetterLayer::new(q, capture).push_timeout(Duration::from_millis(300)))
        .service(upstream(|_| 502));
    let started = tokio::time::Instant::now();
    let reply = svc.oneshot(call("x")).await.unwrap();
    assert_eq!(reply.status(), 502, "the call's own result, unchanged");
    assert_eq!(started.elapsed(), Duration::from_millis(300));
}
