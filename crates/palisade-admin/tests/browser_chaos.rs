//! The dashboard's fault-injector card in a real browser: headless Chromium driven through
//! chromedriver (see `browser.rs`). The page must show the injector's card, switch injection
//! on with the card's controls (mode, rate, ttl) under the actor typed at the top, show the
//! time left and who switched it on, show a refused command's field in its banner, follow an
//! injection that switches itself off at its ttl, and switch it off with its button. An
//! injector whose config does not allow injection has its Enable button disabled. Kinds the
//! page has no card of its own for (here a retry policy) get a card of their snapshot's plain
//! fields; kinds nobody registered get no section. A screenshot is saved to
//! `target/test-artifacts/dashboard-chaos.png`.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod webdriver;

use std::sync::Arc;
use std::time::{Duration, Instant};

use palisade_admin::AdminRouter;
use palisade_chaos::{FaultInjector, FaultMode};
use palisade_core::{
    ComponentKind, Control, ControlError, Inspect, Managed, Registry, async_trait,
};
use serde_json::{Value, json};
use webdriver::{Browser, WAIT, artifacts_dir};

const TOKEN: &str = "chaos-test-token-0123456789abcdef";

/// A retry policy as another crate might register it: this page has no card of its own for
/// the kind, so it shows the snapshot's plain fields.
struct SearchRetry;

impl Inspect for SearchRetry {
    type Snapshot = Value;
    fn snapshot(&self) -> Value {
        json!({
            "name": "search-retry",
            "state": "ready",
            "max_attempts": 3,
            "retries_total": 12,
            "backoff_ms": 1500,
            "jitter": true,
            "budget": {"ratio": 0.2},
        })
    }
}

#[async_trait]
impl Control for SearchRetry {
    type Command = Value;
    type Output = Value;
    async fn control(&self, _: Value) -> Result<Value, ControlError> {
        Err(ControlError::Rejected {
            action: "command".into(),
            reason: "read only".into(),
        })
    }
}

impl Managed for SearchRetry {
    const KIND: ComponentKind = ComponentKind::Retry;
    fn name(&self) -> &str {
        "search-retry"
    }
}

fn card(name: &str) -> String {
    format!(r#"[data-kind="fault_injector"][data-name="{name}"]"#)
}

/// A script returning `[badge value, remaining ms, remaining text, enabled by, fault]` of
/// the `github` card (null before the card exists).
fn github_card_script() -> String {
    format!(
        "const c = document.querySelector('#sections {}'); if (!c) return null; \
         const f = n => {{ const e = c.querySelector('[data-field=\"' + n + '\"]'); return e ? e.textContent : null; }}; \
         const left = c.querySelector('[data-field=\"remaining_ttl\"] span'); \
         return [c.querySelector('[data-field=\"enabled\"]').dataset.value, \
                 left && left.dataset.ms ? Number(left.dataset.ms) : null, f('remaining_ttl'), \
                 f('enabled_by'), f('fault')];",
        card("github")
    )
}

/// Polls `done` on the Rust side until it holds (the page acts asynchronously).
async fn until(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Clears an input and types `text` into it.
async fn fill(browser: &Browser, selector: &str, text: &str) {
    browser
        .execute(&format!(
            "document.querySelector('{}').value = ''; return true;",
            selector.replace('\'', "\\'")
        ))
        .await;
    let input = browser.find(selector).await;
    browser.type_text(&input, text).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_switches_fault_injection_on_and_off() {
    let started = Instant::now();
    let registry = Registry::new();
    let github = FaultInjector::builder("github")
        .allow(true)
        .registry(&registry)
        .build()
        .unwrap();
    let _locked = FaultInjector::builder("locked")
        .registry(&registry)
        .build()
        .unwrap();
    registry.register(Arc::new(SearchRetry)).unwrap();
    let server = AdminRouter::builder(&registry)
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());

    let browser = Browser::start().await;
    browser
        .goto(&format!("{base}/admin/dashboard#token={TOKEN}"))
        .await;
    let github_card = github_card_script();
    let shown = browser
        .wait_for("the github card, off", &github_card, |v| v[0] == "off")
        .await;
    assert_eq!(shown[1], Value::Null, "no time left while off: {shown}");

    // Sections: fault injection and retries (registered), none for hedges nobody registered.
    let sections = browser
        .execute(
            "return ['fault_injector', 'retry', 'hedge', 'timeout', 'fallback', 'circuit_breaker']\
             .map(k => !document.querySelector('#sections [data-section=\"' + k + '\"]').hidden);",
        )
        .await;
    assert_eq!(sections, json!([true, true, false, false, false, true]));

    // The retry policy's card: its plain fields, as text; nested objects left out.
    let retry = browser
        .wait_for(
            "the generic retry card",
            "const c = document.querySelector('#sections [data-kind=\"retry\"][data-name=\"search-retry\"]'); \
             if (!c) return null; \
             const f = n => { const e = c.querySelector('[data-field=\"' + n + '\"]'); return e ? e.textContent : null; }; \
             return [c.querySelector('[data-field=\"state\"]').textContent, f('max_attempts'), f('retries_total'), \
                     f('backoff_ms'), f('jitter'), f('budget'), f('name')];",
            |v| v.is_array(),
        )
        .await;
    assert_eq!(
        retry,
        json!(["ready", "3", "12", "1.5 s", "yes", null, null])
    );

    // The locked injector cannot be switched on from the page.
    let locked = browser
        .wait_for(
            "the locked card",
            &format!(
                "const c = document.querySelector('#sections {}'); return c ? \
                 [c.querySelector('button[data-action=\"enable\"]').disabled, \
                  c.querySelector('[data-field=\"allowed\"]').textContent] : null;",
                card("locked")
            ),
            |v| v.is_array(),
        )
        .await;
    assert_eq!(locked[0], true);
    assert!(
        locked[1].as_str().unwrap().contains("enabled_in_config"),
        "{locked}"
    );

    // Who is acting, for the audit trail.
    browser
        .execute(
            "const a = document.getElementById('actor'); a.value = 'alice'; \
             a.dispatchEvent(new Event('change')); return true;",
        )
        .await;

    // A rate out of range: refused, the banner names the field, nothing changes.
    let github_sel = format!("#sections {}", card("github"));
    fill(
        &browser,
        &format!(r#"{github_sel} input[data-input="rate"]"#),
        "1.5",
    )
    .await;
    fill(
        &browser,
        &format!(r#"{github_sel} input[data-input="ttl"]"#),
        "5m",
    )
    .await;
    let enable = browser
        .find(&format!(r#"{github_sel} button[data-action="enable"]"#))
        .await;
    browser.click(&enable).await;
    let banner = browser
        .wait_for(
            "the error banner",
            "const b = document.getElementById('banner'); return b.hidden ? null : b.textContent;",
            |v| v.is_string(),
        )
        .await;
    let banner = banner.as_str().unwrap();
    assert!(
        banner.contains("rate") && banner.contains("HTTP 422"),
        "{banner}"
    );
    assert!(!github.is_enabled());

    // Latency at half the calls for five minutes, with the card's controls.
    let latency = browser
        .find(&format!(
            r#"{github_sel} select[data-input="mode"] option[value="latency"]"#
        ))
        .await;
    browser.click(&latency).await;
    fill(
        &browser,
        &format!(r#"{github_sel} input[data-input="latency_ms"]"#),
        "200",
    )
    .await;
    fill(
        &browser,
        &format!(r#"{github_sel} input[data-input="rate"]"#),
        "0.5",
    )
    .await;
    browser.click(&enable).await;
    until("the injector to be switched on", || github.is_enabled()).await;
    let snap = github.snapshot();
    assert_eq!(snap.mode, Some(FaultMode::Latency));
    assert_eq!(
        (snap.rate, snap.latency_ms, snap.ttl_ms),
        (Some(0.5), Some(200), Some(300_000))
    );
    let by = snap.enabled_by.clone().unwrap_or_default();
    assert!(by.starts_with("alice from 127.0.0.1:"), "{by}");

    // The card: on, who, what, and the time left counting down.
    let shown = browser
        .wait_for("the github card, on", &github_card, |v| v[0] == "on")
        .await;
    let first_left = shown[1].as_f64().unwrap();
    assert!((290_000.0..=300_000.0).contains(&first_left), "{shown}");
    assert!(shown[2].as_str().unwrap().contains("min"), "{shown}");
    assert!(shown[3].as_str().unwrap().contains("alice"), "{shown}");
    assert_eq!(shown[4], "latency 200 ms at 50 % of calls");
    browser
        .wait_for("the time left to count down", &github_card, |v| {
            v[1].as_f64().is_some_and(|left| left < first_left - 500.0)
        })
        .await;

    // Switched on for two seconds: it switches itself off, and the card follows.
    let error = browser
        .find(&format!(
            r#"{github_sel} select[data-input="mode"] option[value="error"]"#
        ))
        .await;
    browser.click(&error).await;
    fill(
        &browser,
        &format!(r#"{github_sel} input[data-input="ttl"]"#),
        "2s",
    )
    .await;
    browser.click(&enable).await;
    until("the error injection", || {
        github.snapshot().mode == Some(FaultMode::Error)
    })
    .await;
    browser
        .wait_for("the card to show the error injection", &github_card, |v| {
            v[4].as_str().is_some_and(|f| f.starts_with("error"))
        })
        .await;
    browser
        .wait_for("the card to show it off after its ttl", &github_card, |v| {
            v[0] == "off"
        })
        .await;
    assert!(!github.snapshot().enabled);

    // On again, then off with the Disable button.
    fill(
        &browser,
        &format!(r#"{github_sel} input[data-input="ttl"]"#),
        "10m",
    )
    .await;
    browser.click(&enable).await;
    browser
        .wait_for("the github card, on again", &github_card, |v| v[0] == "on")
        .await;
    assert!(github.is_enabled());
    let png = browser.screenshot_full_page().await;
    let disable = browser
        .find(&format!(r#"{github_sel} button[data-action="disable"]"#))
        .await;
    browser.click(&disable).await;
    until("the injector to be switched off", || !github.is_enabled()).await;
    browser
        .wait_for("the github card, off again", &github_card, |v| {
            v[0] == "off"
        })
        .await;
    let last = github.snapshot().last_transition.unwrap();
    assert_eq!(last.reason, "disabled");

    let path = artifacts_dir().join("dashboard-chaos.png");
    let partial = path.with_extension(format!("png.{}", std::process::id()));
    std::fs::write(&partial, &png)
        .and_then(|()| std::fs::rename(&partial, &path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);

    browser.close();
    server.shutdown().await.unwrap();
    eprintln!(
        "dashboard chaos browser test: total {:?}; screenshot {}",
        started.elapsed(),
        path.display()
    );
}
