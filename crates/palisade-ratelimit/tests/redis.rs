//! The distributed limiter on the real Redis the test command starts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::{ComponentKind, Registry};
use palisade_ratelimit::{Quota, RedisRateLimiter};
use palisade_testkit::{redis_time_us, shared_redis, unique};
use proptest::prelude::*;

fn limiter(name: &str, url: &str, quota: Quota) -> RedisRateLimiter {
    RedisRateLimiter::builder(name, url)
        .quota(quota)
        // Generous: these tests are about exact counts, not the outage budget.
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_instances_on_separate_connections_share_one_limit() {
    let (url, mut conn) = shared_redis().await;
    let name = unique("race");
    let (rate, burst) = (200u64, 50u64);
    let quota = Quota::per_second(rate as u32).with_burst(burst as u32);
    // Four "instances": each limiter has its own connection manager.
    let instances: Vec<_> = (0..4).map(|_| limiter(&name, &url, quota)).collect();

    let start_us = redis_time_us(&mut conn).await;
    let until = tokio::time::Instant::now() + Duration::from_millis(1500);
    let tasks: Vec<_> = instances
        .iter()
        .cloned()
        .map(|l| {
            tokio::spawn(async move {
                let (mut admitted, mut refused) = (0u64, 0u64);
                while tokio::time::Instant::now() < until {
                    match l.check("shared-key").await {
                        Ok(_) => admitted += 1,
                        Err(_) => refused += 1,
                    }
                }
                (admitted, refused)
            })
        })
        .collect();
    let (mut admitted, mut refused) = (0, 0);
    for t in tasks {
        let (a, r) = t.await.unwrap();
        admitted += a;
        refused += r;
    }
    let end_us = redis_time_us(&mut conn).await;
    let elapsed_us = end_us - start_us;
    // GCRA admits the burst plus one cell per interval of the measured interval, never more.
    let allowed = burst + rate * elapsed_us / 1_000_000;
    assert!(
        admitted <= allowed,
        "admitted {admitted} > {allowed} allowed in {elapsed_us} us"
    );
    // And the four instances together used (nearly) all of it: they raced, they did not
    // starve each other. The slack covers the first and last interval and scheduling.
    assert!(
        admitted + 3 * rate / 10 >= allowed,
        "admitted only {admitted} of {allowed} in {elapsed_us} us"
    );
    assert!(refused > 0);
    for l in &instances {
        let status = l.redis_status();
        assert_eq!(status.backend_errors_total, 0, "{status:?}");
        assert!(status.available);
    }
    let total: u64 = instances.iter().map(|l| l.snapshot().permitted_total).sum();
    assert_eq!(total, admitted);
}

#[tokio::test]
async fn a_denial_writes_nothing_and_keys_carry_a_hash_tag_and_expire() {
    let (url, mut conn) = shared_redis().await;
    let name = unique("deny");
    let l = limiter(&name, &url, Quota::per_minute(6).with_burst(2));
    let key = l.redis_key("client-1");
    assert!(key.starts_with("palisade:rl:"), "{key}");
    assert!(key.ends_with("{client-1}"), "{key}");

    let d = l.check("client-1").await.unwrap();
    assert_eq!((d.allowed, d.limit, d.remaining), (true, 2, 1));
    assert_eq!(d.reset_after, Duration::from_secs(10));
    let pttl: i64 = redis::cmd("PTTL")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((9_000..=10_000).contains(&pttl), "pttl {pttl}");
    l.check("client-1").await.unwrap();

    let stored: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    let refused = l.check("client-1").await.unwrap_err();
    assert!(
        refused.retry_after > Duration::from_secs(9)
            && refused.retry_after <= Duration::from_secs(10)
    );
    let after: String = redis::cmd("GET")
        .arg(&key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(stored, after, "a denial must not write");

    // The next refusal comes from the local deny cache, without asking Redis.
    let _ = l.check("client-1").await.unwrap_err();
    let status = l.redis_status();
    assert_eq!(status.deny_cache_hits_total, 1);
    assert_eq!(status.deny_cache_entries, 1);
    let snap = l.snapshot();
    assert_eq!((snap.permitted_total, snap.rejected_total), (2, 2));

    // Over-long keys are hashed to a stable, bounded key.
    let long = "x".repeat(5000);
    let hashed = l.redis_key(&long);
    assert!(
        hashed.len() < 100 && hashed == l.redis_key(&long),
        "{hashed}"
    );
    l.check(&long).await.unwrap();
}

#[tokio::test]
async fn operators_reset_a_client_and_change_policy_through_the_registry() {
    let (url, _conn) = shared_redis().await;
    let registry = Registry::new();
    let name = unique("admin");
    let l = RedisRateLimiter::builder(&name, &url)
        .quota(Quota::per_minute(1).with_burst(1))
        .timeout(Duration::from_secs(2))
        .registry(&registry)
        .build()
        .unwrap();
    l.check("10.1.2.3").await.unwrap();
    assert!(l.check("10.1.2.3").await.is_err());

    let out = registry
        .control(
            ComponentKind::RateLimiter,
            &name,
            serde_json::json!({"action": "reset", "key": "10.1.2.3"}),
        )
        .await
        .unwrap();
    assert_eq!(out["backend"], "redis");
    l.check("10.1.2.3").await.unwrap();

    let out = registry
        .control(
            ComponentKind::RateLimiter,
            &name,
            serde_json::json!({"action": "set_failure_policy", "failure_policy": "fail_closed"}),
        )
        .await
        .unwrap();
    assert_eq!(out["redis"]["failure_policy"], "fail_closed");
    let err = registry
        .control(
            ComponentKind::RateLimiter,
            &name,
            serde_json::json!({"action": "set_failure_policy", "failure_policy": "maybe"}),
        )
        .await
        .unwrap_err();
    assert!(err.to_string().contains("malformed"), "{err}");
    assert_eq!(
        l.failure_policy(),
        palisade_ratelimit::FailurePolicy::FailClosed
    );
}

#[tokio::test]
async fn the_backend_operators_choose_is_one_type_and_bad_quotas_are_named() {
    let (url, _conn) = shared_redis().await;
    let name = unique("front-door");
    let env = palisade_core::Env::from_fn(|k| match k {
        "RATE_LIMIT_BACKEND" => Some("redis".into()),
        "RATE_LIMIT_REQUESTS" => Some("2".into()),
        "RATE_LIMIT_PERIOD" => Some("1m".into()),
        "REDIS_URL" => Some(url.clone()),
        _ => None,
    });
    let cfg = palisade_ratelimit::RateLimitConfig::from_env_with(&env).unwrap();
    let l = cfg.build(&name).finish().unwrap();
    assert_eq!(l.backend(), palisade_ratelimit::Backend::Redis);
    let d = l.check("agent-7").await.unwrap();
    assert_eq!((d.limit, d.remaining), (2, 1));
    l.check("agent-7").await.unwrap();
    assert!(l.check("agent-7").await.is_err());
    let snap = l.snapshot();
    assert_eq!((snap.permitted_total, snap.rejected_total), (2, 1));
    assert!(
        serde_json::to_string(&cfg)
            .unwrap()
            .find("redis://")
            .is_none(),
        "URL leaked"
    );

    // The redis backend without a URL, and a rate Redis cannot time exactly, are refused.
    let no_url =
        palisade_core::Env::from_fn(|k| (k == "RATE_LIMIT_BACKEND").then(|| "redis".into()));
    assert_eq!(
        palisade_ratelimit::RateLimitConfig::from_env_with(&no_url)
            .unwrap_err()
            .field,
        "REDIS_URL"
    );
    let err = RedisRateLimiter::builder("too-fast", &url)
        .quota(Quota::per_second(300_000))
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("quota.rate"), "{err}");
    assert!(
        RedisRateLimiter::builder("fine", &url)
            .quota(Quota::per_second(20_000))
            .build()
            .is_ok()
    );
}

/// Waits until Redis's own clock reads at least `at` (µs): the limiter's time is Redis `TIME`.
async fn until_redis_time(conn: &mut redis::aio::MultiplexedConnection, at: u64) -> u64 {
    loop {
        let now = redis_time_us(conn).await;
        if now >= at {
            return now;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn raising_the_quota_admits_a_limited_client_at_once() {
    let (url, mut conn) = shared_redis().await;
    let name = unique("carry-raise");
    // 120 per minute, bursts of 20: the tolerance is 10 s.
    let l = limiter(&name, &url, Quota::per_minute(120).with_burst(20));
    let start = redis_time_us(&mut conn).await;
    for _ in 0..20 {
        l.check("client").await.unwrap();
    }
    assert!(l.check("client").await.is_err());
    // Let Redis's clock move 1 ms: 0.01% of the old tolerance, 10 cells of the new burst.
    let limited_at = redis_time_us(&mut conn).await;
    until_redis_time(&mut conn, limited_at + 1_000).await;

    l.set_quota(Quota::per_second(1_000_000).with_burst(100_000))
        .unwrap();
    let d = l.decide("client", 1).await.unwrap();
    let elapsed_us = redis_time_us(&mut conn).await - start;
    assert!(d.allowed, "still refused after the raise: {d:?}");
    // The used share carried over: what is left is the time elapsed, in new cells (one per
    // 100 µs of the old 10 s tolerance), not a fresh bucket of 100 000.
    assert!(
        (9..=elapsed_us / 100).contains(&u64::from(d.remaining)),
        "remaining {} after {elapsed_us} us",
        d.remaining
    );
}

#[tokio::test]
async fn lowering_the_quota_leaves_the_unused_share_of_the_new_burst() {
    let (url, _conn) = shared_redis().await;
    let name = unique("carry-lower");
    // One per second, bursts of 20 (tolerance 20 s); half of it taken.
    let l = limiter(&name, &url, Quota::per_second(1).with_burst(20));
    assert!(l.decide("client", 10).await.unwrap().allowed);
    // One per minute, bursts of 10: half of the new burst is used; 5 left, and no more (the
    // old code left 9: its 10 s of debt were a sixth of one new interval).
    l.set_quota(Quota::per_minute(1).with_burst(10)).unwrap();
    let mut admitted = 0;
    for _ in 0..20 {
        if l.check("client").await.is_ok() {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 5);
    let fresh = (0..20).map(|_| l.check("fresh"));
    let mut fresh_admitted = 0;
    for f in fresh {
        fresh_admitted += usize::from(f.await.is_ok());
    }
    assert_eq!(fresh_admitted, 10);
}

async fn get(conn: &mut redis::aio::MultiplexedConnection, key: &str) -> String {
    redis::cmd("GET").arg(key).query_async(conn).await.unwrap()
}

#[tokio::test]
async fn a_bucket_stores_its_tolerance_and_bare_values_from_older_versions_still_count() {
    let (url, mut conn) = shared_redis().await;
    let name = unique("carry-compat");
    // One per second, bursts of 10: the tolerance is 10 000 000 µs.
    let l = limiter(&name, &url, Quota::per_second(1).with_burst(10));
    let key = l.redis_key("old");
    // What an older version stored: the bare TAT, half the burst used.
    let now = redis_time_us(&mut conn).await;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(now + 5_000_000)
        .arg("PX")
        .arg(5_000)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Taken as written under the current quota.
    assert_eq!(l.decide("old", 0).await.unwrap().remaining, 5);
    let d = l.check("old").await.unwrap();
    assert_eq!(d.remaining, 4);
    // Stored again as `<tat>.<tolerance>`.
    let value = get(&mut conn, &key).await;
    let (tat, tolerance) = value.split_once('.').unwrap();
    assert_eq!(tolerance, "10000000", "{value}");
    assert!(tat.parse::<u64>().unwrap() > now + 5_000_000, "{value}");
    // From then on, a quota change carries its used fraction (60%) over.
    l.set_quota(Quota::per_second(1).with_burst(20)).unwrap();
    assert_eq!(l.decide("old", 0).await.unwrap().remaining, 8);
    assert!(get(&mut conn, &key).await.ends_with(".20000000"));
}

#[tokio::test]
async fn an_older_instance_reads_the_new_values_during_a_rolling_upgrade() {
    let (url, mut conn) = shared_redis().await;
    let name = unique("carry-upgrade");
    let l = limiter(&name, &url, Quota::per_second(1).with_burst(10));
    assert!(l.decide("client", 5).await.unwrap().allowed);
    let key = l.redis_key("client");
    let older = redis::Script::new(include_str!("fixtures/gcra-before-carry-over.lua"));
    let run = |n: u32| {
        let mut conn = conn.clone();
        let older = older.clone();
        let key = key.clone();
        async move {
            let reply: (i64, i64, i64, i64) = older
                .key(&key)
                .arg(1_000_000)
                .arg(10_000_000)
                .arg(n)
                .invoke_async(&mut conn)
                .await
                .unwrap();
            reply
        }
    };
    // The older script sees the TAT: half the burst used, not a fresh bucket.
    let (allowed, remaining, _, reset_us) = run(0).await;
    assert_eq!((allowed, remaining), (1, 5));
    assert!((4_000_000..=5_000_000).contains(&reset_us), "{reset_us}");
    let (allowed, remaining, _, _) = run(1).await;
    assert_eq!((allowed, remaining), (1, 4));
    // It stored a bare TAT, which this version reads under its own quota.
    assert!(!get(&mut conn, &key).await.contains('.'));
    assert_eq!(l.decide("client", 0).await.unwrap().remaining, 4);
}

#[tokio::test]
async fn instances_on_different_quotas_share_a_bucket_by_its_used_fraction() {
    let (url, _conn) = shared_redis().await;
    let name = unique("carry-mixed");
    let old = Quota::per_second(1).with_burst(20);
    let a = limiter(&name, &url, old);
    let b = limiter(&name, &url, old);
    assert!(a.decide("client", 10).await.unwrap().allowed);
    // Instance a lowers the quota; b has not been told yet.
    a.set_quota(Quota::per_minute(1).with_burst(10)).unwrap();
    assert_eq!(a.decide("client", 0).await.unwrap().remaining, 5);
    // b reads a's bucket as half used, in its own quota: 10 of 20 left, not 0 (300 s of debt
    // in one-second cells) and not 20.
    let left = b.decide("client", 0).await.unwrap().remaining;
    assert!((9..=10).contains(&left), "{left}");
}

/// Emission interval and tolerance of a quota in µs, as the script gets them.
fn micros(q: Quota) -> (u64, u64) {
    let t = u64::try_from(q.emission_interval().as_micros()).unwrap();
    (t, t * u64::from(q.burst()))
}

/// One random quota change on Redis: `cells` taken under `old`, then `new`, then requests until
/// one is refused. Redis's clock runs, so the bounds allow for the time measured in between.
async fn carry_case(old: Quota, cells: u32, new: Quota) -> Result<(), TestCaseError> {
    let (url, mut conn) = shared_redis().await;
    let l = limiter(&unique("carry-prop"), &url, old);
    let (_, tol_old) = micros(old);
    let (t_new, tol_new) = micros(new);
    prop_assert!(l.decide("client", cells).await.unwrap().allowed);
    let measured_at = redis_time_us(&mut conn).await;
    let used = u64::try_from(l.decide("client", 0).await.unwrap().reset_after.as_micros()).unwrap();
    l.set_quota(new).unwrap();
    let start = redis_time_us(&mut conn).await;
    let mut admitted = 0u64;
    while l.check("client").await.is_ok() {
        admitted += 1;
        prop_assert!(admitted <= 10 * u64::from(new.burst()), "runaway");
    }
    let end = redis_time_us(&mut conn).await;
    // At least the share left at the fraction measured (the fraction only falls with time).
    let share = |used: u64| (tol_new - (used * tol_new).div_ceil(tol_old)) / t_new;
    prop_assert!(
        admitted >= share(used),
        "admitted {} < {}",
        admitted,
        share(used)
    );
    // At most the share left at the lowest fraction the bucket can have reached, plus the cells
    // of the time the requests took, and never more than the new burst plus those.
    let refill = (end - start).div_ceil(t_new);
    let lowest = used.saturating_sub(end - measured_at);
    prop_assert!(
        admitted <= share(lowest) + refill,
        "admitted {} > {} + {} (used {} then at least {})",
        admitted,
        share(lowest),
        refill,
        used,
        lowest
    );
    prop_assert!(admitted <= u64::from(new.burst()) + refill);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn redis_buckets_carry_their_used_fraction_over_quota_changes(
        (old_rate, old_burst, new_rate, new_burst) in (1u32..50, 1u32..40, 1u32..50, 1u32..40),
        taken in 0.0f64..=1.0,
    ) {
        let old = Quota::per_second(old_rate).with_burst(old_burst);
        let new = Quota::per_second(new_rate).with_burst(new_burst);
        let cells = (f64::from(old_burst) * taken).round() as u32;
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(carry_case(old, cells, new))?;
    }
}
