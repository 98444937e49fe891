//! The per-kind routes over real components: list, one, commands, and every error they map.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use common::*;
use palisade_breaker::State;
use palisade_core::EventKind;
use serde_json::json;

#[tokio::test]
async fn index_lists_routes_and_says_mutations_are_enabled() {
    let f = fixture().await;
    let index = get_json(&f.app(), "/admin").await;
    assert_eq!(index["mutations_enabled"], true);
    assert_eq!(index["reads_need_token"], true, "the default");
    let paths: Vec<&str> = index["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/admin/events/stream"), "{paths:?}");
    assert!(paths.contains(&"/metrics"));
}

#[tokio::test]
async fn resilience_groups_every_component_by_kind() {
    let f = fixture().await;
    let doc = get_json(&f.app(), "/admin/resilience").await;
    assert_eq!(doc["counts"]["circuit_breaker"], 1);
    assert_eq!(doc["counts"]["bulkhead"], 1);
    assert_eq!(doc["counts"]["rate_limiter"], 2, "per-client and flaky");
    assert_eq!(doc["counts"]["dead_letter_queue"], 1);
    assert_eq!(doc["counts"]["health"], 2);
    assert_eq!(doc["total"], 7);
    let breakers = doc["components"]["circuit_breaker"].as_array().unwrap();
    assert_eq!(breakers[0]["name"], "slack");
    assert_eq!(breakers[0]["snapshot"]["state"], "closed");
    assert_eq!(
        doc["components"]["dead_letter_queue"][0]["snapshot"]["stats"]["total"],
        3
    );
    assert_eq!(doc["health"]["ready"], true);
    assert!(doc["generated_at_unix_ms"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn every_kind_lists_and_shows_one_and_404s_unknown_names() {
    let f = fixture().await;
    let app = f.app();
    for (path, kind, name) in [
        ("/admin/circuit-breakers", "circuit_breaker", "slack"),
        ("/admin/bulkheads", "bulkhead", "database"),
        ("/admin/rate-limiters", "rate_limiter", "per-client"),
        ("/admin/dlq", "dead_letter_queue", "tool-calls"),
        ("/admin/health/components", "health", "upstream"),
    ] {
        let list = get_json(&app, path).await;
        assert_eq!(list["kind"], kind);
        assert!(
            list["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|i| i["name"] == name && i["snapshot"].is_object()),
            "{list}"
        );
        assert_eq!(list["count"], list["items"].as_array().unwrap().len());

        let one = get_json(&app, &format!("{path}/{name}")).await;
        assert_eq!(one["kind"], kind);
        assert_eq!(one["name"], name);
        assert_eq!(one["snapshot"]["name"], name, "{one}");

        let missing = send(&app, get(&format!("{path}/nope"))).await;
        missing.assert_error(404, "not_found");
        assert_eq!(missing.json["kind"], kind);
        assert_eq!(missing.json["name"], "nope");

        // Commands to unknown names are 404 too (after authentication).
        let missing = send(&app, post(&format!("{path}/nope"), r#"{"action": "x"}"#)).await;
        missing.assert_error(404, "not_found");
    }
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_json() {
    let f = fixture().await;
    let app = f.app();
    send(&app, get("/admin/widgets"))
        .await
        .assert_error(404, "not_found");
    send(&app, get("/admin/widgets/x"))
        .await
        .assert_error(404, "not_found");
    let r = send(
        &app,
        axum::http::Request::delete("/admin/circuit-breakers/slack")
            .body(axum::body::Body::empty())
            .unwrap(),
    )
    .await;
    r.assert_error(405, "method_not_allowed");
    send(&app, post("/admin/resilience", "{}"))
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn breaker_commands_apply_and_are_audited() {
    let f = fixture().await;
    let app = f.app();
    let mut request = post(
        "/admin/circuit-breakers/slack",
        r#"{"action": "force_open"}"#,
    );
    request
        .headers_mut()
        .insert("x-palisade-actor", "alice".parse().unwrap());
    let r = send(&app, request).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["kind"], "circuit_breaker");
    assert_eq!(r.json["name"], "slack");
    assert_eq!(r.json["action"], "force_open");
    assert_eq!(r.json["result"]["state"], "forced_open");
    assert_eq!(f.breaker.state(), State::ForcedOpen);

    let audits = f.audits();
    assert_eq!(audits.len(), 1);
    let e = &audits[0];
    assert_eq!(e.component, "slack");
    assert_eq!(e.component_kind.as_str(), "circuit_breaker");
    let EventKind::Audit {
        actor,
        action,
        before,
        after,
    } = &e.kind
    else {
        unreachable!()
    };
    assert_eq!(actor, "alice", "no peer address through oneshot");
    assert_eq!(action, "force_open");
    assert_eq!(before["state"], "closed");
    assert_eq!(after["state"], "forced_open");

    // "close" is accepted as reset; without an actor header the actor is the token.
    let r = send(
        &app,
        post("/admin/circuit-breakers/slack", r#"{"action": "close"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(f.breaker.state(), State::Closed);
    let audits = f.audits();
    let EventKind::Audit {
        actor,
        before,
        after,
        ..
    } = &audits[1].kind
    else {
        unreachable!()
    };
    assert_eq!(actor, "admin-token");
    assert_eq!(before["state"], "forced_open");
    assert_eq!(after["state"], "closed");
}

#[tokio::test]
async fn breaker_bad_commands_are_400_and_invalid_config_is_422_naming_the_field() {
    let f = fixture().await;
    let app = f.app();
    let path = "/admin/circuit-breakers/slack";
    send(&app, post(path, "{not json"))
        .await
        .assert_error(400, "malformed_json");
    send(&app, post(path, ""))
        .await
        .assert_error(400, "malformed_json");
    let r = send(&app, post(path, r#"{"action": "explode"}"#)).await;
    r.assert_error(400, "malformed_command");
    assert!(
        r.json["reason"].as_str().unwrap().contains("explode"),
        "{}",
        r.text
    );
    send(&app, post(path, r#"{"no_action": true}"#))
        .await
        .assert_error(400, "malformed_command");

    let r = send(
        &app,
        post(
            path,
            r#"{"action": "set_config", "config": {"half_open_max_calls": 0}}"#,
        ),
    )
    .await;
    r.assert_error(422, "invalid_config");
    assert_eq!(r.json["field"], "half_open_max_calls");
    assert!(r.json["reason"].is_string());
    assert_eq!(f.breaker.config().half_open_max_calls, 1, "nothing changed");
    assert!(f.audits().is_empty(), "refused commands are not audited");
}

#[tokio::test]
async fn bulkhead_commands() {
    let f = fixture().await;
    let app = f.app();
    let path = "/admin/bulkheads/database";
    let r = send(
        &app,
        post(
            path,
            r#"{"action": "set_max_concurrent", "max_concurrent": 5}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["max_concurrent"], 5);
    assert_eq!(f.bulkhead.max_concurrent(), 5);
    let EventKind::Audit {
        before,
        after,
        action,
        ..
    } = &f.audits()[0].kind
    else {
        unreachable!()
    };
    assert_eq!(action, "set_max_concurrent");
    assert_eq!(before["max_concurrent"], 10);
    assert_eq!(after["max_concurrent"], 5);

    let r = send(
        &app,
        post(path, r#"{"action": "set_max_wait", "max_wait": "250ms"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["max_wait_ms"], 250);

    let r = send(
        &app,
        post(
            path,
            r#"{"action": "set_max_concurrent", "max_concurrent": 0}"#,
        ),
    )
    .await;
    r.assert_error(422, "invalid_config");
    assert_eq!(r.json["field"], "max_concurrent", "{}", r.text);
    assert_eq!(f.bulkhead.max_concurrent(), 5);

    send(
        &app,
        post(
            path,
            r#"{"action": "set_max_concurrent", "max_concurrent": "many"}"#,
        ),
    )
    .await
    .assert_error(400, "malformed_command");
}

#[tokio::test]
async fn rate_limiter_commands_conflicts_and_backend_failures() {
    let f = fixture().await;
    let app = f.app();
    let path = "/admin/rate-limiters/per-client";
    f.limiter.check_key("10.0.0.1").unwrap();
    assert_eq!(f.limiter.len(), 1);
    let r = send(
        &app,
        post(path, r#"{"action": "reset", "key": "10.0.0.1"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["keys"]["tracked"], 0);

    let r = send(
        &app,
        post(
            path,
            r#"{"action": "set_quota", "quota": {"rate": 200, "period": "1m", "burst": 50}}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(f.limiter.quota().rate, 200);
    let EventKind::Audit { before, after, .. } = &f.audits()[1].kind else {
        unreachable!()
    };
    assert_eq!(before["quota"]["rate"], 100);
    assert_eq!(after["quota"]["rate"], 200);

    let r = send(
        &app,
        post(path, r#"{"action": "set_quota", "quota": {"rate": 0}}"#),
    )
    .await;
    r.assert_error(422, "invalid_config");
    assert_eq!(r.json["field"], "quota.rate");

    // Valid, but not for a memory-backed limiter: 409.
    let r = send(
        &app,
        post(
            path,
            r#"{"action": "set_failure_policy", "failure_policy": "fail_open"}"#,
        ),
    )
    .await;
    r.assert_error(409, "rejected");
    assert_eq!(r.json["action"], "set_failure_policy");

    // A backend failure: 503.
    let r = send(
        &app,
        post("/admin/rate-limiters/flaky", r#"{"action": "reset"}"#),
    )
    .await;
    r.assert_error(503, "backend_unavailable");
    assert!(
        r.json["reason"]
            .as_str()
            .unwrap()
            .contains("connection refused")
    );
}

#[tokio::test]
async fn dlq_snapshot_entries_and_commands() {
    let f = fixture().await;
    let app = f.app();

    let one = get_json(&app, "/admin/dlq/tool-calls").await;
    assert_eq!(one["snapshot"]["backend"], "memory");
    assert_eq!(one["snapshot"]["stats"]["total"], 3);

    let page = get_json(&app, "/admin/dlq/tool-calls/entries").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 3);
    let page = get_json(&app, "/admin/dlq/tool-calls/entries?state=parked").await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    assert_eq!(page["entries"][0]["kind"], "client_error");
    let page = get_json(
        &app,
        "/admin/dlq/tool-calls/entries?kind=timeout&operation=github.create_issue&state=",
    )
    .await;
    assert_eq!(page["entries"].as_array().unwrap().len(), 1);
    // Paging: one at a time, following the cursor.
    let first = get_json(&app, "/admin/dlq/tool-calls/entries?limit=1").await;
    assert_eq!(first["entries"].as_array().unwrap().len(), 1);
    let next = first["next"].as_u64().unwrap();
    let second = get_json(
        &app,
        &format!("/admin/dlq/tool-calls/entries?limit=1&after={next}"),
    )
    .await;
    assert_ne!(second["entries"][0]["id"], first["entries"][0]["id"]);

    // Bad filters: 400; unknown queue: 404.
    send(&app, get("/admin/dlq/tool-calls/entries?kind=bogus"))
        .await
        .assert_error(400, "bad_query");
    send(&app, get("/admin/dlq/tool-calls/entries?after=abc"))
        .await
        .assert_error(400, "bad_query");
    send(&app, get("/admin/dlq/tool-calls/entries?colour=red"))
        .await
        .assert_error(400, "bad_query");
    send(&app, get("/admin/dlq/nope/entries"))
        .await
        .assert_error(404, "not_found");

    // One entry; unknown ids and non-numeric ids.
    let id = f.entry_ids[2];
    let entry = get_json(&app, &format!("/admin/dlq/tool-calls/entries/{id}")).await;
    assert_eq!(entry["id"], id);
    assert_eq!(entry["operation"], "github.create_issue");
    let r = send(&app, get("/admin/dlq/tool-calls/entries/999999")).await;
    r.assert_error(404, "not_found");
    assert_eq!(r.json["id"], 999_999);
    send(&app, get("/admin/dlq/tool-calls/entries/abc"))
        .await
        .assert_error(400, "bad_path");
    send(&app, get("/admin/dlq/nope/entries/1"))
        .await
        .assert_error(404, "not_found");

    // Reads publish no events, except the operator's read of a payload (audited).
    let audits = f.audits();
    assert_eq!(audits.len(), 1, "{audits:?}");
    assert!(
        matches!(&audits[0].kind, EventKind::Audit { action, .. } if action == "read_payload"),
        "{audits:?}"
    );

    // Retry by kind, discard one, refuse a filterless discard, purge.
    let r = send(
        &app,
        post(
            "/admin/dlq/tool-calls",
            r#"{"action": "retry", "kind": "timeout"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["retried"], 2);
    let r = send(
        &app,
        post(
            "/admin/dlq/tool-calls",
            format!(r#"{{"action": "discard", "id": {id}}}"#),
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["discarded"], 1);
    let EventKind::Audit {
        before,
        after,
        action,
        ..
    } = &f.audits()[2].kind
    else {
        unreachable!()
    };
    assert_eq!(action, "discard");
    assert_eq!(before["stats"]["total"], 3);
    assert_eq!(after["stats"]["total"], 2);

    let r = send(
        &app,
        post("/admin/dlq/tool-calls", r#"{"action": "discard"}"#),
    )
    .await;
    r.assert_error(409, "rejected");
    assert!(r.json["reason"].as_str().unwrap().contains("purge"));
    send(
        &app,
        post(
            "/admin/dlq/tool-calls",
            r#"{"action": "retry", "kind": "sometimes"}"#,
        ),
    )
    .await
    .assert_error(400, "malformed_command");

    let r = send(
        &app,
        post("/admin/dlq/tool-calls", r#"{"action": "purge"}"#),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["purged"], 2);
    assert_eq!(f.dlq.stats().await.unwrap().store.total, 0);
    let stats = send(
        &app,
        post("/admin/dlq/tool-calls", r#"{"action": "stats"}"#),
    )
    .await;
    assert_eq!(stats.json["result"]["total"], 0, "{}", stats.text);
}

#[tokio::test]
async fn health_component_commands() {
    let f = fixture().await;
    let app = f.app();
    let r = send(
        &app,
        post(
            "/admin/health/components/worker",
            r#"{"action": "restart"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["restart_count"], 1);
    assert_eq!(f.restarts.load(std::sync::atomic::Ordering::Relaxed), 1);

    let r = send(
        &app,
        post(
            "/admin/health/components/worker",
            r#"{"action": "set_auto_restart", "enabled": false}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["auto_restart"], false);
    let EventKind::Audit { before, after, .. } = &f.audits()[1].kind else {
        unreachable!()
    };
    assert_eq!(before["auto_restart"], true);
    assert_eq!(after["auto_restart"], false);

    let r = send(
        &app,
        post(
            "/admin/health/components/worker",
            r#"{"action": "reset_crash_loop"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);

    f.upstream
        .store(DEGRADED, std::sync::atomic::Ordering::Relaxed);
    let r = send(
        &app,
        post(
            "/admin/health/components/upstream",
            r#"{"action": "check"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["status"], "degraded");

    // Not restartable: valid command, refused in this state.
    let r = send(
        &app,
        post(
            "/admin/health/components/upstream",
            r#"{"action": "restart"}"#,
        ),
    )
    .await;
    r.assert_error(409, "rejected");
    assert!(
        r.json["reason"]
            .as_str()
            .unwrap()
            .contains("not restartable")
    );
    send(
        &app,
        post(
            "/admin/health/components/upstream",
            r#"{"action": "reboot"}"#,
        ),
    )
    .await
    .assert_error(400, "malformed_command");
}

#[tokio::test]
async fn actor_header_is_sanitized_and_bounded() {
    let f = fixture().await;
    let app = f.app();
    let mut request = post("/admin/circuit-breakers/slack", r#"{"action": "disable"}"#);
    let long = format!("  bob\t{}", "x".repeat(300));
    request
        .headers_mut()
        .insert("x-palisade-actor", long.parse().unwrap());
    assert_eq!(send(&app, request).await.status, 200);
    let EventKind::Audit { actor, .. } = &f.audits()[0].kind else {
        unreachable!()
    };
    assert!(actor.starts_with("bob_xxx"), "{actor}");
    assert_eq!(actor.len(), palisade_admin::MAX_ACTOR_LEN);
}

#[tokio::test]
async fn dashboard_is_served() {
    let f = fixture().await;
    let r = send(&f.app(), get("/admin/dashboard")).await;
    assert_eq!(r.status, 200);
    assert!(
        r.content_type().starts_with("text/html"),
        "{}",
        r.content_type()
    );
    assert!(r.text.contains("<title>Palisade dashboard</title>"));
}

#[tokio::test]
async fn json_bodies_need_no_content_type() {
    let f = fixture().await;
    let request = axum::http::Request::post("/admin/circuit-breakers/slack")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(axum::body::Body::from(
            json!({"action": "metrics_only"}).to_string(),
        ))
        .unwrap();
    assert_eq!(send(&f.app(), request).await.status, 200);
    assert_eq!(f.breaker.state(), State::MetricsOnly);
}
