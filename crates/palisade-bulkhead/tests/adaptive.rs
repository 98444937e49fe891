//! The adaptive limit on tokio's paused clock: overload backs off to the floor, used capacity
//! grows to the ceiling, idle capacity does not grow, and the mode switches at runtime.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::time::Duration;

use palisade_bulkhead::{AdaptiveConfig, Bulkhead, BulkheadConfig, CallError};
use palisade_core::{ComponentKind, ControlError, Registry};
use serde_json::json;

fn adaptive(limit: u32, min: u32, max: u32) -> Bulkhead {
    Bulkhead::builder("llm")
        .config(BulkheadConfig {
            max_concurrent: limit,
            adaptive: AdaptiveConfig {
                enabled: true,
                min_concurrent: min,
                max_concurrent: max,
                latency_threshold: Duration::from_millis(100),
                backoff_ratio: 0.5,
            },
            ..Default::default()
        })
        .build()
        .unwrap()
}

async fn call_taking(b: &Bulkhead, ms: u64, ok: bool) {
    let r = b
        .call(async move {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            if ok { Ok(()) } else { Err("upstream error") }
        })
        .await;
    assert!(!matches!(r, Err(CallError::Rejected(_))), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn slow_or_failed_calls_back_off_to_the_floor() {
    let b = adaptive(10, 2, 20);
    call_taking(&b, 150, true).await; // slow
    assert_eq!(b.max_concurrent(), 5);
    call_taking(&b, 10, false).await; // fast but failed
    assert_eq!(b.max_concurrent(), 2);
    call_taking(&b, 500, true).await;
    assert_eq!(b.max_concurrent(), 2, "went below the floor");
    let snap = b.snapshot();
    assert!(snap.adaptive);
    assert_eq!(snap.adaptive_adjustments_total, 2);
    assert_eq!(snap.config.max_concurrent, 2);
}

#[tokio::test(start_paused = true)]
async fn used_capacity_grows_to_the_ceiling_idle_capacity_does_not() {
    // Sequential calls use one slot: a limit of 2 is half used and grows, 3 is not and stays.
    let b = adaptive(2, 1, 10);
    call_taking(&b, 10, true).await;
    assert_eq!(b.max_concurrent(), 2, "grew before `limit` good samples");
    call_taking(&b, 10, true).await;
    assert_eq!(b.max_concurrent(), 3);
    for _ in 0..10 {
        call_taking(&b, 10, true).await;
    }
    assert_eq!(b.max_concurrent(), 3, "grew while mostly idle");

    // Two concurrent calls keep a limit of 3 or 4 at least half used: it climbs to the ceiling.
    let b = adaptive(3, 1, 4);
    for _ in 0..10 {
        tokio::join!(call_taking(&b, 10, true), call_taking(&b, 10, true));
    }
    assert_eq!(b.max_concurrent(), 4);
}

#[tokio::test(start_paused = true)]
async fn the_mode_switches_at_runtime_and_is_validated() {
    let registry = Registry::new();
    let b = Bulkhead::builder("llm")
        .max_concurrent(8)
        .registry(&registry)
        .build()
        .unwrap();
    call_taking(&b, 5000, true).await;
    assert_eq!(b.max_concurrent(), 8, "moved while adaptive mode was off");

    // Default bounds are 1 to 100: switching on is accepted.
    let out = registry
        .control(
            ComponentKind::Bulkhead,
            "llm",
            json!({"action": "set_adaptive", "enabled": true}),
        )
        .await
        .unwrap();
    assert_eq!(out["adaptive"], true);
    call_taking(&b, 5000, true).await; // slower than the default 1 s threshold
    assert_eq!(b.max_concurrent(), 7); // floor(8 * 0.9)

    b.set_adaptive(false).unwrap();
    call_taking(&b, 5000, true).await;
    assert_eq!(b.max_concurrent(), 7);

    // A limit outside the bounds cannot be switched to adaptive; nothing changes.
    let mut cfg = b.config();
    cfg.adaptive.max_concurrent = 5;
    let err = b
        .set_config(BulkheadConfig {
            adaptive: AdaptiveConfig {
                enabled: true,
                ..cfg.adaptive.clone()
            },
            ..cfg.clone()
        })
        .unwrap_err();
    assert_eq!(err.field, "max_concurrent");
    assert!(!b.snapshot().adaptive);
    let err = registry
        .control(
            ComponentKind::Bulkhead,
            "llm",
            json!({"action": "set_config", "config": {"adaptive": {"backoff_ratio": 1.5}}}),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ControlError::InvalidConfig(e) if e.field == "adaptive.backoff_ratio"),
        "{err}"
    );
}

#[tokio::test(start_paused = true)]
async fn observe_feeds_code_that_uses_permits() {
    let b = adaptive(10, 1, 20);
    let p = b.try_acquire().unwrap();
    b.observe(Duration::from_secs(2), true);
    drop(p);
    assert_eq!(b.max_concurrent(), 5);
}
