//! `/livez`, `/readyz`, `/health` and the monitor's own routes.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use std::sync::atomic::Ordering;

use common::*;
use palisade_admin::AdminRouter;
use palisade_core::{EventKind, Registry};

#[tokio::test]
async fn probes_follow_the_monitor() {
    let f = fixture().await;
    let app = f.app();

    // Healthy: 200 everywhere, `pass`.
    let live = send(&app, get("/livez")).await;
    assert_eq!(live.status, 200);
    assert_eq!(live.json["status"], "pass");
    assert_eq!(send(&app, get("/readyz")).await.status, 200);
    let h = send(&app, get("/health")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.content_type(), "application/health+json");
    assert_eq!(h.json["status"], "pass");
    let check = &h.json["checks"]["upstream"][0];
    assert_eq!(check["status"], "pass");
    assert_eq!(check["componentId"], "upstream");
    assert_eq!(check["observedUnit"], "ms");
    assert!(check["time"].as_str().unwrap().ends_with('Z'), "{check}");
    assert!(check.get("output").is_none(), "no output for pass");
    assert_eq!(h.json["palisade"]["summary"]["total"], 2);
    assert_eq!(
        h.json["palisade"]["components"]["worker"]["restartable"],
        true
    );

    // Degraded: still live and ready, `warn`, with the check's message.
    f.upstream.store(DEGRADED, Ordering::Relaxed);
    f.monitor.check_all().await;
    assert_eq!(send(&app, get("/livez")).await.status, 200);
    assert_eq!(send(&app, get("/readyz")).await.status, 200);
    let h = send(&app, get("/health")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json["status"], "warn");
    assert_eq!(h.json["checks"]["upstream"][0]["status"], "warn");
    assert_eq!(h.json["checks"]["upstream"][0]["output"], "replica lag 4 s");
    assert_eq!(h.json["checks"]["worker"][0]["status"], "pass");

    // Unhealthy (critical, liveness): 503 everywhere, `fail`.
    f.upstream.store(UNHEALTHY, Ordering::Relaxed);
    f.monitor.check_all().await;
    let live = send(&app, get("/livez")).await;
    assert_eq!(live.status, 503);
    assert_eq!(live.json["status"], "fail");
    let ready = send(&app, get("/readyz")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json["ready"], false);
    let h = send(&app, get("/health")).await;
    assert_eq!(h.status, 503);
    assert_eq!(h.json["status"], "fail");
    assert_eq!(
        h.json["checks"]["upstream"][0]["output"],
        "connection refused"
    );
    assert_eq!(h.json["palisade"]["status"], "unhealthy");
}

#[tokio::test]
async fn unchecked_critical_components_are_not_ready() {
    let registry = Registry::new();
    let monitor = palisade_health::HealthMonitor::builder()
        .registry(&registry)
        .build()
        .unwrap();
    // Its first check never finishes within the test: the component stays unchecked.
    monitor
        .add(
            "slow-start",
            palisade_health::check_fn(std::future::pending::<palisade_health::CheckResult>),
        )
        .interval(std::time::Duration::from_secs(3600))
        .timeout(std::time::Duration::from_secs(60))
        .start()
        .unwrap();
    let app = AdminRouter::builder(&registry).health(&monitor).build();
    tokio::task::yield_now().await;
    let h = send(&app, get("/health")).await;
    assert_eq!(h.status, 200, "unchecked is `warn`, not `fail`");
    assert_eq!(h.json["status"], "warn", "healthy but not ready");
    assert_eq!(h.json["palisade"]["status"], "healthy");
    assert_eq!(h.json["checks"]["slow-start"][0]["status"], "warn");
    assert_eq!(
        h.json["checks"]["slow-start"][0]["output"],
        "not checked yet"
    );
    assert_eq!(send(&app, get("/readyz")).await.status, 503);
    assert_eq!(send(&app, get("/livez")).await.status, 200);
    monitor.shutdown();
}

#[tokio::test]
async fn without_a_monitor_probes_pass_and_monitor_routes_are_404() {
    let registry = Registry::new();
    let app = AdminRouter::builder(&registry).token(TOKEN).build();
    assert_eq!(send(&app, get("/livez")).await.status, 200);
    assert_eq!(send(&app, get("/readyz")).await.status, 200);
    let h = send(&app, get("/health")).await;
    assert_eq!(h.status, 200);
    assert_eq!(h.json["status"], "pass");
    assert_eq!(h.json["checks"], serde_json::json!({}));
    send(&app, get("/admin/health"))
        .await
        .assert_error(404, "no_health_monitor");
    send(
        &app,
        post(
            "/admin/health",
            r#"{"action": "set_auto_restart", "enabled": false}"#,
        ),
    )
    .await
    .assert_error(404, "no_health_monitor");
    // No components of any kind: empty lists.
    let list = get_json(&app, "/admin/health/components").await;
    assert_eq!(list["count"], 0);
}

#[tokio::test]
async fn the_monitor_report_and_its_global_switch() {
    let f = fixture().await;
    let app = f.app();
    let report = get_json(&app, "/admin/health").await;
    assert_eq!(report["auto_restart"], true);
    assert_eq!(report["summary"]["healthy"], 2);

    let mut request = post(
        "/admin/health",
        r#"{"action": "set_auto_restart", "enabled": false}"#,
    );
    request
        .headers_mut()
        .insert("x-palisade-actor", "oncall".parse().unwrap());
    let r = send(&app, request).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["action"], "set_auto_restart");
    assert_eq!(r.json["result"]["auto_restart"], false);
    assert!(!f.monitor.auto_restart());
    let audits = f.audits();
    assert_eq!(audits.len(), 1);
    assert_eq!(audits[0].component, "monitor");
    assert_eq!(audits[0].component_kind.as_str(), "health");
    let EventKind::Audit {
        actor,
        action,
        before,
        after,
    } = &audits[0].kind
    else {
        unreachable!()
    };
    assert_eq!(actor, "oncall");
    assert_eq!(action, "set_auto_restart");
    assert_eq!(before["auto_restart"], true);
    assert_eq!(after["auto_restart"], false);

    // check_all runs every check now.
    f.upstream.store(DEGRADED, Ordering::Relaxed);
    let r = send(&app, post("/admin/health", r#"{"action": "check_all"}"#)).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.json["result"]["status"], "degraded");

    // Bad input.
    send(
        &app,
        post("/admin/health", r#"{"action": "set_auto_restart"}"#),
    )
    .await
    .assert_error(400, "malformed_command");
    send(
        &app,
        post(
            "/admin/health",
            r#"{"action": "set_auto_restart", "enabled": "no"}"#,
        ),
    )
    .await
    .assert_error(400, "malformed_command");
    send(&app, post("/admin/health", "[1, 2"))
        .await
        .assert_error(400, "malformed_json");
}
