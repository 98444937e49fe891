//! Every mutation route: missing token, wrong token, no token configured, body too large.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;

use common::*;
use palisade_admin::AdminRouter;
use palisade_breaker::State;
use palisade_core::Env;

#[tokio::test]
async fn mutations_without_a_token_are_401_with_a_bearer_challenge() {
    let f = fixture().await;
    let app = f.app();
    for (path, body) in mutations() {
        let r = send(&app, post_as(path, None, body.to_string())).await;
        r.assert_error(401, "unauthorized");
        let challenge = r.headers["www-authenticate"].to_str().unwrap();
        assert!(challenge.starts_with("Bearer"), "{path}: {challenge}");
    }
    assert_eq!(f.breaker.state(), State::Closed);
    assert!(f.audits().is_empty());
}

#[tokio::test]
async fn mutations_with_a_wrong_token_are_401() {
    let f = fixture().await;
    let app = f.app();
    let wrong = [
        "Bearer wrong".to_owned(),
        format!("Bearer {TOKEN}x"),
        format!("Bearer {}", &TOKEN[..TOKEN.len() - 1]),
        format!("Basic {TOKEN}"),
        TOKEN.to_owned(),
        "Bearer ".to_owned(),
    ];
    for (path, body) in mutations() {
        for auth in &wrong {
            let r = send(&app, post_as(path, Some(auth), body.to_string())).await;
            r.assert_error(401, "unauthorized");
            assert!(r.headers.contains_key("www-authenticate"), "{path} {auth}");
        }
    }
    assert_eq!(f.breaker.state(), State::Closed);
    assert_eq!(f.bulkhead.max_concurrent(), 10);
    assert!(f.monitor.auto_restart());
    assert!(f.audits().is_empty());
}

#[tokio::test]
async fn without_a_configured_token_mutations_are_403_and_say_how_to_enable_them() {
    let f = fixture().await;
    let apps = [
        AdminRouter::builder(&f.registry)
            .health(&f.monitor)
            .without_token()
            .build(),
        // An environment without PALISADE_ADMIN_TOKEN (or with a blank one).
        AdminRouter::builder(&f.registry)
            .health(&f.monitor)
            .token_from_env(&Env::from_fn(|_| None))
            .build(),
        AdminRouter::builder(&f.registry)
            .health(&f.monitor)
            .token("   ")
            .build(),
    ];
    for app in &apps {
        for (path, body) in mutations() {
            // With or without a bearer header: nothing can be accepted.
            for auth in [None, Some(format!("Bearer {TOKEN}"))] {
                let r = send(app, post_as(path, auth.as_deref(), body.to_string())).await;
                r.assert_error(403, "mutations_disabled");
                assert!(
                    r.json["message"]
                        .as_str()
                        .unwrap()
                        .contains("PALISADE_ADMIN_TOKEN"),
                    "{}",
                    r.text
                );
            }
        }
        // With no token at all, reads are refused too, saying which variables to set.
        let r = send(app, get_anonymous("/admin/circuit-breakers/slack")).await;
        r.assert_error(403, "reads_disabled");
        assert!(r.text.contains("PALISADE_VIEWER_TOKEN"), "{}", r.text);
    }
    // Reads without a token are a choice (behind an authenticating proxy).
    let open = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .without_token()
        .require_token_for_reads(false)
        .build();
    assert_eq!(get_json(&open, "/admin").await["mutations_enabled"], false);
    assert_eq!(
        send(&open, get_anonymous("/admin/circuit-breakers/slack"))
            .await
            .status,
        200
    );
    assert_eq!(f.breaker.state(), State::Closed);
    assert!(f.audits().is_empty());
}

#[tokio::test]
async fn the_token_can_come_from_the_environment() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .token_from_env(&Env::from_fn(|k| {
            (k == "PALISADE_ADMIN_TOKEN").then(|| format!(" {TOKEN}\n"))
        }))
        .build();
    let r = send(
        &app,
        post(
            "/admin/circuit-breakers/slack",
            r#"{"action": "force_open"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(f.breaker.state(), State::ForcedOpen);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413() {
    let f = fixture().await;
    let app = f.app();
    // 70 KiB of valid JSON: over the default 64 KiB.
    let padding = "x".repeat(70 * 1024);
    for (path, _) in mutations() {
        let body = format!(r#"{{"action": "force_open", "padding": "{padding}"}}"#);
        let r = send(&app, post(path, body)).await;
        r.assert_error(413, "payload_too_large");
    }
    // A smaller limit applies as configured.
    let small = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .body_limit(16)
        .build();
    let r = send(
        &small,
        post(
            "/admin/circuit-breakers/slack",
            r#"{"action": "force_open"}"#,
        ),
    )
    .await;
    r.assert_error(413, "payload_too_large");
    assert_eq!(f.breaker.state(), State::Closed);
}

#[tokio::test]
async fn malformed_json_is_400_on_every_mutation_route() {
    let f = fixture().await;
    let app = f.app();
    for (path, _) in mutations() {
        send(&app, post(path, r#"{"action": "#))
            .await
            .assert_error(400, "malformed_json");
        send(&app, post(path, r#"{"action": "no_such_action"}"#))
            .await
            .assert_error(400, "malformed_command");
    }
}

#[tokio::test]
async fn reads_can_require_the_token_but_probes_stay_open() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .require_token_for_reads(true)
        .build();
    for path in [
        "/admin",
        "/admin/resilience",
        "/admin/circuit-breakers",
        "/admin/circuit-breakers/slack",
        "/admin/dlq/tool-calls/entries",
        "/admin/health",
        "/admin/events",
        "/admin/events/stream",
        "/metrics",
    ] {
        send(&app, get_anonymous(path))
            .await
            .assert_error(401, "unauthorized");
    }
    for path in ["/livez", "/readyz", "/health", "/admin/dashboard"] {
        assert_eq!(send(&app, get_anonymous(path)).await.status, 200, "{path}");
    }
    // The default requires it too; /metrics can be opened to any scraper on its own.
    let default = AdminRouter::builder(&f.registry).token(TOKEN).build();
    send(&default, get_anonymous("/admin/resilience"))
        .await
        .assert_error(401, "unauthorized");
    let scrapable = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .metrics_need_token(false)
        .build();
    assert_ne!(
        send(&scrapable, get_anonymous("/metrics")).await.status,
        401
    );
    send(&scrapable, get_anonymous("/admin/resilience"))
        .await
        .assert_error(401, "unauthorized");
    let request = axum::http::Request::get("/admin/circuit-breakers/slack")
        .header("authorization", format!("Bearer {TOKEN}"))
        .body(axum::body::Body::empty())
        .unwrap();
    assert_eq!(send(&app, request).await.status, 200);
}

/// A GET with `headers`, and the operator token unless they carry an `authorization`.
fn get_with(path: &str, headers: &[(&str, &str)]) -> axum::http::Request<axum::body::Body> {
    let mut b = axum::http::Request::get(path);
    if !headers
        .iter()
        .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
    {
        b = b.header("authorization", format!("Bearer {TOKEN}"));
    }
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(axum::body::Body::empty()).unwrap()
}

const VIEWER: &str = "viewer-token-0123456789abcdef";

#[tokio::test]
async fn a_viewer_token_reads_but_cannot_send_a_command() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .viewer_token(VIEWER)
        .require_token_for_reads(true)
        .build();
    let viewer = format!("Bearer {VIEWER}");
    let read = send(
        &app,
        get_with(
            "/admin/circuit-breakers/slack",
            &[("authorization", &viewer)],
        ),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text);
    send(&app, get_anonymous("/admin/circuit-breakers/slack"))
        .await
        .assert_error(401, "unauthorized");
    for (path, body) in mutations() {
        let r = send(&app, post_as(path, Some(&viewer), body.to_string())).await;
        r.assert_error(403, "forbidden");
        assert!(r.text.contains("viewer token"), "{path}: {}", r.text);
    }
    assert_eq!(f.breaker.state(), State::Closed);
    assert!(f.audits().is_empty());
    // The operator token still does both.
    let r = send(
        &app,
        post(
            "/admin/circuit-breakers/slack",
            r#"{"action":"force_open"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
}

#[tokio::test]
async fn tokens_can_come_from_files_named_in_the_environment() {
    let f = fixture().await;
    let dir = std::env::temp_dir().join(format!("admin-token-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (op, view) = (dir.join("operator"), dir.join("viewer"));
    std::fs::write(&op, format!("{TOKEN}\n")).unwrap();
    std::fs::write(&view, VIEWER).unwrap();
    let (op_path, view_path) = (op.display().to_string(), view.display().to_string());
    let env = Env::from_fn(move |k| match k {
        "PALISADE_ADMIN_TOKEN_FILE" => Some(op_path.clone()),
        "PALISADE_VIEWER_TOKEN_FILE" => Some(view_path.clone()),
        _ => None,
    });
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token_from_env(&env)
        .require_token_for_reads(true)
        .build();
    let r = send(
        &app,
        post(
            "/admin/circuit-breakers/slack",
            r#"{"action":"force_open"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "the file's token, trimmed: {}", r.text);
    let viewer = format!("Bearer {VIEWER}");
    let read = send(
        &app,
        get_with("/admin/resilience", &[("authorization", &viewer)]),
    )
    .await;
    assert_eq!(read.status, 200, "{}", read.text);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn a_foreign_host_or_origin_is_refused() {
    let f = fixture().await;
    let app = f.app();
    for (header, value) in [
        ("host", "evil.example"),
        ("host", "evil.example:9090"),
        ("origin", "http://evil.example"),
        ("origin", "null"),
    ] {
        let r = send(&app, get_with("/admin/resilience", &[(header, value)])).await;
        r.assert_error(403, "host_not_allowed");
        assert!(r.text.contains("allowed_hosts"), "{}", r.text);
        // Commands too, even with the token.
        let auth = format!("Bearer {TOKEN}");
        let mut request = post_as(
            "/admin/circuit-breakers/slack",
            Some(&auth),
            r#"{"action":"force_open"}"#,
        );
        request.headers_mut().insert(header, value.parse().unwrap());
        send(&app, request)
            .await
            .assert_error(403, "host_not_allowed");
    }
    assert_eq!(f.breaker.state(), State::Closed);
    for (header, value) in [
        ("host", "127.0.0.1:9090"),
        ("host", "localhost"),
        ("host", "[::1]:9090"),
        ("origin", "http://127.0.0.1:9090"),
    ] {
        let r = send(&app, get_with("/admin/resilience", &[(header, value)])).await;
        assert_eq!(r.status, 200, "{header}: {value}: {}", r.text);
    }
    // An explicit list replaces the defaults; allow_any_host turns the check off.
    let listed = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .allowed_hosts(["admin.internal.example"])
        .build();
    let ok = send(
        &listed,
        get_with("/admin", &[("host", "Admin.Internal.Example:443")]),
    )
    .await;
    assert_eq!(ok.status, 200, "{}", ok.text);
    send(&listed, get_with("/admin", &[("host", "localhost")]))
        .await
        .assert_error(403, "host_not_allowed");
    let any = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .allow_any_host()
        .build();
    let r = send(&any, get_with("/admin", &[("host", "evil.example")])).await;
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn dead_letter_payloads_are_shown_to_the_operator_only_and_that_read_is_audited() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .viewer_token(VIEWER)
        .build();
    let viewer = format!("Bearer {VIEWER}");
    // Lists never carry payloads, whoever asks.
    for auth in [format!("Bearer {TOKEN}"), viewer.clone()] {
        let page = send(
            &app,
            get_with("/admin/dlq/tool-calls/entries", &[("authorization", &auth)]),
        )
        .await;
        assert_eq!(page.status, 200, "{}", page.text);
        let entries = page.json["entries"].as_array().unwrap();
        assert!(!entries.is_empty());
        for e in entries {
            assert!(e.get("payload").is_none(), "{e}");
            assert!(e["payload_redacted"].is_string(), "{e}");
        }
        assert!(
            !page.text.contains("flaky"),
            "no payload text: {}",
            page.text
        );
    }
    let id = f.entry_ids[0];
    let path = format!("/admin/dlq/tool-calls/entries/{id}");
    // A viewer reads the entry, not its payload; nothing is audited.
    let seen = send(&app, get_with(&path, &[("authorization", &viewer)])).await;
    assert_eq!(seen.status, 200, "{}", seen.text);
    assert!(seen.json.get("payload").is_none(), "{}", seen.text);
    assert!(f.audits().is_empty());
    // The operator reads it, and the read is audited with its actor.
    let read = send(&app, get_with(&path, &[("x-palisade-actor", "alice")])).await;
    assert_eq!(read.json["payload"]["title"], "flaky", "{}", read.text);
    let audits = f.audits();
    assert_eq!(audits.len(), 1);
    let palisade_core::EventKind::Audit {
        actor,
        action,
        before,
        ..
    } = &audits[0].kind
    else {
        unreachable!()
    };
    assert_eq!((actor.as_str(), action.as_str()), ("alice", "read_payload"));
    assert_eq!(before["id"], id);
}

#[tokio::test]
async fn event_details_are_shown_to_the_operator_only() {
    let f = fixture().await;
    let app = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .viewer_token(VIEWER)
        .build();
    let r = send(
        &app,
        post(
            "/admin/circuit-breakers/slack",
            r#"{"action":"force_open"}"#,
        ),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text);
    let audit = |reply: &Reply| {
        reply.json["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["type"] == "audit")
            .cloned()
            .unwrap_or_else(|| panic!("no audit event in {}", reply.text))
    };
    let viewer = format!("Bearer {VIEWER}");
    let seen = send(
        &app,
        get_with("/admin/events", &[("authorization", &viewer)]),
    )
    .await;
    let e = audit(&seen);
    assert_eq!(e["action"], "force_open", "the event itself is shown: {e}");
    assert!(e["before"].as_str().unwrap().starts_with("redacted"), "{e}");
    assert!(e["after"].as_str().unwrap().starts_with("redacted"), "{e}");
    let full = send(&app, get("/admin/events")).await;
    assert!(audit(&full)["after"].is_object(), "{}", full.text);
}

#[tokio::test]
async fn extension_routes_follow_the_same_token_rules_and_get_the_audited_actor() {
    let f = fixture().await;
    // An application's own route: echoes the actor header it is handed.
    let extension = axum::Router::new().route(
        "/admin/app/thing",
        axum::routing::get(|| async { "read" }).post(|headers: axum::http::HeaderMap| async move {
            headers
                .get("x-palisade-actor")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("none")
                .to_owned()
        }),
    );
    let app = AdminRouter::builder(&f.registry)
        .token(TOKEN)
        .viewer_token("viewer-token-0123456789")
        .extension(extension)
        .build();
    // Reads need a token (reads are protected by default); the viewer's will do.
    send(&app, get_anonymous("/admin/app/thing"))
        .await
        .assert_error(401, "unauthorized");
    let mut viewer_read = get_anonymous("/admin/app/thing");
    viewer_read.headers_mut().insert(
        "authorization",
        "Bearer viewer-token-0123456789".parse().unwrap(),
    );
    assert_eq!(send(&app, viewer_read).await.text, "read");
    // Anything else needs the operator token: none is 401, the viewer's 403.
    send(&app, post_as("/admin/app/thing", None, ""))
        .await
        .assert_error(401, "unauthorized");
    send(
        &app,
        post_as(
            "/admin/app/thing",
            Some("Bearer viewer-token-0123456789"),
            "",
        ),
    )
    .await
    .assert_error(403, "forbidden");
    // The operator gets through, and a forged actor header is replaced by the audited one.
    let mut forged = post_as("/admin/app/thing", Some(&format!("Bearer {TOKEN}")), "");
    forged
        .headers_mut()
        .insert("x-palisade-actor", "mallory".parse().unwrap());
    let r = send(&app, forged).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_ne!(r.text, "none");
    // The built-in routes are still there.
    assert_eq!(send(&app, get("/admin")).await.status, 200);
}
