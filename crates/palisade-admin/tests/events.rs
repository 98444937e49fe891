//! `GET /admin/events` and the server-sent event stream.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use common::*;
use http_body_util::BodyExt;
use palisade_admin::AdminRouter;
use serde_json::Value;
use tower::ServiceExt;

/// Reads SSE blocks (separated by a blank line) from a streaming body.
struct SseReader {
    body: Body,
    buffer: String,
}

impl SseReader {
    /// The next block, or panics after `wait`.
    async fn next_block(&mut self, wait: Duration) -> String {
        tokio::time::timeout(wait, async {
            loop {
                if let Some(end) = self.buffer.find("\n\n") {
                    let block = self.buffer[..end].to_owned();
                    self.buffer.drain(..end + 2);
                    return block;
                }
                let frame = self
                    .body
                    .frame()
                    .await
                    .expect("the stream ended")
                    .expect("the stream failed");
                if let Ok(data) = frame.into_data() {
                    self.buffer.push_str(std::str::from_utf8(&data).unwrap());
                }
            }
        })
        .await
        .expect("no event within the timeout")
    }

    /// The next block that carries data (skipping keep-alive comments): (id, event, data).
    async fn next_event(&mut self) -> (Option<String>, Option<String>, Value) {
        loop {
            let block = self.next_block(Duration::from_secs(5)).await;
            let field = |name: &str| {
                block
                    .lines()
                    .find_map(|l| l.strip_prefix(name).map(|v| v.trim_start().to_owned()))
            };
            if let Some(data) = field("data:") {
                return (
                    field("id:"),
                    field("event:"),
                    serde_json::from_str(&data).unwrap(),
                );
            }
        }
    }
}

async fn open_stream(app: &axum::Router, request: Request<Body>) -> SseReader {
    let response = app.clone().oneshot(request).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    SseReader {
        body: response.into_body(),
        buffer: String::new(),
    }
}

#[tokio::test]
async fn recent_events_filter_by_kind_component_type_seq_and_limit() {
    let f = fixture().await;
    let app = f.app();
    for body in [r#"{"action": "force_open"}"#, r#"{"action": "reset"}"#] {
        let r = send(&app, post("/admin/circuit-breakers/slack", body)).await;
        assert_eq!(r.status, 200);
    }
    let r = send(
        &app,
        post(
            "/admin/bulkheads/database",
            r#"{"action": "set_max_concurrent", "max_concurrent": 4}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200);

    let all = get_json(&app, "/admin/events?limit=1000").await;
    let events = all["events"].as_array().unwrap();
    assert_eq!(all["count"], events.len());
    assert_eq!(all["published"], f.registry.events().published());
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["seq"].as_u64() < w[1]["seq"].as_u64()),
        "oldest first"
    );

    let audits = get_json(&app, "/admin/events?type=audit").await;
    assert_eq!(audits["count"], 3);
    assert!(
        audits["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["type"] == "audit")
    );

    let slack = get_json(
        &app,
        "/admin/events?kind=circuit_breaker&component=slack&type=state_transition",
    )
    .await;
    let moves: Vec<String> = slack["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            format!(
                "{}->{}",
                e["from"].as_str().unwrap(),
                e["to"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(moves, vec!["closed->forced_open", "forced_open->closed"]);

    let bulkhead = get_json(&app, "/admin/events?kind=bulkhead&type=audit").await;
    assert_eq!(bulkhead["count"], 1);
    assert_eq!(bulkhead["events"][0]["component"], "database");
    assert_eq!(bulkhead["events"][0]["after"]["max_concurrent"], 4);

    let last = get_json(&app, "/admin/events?limit=2").await;
    assert_eq!(last["count"], 2);
    let last_seq = last["last_seq"].as_u64().unwrap();
    assert_eq!(last_seq, f.registry.events().published());
    let since = get_json(&app, &format!("/admin/events?since_seq={}", last_seq - 1)).await;
    assert_eq!(since["count"], 1);
    let none = get_json(&app, &format!("/admin/events?since_seq={last_seq}")).await;
    assert_eq!(none["count"], 0);
    assert_eq!(none["last_seq"], last_seq, "polling keeps its cursor");

    // Empty values are ignored, wrong ones refused.
    assert_eq!(
        get_json(&app, "/admin/events?kind=&type=&component=").await["count"],
        100.min(events.len())
    );
    send(&app, get("/admin/events?kind=toaster"))
        .await
        .assert_error(400, "bad_query");
    send(&app, get("/admin/events?type=gossip"))
        .await
        .assert_error(400, "bad_query");
    send(&app, get("/admin/events?limit=many"))
        .await
        .assert_error(400, "bad_query");
    send(&app, get("/admin/events?colour=red"))
        .await
        .assert_error(400, "bad_query");
}

#[tokio::test]
async fn the_stream_delivers_the_audit_event_of_a_mutation() {
    let f = fixture().await;
    let app = f.app();
    let mut stream = open_stream(&app, get("/admin/events/stream?type=audit")).await;

    let mut request = post(
        "/admin/circuit-breakers/slack",
        r#"{"action": "force_open"}"#,
    );
    request
        .headers_mut()
        .insert("x-palisade-actor", "alice".parse().unwrap());
    assert_eq!(send(&app, request).await.status, 200);

    let (id, event, data) = stream.next_event().await;
    assert_eq!(data["type"], "audit");
    assert_eq!(data["component_kind"], "circuit_breaker");
    assert_eq!(data["component"], "slack");
    assert_eq!(data["actor"], "alice");
    assert_eq!(data["action"], "force_open");
    assert_eq!(data["before"]["state"], "closed");
    assert_eq!(data["after"]["state"], "forced_open");
    assert_eq!(id.unwrap(), data["seq"].to_string());
    assert_eq!(
        event, None,
        "plain `message` events, for EventSource.onmessage"
    );
}

#[tokio::test]
async fn the_unfiltered_stream_carries_transitions_admin_actions_and_audits_in_order() {
    let f = fixture().await;
    let app = f.app();
    let mut stream = open_stream(&app, get("/admin/events/stream")).await;
    assert_eq!(
        send(
            &app,
            post(
                "/admin/circuit-breakers/slack",
                r#"{"action": "force_open"}"#
            )
        )
        .await
        .status,
        200
    );
    let mut types = Vec::new();
    let mut last = 0;
    for _ in 0..3 {
        let (_, _, data) = stream.next_event().await;
        let seq = data["seq"].as_u64().unwrap();
        assert!(seq > last);
        last = seq;
        types.push(data["type"].as_str().unwrap().to_owned());
    }
    assert_eq!(types, vec!["state_transition", "admin_action", "audit"]);
}

#[tokio::test]
async fn a_reconnecting_client_gets_what_it_missed_first() {
    let f = fixture().await;
    let app = f.app();
    let before = f.registry.events().published();
    for action in ["force_open", "reset"] {
        let body = format!(r#"{{"action": "{action}"}}"#);
        assert_eq!(
            send(&app, post("/admin/circuit-breakers/slack", body))
                .await
                .status,
            200
        );
    }
    let request = Request::get("/admin/events/stream?type=audit")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("last-event-id", before.to_string())
        .body(Body::empty())
        .unwrap();
    let mut stream = open_stream(&app, request).await;
    let (_, _, first) = stream.next_event().await;
    let (_, _, second) = stream.next_event().await;
    assert_eq!(first["action"], "force_open");
    assert_eq!(second["action"], "reset");
    // Then live events, without repeats.
    assert_eq!(
        send(
            &app,
            post("/admin/circuit-breakers/slack", r#"{"action": "disable"}"#)
        )
        .await
        .status,
        200
    );
    let (_, _, third) = stream.next_event().await;
    assert_eq!(third["action"], "disable");
    assert!(third["seq"].as_u64() > second["seq"].as_u64());

    // `since_seq` does the same for clients that cannot set headers.
    let mut stream = open_stream(
        &app,
        get(&format!(
            "/admin/events/stream?type=audit&since_seq={before}"
        )),
    )
    .await;
    assert_eq!(stream.next_event().await.2["action"], "force_open");
}

#[tokio::test]
async fn the_stream_sends_keep_alive_comments_and_refuses_bad_filters() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .sse_keep_alive(Duration::from_millis(20))
        .build();
    let mut stream = open_stream(&app, get("/admin/events/stream")).await;
    let block = stream.next_block(Duration::from_secs(5)).await;
    assert!(block.starts_with(':'), "a comment: {block:?}");

    send(&app, get("/admin/events/stream?kind=toaster"))
        .await
        .assert_error(400, "bad_query");
}

#[tokio::test]
async fn a_last_event_id_from_before_a_restart_replays_everything_kept() {
    let f = fixture().await;
    let app = f.app();
    assert_eq!(
        send(
            &app,
            post(
                "/admin/circuit-breakers/slack",
                r#"{"action": "force_open"}"#
            )
        )
        .await
        .status,
        200
    );
    let request = Request::get("/admin/events/stream?type=audit")
        .header("authorization", format!("Bearer {TOKEN}"))
        .header("last-event-id", "999999")
        .body(Body::empty())
        .unwrap();
    let mut stream = open_stream(&app, request).await;
    assert_eq!(stream.next_event().await.2["action"], "force_open");
}

#[tokio::test]
async fn a_slow_client_is_told_how_many_events_it_missed() {
    let registry = palisade_core::Registry::with_events(palisade_core::EventBus::new(4));
    let app = AdminRouter::builder(&registry).token(TOKEN).build();
    let mut stream = open_stream(&app, get("/admin/events/stream")).await;
    for i in 0..10 {
        registry.events().publish(
            palisade_core::ComponentKind::Bulkhead,
            "db",
            palisade_core::EventKind::AdminAction {
                action: format!("a{i}"),
            },
        );
    }
    let (_, event, data) = stream.next_event().await;
    assert_eq!(event.as_deref(), Some("lagged"));
    assert_eq!(data["missed"], 6);
    // Then the newest events that were kept in the channel.
    let (_, _, data) = stream.next_event().await;
    assert_eq!(data["action"], "a6");
}
