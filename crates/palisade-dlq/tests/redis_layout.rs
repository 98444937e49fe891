//! `RedisStore` key layout, migration from the layout of earlier versions (one string key per
//! entry) and waiting for replicas, against a real Redis (`REDIS_URL`, default
//! `redis://127.0.0.1:6379`). Never skipped: they fail loudly when Redis is unreachable.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use palisade_dlq::{
    EntryId, EntryState, FailureKind, Filter, NewEntry, RedisStore, Schedule, Store, StoreError,
};

fn url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

fn unique_queue(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("test-{tag}-{}-{nanos}", std::process::id())
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need a real Redis at REDIS_URL (default redis://127.0.0.1:6379), \
                 which is unreachable: {e}. Start one (redis-server) or set REDIS_URL."
            )
        })
}

async fn open(queue: &str) -> RedisStore {
    RedisStore::connect(url(), queue).await.unwrap()
}

fn key(queue: &str, name: &str) -> String {
    format!("palisade:dlq:{{{queue}}}:{name}")
}

/// Every key of `queue` now.
async fn keys_of(queue: &str) -> BTreeSet<String> {
    let mut conn = raw().await;
    let mut cursor = 0u64;
    let mut out = BTreeSet::new();
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(key(queue, "*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(&mut conn)
            .await
            .unwrap();
        out.extend(batch);
        if next == 0 {
            return out;
        }
        cursor = next;
    }
}

/// Deletes every key of `queue`.
async fn delete(queue: &str) {
    let keys = keys_of(queue).await;
    if keys.is_empty() {
        return;
    }
    let mut conn = raw().await;
    let _: () = redis::cmd("DEL")
        .arg(keys.into_iter().collect::<Vec<_>>())
        .query_async(&mut conn)
        .await
        .unwrap();
}

fn entry(op: &str, schedule: Schedule) -> NewEntry {
    NewEntry {
        operation: op.to_owned(),
        payload: b"{\"n\":1}".to_vec(),
        kind: FailureKind::Timeout,
        error: "timeout failure".to_owned(),
        metadata: Default::default(),
        schedule,
    }
}

/// Redis `TIME` in ms.
async fn redis_ms(conn: &mut redis::aio::MultiplexedConnection) -> u64 {
    let (secs, micros): (u64, u64) = redis::cmd("TIME").query_async(conn).await.unwrap();
    secs * 1000 + micros / 1000
}

/// What [`write_old_queue`] wrote: ids by state.
struct OldQueue {
    scheduled: Vec<EntryId>,
    parked: Vec<EntryId>,
    /// Leased by a worker that died: its lease has expired.
    leased: EntryId,
}

/// Writes queue `queue` by hand in the layout of earlier versions: each entry a string key
/// `palisade:dlq:{q}:e:<id>` (status line, origin line, payload), the indexes as today. Entry
/// `i` (1-based) has payload `{"n":i}`; every fifth is parked, entry 2 is leased under token 5
/// with an expired lease, the others are due now.
async fn write_old_queue(queue: &str, n: u64) -> OldQueue {
    let mut conn = raw().await;
    let now = redis_ms(&mut conn).await;
    let mut pipe = redis::pipe();
    let mut old = OldQueue {
        scheduled: Vec::new(),
        parked: Vec::new(),
        leased: 2,
    };
    for i in 1..=n {
        let m = format!("{i:020}");
        let first = now - 10_000 + i;
        let parked = i % 5 == 0;
        let (state, next) = if parked {
            ("parked", "null".to_owned())
        } else {
            ("scheduled", first.to_string())
        };
        let (kind, err) = if i % 2 == 0 {
            ("timeout", "timed out")
        } else {
            ("server_error", "500")
        };
        let status = format!(
            r#"{{"kind":"{kind}","state":"{state}","att":1,"first":{first},"last":{first},"next":{next},"err":"{err}","hist":[]}}"#
        );
        let origin = r#"{"op":"old.op","meta":{"trace_id":"abc"}}"#;
        let value = format!("{status}\n{origin}\n{{\"n\":{i}}}");
        pipe.cmd("SET")
            .arg(key(queue, &format!("e:{m}")))
            .arg(value);
        pipe.cmd("ZADD").arg(key(queue, "all")).arg(i).arg(&m);
        pipe.cmd("HINCRBY")
            .arg(key(queue, "kinds"))
            .arg(kind)
            .arg(1);
        if parked {
            pipe.cmd("ZADD").arg(key(queue, "parked")).arg(i).arg(&m);
            old.parked.push(i);
        } else if i == old.leased {
            // A lease that ended before any other entry was due: due again, first.
            pipe.cmd("ZADD")
                .arg(key(queue, "due"))
                .arg(now - 20_000)
                .arg(&m);
            pipe.cmd("HSET")
                .arg(key(queue, "leases"))
                .arg(&m)
                .arg(format!("5 {kind}"));
            pipe.cmd("HSET").arg(key(queue, "dlv")).arg(&m).arg(1);
        } else {
            pipe.cmd("ZADD").arg(key(queue, "due")).arg(first).arg(&m);
            old.scheduled.push(i);
        }
    }
    pipe.cmd("SET").arg(key(queue, "seq")).arg(n);
    pipe.cmd("SET").arg(key(queue, "tok")).arg(5);
    pipe.cmd("HSET")
        .arg(key(queue, "stats"))
        .arg("parked")
        .arg(old.parked.len());
    let _: () = pipe.query_async(&mut conn).await.unwrap();
    old
}

/// Whether any old-layout entry key of `queue` is left.
async fn old_keys_left(queue: &str) -> usize {
    keys_of(queue)
        .await
        .iter()
        .filter(|k| k.starts_with(&key(queue, "e:")))
        .count()
}

/// Every entry, page by page.
async fn list_all(store: &RedisStore) -> Vec<palisade_dlq::StoredEntry> {
    let mut out = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&Filter::default(), after, 500).await.unwrap();
        out.extend(page.entries);
        match page.next {
            Some(n) => after = Some(n),
            None => return out,
        }
    }
}

#[tokio::test]
async fn an_old_layout_queue_is_migrated_and_nothing_is_lost() {
    let queue = unique_queue("migrate");
    // More than one scan batch (1,000) and several move batches (500).
    let n = 1205;
    let old = write_old_queue(&queue, n).await;
    assert_eq!(old_keys_left(&queue).await, n as usize);

    let store = open(&queue).await;
    assert_eq!(old_keys_left(&queue).await, 0, "every old key moved");
    let mut conn = raw().await;
    let fields: u64 = redis::cmd("HLEN")
        .arg(store.entries_key())
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(fields, n);

    // Listed, unchanged.
    let listed = list_all(&store).await;
    let ids: Vec<EntryId> = listed.iter().map(|e| e.id).collect();
    assert_eq!(ids, (1..=n).collect::<Vec<_>>());
    for e in &listed {
        assert_eq!(e.payload, format!("{{\"n\":{}}}", e.id).into_bytes());
        assert_eq!(e.operation, "old.op");
        assert_eq!(e.metadata["trace_id"], "abc");
        let want = if old.parked.contains(&e.id) {
            EntryState::Parked
        } else if e.id == old.leased {
            EntryState::Leased
        } else {
            EntryState::Scheduled
        };
        assert_eq!(e.state, want, "entry {}", e.id);
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, n);
    assert_eq!(stats.totals.enqueued, n);
    assert_eq!(stats.by_state[&EntryState::Parked], old.parked.len() as u64);
    assert_eq!(
        stats.by_kind.values().sum::<u64>(),
        n,
        "kind counts carried over"
    );

    // Claimable (the expired lease first: it is the earliest due) and ackable.
    let leases = store.claim(2000, Duration::from_secs(30)).await.unwrap();
    let claimed: BTreeSet<EntryId> = leases.iter().map(|l| l.entry.id).collect();
    let mut want: BTreeSet<EntryId> = old.scheduled.iter().copied().collect();
    want.insert(old.leased);
    assert_eq!(claimed, want);
    assert_eq!(leases[0].entry.id, old.leased);
    assert!(leases[0].token > 5, "a fresh token");
    assert_eq!(leases[0].deliveries, 2, "delivered before the migration");
    let acks: Vec<(EntryId, u64)> = leases.iter().map(|l| (l.entry.id, l.token)).collect();
    assert!(store.ack_many(&acks).await.unwrap().iter().all(|&a| a));
    // Parked entries can be retried, then claimed and acked too.
    let p = old.parked[0];
    assert!(store.retry(p).await.unwrap());
    let again = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].entry.id, p);
    assert!(store.ack(p, again[0].token).await.unwrap());

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, old.parked.len() as u64 - 1);
    assert_eq!(stats.totals.acked, want.len() as u64 + 1);
    // New entries continue the old sequence.
    let id = store
        .enqueue(entry("new", Schedule::Park), 10_000)
        .await
        .unwrap();
    assert_eq!(id, n + 1);
    delete(&queue).await;
}

#[tokio::test]
async fn a_lazy_store_migrates_before_its_first_operation_and_concurrent_starts_agree() {
    // A store built with `new` (no connection yet) migrates on its first operation.
    let queue = unique_queue("migrate-lazy");
    let old = write_old_queue(&queue, 7).await;
    let store = RedisStore::new(url(), &queue).unwrap();
    let leases = store.claim(100, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), old.scheduled.len() + 1);
    assert_eq!(old_keys_left(&queue).await, 0);
    for l in &leases {
        assert!(store.ack(l.entry.id, l.token).await.unwrap());
    }
    assert_eq!(store.stats().await.unwrap().total, old.parked.len() as u64);
    delete(&queue).await;

    // Several processes starting at once: each migrates, none loses or duplicates an entry.
    let queue = unique_queue("migrate-race");
    write_old_queue(&queue, 1500).await;
    let (a, b, c) = tokio::join!(open(&queue), open(&queue), open(&queue));
    assert_eq!(old_keys_left(&queue).await, 0);
    for s in [&a, &b, &c] {
        assert_eq!(s.stats().await.unwrap().total, 1500);
    }
    assert_eq!(list_all(&b).await.len(), 1500);
    delete(&queue).await;
}

#[tokio::test]
async fn a_queue_has_only_the_documented_keys() {
    let queue = unique_queue("layout");
    let store = open(&queue).await;
    let a = store
        .enqueue(entry("a", Schedule::RetryIn(Duration::ZERO)), 100)
        .await
        .unwrap();
    store
        .enqueue(entry("b", Schedule::Park), 100)
        .await
        .unwrap();
    store
        .enqueue(entry("c", Schedule::RetryIn(Duration::ZERO)), 100)
        .await
        .unwrap();
    let leases = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), 2);
    assert!(
        store
            .fail(
                a,
                leases[0].token,
                FailureKind::Other,
                "again",
                Schedule::RetryIn(Duration::from_secs(60))
            )
            .await
            .unwrap()
    );
    assert!(
        store
            .quarantine(leases[1].entry.id, Some(leases[1].token), "bad")
            .await
            .unwrap()
    );
    store.stats().await.unwrap();
    let documented: BTreeSet<String> = [
        "entries",
        "due",
        "leases",
        "parked",
        "quarantined",
        "all",
        "dlv",
        "seq",
        "tok",
        "stats",
        "kinds",
    ]
    .iter()
    .map(|k| key(&queue, k))
    .collect();
    let keys = keys_of(&queue).await;
    assert!(keys.is_subset(&documented), "{keys:?}");
    assert!(keys.contains(store.entries_key()));
    assert_eq!(
        store.entries_key(),
        format!("palisade:dlq:{{{queue}}}:entries")
    );
    store.purge().await.unwrap();
    delete(&queue).await;
}

/// Replicas connected to the test Redis (none, usually).
async fn replicas() -> u32 {
    let mut conn = raw().await;
    let info: String = redis::cmd("INFO")
        .arg("replication")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("connected_slaves:"))
        .map_or(0, |n| n.trim().parse().unwrap())
}

#[tokio::test]
async fn writes_wait_for_replicas_when_asked() {
    let queue = unique_queue("wait");
    let plain = open(&queue).await;
    // One replica more than the Redis has: WAIT times out with fewer acknowledgements.
    let wanted = replicas().await + 1;
    let waiting = plain
        .clone()
        .wait_for_replicas(wanted, Duration::from_millis(50));
    assert!(format!("{waiting:?}").contains("replicas"));

    let started = std::time::Instant::now();
    let err = waiting
        .enqueue(entry("a", Schedule::RetryIn(Duration::ZERO)), 100)
        .await
        .unwrap_err();
    assert!(started.elapsed() >= Duration::from_millis(50), "WAIT ran");
    match &err {
        StoreError::NotReplicated { acked, wanted: w } => {
            assert_eq!((*acked, *w), (wanted - 1, wanted));
        }
        other => panic!("expected NotReplicated, got {other:?}"),
    }
    assert!(err.to_string().contains("may be lost at failover"), "{err}");
    // The write was applied on the primary all the same.
    let stats = plain.stats().await.unwrap();
    assert_eq!(stats.total, 1);

    // Reads and claims do not wait; acks do (and are applied).
    let leases = waiting.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), 1);
    assert!(waiting.get(leases[0].entry.id).await.unwrap().is_some());
    assert!(matches!(
        waiting.ack(leases[0].entry.id, leases[0].token).await,
        Err(StoreError::NotReplicated { .. })
    ));
    assert_eq!(plain.stats().await.unwrap().total, 0);
    assert_eq!(plain.stats().await.unwrap().totals.acked, 1);

    // Zero replicas: no wait, every write succeeds.
    let none = plain
        .clone()
        .wait_for_replicas(0, Duration::from_millis(50));
    let id = none.enqueue(entry("b", Schedule::Park), 100).await.unwrap();
    assert!(none.discard(id).await.unwrap());
    none.purge().await.unwrap();
    delete(&queue).await;
}
