//! The dashboard's history charts in a real browser: headless Chromium driven through
//! chromedriver (see `browser.rs`). After traffic through a breaker, a timeout, a bulkhead and
//! a dead-letter queue (samples taken explicitly, on a manual clock), every card draws inline
//! SVG charts with data points; after a breaker cycle (closed → open → half-open → closed, on
//! the breaker's own manual clock) its state timeline shows the four runs and three transition
//! markers. In fleet mode the page charts the fleet's totals from its own polls (here of a
//! stand-in fleet router, so no Redis is needed). Screenshots are saved to
//! `target/test-artifacts/dashboard-history.png` and `dashboard-history-fleet.png`.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod webdriver;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::routing::get;
use palisade_admin::{AdminRouter, History};
use palisade_breaker::{CircuitBreaker, State};
use palisade_bulkhead::Bulkhead;
use palisade_core::{ManualClock, Registry};
use palisade_dlq::{DeadLetterQueue, Failure, MemoryStore};
use palisade_toolbox::Timeout;
use serde_json::{Value, json};
use webdriver::{Browser, artifacts_dir};

const TOKEN: &str = "history-test-token-0123456789abcdef";

fn card(kind: &str, name: &str) -> String {
    format!(r#"#sections [data-kind="{kind}"][data-name="{name}"]"#)
}

/// A script returning, for the chart `chart` in `card_selector`, `[data-points, data-series
/// or data-states, polyline or rect count, namespace]` (null before it exists).
fn chart_script(card_selector: &str, chart: &str) -> String {
    format!(
        "const s = document.querySelector('{card_selector} svg[data-chart=\"{chart}\"]'); \
         if (!s) return null; \
         return [Number(s.dataset.points), s.dataset.states || s.dataset.series, \
                 s.querySelectorAll('polyline, rect').length, s.namespaceURI];"
    )
}

fn save_png(png: &[u8], name: &str) -> std::path::PathBuf {
    let path = artifacts_dir().join(name);
    let partial = path.with_extension(format!("png.{}", std::process::id()));
    std::fs::write(&partial, png)
        .and_then(|()| std::fs::rename(&partial, &path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000);
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_draws_history_charts_and_a_breaker_cycle() {
    let registry = Registry::new();
    let breaker_clock = ManualClock::new();
    let breaker = CircuitBreaker::builder("github")
        .consecutive_failures(2)
        .wait_duration(Duration::from_secs(10))
        .half_open_max_calls(1)
        .clock(breaker_clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    let weather = Timeout::builder("weather")
        .deadline(Duration::from_millis(300))
        .registry(&registry)
        .build()
        .unwrap();
    let pool = Bulkhead::builder("pool")
        .max_concurrent(4)
        .registry(&registry)
        .build()
        .unwrap();
    let letters = DeadLetterQueue::<Value>::builder("letters")
        .store(Arc::new(MemoryStore::new()))
        .registry(&registry)
        .build()
        .unwrap();
    let clock = ManualClock::new();
    let history = History::builder(&registry)
        .clock(clock.shared())
        .sample_when_served(false)
        .build()
        .unwrap();
    let server = AdminRouter::builder(&registry)
        .token(TOKEN)
        .history(history.clone())
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    // One sample per (manual) second, taken when the test says.
    let sample = || async {
        history.sample().await;
        clock.advance(Duration::from_secs(1));
    };

    sample().await; // the baseline: gauges, no counts yet
    let browser = Browser::start().await;
    browser
        .goto(&format!("{base}/admin/dashboard#token={TOKEN}"))
        .await;

    // A second of traffic: calls through the breaker and the timeout (which wait a little, and
    // one runs out), a slot held, a dead letter.
    for _ in 0..4 {
        breaker.call(async { Ok::<_, &str>(()) }).await.unwrap();
    }
    for ms in [5, 10, 20] {
        weather
            .call(async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok::<_, ()>(())
            })
            .await
            .unwrap();
    }
    let late = weather.call(std::future::pending::<Result<(), ()>>()).await;
    assert!(late.unwrap_err().is_elapsed());
    let slot = pool.try_acquire().unwrap();
    letters
        .push("github.create_issue", &json!({}), Failure::timeout("30 s"))
        .await
        .unwrap();
    sample().await;

    // The charts render with data points.
    let github = card("circuit_breaker", "github");
    let calls = browser
        .wait_for(
            "the breaker's calls chart with 2 points",
            &chart_script(&github, "calls"),
            |v| v[0] == 2,
        )
        .await;
    assert_eq!(
        calls,
        json!([
            2,
            "calls,failures,refusals",
            3,
            "http://www.w3.org/2000/svg"
        ])
    );
    let latency = browser
        .wait_for(
            "the timeout's latency chart",
            &chart_script(&card("timeout", "weather"), "latency"),
            |v| v[0] == 2,
        )
        .await;
    assert_eq!(latency[1], "p50_ms,p99_ms");
    assert_eq!(latency[2], 2, "one p50 and one p99 line: {latency}");
    browser
        .wait_for(
            "the bulkhead's utilization chart",
            &chart_script(&card("bulkhead", "pool"), "utilization"),
            |v| v[0] == 2,
        )
        .await;
    let depth = browser
        .wait_for(
            "the queue's depth chart",
            &format!(
                "const s = document.querySelector('{} svg[data-chart=\"depth\"]'); \
                 return s ? [Number(s.dataset.points), s.getAttribute('aria-label')] : null;",
                card("dead_letter_queue", "letters")
            ),
            |v| v[0] == 2,
        )
        .await;
    assert!(
        depth[1]
            .as_str()
            .unwrap()
            .ends_with("entries: 2 points, latest 1"),
        "empty, then one entry: {depth}"
    );
    drop(slot);

    // A breaker cycle: two failures open it (a third call is refused), its wait passes
    // (half-open), a trial succeeds (closed).
    for _ in 0..2 {
        assert!(breaker.call(async { Err::<(), _>("boom") }).await.is_err());
    }
    assert!(breaker.call(async { Ok::<_, &str>(()) }).await.is_err());
    assert_eq!(breaker.state(), State::Open);
    sample().await;
    breaker_clock.advance(Duration::from_secs(11));
    assert_eq!(breaker.state(), State::HalfOpen);
    sample().await;
    breaker.call(async { Ok::<_, &str>(()) }).await.unwrap();
    assert_eq!(breaker.state(), State::Closed);
    sample().await;

    let timeline = browser
        .wait_for(
            "the state timeline to show the cycle",
            &format!(
                "const s = document.querySelector('{github} svg[data-chart=\"state-timeline\"]'); \
                 if (!s) return null; \
                 return [s.dataset.states, Number(s.dataset.points), Number(s.dataset.transitions), \
                         Array.from(s.querySelectorAll('line[data-marker]')).map(l => l.dataset.marker), \
                         Array.from(s.querySelectorAll('rect')).map(r => r.getAttribute('class'))];"
            ),
            |v| v[0] == "closed,open,half_open,closed",
        )
        .await;
    assert_eq!(
        timeline,
        json!([
            "closed,open,half_open,closed",
            5,
            3,
            ["closed>open", "open>half_open", "half_open>closed"],
            ["st-ok", "st-bad", "st-warn", "st-ok"]
        ])
    );
    // Errors in the seconds with calls: 0 % of 4, 100 % (2 of 2) as it opened, 0 % of the
    // trial; none while nothing ran.
    let errors = browser
        .wait_for(
            "the error chart",
            &format!(
                "const s = document.querySelector('{github} svg[data-chart=\"error-rate\"]'); \
                 return s ? [Number(s.dataset.points), s.getAttribute('aria-label')] : null;"
            ),
            |v| v[0] == 5,
        )
        .await;
    assert!(
        errors[1]
            .as_str()
            .unwrap()
            .ends_with("failed: 3 points, latest 0 %"),
        "{errors}"
    );
    let banner = browser
        .execute("return document.getElementById('banner').hidden;")
        .await;
    assert_eq!(banner, true, "no error shown");

    let png = browser.screenshot_full_page().await;
    let path = save_png(&png, "dashboard-history.png");
    browser.close();
    server.shutdown().await.unwrap();
    eprintln!("history charts screenshot: {}", path.display());
}

/// What the stand-in fleet answers at its `n`th poll: counters that grow by the same amount
/// at every poll, and a breaker that opens from the fourth.
fn fleet_resilience(n: u64) -> Value {
    let state = if n >= 4 { "open" } else { "closed" };
    let breaker = |ok: u64| json!({"state": state, "calls": {"successful": ok, "failed": n, "not_permitted": n, "ignored": 0, "slow": 0}});
    json!({
        "fleet": "demo",
        "instances": ["gw-a", "gw-b"],
        "components": [
            {"kind": "circuit_breaker", "name": "github", "worst": state,
             "totals": {"calls.successful": 20 * n, "calls.failed": 2 * n, "calls.not_permitted": 2 * n},
             "instances": {"gw-a": breaker(10 * n), "gw-b": breaker(10 * n)}},
            {"kind": "rate_limiter", "name": "per-client", "worst": null,
             "totals": {"permitted_total": 50 * n, "rejected_total": 4 * n},
             "instances": {"gw-a": {"backend": "memory", "permitted_total": 25 * n, "rejected_total": 2 * n}}},
        ],
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_fleet_mode_charts_the_fleet_totals_over_time() {
    let registry = Registry::new();
    let _github = CircuitBreaker::builder("github")
        .registry(&registry)
        .build()
        .unwrap();
    let polls = Arc::new(AtomicU64::new(0));
    let counter = polls.clone();
    let fleet = axum::Router::new()
        .route(
            "/admin/fleet",
            get(|| async {
                Json(json!({"fleet": "demo", "instance": "gw-a", "count": 2, "instances": [
                    {"id": "gw-a", "version": "1", "addresses": [], "started_at_ms": 0, "last_seen_ms": 0},
                    {"id": "gw-b", "version": "1", "addresses": [], "started_at_ms": 0, "last_seen_ms": 0},
                ]}))
            }),
        )
        .route(
            "/admin/fleet/resilience",
            get(move || {
                let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
                async move { Json(fleet_resilience(n)) }
            }),
        )
        .route(
            "/admin/fleet/overrides",
            get(|| async { Json(json!({"fleet": "demo", "count": 0, "overrides": []})) }),
        );
    let server = AdminRouter::builder(&registry)
        .token(TOKEN)
        .extension(fleet)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());

    let browser = Browser::start().await;
    browser
        .goto(&format!("{base}/admin/dashboard#token={TOKEN}"))
        .await;
    browser
        .wait_for(
            "the fleet switch",
            "return document.body.dataset.fleet;",
            |v| v == "present",
        )
        .await;
    let switch = browser.find("#mode-fleet").await;
    browser.click(&switch).await;

    // Every poll adds 24 breaker calls (4 failed), 4 refusals and 4 rate-limited requests:
    // the totals chart draws rates from the second poll on.
    let totals = browser
        .wait_for(
            "the fleet totals chart with 3 points",
            "const s = document.querySelector('#fleet-charts svg[data-chart=\"fleet-totals\"]'); \
             return s ? [Number(s.dataset.points), s.dataset.series, Number(s.dataset.max), \
                         s.querySelectorAll('polyline').length] : null;",
            |v| v[0].as_u64().is_some_and(|n| n >= 3),
        )
        .await;
    assert_eq!(totals[1], "calls,failures,refusals,limited");
    assert!(
        totals[2].as_f64().unwrap() > 1.0,
        "rates above zero: {totals}"
    );
    assert_eq!(totals[3], 4, "one line per series: {totals}");
    // The breaker's fleet card: its rates, and its worst state over time, opening.
    let fleet_card = r#"#fleet-view article[data-scope="fleet"][data-name="github"]"#;
    let calls = browser
        .wait_for(
            "the fleet card's calls chart",
            &chart_script(fleet_card, "calls"),
            |v| v[0].as_u64().is_some_and(|n| n >= 3),
        )
        .await;
    assert_eq!(calls[1], "calls,failures,refusals");
    let states = browser
        .wait_for(
            "the fleet card's timeline to show the breaker opening",
            &chart_script(fleet_card, "state-timeline"),
            |v| v[1] == "closed,open",
        )
        .await;
    assert!(polls.load(Ordering::SeqCst) >= 4, "{states}");

    let png = browser.screenshot_full_page().await;
    let path = save_png(&png, "dashboard-history-fleet.png");
    browser.close();
    server.shutdown().await.unwrap();
    eprintln!("fleet history screenshot: {}", path.display());
}
