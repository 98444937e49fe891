//! A registry with one real component of every kind, and request helpers.
#![allow(dead_code)] // each test file uses part of it

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, Request, StatusCode};
use http_body_util::BodyExt;
use palisade_admin::AdminRouter;
use palisade_breaker::CircuitBreaker;
use palisade_bulkhead::Bulkhead;
use palisade_core::{
    ComponentKind, Control, ControlError, Event, EventFilter, EventKind, Inspect, Managed,
    Registry, async_trait,
};
use palisade_dlq::{DeadLetterQueue, Failure, MemoryStore};
use palisade_health::{CheckConfig, CheckResult, HealthMonitor, Restartable, check_fn};
use palisade_ratelimit::{KeyedRateLimiter, Quota};
use serde_json::{Value, json};
use tower::ServiceExt;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// Health of the `upstream` check: 0 healthy, 1 degraded, 2 unhealthy.
pub const HEALTHY: u8 = 0;
pub const DEGRADED: u8 = 1;
pub const UNHEALTHY: u8 = 2;

pub struct Fixture {
    pub registry: Registry,
    pub breaker: CircuitBreaker,
    pub bulkhead: Bulkhead,
    pub limiter: KeyedRateLimiter<String>,
    pub dlq: DeadLetterQueue<Value>,
    pub monitor: HealthMonitor,
    /// What the `upstream` health check reports next.
    pub upstream: Arc<AtomicU8>,
    /// Restarts of the `worker` health component.
    pub restarts: Arc<AtomicU64>,
    /// DLQ entries: two timeouts (scheduled) and one client error (parked).
    pub entry_ids: Vec<u64>,
}

struct Worker(Arc<AtomicU64>);

#[async_trait]
impl Restartable for Worker {
    async fn restart(&self) -> Result<(), String> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// A component whose backend is always down: every command is a `Backend` error.
pub struct Flaky;

impl Inspect for Flaky {
    type Snapshot = Value;
    fn snapshot(&self) -> Value {
        json!({"name": "flaky", "backend": "down"})
    }
}

#[async_trait]
impl Control for Flaky {
    type Command = Value;
    type Output = Value;
    async fn control(&self, _: Value) -> Result<Value, ControlError> {
        Err(ControlError::Backend {
            reason: "redis: connection refused".into(),
        })
    }
}

impl Managed for Flaky {
    const KIND: ComponentKind = ComponentKind::RateLimiter;
    fn name(&self) -> &str {
        "flaky"
    }
}

pub async fn fixture() -> Fixture {
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("slack")
        .consecutive_failures(3)
        .wait_duration(Duration::from_secs(60))
        .registry(&registry)
        .build()
        .unwrap();
    let bulkhead = Bulkhead::builder("database")
        .max_concurrent(10)
        .registry(&registry)
        .build()
        .unwrap();
    let limiter = KeyedRateLimiter::<String>::builder("per-client")
        .quota(Quota::per_minute(100))
        .registry(&registry)
        .build()
        .unwrap();
    registry.register(Arc::new(Flaky)).unwrap();
    let dlq = DeadLetterQueue::<Value>::builder("tool-calls")
        .store(Arc::new(MemoryStore::new()))
        .registry(&registry)
        .build()
        .unwrap();
    let mut entry_ids = Vec::new();
    for (op, failure) in [
        (
            "github.create_issue",
            Failure::timeout("timed out after 30 s"),
        ),
        ("slack.post", Failure::timeout("timed out after 30 s")),
        (
            "github.create_issue",
            Failure::client_error("422 validation failed"),
        ),
    ] {
        entry_ids.push(
            dlq.push(op, &json!({"title": "flaky"}), failure)
                .await
                .unwrap(),
        );
    }
    dlq.stats().await.unwrap();

    let monitor = HealthMonitor::builder()
        .registry(&registry)
        .build()
        .unwrap();
    let upstream = Arc::new(AtomicU8::new(HEALTHY));
    let mode = upstream.clone();
    monitor
        .add(
            "upstream",
            check_fn(move || {
                let mode = mode.clone();
                async move {
                    match mode.load(Ordering::Relaxed) {
                        HEALTHY => CheckResult::healthy("200 OK"),
                        DEGRADED => CheckResult::degraded("replica lag 4 s"),
                        _ => CheckResult::unhealthy("connection refused"),
                    }
                }
            }),
        )
        .config(CheckConfig {
            interval: Duration::from_secs(3600),
            failure_threshold: 1,
            liveness: true,
            ..CheckConfig::default()
        })
        .start()
        .unwrap();
    let restarts = Arc::new(AtomicU64::new(0));
    monitor
        .add(
            "worker",
            check_fn(|| async { CheckResult::healthy("running") }),
        )
        .config(CheckConfig {
            interval: Duration::from_secs(3600),
            critical: false,
            ..CheckConfig::default()
        })
        .restartable(Arc::new(Worker(restarts.clone())))
        .start()
        .unwrap();
    monitor.check_all().await;

    Fixture {
        registry,
        breaker,
        bulkhead,
        limiter,
        dlq,
        monitor,
        upstream,
        restarts,
        entry_ids,
    }
}

impl Fixture {
    /// The router with the monitor and a token.
    pub fn app(&self) -> Router {
        AdminRouter::builder(&self.registry)
            .health(&self.monitor)
            .token(TOKEN)
            .build()
    }

    /// Audit events published so far.
    pub fn audits(&self) -> Vec<Event> {
        self.registry
            .events()
            .recent(&EventFilter::default())
            .into_iter()
            .filter(|e| matches!(e.kind, EventKind::Audit { .. }))
            .collect()
    }
}

pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Reply {
    pub fn content_type(&self) -> &str {
        self.headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// Asserts the error shape: status, `error` code, and a message.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.json["error"], code, "{}", self.text);
        assert!(
            self.json["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{}",
            self.text
        );
        assert!(
            self.content_type().starts_with("application/json"),
            "{}",
            self.content_type()
        );
    }
}

pub async fn send(app: &Router, request: Request<Body>) -> Reply {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        text,
        json,
    }
}

/// A GET with the token (reads need one by default).
pub fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

/// A GET without any token.
pub fn get_anonymous(path: &str) -> Request<Body> {
    Request::get(path).body(Body::empty()).unwrap()
}

/// A POST with the right token.
pub fn post(path: &str, body: impl Into<Body>) -> Request<Body> {
    post_as(path, Some(&format!("Bearer {TOKEN}")), body)
}

/// A POST with the given `Authorization` header (or none).
pub fn post_as(path: &str, authorization: Option<&str>, body: impl Into<Body>) -> Request<Body> {
    let mut b = Request::post(path).header("content-type", "application/json");
    if let Some(a) = authorization {
        b = b.header("authorization", a);
    }
    b.body(body.into()).unwrap()
}

pub async fn get_json(app: &Router, path: &str) -> Value {
    let r = send(app, get(path)).await;
    assert_eq!(r.status, StatusCode::OK, "GET {path}: {}", r.text);
    r.json
}

/// Every POST route, with a valid command for the fixture.
pub fn mutations() -> Vec<(&'static str, Value)> {
    vec![
        (
            "/admin/circuit-breakers/slack",
            json!({"action": "force_open"}),
        ),
        (
            "/admin/bulkheads/database",
            json!({"action": "set_max_concurrent", "max_concurrent": 5}),
        ),
        (
            "/admin/rate-limiters/per-client",
            json!({"action": "reset", "key": "10.0.0.1"}),
        ),
        (
            "/admin/dlq/tool-calls",
            json!({"action": "retry", "kind": "timeout"}),
        ),
        (
            "/admin/health/components/worker",
            json!({"action": "restart"}),
        ),
        (
            "/admin/health",
            json!({"action": "set_auto_restart", "enabled": false}),
        ),
    ]
}
