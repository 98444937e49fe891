//! The dead-letter queue through a Sentinel failover: a primary, a replica and three
//! sentinels (real `redis-server` processes on spare ports); the primary is killed while
//! entries are pushed and a worker replays them.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use palisade_core::redis::RedisConfig;
use palisade_dlq::{DeadLetterQueue, DlqConfig, DlqError, Failure, ReplicaWait, StoreError};
use palisade_testkit::SentinelGroup;
use parking_lot::Mutex;

/// Pushes `from..` until `acked` holds `until` more entries, one every few milliseconds;
/// returns the next payload number.
async fn push_until(
    dlq: &DeadLetterQueue<u64>,
    from: u64,
    more: usize,
    acked: &Mutex<BTreeSet<u64>>,
    refused: &Mutex<u64>,
) -> u64 {
    let target = acked.lock().len() + more;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut n = from;
    while acked.lock().len() < target {
        assert!(
            tokio::time::Instant::now() < deadline,
            "pushes never succeeded again"
        );
        match dlq
            .push("op", &n, Failure::timeout("upstream timed out"))
            .await
        {
            Ok(_) => {
                acked.lock().insert(n);
            }
            // Refused: the caller knows the entry may not be kept (and would push it again).
            Err(DlqError::Store {
                source: StoreError::Unavailable(_) | StoreError::NotReplicated { .. },
                ..
            }) => {
                *refused.lock() += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("unexpected error: {e}"),
        }
        n += 1;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_acknowledged_with_wait_survive_a_failover_and_the_worker_resumes() {
    // Two replicas: after the failover the new primary still has one, so WAIT can be met
    // again without bringing the old primary back.
    let mut group = SentinelGroup::start_with_replicas(2);
    let redis = RedisConfig::from_url(&format!(
        "redis+sentinel://{}/{}",
        group.sentinel_addrs().join(","),
        group.master_name()
    ))
    .unwrap();
    let config = DlqConfig {
        poll_interval: Duration::from_millis(20),
        lease: Duration::from_secs(2),
        wait_for_replicas: Some(ReplicaWait {
            replicas: 1,
            timeout: Duration::from_millis(500),
        }),
        ..DlqConfig::default()
    };
    let dlq = DeadLetterQueue::<u64>::builder("failover")
        .config(config)
        .redis(&redis)
        .unwrap()
        .build()
        .unwrap();

    // The worker replays every entry (the upstream is back) and records what it saw.
    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let h = handled.clone();
    let worker = dlq.worker(move |e| {
        let h = h.clone();
        async move {
            h.lock().insert(e.payload);
            Ok(())
        }
    });

    let acked = Mutex::new(BTreeSet::new());
    let refused = Mutex::new(0);
    let n = push_until(&dlq, 0, 30, &acked, &refused).await;
    assert_eq!(*refused.lock(), 0, "refusals before the failover");

    let old = group.kill_primary();
    // Pushes fail while the sentinels elect a replica (and WAIT refuses them until the other
    // replica follows the new primary).
    let refused_before = *refused.lock();
    let pushing = push_until(&dlq, n, 1, &acked, &refused);
    let failover = async {
        tokio::task::spawn_blocking(move || {
            group.wait_for_failover(old, Duration::from_secs(30));
            group
        })
        .await
        .unwrap()
    };
    let (n, _group) = tokio::join!(pushing, failover);
    assert!(
        *refused.lock() > refused_before,
        "no push was refused during the failover"
    );
    push_until(&dlq, n, 30, &acked, &refused).await;

    // Every entry whose push returned Ok is replayed; nothing acknowledged was lost.
    palisade_testkit::eventually(
        "every acknowledged entry replayed",
        Duration::from_secs(60),
        || {
            let missing: Vec<u64> = acked.lock().difference(&handled.lock()).copied().collect();
            async move { missing.is_empty() }
        },
    )
    .await;
    assert!(
        worker.snapshot().store_errors_total > 0,
        "the worker never saw the failover"
    );
    worker.shutdown(Duration::from_secs(5)).await;
    dlq.purge().await.unwrap();
}
