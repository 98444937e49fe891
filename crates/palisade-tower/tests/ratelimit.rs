//! The rate limiter behind its layer, on every backend: the local keyed limiter, the one-bucket
//! limiter, the `Limiter` front door on memory and on Redis (the shared test Redis); refusals
//! that never reach the inner service, `RateLimit-*` headers on admitted responses, key
//! extractors.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::time::Duration;

use common::{Req, req, upstream};
use palisade_core::ManualClock;
use palisade_ratelimit::{
    Backend, KeyedRateLimiter, Limiter, Quota, RateLimitConfig, RateLimited, RateLimiter,
};
use palisade_tower::RateLimitLayer;
use palisade_tower::ratelimit::{GlobalKey, MissingKey};
use tower::{Layer, ServiceExt};

fn keyed(quota: Quota) -> KeyedRateLimiter<String> {
    KeyedRateLimiter::<String>::builder("per-key")
        .quota(quota)
        .build()
        .unwrap()
}

#[tokio::test]
async fn refusals_carry_the_limiter_and_never_reach_the_inner_service() {
    let up = upstream(|_| 200);
    let svc = RateLimitLayer::new(keyed(Quota::per_minute(60).with_burst(2)), GlobalKey)
        .layer(up.clone());

    for _ in 0..2 {
        svc.clone().oneshot(req()).await.unwrap();
    }
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!((&*limited.name, limited.limit), ("per-key", 2));
    assert!(limited.retry_after > Duration::ZERO && limited.retry_after <= Duration::from_secs(1));
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn keys_have_their_own_buckets() {
    let tenant = |r: &Req| {
        r.headers()
            .get("x-tenant")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let from = |t: &str| {
        http::Request::builder()
            .header("x-tenant", t)
            .body(String::new())
            .unwrap()
    };
    let svc = RateLimitLayer::new(keyed(Quota::per_minute(1)), tenant).layer(upstream(|_| 200));

    svc.clone().oneshot(from("acme")).await.unwrap();
    assert!(svc.clone().oneshot(from("acme")).await.is_err());
    svc.clone().oneshot(from("globex")).await.unwrap();

    // No key: refused (a client error), not let through unlimited.
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let missing = err.downcast_ref::<MissingKey>().unwrap();
    assert!(!missing.is_server_fault());
}

#[tokio::test]
async fn admitted_responses_carry_ratelimit_headers_when_asked() {
    let clock = ManualClock::new();
    let limiter = KeyedRateLimiter::<String>::builder("headers")
        .quota(Quota::per_minute(60).with_burst(3))
        .clock(clock.shared())
        .build()
        .unwrap();
    let svc = RateLimitLayer::new(limiter, GlobalKey)
        .with_headers()
        .layer(upstream(|_| 200));

    for (remaining, reset) in [("2", "1"), ("1", "2"), ("0", "3")] {
        let reply = svc.clone().oneshot(req()).await.unwrap();
        let h = reply.headers();
        assert_eq!(h["ratelimit-limit"], "3");
        assert_eq!(h["ratelimit-remaining"], remaining);
        assert_eq!(
            h["ratelimit-reset"], reset,
            "seconds until the bucket is full again"
        );
    }
    // Half a second later, the fourth request is still refused; a second later, one passes.
    clock.advance(Duration::from_millis(500));
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    assert_eq!(
        err.downcast_ref::<RateLimited>().unwrap().retry_after,
        Duration::from_millis(500)
    );
    clock.advance(Duration::from_millis(500));
    let reply = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(reply.headers()["ratelimit-remaining"], "0");

    // Without `with_headers`, responses are untouched.
    let plain =
        RateLimitLayer::new(keyed(Quota::per_minute(60)), GlobalKey).layer(upstream(|_| 200));
    let reply = plain.oneshot(req()).await.unwrap();
    assert!(reply.headers().get("ratelimit-limit").is_none());
}

#[tokio::test]
async fn one_bucket_limiter() {
    let limiter = RateLimiter::builder("global")
        .quota(Quota::per_minute(60).with_burst(1))
        .build()
        .unwrap();
    let svc = RateLimitLayer::new(limiter, GlobalKey).layer(upstream(|_| 200));
    svc.clone().oneshot(req()).await.unwrap();
    assert!(
        svc.clone()
            .oneshot(req())
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
}

#[tokio::test]
async fn the_front_door_on_memory() {
    let cfg = RateLimitConfig {
        quota: Quota::per_minute(2),
        ..RateLimitConfig::default()
    };
    let limiter = cfg.build("front-door").finish().unwrap();
    assert_eq!(limiter.backend(), Backend::Memory);
    let up = upstream(|_| 200);
    let svc = RateLimitLayer::new(limiter, GlobalKey)
        .with_headers()
        .layer(up.clone());
    let reply = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(reply.headers()["ratelimit-remaining"], "1");
    svc.clone().oneshot(req()).await.unwrap();
    assert!(
        svc.clone()
            .oneshot(req())
            .await
            .unwrap_err()
            .is::<RateLimited>()
    );
    assert_eq!(up.calls(), 2);
}

#[tokio::test]
async fn the_front_door_on_redis() {
    let (url, _conn) = palisade_testkit::shared_redis().await;
    let cfg = RateLimitConfig {
        backend: Backend::Redis,
        quota: Quota::per_minute(60).with_burst(2),
        redis_server: Some(url.parse().unwrap()),
        ..RateLimitConfig::default()
    };
    let name = palisade_testkit::unique("tower-rl");
    let limiter: Limiter = cfg.build(name.clone()).finish().unwrap();
    let up = upstream(|_| 200);
    let svc = RateLimitLayer::new(limiter, GlobalKey)
        .with_headers()
        .layer(up.clone());

    // Decided by Redis in the response future; the inner service is called once admitted.
    let reply = svc.clone().oneshot(req()).await.unwrap();
    assert_eq!(reply.headers()["ratelimit-limit"], "2");
    assert_eq!(reply.headers()["ratelimit-remaining"], "1");
    svc.clone().oneshot(req()).await.unwrap();
    let err = svc.clone().oneshot(req()).await.unwrap_err();
    let limited = err.downcast_ref::<RateLimited>().unwrap();
    assert_eq!(&*limited.name, name);
    assert!(limited.retry_after <= Duration::from_secs(1));
    assert_eq!(up.calls(), 2);
}
