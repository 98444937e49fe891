//! A quota change carries each bucket's *used fraction of the burst* over to the new quota
//! (issue 14, section 4): raising a quota helps a limited client at once, and lowering one
//! leaves a client the unused share of the new burst, never more. On a hand-driven clock, for
//! the one-bucket limiter and the keyed one.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::ManualClock;
use palisade_ratelimit::{KeyedRateLimiter, Quota, RateLimiter};

/// 120 per minute, bursts of 20: one request every 500 ms, a tolerance of 10 s.
const SMALL: Quota = Quota::per_minute(120).with_burst(20);
/// 1 000 000 per second, bursts of 100 000: one request every µs, a tolerance of 100 ms.
const LARGE: Quota = Quota::per_second(1_000_000).with_burst(100_000);

fn direct(quota: Quota, clock: &ManualClock) -> RateLimiter {
    RateLimiter::builder("carry")
        .quota(quota)
        .clock(clock.shared())
        .build()
        .unwrap()
}

fn keyed(quota: Quota, clock: &ManualClock) -> KeyedRateLimiter<String> {
    KeyedRateLimiter::<String>::builder("carry-keyed")
        .quota(quota)
        .clock(clock.shared())
        .build()
        .unwrap()
}

/// Admits one request at a time until one is refused; returns how many were admitted.
fn drain(mut check: impl FnMut() -> bool, at_most: usize) -> usize {
    (0..at_most).take_while(|_| check()).count()
}

#[test]
fn raising_the_quota_admits_a_limited_client_at_once() {
    let clock = ManualClock::new();
    let l = direct(SMALL, &clock);
    assert_eq!(drain(|| l.check().is_ok(), 100), 20);
    clock.advance(Duration::from_millis(100));
    // 9.9 s of the 10 s tolerance used: 99% of the burst. Still limited under the old quota.
    assert_eq!(
        l.check().unwrap_err().retry_after,
        Duration::from_millis(400)
    );

    l.set_quota(LARGE).unwrap();
    // 99% of the new burst is used: 1% of 100 000 is left, at once.
    let d = l.decide(1).unwrap();
    assert!(d.allowed, "still refused after the raise: {d:?}");
    assert_eq!(d.remaining, 999);
    assert_eq!(drain(|| l.check().is_ok(), 5_000), 999);
    assert_eq!(l.check().unwrap_err().retry_after, Duration::from_micros(1));
}

#[test]
fn a_client_limited_at_the_very_moment_of_a_raise_waits_one_new_interval() {
    let clock = ManualClock::new();
    let l = direct(SMALL, &clock);
    assert_eq!(drain(|| l.check().is_ok(), 100), 20);
    // The whole burst used at this instant: the whole new burst is used, for one new interval.
    l.set_quota(LARGE).unwrap();
    assert_eq!(
        l.check().unwrap_err().retry_after,
        Duration::from_micros(1),
        "the old debt outlived the quota it was measured in"
    );
    clock.advance(Duration::from_micros(1));
    l.check().unwrap();
}

#[test]
fn lowering_the_quota_leaves_the_unused_share_of_the_new_burst() {
    let clock = ManualClock::new();
    // 100 per second, bursts of 100; half of it taken.
    let l = direct(Quota::per_second(100).with_burst(100), &clock);
    l.check_n(50).unwrap();
    // 1 per second, bursts of 10: half of the new burst is used, 5 are left and no more.
    l.set_quota(Quota::per_second(1).with_burst(10)).unwrap();
    assert_eq!(l.decide(0).unwrap().remaining, 5);
    assert_eq!(drain(|| l.check().is_ok(), 100), 5);
    assert_eq!(l.check().unwrap_err().retry_after, Duration::from_secs(1));
    // Over any window from the change, never more than the new burst plus its rate.
    clock.advance(Duration::from_secs(60));
    assert_eq!(drain(|| l.check().is_ok(), 100), 10);
}

#[test]
fn an_idle_or_untouched_bucket_is_full_under_the_new_quota() {
    let clock = ManualClock::new();
    let l = direct(SMALL, &clock);
    l.check().unwrap();
    clock.advance(Duration::from_secs(60)); // full again
    l.set_quota(Quota::per_second(5).with_burst(3)).unwrap();
    assert_eq!(drain(|| l.check().is_ok(), 100), 3);
    // The same quota again changes nothing.
    let before = l.decide(0).unwrap();
    l.set_quota(Quota::per_second(5).with_burst(3)).unwrap();
    assert_eq!(l.decide(0).unwrap(), before);
}

#[test]
fn keyed_raise_admits_every_limited_key_at_once_with_its_own_share() {
    let clock = ManualClock::new();
    let l = keyed(SMALL, &clock);
    // Keys over every shard, each with its own use: key i took 20 - (i % 10) requests.
    let keys: Vec<String> = (0..640)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect();
    for (i, k) in keys.iter().enumerate() {
        l.check_key_n(k.as_str(), 20 - (i as u32 % 10)).unwrap();
    }
    clock.advance(Duration::from_millis(100));
    assert!(l.check_key(keys[0].as_str()).is_err());

    l.set_quota(LARGE).unwrap();
    for (i, k) in keys.iter().enumerate() {
        // Used: (20 - i%10) × 500 ms − 100 ms of 10 s, as a share of the new 100 000.
        let used_ms = (20 - (i as u64 % 10)) * 500 - 100;
        let left = 100_000 - used_ms * 100_000 / 10_000;
        let d = l.decide_key(k.as_str(), 0).unwrap();
        assert_eq!(u64::from(d.remaining), left, "key {k}");
        assert!(l.check_key(k.as_str()).is_ok(), "key {k} still refused");
    }
}

#[test]
fn keyed_lowering_never_gives_a_key_more_than_the_new_burst() {
    let clock = ManualClock::new();
    let l = keyed(Quota::per_second(100).with_burst(100), &clock);
    l.check_key_n("half", 50).unwrap();
    l.check_key_n("tenth", 10).unwrap();
    l.check_key_n("all", 100).unwrap();
    l.set_quota(Quota::per_second(1).with_burst(10)).unwrap();
    assert_eq!(drain(|| l.check_key("half").is_ok(), 100), 5);
    assert_eq!(drain(|| l.check_key("tenth").is_ok(), 100), 9);
    assert_eq!(drain(|| l.check_key("all").is_ok(), 100), 0);
    assert_eq!(drain(|| l.check_key("new").is_ok(), 100), 10);
}
