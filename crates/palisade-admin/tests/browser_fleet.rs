//! The dashboard's fleet mode in a real browser: headless Chromium driven through chromedriver
//! (see `browser.rs`), against a real fleet of two instances over the shared Redis
//! (`REDIS_URL`, default `redis://127.0.0.1:6379`; the test fails when it does not answer).
//!
//! Instance `gw-a` serves the admin router with the fleet's routes; the page must offer the
//! fleet switch, list both instances, show the breaker as the fleet sees it (worst state and
//! one row per instance), send its force-open to the whole fleet as a persisted command, show
//! both instances' answers, list the stored override and clear it. Without a fleet the switch
//! stays hidden. A screenshot is saved to `target/test-artifacts/dashboard-fleet.png`.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

mod webdriver;

use std::time::{Duration, Instant};

use palisade_admin::AdminRouter;
use palisade_breaker::CircuitBreaker;
use palisade_core::Registry;
use palisade_fleet::{Fleet, FleetConfig, fleet_router};
use palisade_testkit::{shared_redis, unique};
use serde_json::{Value, json};
use webdriver::{Browser, artifacts_dir};

const TOKEN: &str = "fleet-test-token-0123456789abcdef";

/// A version that is markup: the instance list must show it as text, never run it.
const MARKUP: &str = r#"<img src="x" onerror="window.__xss = 1">"#;

/// The fleet view's card of the `github` breaker.
const FLEET_CARD: &str =
    r#"#fleet-view article[data-scope="fleet"][data-kind="circuit_breaker"][data-name="github"]"#;

/// The override row of the `github` breaker.
const OVERRIDE_ROW: &str = r#"#fleet-overrides [data-override="circuit_breaker/github"]"#;

/// One instance of the fleet: its registry, its `github` breaker and its membership.
struct Member {
    registry: Registry,
    breaker: CircuitBreaker,
    fleet: Fleet,
}

async fn member(redis: &str, fleet: &str, id: &str, version: &str) -> Member {
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("github")
        .registry(&registry)
        .build()
        .unwrap();
    // A queue every instance has (in production: one shared store).
    palisade_dlq::DeadLetterQueue::<serde_json::Value>::builder("letters")
        .store(std::sync::Arc::new(palisade_dlq::MemoryStore::new()))
        .registry(&registry)
        .build()
        .unwrap();
    let config = FleetConfig {
        version: version.into(),
        addresses: vec![format!("http://{id}.internal:8080")],
        heartbeat: Duration::from_millis(200),
        ttl: Duration::from_secs(2),
        ..FleetConfig::new(fleet, id)
    };
    let fleet = Fleet::join(redis, config, &registry).await.unwrap();
    Member {
        registry,
        breaker,
        fleet,
    }
}

/// A script returning the fleet card's rows, `<instance>=<state>` (null before the card).
fn fleet_rows_script() -> String {
    format!(
        "const c = document.querySelector('{FLEET_CARD}'); \
         return c ? Array.from(c.querySelectorAll('tr[data-instance]'))\
         .map(r => r.dataset.instance + '=' + r.dataset.state) : null;"
    )
}

fn is_array_of(v: &Value, expected: &[&str]) -> bool {
    v.as_array()
        .is_some_and(|a| a.len() == expected.len() && a.iter().zip(expected).all(|(x, e)| x == *e))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_fleet_mode_forces_open_on_every_instance_and_clears_the_override() {
    let started = Instant::now();
    let (redis, _conn) = shared_redis().await; // panics, loudly, without Redis
    let name = unique("dashboard-fleet");
    let a = member(&redis, &name, "gw-a", "1.4.2").await;
    let b = member(&redis, &name, "gw-b", MARKUP).await;
    let live: Vec<String> = a
        .fleet
        .instances()
        .await
        .unwrap()
        .into_iter()
        .map(|i| i.id)
        .collect();
    assert_eq!(live, ["gw-a", "gw-b"], "both instances registered in Redis");

    let server = AdminRouter::builder(&a.registry)
        .token(TOKEN)
        .extension(fleet_router(a.fleet.clone()))
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let base = format!("http://{}", server.local_addr());
    // Without a fleet: the same page, no switch.
    let plain_registry = Registry::new();
    let _plain_breaker = CircuitBreaker::builder("github")
        .registry(&plain_registry)
        .build()
        .unwrap();
    let plain = AdminRouter::builder(&plain_registry)
        .token(TOKEN)
        .serve("127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    let browser = Browser::start().await;
    browser
        .goto(&format!("{base}/admin/dashboard#token={TOKEN}"))
        .await;

    // The probe found the fleet: the switch shows, the page is still in instance mode.
    browser
        .wait_for(
            "the fleet switch with 2 instances",
            "const m = document.getElementById('mode'); \
             return m.hidden ? null : document.getElementById('mode-fleet').textContent;",
            |v| v == "Fleet (2 instances)",
        )
        .await;
    let before = browser
        .execute(
            "return [document.body.dataset.mode, document.getElementById('fleet-view').hidden, \
             document.querySelector('#sections article[data-kind=\"circuit_breaker\"]\
             [data-name=\"github\"]') !== null];",
        )
        .await;
    assert_eq!(before, json!(["instance", true, true]));

    // Fleet mode: both instances listed, the version shown as text.
    let switch = browser.find("#mode-fleet").await;
    browser.click(&switch).await;
    let instances = browser
        .wait_for(
            "both instances in the instance list",
            "return Array.from(document.querySelectorAll('#fleet-instances tbody tr[data-instance]'))\
             .map(r => [r.dataset.instance, r.querySelector('[data-field=\"version\"]').textContent, \
             r.querySelector('[data-field=\"started\"]').textContent, \
             r.querySelector('[data-field=\"last_seen\"]').textContent]);",
            |v| v.as_array().is_some_and(|a| a.len() == 2),
        )
        .await;
    assert_eq!(instances[0][0], "gw-a");
    assert_eq!(instances[0][1], "1.4.2");
    assert_eq!(instances[1][0], "gw-b");
    assert_eq!(instances[1][1], MARKUP, "the version is shown as text");
    for row in instances.as_array().unwrap() {
        let (started_ago, seen) = (row[2].as_str().unwrap(), row[3].as_str().unwrap());
        assert!(started_ago.ends_with(" ago"), "started: {started_ago}");
        let seconds = seen
            .strip_suffix(" s ago")
            .and_then(|s| s.parse::<u64>().ok());
        assert!(seconds.is_some_and(|s| s < 60), "last seen: {seen}");
    }
    let view = browser
        .execute(
            "return [document.body.dataset.mode, document.getElementById('sections').hidden, \
             window.__xss === undefined, \
             document.querySelector('#fleet-instances img') === null, \
             document.getElementById('fleet-count').textContent];",
        )
        .await;
    assert_eq!(view, json!(["fleet", true, true, true, "2 instances"]));

    // The breaker as the fleet sees it: worst state, one row per instance.
    let rows = fleet_rows_script();
    browser
        .wait_for("the fleet card with both instances closed", &rows, |v| {
            is_array_of(v, &["gw-a=closed", "gw-b=closed"])
        })
        .await;
    let worst = browser
        .execute(&format!(
            "return document.querySelector('{FLEET_CARD} [data-field=\"worst\"]').dataset.value;"
        ))
        .await;
    assert_eq!(worst, "closed");
    // A queue's card in fleet mode sends nothing to the fleet: its buttons are hidden, and
    // a note says to act once, from the instance view.
    let dlq = browser
        .wait_for(
            "the queue's fleet card",
            "const c = document.querySelector('#fleet-view article[data-kind=\"dead_letter_queue\"]'); \
             return c ? [c.querySelector('[data-field=\"dlq-note\"]') !== null, \
             c.querySelector('.controls').offsetParent === null] : null;",
            |v| v.is_array(),
        )
        .await;
    assert_eq!(dlq, json!([true, true]));
    let overrides = browser
        .execute("return document.querySelectorAll('#fleet-overrides [data-override]').length;")
        .await;
    assert_eq!(overrides, 0, "no override yet");

    // Force open, persisted, from the card: both instances apply it.
    let persist = browser
        .find(&format!(r#"{FLEET_CARD} input[data-input="persist"]"#))
        .await;
    browser.click(&persist).await;
    let checked = browser
        .execute(&format!(
            "return document.querySelector('{FLEET_CARD} input[data-input=\"persist\"]').checked;"
        ))
        .await;
    assert_eq!(checked, true);
    let force = browser
        .find(&format!(r#"{FLEET_CARD} button[data-action="force_open"]"#))
        .await;
    browser.click(&force).await;
    let answer = browser
        .wait_for(
            "the fleet's answer on the card",
            &format!(
                "const e = document.querySelector('{FLEET_CARD} [data-field=\"answers\"]'); \
                 return e.dataset.outcome === 'pending' || !e.dataset.outcome ? null : \
                 [e.dataset.outcome, e.textContent];"
            ),
            |v| v.is_array(),
        )
        .await;
    assert_eq!(
        answer,
        json!(["ok", "force open (persisted): 2 applied"]),
        "both instances applied it"
    );
    assert_eq!(a.breaker.state().as_str(), "forced_open");
    assert_eq!(b.breaker.state().as_str(), "forced_open");

    // The heartbeats carry the new state to the fleet view.
    browser
        .wait_for(
            "the fleet card with both instances forced open",
            &rows,
            |v| is_array_of(v, &["gw-a=forced_open", "gw-b=forced_open"]),
        )
        .await;
    let worst = browser
        .execute(&format!(
            "const c = document.querySelector('{FLEET_CARD}'); \
             return [c.querySelector('[data-field=\"worst\"]').dataset.value, c.dataset.alert];"
        ))
        .await;
    assert_eq!(worst, json!(["forced_open", "bad"]));

    // The override is listed, in the panel and in Redis.
    let listed = browser
        .wait_for(
            "the override in the overrides panel",
            &format!(
                "const li = document.querySelector('{OVERRIDE_ROW}'); \
                 return li ? li.textContent : null;"
            ),
            Value::is_string,
        )
        .await;
    let listed = listed.as_str().unwrap();
    assert!(
        listed.contains("github") && listed.contains(r#"{"action":"force_open"}"#),
        "{listed}"
    );
    let stored = a.fleet.overrides().await.unwrap();
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!(
        (stored[0].name.as_str(), stored[0].slot.as_str()),
        ("github", "state")
    );
    assert_eq!(stored[0].command, json!({"action": "force_open"}));

    let png = browser.screenshot_full_page().await;
    let path = artifacts_dir().join("dashboard-fleet.png");
    let partial = path.with_extension(format!("png.{}", std::process::id()));
    std::fs::write(&partial, &png)
        .and_then(|()| std::fs::rename(&partial, &path))
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n") && png.len() > 10_000,
        "not a PNG screenshot ({} bytes)",
        png.len()
    );

    // Clear it with its button: gone from the panel and from Redis; the running instances
    // keep their state.
    let clear = browser
        .find(&format!(
            r#"{OVERRIDE_ROW} button[data-action="clear_override"]"#
        ))
        .await;
    browser.click(&clear).await;
    browser
        .wait_for(
            "the overrides panel to be empty",
            "return [document.querySelectorAll('#fleet-overrides [data-override]').length, \
             document.getElementById('overrides-clear-all').disabled];",
            |v| *v == json!([0, true]),
        )
        .await;
    assert_eq!(a.fleet.overrides().await.unwrap(), []);
    assert_eq!(a.breaker.state().as_str(), "forced_open");
    assert_eq!(b.breaker.state().as_str(), "forced_open");
    let banner = browser
        .execute("return document.getElementById('banner').hidden;")
        .await;
    assert_eq!(banner, true, "no error shown");

    // Back to this instance: its own card shows what the fleet command did.
    let back = browser.find("#mode-instance").await;
    browser.click(&back).await;
    browser
        .wait_for(
            "the instance view with the breaker forced open",
            "const e = document.querySelector('#sections [data-kind=\"circuit_breaker\"]\
             [data-name=\"github\"] [data-field=\"state\"]'); \
             return document.body.dataset.mode === 'instance' && \
             !document.getElementById('sections').hidden && \
             document.getElementById('fleet-view').hidden && e ? e.dataset.value : null;",
            |v| v == "forced_open",
        )
        .await;

    // A dashboard without a fleet: the probe gets 404 and the switch stays hidden.
    browser
        .goto(&format!(
            "http://{}/admin/dashboard#token={TOKEN}",
            plain.local_addr()
        ))
        .await;
    let absent = browser
        .wait_for(
            "the fleet probe to find no fleet",
            "return document.body.dataset.fleet === 'absent' ? \
             [document.body.dataset.mode, getComputedStyle(document.getElementById('mode')).display, \
             document.getElementById('fleet-view').hidden, \
             document.getElementById('banner').hidden] : null;",
            Value::is_array,
        )
        .await;
    assert_eq!(absent, json!(["instance", "none", true, true]));

    browser.close();
    server.shutdown().await.unwrap();
    plain.shutdown().await.unwrap();
    a.fleet.leave().await.unwrap();
    b.fleet.leave().await.unwrap();
    assert_eq!(a.fleet.instances().await.unwrap(), []);
    eprintln!(
        "dashboard fleet browser test: fleet {name}, total {:?}; screenshot {}",
        started.elapsed(),
        path.display()
    );
}
