//! Nothing lost when a worker process dies or Redis restarts, on real Redis.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use palisade_dlq::{DeadLetterQueue, DlqConfig, EntryState, Failure, RedisStore};
use palisade_testkit::{RedisServer, connect, shared_redis, unique};
use parking_lot::Mutex;
use redis::AsyncCommands;

const CHILD_QUEUE: &str = "PALISADE_DLQ_CHILD_QUEUE";
/// The Redis of the child's queue (a URL of any topology).
const CHILD_REDIS: &str = "PALISADE_DLQ_CHILD_REDIS";

fn config(lease: Duration) -> DlqConfig {
    DlqConfig {
        lease,
        poll_interval: Duration::from_millis(5),
        concurrency: 8,
        ..DlqConfig::default()
    }
}

fn dlq(url: &str, queue: &str, lease: Duration) -> DeadLetterQueue<u64> {
    DeadLetterQueue::builder(queue)
        .store(Arc::new(RedisStore::new(url, queue).unwrap()))
        .config(config(lease))
        .build()
        .unwrap()
}

/// Polls `cond` until it holds, failing the test after 60 s.
async fn until<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    palisade_testkit::eventually(what, Duration::from_secs(60), cond).await;
}

/// The worker process of `a_killed_worker_process_loses_nothing`: started by that test as a
/// child (`--ignored --exact child_worker`); it takes every entry and hangs in its handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_killed_worker_process_loses_nothing"]
async fn child_worker() {
    let queue = std::env::var(CHILD_QUEUE).expect("started by the parent test");
    let store = std::env::var(CHILD_REDIS).expect("started by the parent test");
    // The bookkeeping of the test lives on the shared single Redis.
    let (url, _) = shared_redis().await;
    let dlq = dlq(&store, &queue, Duration::from_millis(500));
    let started = format!("{queue}:started");
    let _worker = dlq.worker(move |e| {
        let (url, started) = (url.clone(), started.clone());
        async move {
            let mut conn = connect(&url).await.unwrap();
            let _: () = conn.sadd(&started, e.id).await.unwrap();
            std::future::pending::<()>().await;
            Ok(())
        }
    });
    std::future::pending::<()>().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_loses_nothing() {
    let (url, _) = shared_redis().await;
    killed_worker_case(&url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_worker_process_loses_nothing_on_a_cluster() {
    let hosts: Vec<String> = palisade_testkit::shared_cluster()
        .iter()
        .map(|seed| seed.trim_start_matches("redis://").to_owned())
        .collect();
    killed_worker_case(&format!("redis+cluster://{}", hosts.join(","))).await;
}

/// A child process takes every entry of a queue on `store` and is killed (SIGKILL) while its
/// handlers run; the entries are delivered again, each once.
async fn killed_worker_case(store: &str) {
    let (_, mut conn) = shared_redis().await;
    let queue = unique("crash-child");
    let q = dlq(store, &queue, Duration::from_millis(500));
    let mut ids = BTreeSet::new();
    for n in 0..5 {
        ids.insert(q.push("op", &n, Failure::timeout("t")).await.unwrap());
    }
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_worker", "--ignored", "--nocapture"])
        .env(CHILD_QUEUE, &queue)
        .env(CHILD_REDIS, store)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = format!("{queue}:started");
    until("the child holds every entry", || {
        let mut conn = conn.clone();
        let started = started.clone();
        async move { conn.scard::<_, u64>(&started).await.unwrap() == 5 }
    })
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    let leased = q.stats().await.unwrap().store.by_state[&EntryState::Leased];
    assert_eq!(leased, 5, "the dead child's leases are still there");

    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let h = handled.clone();
    let worker = q.worker(move |e| {
        let h = h.clone();
        async move {
            h.lock().insert(e.id);
            Ok(())
        }
    });
    until("every entry delivered again and acked", || {
        let q = q.clone();
        async move { q.stats().await.unwrap().store.total == 0 }
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    assert_eq!(*handled.lock(), ids);
    assert_eq!(q.stats().await.unwrap().store.totals.acked, 5);
    let _: () = conn.del(&started).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restart_with_appendfsync_always_loses_no_entry() {
    let dir = std::env::temp_dir().join(unique("palisade-aof"));
    std::fs::create_dir_all(&dir).unwrap();
    let dir_arg = dir.to_str().unwrap().to_owned();
    let mut server = RedisServer::start_with(&[
        "--save",
        "",
        "--appendonly",
        "yes",
        "--appendfsync",
        "always",
        "--dir",
        &dir_arg,
    ]);
    let url = server.url();
    let q = dlq(&url, "durable", Duration::from_millis(300));
    let handled = Arc::new(Mutex::new(BTreeSet::new()));
    let h = handled.clone();
    let worker = q.worker(move |e| {
        let h = h.clone();
        async move {
            h.lock().insert(e.id);
            Ok(())
        }
    });

    // Push while the worker drains; Redis is killed (SIGKILL) and restarted midway. A push
    // that returned an id was acknowledged by Redis and must not be lost.
    let mut acknowledged = BTreeSet::new();
    let mut refused = 0;
    for n in 0..600u64 {
        if n == 300 {
            server.stop();
        }
        if n == 350 {
            server.restart();
        }
        match q.push("op", &n, Failure::unavailable("u")).await {
            Ok(id) => {
                acknowledged.insert(id);
            }
            Err(_) => refused += 1,
        }
        if n % 50 == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    assert!(refused > 0, "the outage was not noticed");
    // Every acknowledged entry is handled: those acked before the crash are gone for good,
    // those in flight come back when their lease expires, the rest are delivered.
    until("every acknowledged entry handled", || {
        let (handled, acknowledged) = (handled.clone(), acknowledged.clone());
        async move { handled.lock().is_superset(&acknowledged) }
    })
    .await;
    until("the queue drained", || {
        let q = q.clone();
        async move { q.stats().await.is_ok_and(|s| s.store.total == 0) }
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    let _ = std::fs::remove_dir_all(&dir);
}

const POISON_QUEUE: &str = "PALISADE_DLQ_POISON_QUEUE";
/// The payload whose handler crashes the worker process.
const POISON: u64 = 13;

/// The worker process of `a_poison_entry_is_quarantined_after_max_deliveries`: started by that
/// test as a child (`--ignored --exact poison_worker`); it aborts the process on `POISON`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "run as a child process by a_poison_entry_is_quarantined_after_max_deliveries"]
async fn poison_worker() {
    let Ok(queue) = std::env::var(POISON_QUEUE) else {
        return; // run by hand: nothing to do
    };
    let (url, _) = shared_redis().await;
    let dlq = poison_dlq(&url, &queue);
    let _worker = dlq.worker(|e| async move {
        if e.payload == POISON {
            std::process::abort(); // a crash: no unwinding, no outcome recorded
        }
        Ok(())
    });
    std::future::pending::<()>().await;
}

fn poison_dlq(url: &str, queue: &str) -> DeadLetterQueue<u64> {
    DeadLetterQueue::builder(queue)
        .store(Arc::new(RedisStore::new(url, queue).unwrap()))
        .config(DlqConfig {
            max_deliveries: 2,
            ..config(Duration::from_millis(300))
        })
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_entry_is_quarantined_after_max_deliveries() {
    let (url, _conn) = shared_redis().await;
    let queue = unique("crash-poison");
    let q = poison_dlq(&url, &queue);
    let poison = q.push("op", &POISON, Failure::timeout("t")).await.unwrap();

    // Worker processes, one after the other, each until it dies or the poison is quarantined.
    let quarantined = || async {
        q.get(poison)
            .await
            .unwrap()
            .is_some_and(|e| e.state == EntryState::Quarantined)
    };
    let mut crashes = 0;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !quarantined().await {
        assert!(
            std::time::Instant::now() < deadline,
            "not quarantined within 60 s"
        );
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "poison_worker", "--ignored", "--nocapture"])
            .env(POISON_QUEUE, &queue)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        loop {
            if child.try_wait().unwrap().is_some() {
                crashes += 1;
                break;
            }
            if quarantined().await || std::time::Instant::now() >= deadline {
                child.kill().unwrap();
                child.wait().unwrap();
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(
        crashes, 2,
        "two deliveries crashed a worker, the third was quarantined"
    );
    let entry = q.get(poison).await.unwrap().unwrap();
    assert!(entry.error.contains("poison"), "{}", entry.error);
    assert!(entry.error.contains("delivered 3 times"), "{}", entry.error);
    // The queue flows again.
    let good = q.push("op", &1, Failure::timeout("t")).await.unwrap();
    let worker = q.worker(|_| async { Ok(()) });
    until("the good entry is acked", || {
        let q = q.clone();
        async move { q.get(good).await.unwrap().is_none() }
    })
    .await;
    worker.shutdown(Duration::from_secs(5)).await;
    q.purge().await.unwrap();
}
