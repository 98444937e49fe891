//! Transitions and counters reach the `metrics` recorder under the documented names.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use palisade_breaker::CircuitBreaker;
use palisade_core::{Managed, ManualClock, metrics as names};

fn value(
    snapshot: &[(
        metrics_util::CompositeKey,
        Option<metrics::Unit>,
        Option<metrics::SharedString>,
        DebugValue,
    )],
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    snapshot.iter().find_map(|(k, _, _, v)| {
        let key = k.key();
        let matches = key.name() == name
            && labels
                .iter()
                .all(|(lk, lv)| key.labels().any(|l| l.key() == *lk && l.value() == *lv));
        matches.then_some(match v {
            DebugValue::Counter(n) => *n as f64,
            DebugValue::Gauge(g) => g.0,
            DebugValue::Histogram(_) => f64::NAN,
        })
    })
}

#[test]
fn state_gauge_transitions_and_call_counters_are_exported() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let clock = ManualClock::new();
        let cb = CircuitBreaker::builder("github")
            .consecutive_failures(2)
            .wait_duration(Duration::from_secs(1))
            .clock(clock.shared())
            .build()
            .unwrap();
        cb.try_acquire().unwrap().success();
        cb.try_acquire().unwrap().failure();
        cb.try_acquire().unwrap().failure();
        assert!(cb.try_acquire().is_err());
        cb.export_metrics();
    });
    let snap = snapshotter.snapshot().into_vec();
    let gauge = |state| {
        value(
            &snap,
            names::BREAKER_STATE,
            &[("name", "github"), ("state", state)],
        )
    };
    assert_eq!(gauge("open"), Some(1.0));
    assert_eq!(gauge("closed"), Some(0.0));
    assert_eq!(
        value(
            &snap,
            names::BREAKER_TRANSITIONS_TOTAL,
            &[("from", "closed"), ("to", "open")]
        ),
        Some(1.0)
    );
    assert_eq!(
        value(
            &snap,
            names::BREAKER_CALLS_TOTAL,
            &[("name", "github"), ("outcome", "failure")]
        ),
        Some(2.0)
    );
    assert_eq!(
        value(&snap, names::BREAKER_CALLS_TOTAL, &[("outcome", "success")]),
        Some(1.0)
    );
    assert_eq!(
        value(
            &snap,
            names::BREAKER_NOT_PERMITTED_TOTAL,
            &[("name", "github")]
        ),
        Some(1.0)
    );
}
