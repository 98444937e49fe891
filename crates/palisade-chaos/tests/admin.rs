//! Through a real palisade-admin router: an operator switches fault injection on with
//! `X-Palisade-Actor: alice`, the audit trail names alice, the snapshot says who and for how
//! long, and the injection switches itself off at its time-to-live (a manual clock).
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use palisade_admin::AdminRouter;
use palisade_chaos::FaultInjector;
use palisade_core::{ComponentKind, EventFilter, EventKind, ManualClock, Registry};
use serde_json::{Value, json};
use tower::ServiceExt;

const TOKEN: &str = "chaos-test-token-0123456789";
const PATH: &str = "/admin/fault-injectors/github";

struct Fixture {
    registry: Registry,
    clock: ManualClock,
    github: FaultInjector,
    app: Router,
}

fn fixture(allow: bool) -> Fixture {
    let registry = Registry::new();
    let clock = ManualClock::new();
    let github = FaultInjector::builder("github")
        .allow(allow)
        .clock(clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    let app = AdminRouter::builder(&registry).token(TOKEN).build();
    Fixture {
        registry,
        clock,
        github,
        app,
    }
}

async fn send(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let response = app.clone().oneshot(request).await.unwrap();
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (
        status,
        serde_json::from_slice(&bytes).unwrap_or(Value::Null),
    )
}

fn post(actor: &str, body: &Value) -> Request<Body> {
    Request::post(PATH)
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("content-type", "application/json")
        .header("x-palisade-actor", actor)
        .body(Body::from(body.to_string()))
        .unwrap()
}

fn get(path: &str) -> Request<Body> {
    Request::get(path)
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(Body::empty())
        .unwrap()
}

impl Fixture {
    async fn snapshot(&self) -> Value {
        let (status, body) = send(&self.app, get(PATH)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["kind"], "fault_injector");
        body["snapshot"].clone()
    }

    /// The audit events of the injector, oldest first: (actor, action, before, after).
    fn audits(&self) -> Vec<(String, String, Value, Value)> {
        self.registry
            .events()
            .recent(&EventFilter {
                kind: Some(ComponentKind::FaultInjector),
                ..EventFilter::default()
            })
            .into_iter()
            .filter_map(|e| match e.kind {
                EventKind::Audit {
                    actor,
                    action,
                    before,
                    after,
                } => Some((actor, action, before, after)),
                _ => None,
            })
            .collect()
    }
}

#[tokio::test]
async fn enable_is_audited_with_its_actor_and_switches_itself_off_at_the_ttl() {
    let f = fixture(true);
    let command = json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "30s"});
    let (status, body) = send(&f.app, post("alice", &command)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["action"], "enable");
    assert_eq!(body["result"]["enabled"], true);

    // The audit trail names who switched it on, with the state before and after.
    let audits = f.audits();
    assert_eq!(audits.len(), 1, "{audits:?}");
    let (actor, action, before, after) = &audits[0];
    assert_eq!(actor, "alice");
    assert_eq!(action, "enable");
    assert_eq!(before["enabled"], false);
    assert_eq!(after["enabled"], true);
    assert_eq!(after["mode"], "error");

    // So does the snapshot, with the time left.
    let snap = f.snapshot().await;
    assert_eq!(snap["enabled"], true);
    assert_eq!(snap["enabled_by"], "alice");
    assert_eq!(snap["mode"], "error");
    assert_eq!(snap["rate"], 1.0);
    assert_eq!(snap["remaining_ttl_ms"], 30_000);
    assert!(f.github.inject().await.is_err());

    f.clock.advance(Duration::from_secs(10));
    assert_eq!(f.snapshot().await["remaining_ttl_ms"], 20_000);

    // At the ttl it is off, by itself: the next read shows it, and calls pass again.
    f.clock.advance(Duration::from_secs(20));
    let snap = f.snapshot().await;
    assert_eq!(snap["enabled"], false, "{snap}");
    assert_eq!(snap["enabled_by"], Value::Null);
    assert_eq!(snap["remaining_ttl_ms"], Value::Null);
    assert_eq!(snap["last_transition"]["reason"], "ttl of 30s elapsed");
    assert_eq!(snap["injected_errors_total"], 1);
    assert!(f.github.inject().await.is_ok());
    let offs = f
        .registry
        .events()
        .recent(&EventFilter::default())
        .into_iter()
        .filter(|e| matches!(&e.kind, EventKind::StateTransition { to, .. } if to == "off"))
        .count();
    assert_eq!(offs, 1);

    // Bob switches it on again: the snapshot names bob, and his disable is audited too.
    let latency =
        json!({"action": "enable", "mode": "latency", "latency_ms": 200, "rate": 0.5, "ttl": "5m"});
    assert_eq!(send(&f.app, post("bob", &latency)).await.0, StatusCode::OK);
    assert_eq!(f.snapshot().await["enabled_by"], "bob");
    let (status, _) = send(&f.app, post("carol", &json!({"action": "disable"}))).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(f.snapshot().await["enabled"], false);
    let actors: Vec<(String, String)> = f
        .audits()
        .into_iter()
        .map(|(actor, action, ..)| (actor, action))
        .collect();
    assert_eq!(
        actors,
        [
            ("alice".to_owned(), "enable".to_owned()),
            ("bob".to_owned(), "enable".to_owned()),
            ("carol".to_owned(), "disable".to_owned()),
        ]
    );
}

#[tokio::test]
async fn enable_is_refused_when_the_config_does_not_allow_it() {
    let f = fixture(false);
    let command = json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "30s"});
    let (status, body) = send(&f.app, post("mallory", &command)).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"], "rejected");
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("fault injection is not allowed on this instance")
            && message.contains("enabled_in_config"),
        "{message}"
    );
    let snap = f.snapshot().await;
    assert_eq!(
        (snap["enabled"].clone(), snap["allowed"].clone()),
        (json!(false), json!(false))
    );
    assert!(f.audits().is_empty(), "a refused command changes nothing");
}

#[tokio::test]
async fn bad_commands_are_refused_naming_the_field() {
    let f = fixture(true);
    let cases = [
        (
            json!({"action": "enable", "mode": "error", "rate": 1.5, "ttl": "30s"}),
            422,
            "rate",
        ),
        (
            json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "0s"}),
            422,
            "ttl",
        ),
        (
            json!({"action": "enable", "mode": "error", "rate": 1}),
            422,
            "ttl",
        ),
        (
            json!({"action": "enable", "mode": "error", "rate": 1, "ttl": "2h"}),
            422,
            "ttl",
        ),
        (
            json!({"action": "enable", "mode": "explode", "rate": 1, "ttl": "30s"}),
            400,
            "mode",
        ),
    ];
    for (command, status, field) in cases {
        let (got, body) = send(&f.app, post("alice", &command)).await;
        assert_eq!(got.as_u16(), status, "{command}: {body}");
        let message = body["message"].as_str().unwrap_or_default();
        assert!(message.contains(field), "{command}: {message}");
        if status == 422 {
            assert_eq!(body["error"], "invalid_config");
            assert_eq!(body["field"], field, "{body}");
        }
    }
    assert!(!f.github.is_enabled());
    assert!(f.audits().is_empty());
}

#[tokio::test]
async fn listed_with_every_fault_injector() {
    let f = fixture(true);
    let (status, body) = send(&f.app, get("/admin/fault-injectors")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["count"], 1);
    assert_eq!(body["items"][0]["name"], "github");
    assert_eq!(body["items"][0]["snapshot"]["allowed"], true);
    let (_, all) = send(&f.app, get("/admin/resilience")).await;
    assert_eq!(all["components"]["fault_injector"][0]["name"], "github");
}
