//! The distributed limiter on the real Redis the test command starts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use palisade_core::{ComponentKind, Registry};
use palisade_ratelimit::{Quota, RedisRateLimiter};
use palisade_testkit::{redis_time_us, shared_redis, unique};

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
