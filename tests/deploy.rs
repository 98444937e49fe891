//! `deploy/`: the Prometheus alert rules parse, and every metric and label they and the Grafana
//! dashboard name is one the exporter actually emits (a registry holding one component of each
//! kind, exported exactly as the admin router's `/metrics` does).
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use palisade::breaker::CircuitBreaker;
use palisade::bulkhead::Bulkhead;
use palisade::chaos::{Fault, FaultInjector};
use palisade::core::Registry;
use palisade::dlq::{DeadLetterQueue, Failure, MemoryStore};
use palisade::health::{CheckConfig, CheckResult, HealthMonitor, check_fn};
use palisade::ratelimit::{KeyedRateLimiter, Quota};
use palisade::toolbox::hedge::Hedge;
use palisade::toolbox::retry::Retry;
use palisade::toolbox::{FailureKind, Fallback, Timeout};
use serde_json::Value;

/// Labels Prometheus adds when it scrapes (not emitted by the exporter).
const SCRAPE_LABELS: [&str; 2] = ["instance", "job"];

/// Metric name → the label names it is emitted with.
type Emitted = BTreeMap<String, BTreeSet<String>>;

/// The process's Prometheus recorder, installed once as the global one (as the gateway does):
/// counters incremented on the call path (breaker transitions) are kept as well as those the
/// components export when `/metrics` is read.
fn handle() -> &'static metrics_exporter_prometheus::PrometheusHandle {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .unwrap()
    })
}

/// One component of every kind, used a little, exported as the admin router's `/metrics`
/// does.
async fn emitted() -> Emitted {
    let handle = handle();
    let registry = Registry::new();
    let breaker = CircuitBreaker::builder("weather")
        .registry(&registry)
        .build()
        .unwrap();
    let _ = breaker.call(async { Err::<(), _>("503") }).await;
    breaker.force_open();
    breaker.reset();
    let _ = breaker.call(async { Ok::<_, ()>(()) }).await;
    Bulkhead::builder("web")
        .max_concurrent(4)
        .registry(&registry)
        .build()
        .unwrap();
    let limiter = KeyedRateLimiter::<String>::builder("mcp-clients")
        .quota(Quota::per_minute(60))
        .registry(&registry)
        .build()
        .unwrap();
    limiter.check_key("10.0.0.1").unwrap();
    let dlq = DeadLetterQueue::<Value>::builder("gateway-calls")
        .store(Arc::new(MemoryStore::new()))
        .registry(&registry)
        .build()
        .unwrap();
    dlq.push("forecast", &serde_json::json!({}), Failure::timeout("slow"))
        .await
        .unwrap();
    // Its gauges come from its last stats (its worker refreshes them while it runs).
    dlq.stats().await.unwrap();
    let monitor = HealthMonitor::builder()
        .registry(&registry)
        .build()
        .unwrap();
    monitor
        .add(
            "upstream",
            check_fn(|| async { CheckResult::healthy("ok") }),
        )
        .config(CheckConfig {
            interval: Duration::from_secs(3600),
            ..CheckConfig::default()
        })
        .start()
        .unwrap();
    monitor.check_all().await;
    Timeout::builder("weather")
        .registry(&registry)
        .build()
        .unwrap();
    let retry = Retry::builder("weather")
        .registry(&registry)
        .build()
        .unwrap();
    let _ = retry.call(|| async { Ok::<_, ()>(()) }).await;
    Hedge::builder("search")
        .registry(&registry)
        .build()
        .unwrap();
    Fallback::<String, String>::builder("forecast")
        .classify(|_| FailureKind::Timeout)
        .value(FailureKind::Timeout, "cached".into())
        .registry(&registry)
        .build()
        .unwrap();
    let faults = FaultInjector::builder("weather")
        .allow(true)
        .registry(&registry)
        .build()
        .unwrap();
    faults
        .enable(Fault::error(), 0.0, Duration::from_secs(60))
        .unwrap();

    registry.export_metrics();
    parse_exposition(&handle.render())
}

/// Metric names and their label names from Prometheus text.
fn parse_exposition(text: &str) -> Emitted {
    let mut out = Emitted::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
    {
        let end = line.find(['{', ' ']).unwrap_or(line.len());
        let name = &line[..end];
        let labels = out.entry(name.to_owned()).or_default();
        if line[end..].starts_with('{') {
            let inner = &line[end + 1..line.find('}').unwrap()];
            for pair in inner.split("\",") {
                if let Some((k, _)) = pair.split_once('=') {
                    labels.insert(k.trim().to_owned());
                }
            }
        }
    }
    out
}

/// The `palisade_*` metric names in a PromQL expression.
fn metrics_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = expr;
    while let Some(i) = rest.find("palisade_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    out
}

/// The label names a PromQL expression uses: in `by (…)` / `without (…)` and in `{…}`
/// selectors.
fn labels_in(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for keyword in ["by (", "without ("] {
        for part in expr.split(keyword).skip(1) {
            let list = part.split(')').next().unwrap_or_default();
            out.extend(list.split(',').map(|l| l.trim().to_owned()));
        }
    }
    for part in expr.split('{').skip(1) {
        let selector = part.split('}').next().unwrap_or_default();
        for matcher in selector.split(',') {
            let key = matcher.split(['=', '!']).next().unwrap_or_default().trim();
            // `{{ $labels.x }}` templates are not selectors.
            if !key.is_empty() && !key.starts_with('$') && !key.contains(' ') {
                out.insert(key.to_owned());
            }
        }
    }
    out.retain(|l| !l.is_empty());
    out
}

/// Checks that `expr` names only emitted metrics, and only labels one of them carries (or a
/// scrape label); returns its metrics.
fn check_expr(emitted: &Emitted, what: &str, expr: &str) -> BTreeSet<String> {
    let metrics = metrics_in(expr);
    assert!(
        !metrics.is_empty(),
        "{what}: no palisade_* metric in {expr:?}"
    );
    for m in &metrics {
        assert!(
            emitted.contains_key(m),
            "{what}: metric {m} is not emitted; the exporter emits: {:?}",
            emitted.keys().collect::<Vec<_>>()
        );
    }
    let known: BTreeSet<&str> = metrics
        .iter()
        .flat_map(|m| emitted[m].iter().map(String::as_str))
        .chain(SCRAPE_LABELS)
        .collect();
    for label in labels_in(expr) {
        assert!(
            known.contains(label.as_str()),
            "{what}: label {label:?} is not on {metrics:?} (they carry {known:?})"
        );
    }
    metrics
}

#[tokio::test]
async fn alert_rules_parse_and_name_only_emitted_metrics_and_labels() {
    let emitted = emitted().await;
    let text = std::fs::read_to_string("deploy/prometheus/alerts.yml").unwrap();
    let doc: Value = yaml_serde::from_str(&text).expect("alerts.yml is valid YAML");
    let groups = doc["groups"].as_array().expect("a `groups` list");
    let mut alerts = BTreeSet::new();
    let mut covered = BTreeSet::new();
    for group in groups {
        assert!(group["name"].is_string(), "a group without a name");
        for rule in group["rules"].as_array().expect("a `rules` list") {
            let name = rule["alert"].as_str().expect("every rule is an alert");
            assert!(alerts.insert(name.to_owned()), "{name} twice");
            let expr = rule["expr"].as_str().expect("an expr");
            covered.extend(check_expr(&emitted, name, expr));
            let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
            assert!(
                ["info", "warning", "critical"].contains(&severity),
                "{name}: severity {severity:?}"
            );
            assert!(rule["for"].is_string(), "{name}: no `for`");
            let summary = rule["annotations"]["summary"].as_str().unwrap_or_default();
            assert!(!summary.is_empty(), "{name}: no summary");
            // Annotations use labels the expression keeps.
            let kept = labels_in(expr);
            for text in [
                summary,
                rule["annotations"]["description"].as_str().unwrap_or(""),
            ] {
                for part in text.split("$labels.").skip(1) {
                    let label: String = part
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    assert!(kept.contains(&label), "{name}: annotation uses {label}");
                }
            }
        }
    }
    // The alerts: breaker open for N minutes, crash loop, dead-letter depth and age,
    // rejection ratio.
    for expected in [
        "PalisadeBreakerOpen",
        "PalisadeCrashLoop",
        "PalisadeDeadLettersPiling",
        "PalisadeDeadLetterOld",
        "PalisadeRejectionRatio",
    ] {
        assert!(alerts.contains(expected), "missing alert {expected}");
    }
    for metric in [
        "palisade_circuit_breaker_state",
        "palisade_health_crash_loop",
        "palisade_dlq_entries",
        "palisade_dlq_oldest_entry_age_seconds",
        "palisade_rate_limiter_rejected_total",
    ] {
        assert!(covered.contains(metric), "no alert reads {metric}");
    }
}

#[tokio::test]
async fn the_grafana_dashboard_names_only_emitted_metrics_and_labels() {
    let emitted = emitted().await;
    let text = std::fs::read_to_string("deploy/grafana/palisade.json").unwrap();
    let dashboard: Value = serde_json::from_str(&text).expect("palisade.json is JSON");
    assert_eq!(dashboard["uid"], "palisade-overview");
    let panels = dashboard["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut covered = BTreeSet::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or_default();
        assert!(
            ids.insert(panel["id"].as_u64().unwrap()),
            "{title}: duplicate id"
        );
        assert!(panel["gridPos"]["w"].as_u64().unwrap() <= 24, "{title}");
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{title}");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            let expr = target["expr"].as_str().expect("an expr");
            covered.extend(check_expr(&emitted, title, expr));
        }
    }
    for var in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(query) = var["definition"].as_str() {
            check_expr(&emitted, "templating", query);
        }
    }
    // Every kind of component has a panel.
    for prefix in [
        "palisade_circuit_breaker_",
        "palisade_bulkhead_",
        "palisade_rate_limiter_",
        "palisade_dlq_",
        "palisade_health_",
        "palisade_retry_",
        "palisade_timeout_",
        "palisade_fault_injector_",
    ] {
        assert!(
            covered.iter().any(|m| m.starts_with(prefix)),
            "no panel reads {prefix}*"
        );
    }
}

#[test]
fn the_checks_catch_a_metric_or_label_that_is_not_emitted() {
    let emitted = parse_exposition(
        "# TYPE palisade_x_total counter\npalisade_x_total{name=\"a\",state=\"b\"} 1\n",
    );
    assert_eq!(
        emitted["palisade_x_total"],
        BTreeSet::from(["name".to_owned(), "state".to_owned()])
    );
    let bad_metric = std::panic::catch_unwind(|| {
        check_expr(&emitted, "t", "rate(palisade_y_total[5m])");
    });
    assert!(bad_metric.is_err());
    let bad_label = std::panic::catch_unwind(|| {
        check_expr(&emitted, "t", "sum by (queue) (palisade_x_total)");
    });
    assert!(bad_label.is_err());
    check_expr(
        &emitted,
        "t",
        "sum by (instance, name) (palisade_x_total{state=~\"b|c\"})",
    );
}
