//! Named partitions are isolated pools in one registry; their figures reach `metrics`; bad
//! configs name the field.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_bulkhead::{Bulkhead, BulkheadConfig};
use palisade_core::{ComponentKind, Managed, Registry, metrics as names};

#[test]
fn partitions_are_isolated_and_listed() {
    let registry = Registry::new();
    let parts: Vec<Bulkhead> = [
        ("database", 2),
        ("cost", 1),
        ("infrastructure", 3),
        ("security", 1),
    ]
    .into_iter()
    .map(|(name, n)| {
        Bulkhead::builder(name)
            .max_concurrent(n)
            .registry(&registry)
            .build()
            .unwrap()
    })
    .collect();
    // Saturate `database`: the others are untouched.
    let _db: Vec<_> = (0..2).map(|_| parts[0].try_acquire().unwrap()).collect();
    assert!(parts[0].try_acquire().is_err());
    for other in &parts[1..] {
        let _p = other.try_acquire().unwrap();
    }
    assert_eq!(
        registry.list(ComponentKind::Bulkhead),
        vec!["cost", "database", "infrastructure", "security"]
    );
    let full: Vec<_> = registry
        .snapshot_all(Some(ComponentKind::Bulkhead))
        .into_iter()
        .filter(|c| c.snapshot["active"] == c.snapshot["max_concurrent"])
        .map(|c| c.name)
        .collect();
    assert_eq!(full, vec!["database"]);
}

#[test]
fn invalid_configs_name_the_field() {
    let field = |cfg: BulkheadConfig| {
        Bulkhead::builder("x")
            .config(cfg)
            .build()
            .unwrap_err()
            .to_string()
    };
    assert!(
        field(BulkheadConfig {
            max_concurrent: 0,
            ..Default::default()
        })
        .contains("`max_concurrent`")
    );
    assert!(
        field(BulkheadConfig {
            max_wait: Duration::from_secs(7200),
            ..Default::default()
        })
        .contains("`max_wait`")
    );
    let err = serde_json::from_str::<BulkheadConfig>(r#"{"max_concurent": 3}"#).unwrap_err();
    assert!(err.to_string().contains("max_concurent"), "{err}");
}

#[test]
fn figures_reach_the_metrics_recorder() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let b = Bulkhead::builder("database")
            .max_concurrent(1)
            .build()
            .unwrap();
        let _held = b.try_acquire().unwrap();
        assert!(b.try_acquire().is_err());
        assert!(b.try_acquire().is_err());
        b.export_metrics();
    });
    let snap = snapshotter.snapshot().into_vec();
    let value = |name: &str| {
        snap.iter().find_map(|(k, _, _, v)| {
            let key = k.key();
            (key.name() == name
                && key
                    .labels()
                    .any(|l| l.key() == "name" && l.value() == "database"))
            .then_some(match v {
                DebugValue::Counter(n) => *n as f64,
                DebugValue::Gauge(g) => g.0,
                DebugValue::Histogram(_) => f64::NAN,
            })
        })
    };
    assert_eq!(value(names::BULKHEAD_ACTIVE), Some(1.0));
    assert_eq!(value(names::BULKHEAD_MAX_CONCURRENT), Some(1.0));
    assert_eq!(value(names::BULKHEAD_WAITING), Some(0.0));
    assert_eq!(value(names::BULKHEAD_REJECTED_TOTAL), Some(2.0));
    assert_eq!(value(names::BULKHEAD_TIMEOUTS_TOTAL), Some(0.0));
}

#[tokio::test]
async fn update_config_changes_only_the_named_fields() {
    let registry = Registry::new();
    let b = Bulkhead::builder("search")
        .max_concurrent(4)
        .max_wait(Duration::from_millis(100))
        .registry(&registry)
        .build()
        .unwrap();
    let update = |config: serde_json::Value| {
        registry.control(
            ComponentKind::Bulkhead,
            "search",
            serde_json::json!({"action": "update_config", "config": config}),
        )
    };
    let snap = update(serde_json::json!({"max_wait": "250ms"}))
        .await
        .unwrap();
    assert_eq!(
        (
            snap["max_wait_ms"].as_u64(),
            snap["max_concurrent"].as_u64()
        ),
        (Some(250), Some(4))
    );
    assert_eq!(b.max_concurrent(), 4, "the limit is kept");

    let err = update(serde_json::json!({"max_concurrent": 0}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_concurrent"), "{err}");
    let err = update(serde_json::json!({"max_concurent": 8}))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_concurent"), "{err}");
    assert_eq!(
        (b.max_concurrent(), b.config().max_wait),
        (4, Duration::from_millis(250))
    );
}
