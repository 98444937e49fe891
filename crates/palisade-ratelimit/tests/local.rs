//! The local limiters on a hand-driven clock: exact admissions, exact waits, runtime quota
//! changes, the key bound, and races between threads.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::{ComponentKind, EventFilter, EventKind, ManualClock, Registry, TokioClock};
use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimitError, RateLimiter};

fn limiter(quota: Quota, clock: &ManualClock) -> RateLimiter {
    RateLimiter::builder("test")
        .quota(quota)
        .clock(clock.shared())
        .build()
        .unwrap()
}

#[test]
fn admits_the_burst_then_one_per_interval_with_exact_waits() {
    let clock = ManualClock::new();
    let l = limiter(Quota::per_second(10).with_burst(3), &clock);
    for _ in 0..3 {
        l.check().unwrap();
    }
    let refused = l.check().unwrap_err();
    assert_eq!(refused.retry_after, Duration::from_millis(100));
    assert_eq!(refused.limit, 3);
    assert!(
        refused.to_string().contains("retry after 100 ms"),
        "{refused}"
    );

    clock.advance(Duration::from_millis(99));
    assert_eq!(l.check().unwrap_err().retry_after, Duration::from_millis(1));
    clock.advance(Duration::from_millis(1));
    l.check().unwrap();
    assert!(l.check().is_err());

    // Idle for a long time: the bucket fills up to the burst, no further.
    clock.advance(Duration::from_secs(3600));
    for _ in 0..3 {
        l.check().unwrap();
    }
    assert!(l.check().is_err());
    let snap = l.snapshot();
    assert_eq!((snap.permitted_total, snap.rejected_total), (7, 4));
}

#[test]
fn check_n_is_all_or_nothing_and_refuses_what_can_never_pass() {
    let clock = ManualClock::new();
    let l = limiter(Quota::per_second(10).with_burst(5), &clock);
    l.check_n(4).unwrap();
    let err = l.check_n(2).unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_millis(100)));
    // Nothing was taken by the refusal: one cell is still there.
    l.check_n(1).unwrap();
    assert!(matches!(
        l.check_n(6),
        Err(RateLimitError::InsufficientCapacity {
            requested: 6,
            burst: 5,
            ..
        })
    ));
}

#[test]
fn decide_reports_remaining_and_reset_like_cl_throttle() {
    let clock = ManualClock::new();
    let l = limiter(Quota::per_second(4).with_burst(4), &clock);
    let d = l.decide(1).unwrap();
    assert!(d.allowed);
    assert_eq!((d.limit, d.remaining), (4, 3));
    assert_eq!(d.reset_after, Duration::from_millis(250));
    let d = l.decide(3).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 0));
    assert_eq!(d.reset_after, Duration::from_secs(1));
    let d = l.decide(1).unwrap();
    assert!(!d.allowed);
    assert_eq!(d.retry_after, Duration::from_millis(250));
    // n = 0 inspects without taking.
    clock.advance(Duration::from_millis(500));
    let d = l.decide(0).unwrap();
    assert_eq!((d.allowed, d.remaining), (true, 2));
    assert_eq!(l.decide(0).unwrap().remaining, 2);
}

#[tokio::test(start_paused = true)]
async fn until_ready_sleeps_exactly_until_admitted_on_the_paused_clock() {
    let l = RateLimiter::builder("paced")
        .quota(Quota::per_second(2).with_burst(1))
        .clock(TokioClock::shared())
        .build()
        .unwrap();
    let start = tokio::time::Instant::now();
    l.until_ready().await;
    assert_eq!(start.elapsed(), Duration::ZERO);
    l.until_ready().await;
    assert_eq!(start.elapsed(), Duration::from_millis(500));
    l.until_ready().await;
    assert_eq!(start.elapsed(), Duration::from_millis(1000));
    assert!(matches!(
        l.until_n_ready(2).await,
        Err(RateLimitError::InsufficientCapacity { .. })
    ));
}

#[test]
fn quota_changes_at_runtime_are_validated_and_published() {
    let clock = ManualClock::new();
    let l = limiter(Quota::per_second(1).with_burst(1), &clock);
    l.check().unwrap();
    assert!(l.check().is_err());

    let err = l.set_quota(Quota::per_second(0)).unwrap_err();
    assert_eq!(err.field, "quota.rate");
    assert_eq!(l.quota(), Quota::per_second(1).with_burst(1));

    // A raise takes effect at once: half the burst is used 500 ms later, and half of the new
    // burst (1.5 cells) is used after the raise, so one more request passes now.
    clock.advance(Duration::from_millis(500));
    assert!(l.check().is_err());
    l.set_quota(Quota::per_second(1).with_burst(3)).unwrap();
    l.check().unwrap();
    assert_eq!(
        l.check().unwrap_err().retry_after,
        Duration::from_millis(500)
    );
    let events = l.events().recent(&EventFilter::default());
    assert!(events.iter().any(|e| matches!(&e.kind,
        EventKind::ConfigChanged { change } if change == "quota 1 per 1s, burst 1 -> 1 per 1s, burst 3")));
}

#[test]
fn threads_racing_on_one_bucket_get_exactly_the_burst() {
    let clock = ManualClock::new(); // frozen: nothing refills during the race
    let l = limiter(Quota::per_second(1).with_burst(1000), &clock);
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let l = l.clone();
            std::thread::spawn(move || (0..1000).filter(|_| l.check().is_ok()).count())
        })
        .collect();
    let admitted: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(admitted, 1000);
    let snap = l.snapshot();
    assert_eq!((snap.permitted_total, snap.rejected_total), (1000, 3000));
}

#[test]
fn keys_have_their_own_buckets_and_can_be_reset() {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::<String>::builder("per-client")
        .quota(Quota::per_minute(60).with_burst(2))
        .clock(clock.shared())
        .build()
        .unwrap();
    l.check_key("a").unwrap();
    l.check_key("a").unwrap();
    assert_eq!(
        l.check_key("a").unwrap_err().retry_after,
        Duration::from_secs(1)
    );
    l.check_key("b").unwrap();
    assert!(l.reset_key("a"));
    l.check_key("a").unwrap();
    assert!(!l.reset_key("never-seen"));
    assert_eq!(l.len(), 2);
}

#[test]
fn a_million_distinct_keys_stay_within_the_key_bound() {
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::<u64>::builder("flood")
        .quota(Quota::per_second(1).with_burst(5))
        .max_keys(10_000)
        .clock(clock.shared())
        .build()
        .unwrap();
    assert_eq!(l.max_keys(), 10_048); // rounded up to 64 shards
    for key in 0..1_000_000u64 {
        // Every key is new and admitted: a flood of distinct clients is never refused.
        l.check_key(&key).unwrap();
        if key % 65_536 == 0 {
            assert!(l.len() <= l.max_keys());
        }
        if key % 100_000 == 0 {
            clock.advance(Duration::from_secs(2)); // earlier keys go idle
        }
    }
    assert!(l.len() <= l.max_keys(), "{} keys tracked", l.len());
    assert!(l.evicted_idle_keys() > 0);
    assert!(l.evicted_active_keys() > 0);
    // The most recent key is still tracked with its debt.
    l.check_key(&999_999).unwrap();
    l.check_key(&999_999).unwrap();
    l.check_key(&999_999).unwrap();
    l.check_key(&999_999).unwrap();
    assert!(l.check_key(&999_999).is_err());
    // Once everything is idle, a sweep empties the table.
    clock.advance(Duration::from_secs(10));
    let tracked = l.len();
    assert_eq!(l.sweep(), tracked);
    assert!(l.is_empty());
}

#[tokio::test]
async fn operators_change_quota_and_reset_through_the_registry() {
    let registry = Registry::new();
    let clock = ManualClock::new();
    let l = KeyedRateLimiter::<String>::builder("mcp-clients")
        .quota(Quota::per_minute(1).with_burst(1))
        .clock(clock.shared())
        .registry(&registry)
        .build()
        .unwrap();
    l.check_key("10.0.0.7").unwrap();
    assert!(l.check_key("10.0.0.7").is_err());

    // "429s for legitimate users": give that client its burst back.
    let out = registry
        .control(
            ComponentKind::RateLimiter,
            "mcp-clients",
            serde_json::json!({"action": "reset", "key": "10.0.0.7"}),
        )
        .await
        .unwrap();
    assert_eq!(out["keys"]["tracked"], 0);
    l.check_key("10.0.0.7").unwrap();

    // Raise the quota.
    let out = registry
        .control(
            ComponentKind::RateLimiter,
            "mcp-clients",
            serde_json::json!({"action": "set_quota", "quota": {"rate": 600, "period": "1m", "burst": 20}}),
        )
        .await
        .unwrap();
    assert_eq!(out["quota"]["burst"], 20);
    assert_eq!(out["backend"], "memory");
    assert_eq!(l.quota().rate, 600);

    // Bad input: named, and nothing changes.
    let err = registry
        .control(
            ComponentKind::RateLimiter,
            "mcp-clients",
            serde_json::json!({"action": "set_quota", "quota": {"rate": 0}}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("quota.rate"), "{err}");
    let err = registry
        .control(
            ComponentKind::RateLimiter,
            "mcp-clients",
            serde_json::json!({"action": "set_failure_policy", "failure_policy": "fail_open"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no backend"), "{err}");
    assert_eq!(l.quota().rate, 600);

    let snap = registry
        .snapshot(ComponentKind::RateLimiter, "mcp-clients")
        .unwrap();
    assert_eq!(snap["permitted_total"], 2, "{snap}");
    assert_eq!(snap["rejected_total"], 1, "{snap}");
}
