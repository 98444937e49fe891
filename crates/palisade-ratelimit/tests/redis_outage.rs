//! Redis stopped, frozen and restarted under a distributed limiter. Each test runs its own
//! `redis-server` on a spare port; the shared Redis is never touched.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use palisade_core::{EventFilter, EventKind};
use palisade_ratelimit::{FailurePolicy, Quota, RedisRateLimiter};
use palisade_testkit::{RedisServer, connect};

const BUDGET: Duration = Duration::from_millis(50);
/// Scheduling slack on a loaded 2-core CI machine; the property is "a budget, not a socket
/// timeout" (seconds), which this still separates.
const SLACK: Duration = Duration::from_millis(400);

fn limiter(server: &RedisServer, policy: FailurePolicy) -> RedisRateLimiter {
    RedisRateLimiter::builder("outage", server.url())
        .quota(Quota::per_minute(60).with_burst(3))
        .failure_policy(policy)
        .timeout(BUDGET)
        .build()
        .unwrap()
}

/// Decides `n` times on `key`; returns how many were admitted and the slowest decision.
async fn decide(l: &RedisRateLimiter, key: &str, n: usize) -> (usize, Duration) {
    let mut admitted = 0;
    let mut slowest = Duration::ZERO;
    for _ in 0..n {
        let t = Instant::now();
        let d = l.decide(key, 1).await.unwrap();
        slowest = slowest.max(t.elapsed());
        admitted += usize::from(d.allowed);
    }
    (admitted, slowest)
}

/// Waits (polling, with a deadline) until the limiter reaches Redis again.
async fn until_recovered(l: &RedisRateLimiter) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let _ = l.decide("probe", 0).await;
        if l.redis_status().available {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never recovered: {:?} {:?}",
            l.redis_status(),
            l.events().recent(&EventFilter::default())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn outage(policy: FailurePolicy, expect_admitted_while_down: usize) {
    let mut server = RedisServer::start();
    let l = limiter(&server, policy);

    // Up: Redis decides.
    let (admitted, _) = decide(&l, "before", 5).await;
    assert_eq!(admitted, 3);
    assert!(l.redis_status().available);

    // Down (killed): every decision answers within the budget, by the policy.
    server.stop();
    let (admitted, slowest) = decide(&l, "during", 10).await;
    assert!(
        slowest <= BUDGET + SLACK,
        "{policy:?}: a decision took {slowest:?}"
    );
    assert_eq!(admitted, expect_admitted_while_down, "{policy:?}");
    let status = l.redis_status();
    assert!(!status.available);
    assert!(status.backend_errors_total >= 1);
    assert_eq!(status.fallback_decisions_total, 10);
    let events = l.events().recent(&EventFilter::default());
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::StateTransition { from, to, .. } if from == "redis" && to == policy.as_str())));

    // A longer outage, past the connection manager's reconnect attempts: every decision still
    // answers within the budget.
    for _ in 0..15 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t = Instant::now();
        let _ = l.decide("later", 1).await.unwrap();
        assert!(
            t.elapsed() <= BUDGET + SLACK,
            "{policy:?}: a decision took {:?}",
            t.elapsed()
        );
    }

    // Back (a fresh server: no keys, no scripts): decisions are exact again by themselves.
    server.restart();
    until_recovered(&l).await;
    let (admitted, _) = decide(&l, "after", 5).await;
    assert_eq!(admitted, 3, "{policy:?} after restart");
    assert!(
        l.events()
            .recent(&EventFilter::default())
            .iter()
            .any(|e| matches!(&e.kind,
        EventKind::StateTransition { to, .. } if to == "redis"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_open_admits_everything_while_redis_is_down() {
    outage(FailurePolicy::FailOpen, 10).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_everything_while_redis_is_down() {
    outage(FailurePolicy::FailClosed, 0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_fallback_applies_this_instances_share_while_redis_is_down() {
    // One instance: its share is the whole quota, decided locally (burst 3).
    outage(FailurePolicy::LocalFallback, 3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_costs_one_budget_not_a_socket_timeout() {
    let server = RedisServer::start();
    let l = limiter(&server, FailurePolicy::FailOpen);
    assert_eq!(decide(&l, "warm", 1).await.0, 1);
    server.freeze(true);
    let t = Instant::now();
    let (admitted, slowest) = decide(&l, "stalled", 20).await;
    let total = t.elapsed();
    server.freeze(false);
    assert_eq!(admitted, 20);
    assert!(slowest <= BUDGET + SLACK, "a decision took {slowest:?}");
    // Only the first decision waited for the budget; the others skipped Redis.
    assert!(total <= 2 * (BUDGET + SLACK), "20 decisions took {total:?}");
    assert_eq!(l.redis_status().backend_errors_total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_flush_is_transparent() {
    let server = RedisServer::start();
    let l = limiter(&server, FailurePolicy::FailClosed);
    assert_eq!(decide(&l, "k1", 4).await.0, 3);
    let mut conn = connect(&server.url()).await.unwrap();
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(decide(&l, "k2", 4).await.0, 3);
    assert_eq!(
        decide(&l, "k1", 1).await.0,
        0,
        "k1's state survived the flush"
    );
    assert_eq!(l.redis_status().backend_errors_total, 0);
}
