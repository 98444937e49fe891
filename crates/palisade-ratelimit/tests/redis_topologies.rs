//! The distributed limiter on every Redis topology: the same behaviour on the shared single
//! node and on the shared 3-primary cluster (`scripts/test` starts both), then a Sentinel
//! failover and a cluster slot move under traffic, each on private `redis-server` processes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use palisade_core::redis::{RedisConfig, key_slot};
use palisade_ratelimit::{FailurePolicy, Quota, RedisRateLimiter};
use palisade_testkit::{RedisCluster, SentinelGroup, shared_cluster, shared_redis, unique};

fn limiter(name: &str, redis: &RedisConfig, quota: Quota) -> RedisRateLimiter {
    RedisRateLimiter::builder(name, redis)
        .quota(quota)
        // Generous: these checks are about exact counts, not the outage budget.
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap()
}

async fn admitted(l: &RedisRateLimiter, key: &str, n: usize) -> usize {
    let mut admitted = 0;
    for _ in 0..n {
        admitted += usize::from(l.decide(key, 1).await.unwrap().allowed);
    }
    admitted
}

/// What the limiter promises, whatever the topology.
async fn behaves_like_one_shared_limit(redis: RedisConfig) {
    // Four instances (four connections) racing on one key admit the burst plus the rate of
    // the time they ran, never more.
    let name = unique("race");
    let (rate, burst) = (100u64, 20u64);
    let quota = Quota::per_second(rate as u32).with_burst(burst as u32);
    let instances: Vec<_> = (0..4).map(|_| limiter(&name, &redis, quota)).collect();
    let started = Instant::now();
    let until = started + Duration::from_millis(600);
    let tasks: Vec<_> = instances
        .iter()
        .cloned()
        .map(|l| {
            tokio::spawn(async move {
                let mut admitted = 0u64;
                while Instant::now() < until {
                    admitted += u64::from(l.check("shared").await.is_ok());
                }
                admitted
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    let elapsed = started.elapsed();
    let allowed = burst + rate * u64::try_from(elapsed.as_micros()).unwrap() / 1_000_000 + 1;
    assert!(
        total <= allowed,
        "admitted {total} > {allowed} in {elapsed:?}"
    );
    assert!(total >= burst, "admitted only {total}");
    for l in &instances {
        assert_eq!(
            l.redis_status().backend_errors_total,
            0,
            "{:?}",
            l.redis_status()
        );
    }

    // Keyed: each key has its own burst, and the keys spread over the slots.
    let keyed = limiter(
        &unique("keyed"),
        &redis,
        Quota::per_minute(60).with_burst(3),
    );
    let mut slots = BTreeSet::new();
    for i in 0..30 {
        let key = format!("client-{i}");
        assert_eq!(admitted(&keyed, &key, 4).await, 3, "{key}");
        slots.insert(key_slot(keyed.redis_key(&key).as_bytes()));
    }
    assert!(slots.len() >= 25, "30 keys on only {} slots", slots.len());

    // An operator's reset admits a refused client again; a new quota applies at once.
    assert_eq!(admitted(&keyed, "client-0", 1).await, 0);
    keyed.reset_key("client-0").await.unwrap();
    assert_eq!(admitted(&keyed, "client-0", 4).await, 3);
    keyed
        .set_quota(Quota::per_minute(60).with_burst(6))
        .unwrap();
    assert_eq!(admitted(&keyed, "fresh-client", 8).await, 6);
    assert_eq!(keyed.redis_status().backend_errors_total, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node() {
    let (url, _conn) = shared_redis().await;
    behaves_like_one_shared_limit(RedisConfig::from_url(&url).unwrap()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_primary_cluster() {
    let config = RedisConfig::cluster(shared_cluster()).unwrap();
    behaves_like_one_shared_limit(config).await;
}

const BUDGET: Duration = Duration::from_millis(100);
/// Scheduling slack on a loaded 2-core CI machine.
const SLACK: Duration = Duration::from_millis(400);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sentinel_failover_costs_decisions_by_the_policy_then_redis_decides_again() {
    let mut group = SentinelGroup::start();
    let config = RedisConfig::from_url(&format!(
        "redis+sentinel://{}/{}",
        group.sentinel_addrs().join(","),
        group.master_name()
    ))
    .unwrap();
    let l = RedisRateLimiter::builder("failover", &config)
        .quota(Quota::per_minute(60).with_burst(3))
        .failure_policy(FailurePolicy::FailOpen)
        .timeout(BUDGET)
        .build()
        .unwrap();
    assert_eq!(admitted(&l, "before", 5).await, 3);

    let old = group.kill_primary();
    // While the sentinels elect a new primary, every decision answers within the budget
    // (fail open: admitted), and none waits for a socket timeout.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut during = 0;
    loop {
        let t = Instant::now();
        let d = l.decide(&format!("during-{during}"), 1).await.unwrap();
        assert!(
            t.elapsed() <= BUDGET + SLACK,
            "a decision took {:?}",
            t.elapsed()
        );
        assert!(d.allowed);
        during += 1;
        if !l.redis_status().available || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !l.redis_status().available,
        "the limiter never noticed the primary died"
    );
    group.wait_for_failover(old, Duration::from_secs(30));

    // Without a restart, the limiter finds the new primary and decides exactly again.
    palisade_testkit::eventually(
        "the limiter to reach the new primary",
        Duration::from_secs(30),
        || async {
            let _ = l.decide("probe", 0).await;
            l.redis_status().available
        },
    )
    .await;
    assert_eq!(admitted(&l, "after", 5).await, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_moved_between_primaries_keeps_its_bucket_and_costs_no_error() {
    let cluster = RedisCluster::start(3, 0);
    let config = RedisConfig::cluster(cluster.seeds()).unwrap();
    let l = RedisRateLimiter::builder("moving", &config)
        .quota(Quota::per_minute(60).with_burst(4))
        .failure_policy(FailurePolicy::FailClosed)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let slot = key_slot(l.redis_key("client").as_bytes());
    let from = cluster.primary_for_slot(slot);
    let to = *cluster
        .primary_ports()
        .iter()
        .find(|&&p| p != from)
        .unwrap();

    let mut total = admitted(&l, "client", 1).await;
    cluster.begin_migration(slot, from, to); // ASK for keys already moved
    total += admitted(&l, "client", 1).await;
    cluster.migrate_keys(slot, from, to);
    total += admitted(&l, "client", 1).await; // the bucket is on the target now: ASK
    cluster.finish_migration(slot, from, to);
    total += admitted(&l, "client", 3).await; // MOVED, then the new owner
    // Fail closed would have refused on any error: 4 admitted means every decision was
    // Redis's, on one bucket that moved with its state.
    assert_eq!(total, 4);
    assert_eq!(l.redis_status().backend_errors_total, 0);
    assert_eq!(cluster.primary_for_slot(slot), to);
}
