//! The dashboard page in a real browser: headless Chromium driven through chromedriver's W3C
//! WebDriver API. The page must follow a breaker that trips (over the event stream, or by
//! polling), reset it with its button (sending the token taken from the URL fragment), show
//! server data as text, and show API errors in its banner. A screenshot is saved to
//! `target/test-artifacts/dashboard.png`.
//!
//! Needs `chromium` and `chromedriver` (Debian: `chromium`, `chromium-driver`); scripts/test
//! installs them. Without them this test fails, it does not skip.
#![cfg(feature = "health")] // the fixture has a health monitor
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod common;
mod webdriver;

use std::time::{Duration, Instant};

use common::*;
use palisade_admin::AdminRouter;
use palisade_breaker::State;
use palisade_health::{CheckConfig, CheckResult, check_fn};
use serde_json::{Value, json};
use webdriver::{Browser, artifacts_dir};

/// A health message that is markup: the page must show it as text, never run it.
const MARKUP: &str = r#"<img src="x" onerror="window.__xss = 1"><b>bold</b>"#;

fn card(kind: &str, name: &str) -> String {
    format!(r#"[data-kind="{kind}"][data-name="{name}"]"#)
}

/// A script returning the breaker card's state text (or null before the card exists).
fn breaker_state_script() -> String {
    format!(
        "const e = document.querySelector('{} [data-field=\"state\"]'); \
         return e ? e.textContent : null;",
        card("circuit_breaker", "slack")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_follows_a_tripping_breaker_and_resets_it() {
    let started = Instant::now();
    let f = fixture().await;
    f.monitor
        .add(
            "markup",
            check_fn(|| async { CheckResult::degraded(MARKUP) }),
        )
        .config(CheckConfig {
            interval: Duration::from_secs(3600),
            critical: false,
            ..CheckConfig::default()
        })
        .start()
        .unwrap();
    f.monitor.check_all().await;
    let server = AdminRouter::builder(&f.registry)
        .health(&f.monitor)
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());

    let browser = Browser::start().await;
    let launched = started.elapsed();
    browser
        .goto(&format!("{base}/admin/dashboard#token={TOKEN}"))
        .await;
    let state = breaker_state_script();
    browser
        .wait_for("the breaker card to show closed", &state, |v| v == "closed")
        .await;

    // The token moved from the fragment to sessionStorage and the token field.
    let token = browser
        .execute(
            "return [location.hash, sessionStorage.getItem('palisade.token'), \
             document.getElementById('token').value];",
        )
        .await;
    assert_eq!(token, json!(["", TOKEN, TOKEN]));

    // A card for every component, with its kind and name.
    let cards = browser
        .wait_for(
            "a card for each of the 8 components",
            "return Array.from(document.querySelectorAll('article[data-kind][data-name]'))\
             .map(e => e.dataset.kind + '/' + e.dataset.name).sort();",
            |v| v.as_array().is_some_and(|a| a.len() == 8),
        )
        .await;
    assert_eq!(
        cards,
        json!([
            "bulkhead/database",
            "circuit_breaker/slack",
            "dead_letter_queue/tool-calls",
            "health/markup",
            "health/upstream",
            "health/worker",
            "rate_limiter/flaky",
            "rate_limiter/per-client",
        ])
    );

    // Server text is shown as text: the markup is visible, and nothing of it ran.
    let markup = browser
        .execute(&format!(
            "const c = document.querySelector('{}'); \
             return [window.__xss === undefined, c.querySelector('img, b') === null, \
             c.querySelector('[data-field=\"message\"]').textContent];",
            card("health", "markup")
        ))
        .await;
    assert_eq!(markup, json!([true, true, MARKUP]));

    // Trip the breaker from the outside: the page learns it from the event stream.
    for _ in 0..3 {
        let failed = f.breaker.call(async { Err::<(), _>("boom") }).await;
        assert!(failed.is_err());
    }
    assert_eq!(f.breaker.state(), State::Open);
    let tripped = Instant::now();
    browser
        .wait_for("the breaker card to show open", &state, |v| v == "open")
        .await;
    let seen_open = tripped.elapsed();
    browser
        .wait_for(
            "the event log to show the trip",
            "return Array.from(document.querySelectorAll('#log li')).map(li => li.textContent);",
            |v| {
                v.as_array().is_some_and(|lines| {
                    lines
                        .iter()
                        .filter_map(Value::as_str)
                        .any(|l| l.contains("slack") && l.contains("closed → open"))
                })
            },
        )
        .await;

    // Reset with the card's button: the page sends the token, the breaker closes.
    let reset = browser
        .find(&format!(
            r#"{} button[data-action="reset"]"#,
            card("circuit_breaker", "slack")
        ))
        .await;
    browser.click(&reset).await;
    browser
        .wait_for("the breaker card to show closed again", &state, |v| {
            v == "closed"
        })
        .await;
    assert_eq!(f.breaker.state(), State::Closed);
    let banner = browser
        .execute("return document.getElementById('banner').hidden;")
        .await;
    assert_eq!(banner, true, "no error after the reset");
    let connection = browser
        .execute("return document.body.dataset.connection;")
        .await;

    let png = browser.screenshot_full_page().await;
    let path = artifacts_dir().join("dashboard.png");
    // Written aside, then renamed: a reader never sees half a file.
    let partial = path.with_extension(format!("png.{}", std::process::id()));
    std::fs::write(&partial, &png)
        .and_then(|()| std::fs::rename(&partial, &path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let written = std::fs::read(&path).unwrap();
    assert!(
        written.starts_with(b"\x89PNG\r\n\x1a\n") && written.len() > 10_000,
        "{} is not a PNG screenshot ({} bytes)",
        path.display(),
        written.len()
    );

    // A refused command shows the API's message in the banner: a limit of 0 is invalid.
    let bulkhead = card("bulkhead", "database");
    let limit = browser
        .find(&format!(r#"{bulkhead} input[data-input="max_concurrent"]"#))
        .await;
    browser.type_text(&limit, "0").await;
    let set = browser
        .find(&format!(
            r#"{bulkhead} button[data-action="set_max_concurrent"]"#
        ))
        .await;
    browser.click(&set).await;
    let shown = browser
        .wait_for(
            "the error banner",
            "const b = document.getElementById('banner'); return b.hidden ? null : b.textContent;",
            |v| v.is_string(),
        )
        .await;
    let shown = shown.as_str().unwrap();
    assert!(
        shown.contains("invalid_config")
            && shown.contains("HTTP 422")
            && shown.contains("max_concurrent"),
        "{shown}"
    );
    assert_eq!(f.bulkhead.snapshot().max_concurrent, 10, "nothing changed");

    browser.close();
    server.shutdown().await.unwrap();
    eprintln!(
        "dashboard browser test: browser up in {launched:?}, trip shown in {seen_open:?} \
         (connection: {connection}), total {:?}; screenshot {}",
        started.elapsed(),
        path.display()
    );
}
