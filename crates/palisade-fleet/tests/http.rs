//! The fleet's admin routes, through the router itself (`oneshot`), over a real Redis.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use palisade_breaker::{CircuitBreaker, State};
use palisade_core::{EventKind, Registry};
use palisade_fleet::{Fleet, FleetConfig, fleet_router};
use palisade_testkit::{RedisServer, shared_redis, unique};
use serde_json::{Value, json};
use tower::ServiceExt;

async fn call(app: &axum::Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, body)
}

fn post(body: &str) -> Request<Body> {
    Request::post("/admin/fleet/commands")
        .header("content-type", "application/json")
        .header("x-palisade-actor", "alice")
        .body(Body::from(body.to_owned()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

fn delete(path: &str) -> Request<Body> {
    Request::delete(path).body(Body::empty()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_commands_and_overrides_over_http() {
    let (url, _) = shared_redis().await;
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("upstream")
        .registry(&registry)
        .build()
        .unwrap();
    let config = FleetConfig {
        version: "1.2.3".into(),
        addresses: vec!["http://127.0.0.1:8080".into()],
        ..FleetConfig::new(unique("fleet-http"), "gw-1")
    };
    let fleet = Fleet::join(url.as_str(), config, &registry).await.unwrap();
    let app = fleet_router(fleet.clone());

    let (status, body) = call(&app, get("/admin/fleet")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["instance"], "gw-1");
    assert_eq!(body["count"], 1);
    assert_eq!(body["instances"][0]["id"], "gw-1");
    assert_eq!(body["instances"][0]["version"], "1.2.3");
    assert_eq!(
        body["instances"][0]["addresses"][0],
        "http://127.0.0.1:8080"
    );

    let (status, body) = call(
        &app,
        post(
            r#"{"kind": "circuit_breaker", "name": "upstream",
                "command": {"action": "force_open"}, "persist": true, "deadline_ms": 5000}"#,
        ),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["answers"][0]["instance"], "gw-1");
    assert_eq!(body["answers"][0]["status"], "applied");
    assert_eq!(body["answers"][0]["result"]["state"], "forced_open");
    assert_eq!(body["persisted"], true);
    assert_eq!(breaker.state(), State::ForcedOpen);
    let actor = registry
        .events()
        .recent(&Default::default())
        .into_iter()
        .find_map(|e| match e.kind {
            EventKind::Audit { actor, .. } => Some(actor),
            _ => None,
        })
        .unwrap();
    assert!(actor.starts_with("alice via fleet"), "{actor}");

    let (status, body) = call(&app, get("/admin/fleet/overrides")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(body["overrides"][0]["slot"], "state");
    assert_eq!(body["overrides"][0]["actor"], "alice");

    let (status, body) = call(&app, delete("/admin/fleet/overrides/breakers/upstream")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "bad_path");
    let (status, body) = call(
        &app,
        delete("/admin/fleet/overrides/circuit-breakers/upstream"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        json!({"kind": "circuit_breaker", "name": "upstream", "removed": 1})
    );
    let (_, body) = call(&app, delete("/admin/fleet/overrides")).await;
    assert_eq!(body, json!({"removed": 0}));
    fleet.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_bodies_are_400_naming_the_problem() {
    let (url, _) = shared_redis().await;
    let registry = Registry::new();
    let fleet = Fleet::join(
        url.as_str(),
        FleetConfig::new(unique("fleet-http-bad"), "gw-1"),
        &registry,
    )
    .await
    .unwrap();
    let app = fleet_router(fleet.clone());
    let cases = [
        ("", "malformed_json", "empty"),
        ("{nope", "malformed_json", "not valid JSON"),
        (
            r#"{"kind": "circuit_breaker", "command": {}}"#,
            "malformed_body",
            "missing field `name`",
        ),
        (
            r#"{"kind": "breaker", "name": "x", "command": {}}"#,
            "malformed_body",
            "unknown variant `breaker`",
        ),
        (
            r#"{"kind": "bulkhead", "name": "x", "command": {}, "force": true}"#,
            "malformed_body",
            "unknown field `force`",
        ),
        (
            r#"{"kind": "bulkhead", "name": "x", "command": {}, "deadline_ms": 600000}"#,
            "malformed_body",
            "deadline_ms",
        ),
        (
            r#"{"kind": "bulkhead", "name": "a b", "command": {"action": "x"}}"#,
            "invalid_command",
            "not a valid bulkhead name",
        ),
        (
            r#"{"kind": "circuit_breaker", "name": "x", "command": {}, "persist": true}"#,
            "invalid_command",
            "needs an \"action\"",
        ),
        (
            r#"{"kind": "dead_letter_queue", "name": "x", "command": {"action": "purge"}, "persist": true}"#,
            "not_persistable",
            "without persist",
        ),
    ];
    for (body, code, words) in cases {
        let (status, answer) = call(&app, post(body)).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert_eq!(answer["error"], code, "{body}: {answer}");
        let message = answer["message"].as_str().unwrap();
        assert!(message.contains(words), "{body}: {message}");
    }
    let big = format!(
        r#"{{"kind": "bulkhead", "name": "x", "command": {{"pad": "{}"}}}}"#,
        "x".repeat(70_000)
    );
    let (status, answer) = call(&app, post(&big)).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{answer}");
    assert_eq!(answer["error"], "payload_too_large");
    fleet.leave().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_is_503_naming_redis() {
    let mut server = RedisServer::start();
    let url = server.url();
    server.stop();
    let registry = Registry::new();
    let config = FleetConfig {
        join_timeout: Duration::from_millis(500),
        ..FleetConfig::new(unique("fleet-http-down"), "gw-1")
    };
    let fleet = Fleet::join(url.as_str(), config, &registry).await.unwrap();
    let app = fleet_router(fleet);
    for request in [
        get("/admin/fleet"),
        get("/admin/fleet/overrides"),
        post(r#"{"kind": "circuit_breaker", "name": "x", "command": {"action": "reset"}}"#),
    ] {
        let (status, body) = call(&app, request).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert_eq!(body["error"], "backend_unavailable");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains("Redis is unavailable"),
            "{body}"
        );
    }
}
