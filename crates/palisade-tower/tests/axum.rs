//! The layers in an axum `Router` with `HandleErrorLayer::new(handle_error)`: refusals become
//! 429/503 responses with `Retry-After`, `RateLimit-*` and a JSON body; admitted responses
//! carry `RateLimit-*`; a bulkhead slot is released when the response future is dropped; a
//! missing peer address and a timeout have their own statuses.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::error_handling::HandleErrorLayer;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{Request, StatusCode};
use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_core::ManualClock;
use palisade_ratelimit::{KeyedRateLimiter, Quota};
use palisade_tower::ratelimit::{ClientIp, GlobalKey};
use palisade_tower::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer, Refusal, handle_error};
use serde_json::Value;
use tower::{ServiceBuilder, ServiceExt};

fn get_root() -> Request<Body> {
    Request::new(Body::empty())
}

async fn json(reply: Response) -> Value {
    let bytes = axum::body::to_bytes(reply.into_body(), 64 * 1024)
        .await
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn header<'a>(reply: &'a Response, name: &str) -> Option<&'a str> {
    reply.headers().get(name).map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn rate_limited_requests_get_429_with_retry_after_and_ratelimit_headers() {
    let limiter = KeyedRateLimiter::<String>::builder("per-client")
        .quota(Quota::per_minute(30).with_burst(2))
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .layer(RateLimitLayer::new(limiter, GlobalKey).with_headers()),
    );

    let ok = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(header(&ok, "ratelimit-limit"), Some("2"));
    assert_eq!(header(&ok, "ratelimit-remaining"), Some("1"));
    assert_eq!(header(&ok, "ratelimit-reset"), Some("2"));
    app.clone().oneshot(get_root()).await.unwrap();

    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    // One request every 2 s: the next one in (just under) 2 s, rounded up.
    assert_eq!(header(&refused, "retry-after"), Some("2"));
    assert_eq!(header(&refused, "ratelimit-limit"), Some("2"));
    assert_eq!(header(&refused, "ratelimit-remaining"), Some("0"));
    assert_eq!(header(&refused, "ratelimit-reset"), Some("2"));
    assert_eq!(header(&refused, "content-type"), Some("application/json"));
    let body = json(refused).await;
    assert_eq!(body["error"], "rate_limited");
    assert_eq!(body["component"], "rate_limiter");
    assert_eq!(body["name"], "per-client");
    assert_eq!(body["retry_after_s"], 2);
    assert!(body["reason"].as_str().unwrap().contains("per-client"));
}

#[tokio::test(start_paused = true)]
async fn a_full_bulkhead_gets_503_with_a_short_retry_after() {
    let bh = Bulkhead::builder("tools")
        .max_concurrent(1)
        .max_wait(Duration::from_millis(50))
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .layer(BulkheadLayer::new(bh.clone())),
    );
    assert_eq!(app.clone().oneshot(get_root()).await.unwrap().status(), 200);

    let held = bh.try_acquire().unwrap();
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    assert!(refused.headers().get("ratelimit-limit").is_none());
    let body = json(refused).await;
    assert_eq!(
        body["error"], "bulkhead_timeout",
        "it waited max_wait first"
    );
    assert_eq!(body["component"], "bulkhead");
    assert_eq!(body["name"], "tools");
    drop(held);

    // No wait allowed: refused at once as `bulkhead_full`.
    bh.set_max_wait(Duration::ZERO).unwrap();
    let _held = bh.try_acquire().unwrap();
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(json(refused).await["error"], "bulkhead_full");
}

#[tokio::test(start_paused = true)]
async fn the_bulkhead_slot_is_released_when_the_response_future_is_dropped() {
    let bh = Bulkhead::builder("tools")
        .max_concurrent(1)
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(std::future::pending::<&'static str>))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(BulkheadLayer::new(bh.clone())),
        );
    let mut running = Box::pin(app.clone().oneshot(get_root()));
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut running)
            .await
            .is_err()
    );
    assert_eq!(bh.active(), 1);
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);

    drop(running);
    assert_eq!(bh.active(), 0);
}

#[tokio::test]
async fn an_open_breaker_gets_503_with_the_time_until_a_trial() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder("github")
        .consecutive_failures(2)
        .wait_duration(Duration::from_secs(30))
        .clock(clock.shared())
        .build()
        .unwrap();
    let app = Router::new()
        .route("/", get(|| async { StatusCode::BAD_GATEWAY }))
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .layer(CircuitBreakerLayer::new(cb.clone())),
        );
    for _ in 0..2 {
        let reply = app.clone().oneshot(get_root()).await.unwrap();
        assert_eq!(reply.status(), StatusCode::BAD_GATEWAY);
    }
    clock.advance(Duration::from_millis(500));
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        header(&refused, "retry-after"),
        Some("30"),
        "29.5 s, rounded up"
    );
    let body = json(refused).await;
    assert_eq!(body["error"], "circuit_open");
    assert_eq!(body["component"], "circuit_breaker");
    assert_eq!(body["name"], "github");
    assert_eq!(body["retry_after_s"], 30);

    // Forced open: no promise of when.
    cb.force_open();
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(refused.headers().get("retry-after").is_none());
    assert_eq!(json(refused).await["error"], "circuit_forced_open");
}

#[tokio::test]
async fn client_ip_reads_connect_info_and_a_missing_peer_is_a_500() {
    let limiter = KeyedRateLimiter::<String>::builder("per-client")
        .quota(Quota::per_minute(1))
        .build()
        .unwrap();
    let app = Router::new().route("/", get(|| async { "ok" })).layer(
        ServiceBuilder::new()
            .layer(HandleErrorLayer::new(handle_error))
            .layer(RateLimitLayer::new(limiter, ClientIp::peer_only())),
    );
    let from = |peer: &str| {
        let mut req = get_root();
        req.extensions_mut()
            .insert(ConnectInfo(peer.parse::<SocketAddr>().unwrap()));
        req
    };
    assert_eq!(
        app.clone()
            .oneshot(from("203.0.113.9:1"))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.clone()
            .oneshot(from("203.0.113.9:2"))
            .await
            .unwrap()
            .status(),
        429
    );
    assert_eq!(
        app.clone()
            .oneshot(from("203.0.113.10:1"))
            .await
            .unwrap()
            .status(),
        200
    );

    let no_peer = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(no_peer.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json(no_peer).await;
    assert_eq!(body["error"], "missing_rate_limit_key");
    assert!(body["reason"].as_str().unwrap().contains("peer address"));
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_504_and_other_errors_a_generic_500() {
    let app = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(60)).await;
                "late"
            }),
        )
        .layer(
            ServiceBuilder::new()
                .layer(HandleErrorLayer::new(handle_error))
                .timeout(Duration::from_secs(1)),
        );
    let reply = app.oneshot(get_root()).await.unwrap();
    assert_eq!(reply.status(), StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(json(reply).await["error"], "timeout");

    let other = palisade_tower::error_response("secret internal detail".into());
    assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body = json(other).await;
    assert!(
        !body.to_string().contains("secret"),
        "internal errors are not shown"
    );
}

#[tokio::test]
async fn refusals_are_responses_in_handlers_too() {
    // A handler that checks a limiter itself can return the refusal as its response.
    let limiter = KeyedRateLimiter::<String>::builder("tool")
        .quota(Quota::per_minute(1))
        .build()
        .unwrap();
    let handler = move || {
        let limiter = limiter.clone();
        async move {
            match limiter.check_key("search") {
                Ok(()) => "searched".into_response(),
                Err(refused) => Refusal::from(refused).into_response(),
            }
        }
    };
    let app = Router::new().route("/", get(handler));
    assert_eq!(app.clone().oneshot(get_root()).await.unwrap().status(), 200);
    let refused = app.clone().oneshot(get_root()).await.unwrap();
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), Some("60"));
}
