//! `RedisStore` against a real Redis (`REDIS_URL`, default `redis://127.0.0.1:6379`). These
//! tests fail loudly when Redis is unreachable: they are never skipped. Each test uses its own
//! queue (pid + nanoseconds) and deletes its keys at the end.
//!
//! The behaviour shared with `MemoryStore` is covered by the common store suite; these tests
//! cover the basics plus what only Redis has: script atomicity across connections, id order of
//! equal scores, one fencing token per claim call, batched acks, bounded batches, corrupt
//! entries, configuration checks.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade_dlq::{
    EntryId, EntryState, FailureKind, Filter, HISTORY_LEN, NewEntry, RedisStore, Schedule, Store,
    StoreError,
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

async fn open(tag: &str) -> RedisStore {
    let url = url();
    RedisStore::connect(&url, &unique_queue(tag))
        .await
        .unwrap_or_else(|e| {
            panic!(
                "these tests need a real Redis at REDIS_URL (default redis://127.0.0.1:6379), \
                 which is unreachable: {e}. Start one (redis-server) or set REDIS_URL."
            )
        })
}

async fn raw() -> redis::aio::MultiplexedConnection {
    redis::Client::open(url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap_or_else(|e| panic!("Redis at REDIS_URL is unreachable: {e}"))
}

fn key(store: &RedisStore, name: &str) -> String {
    format!("palisade:dlq:{{{}}}:{name}", store.queue())
}

/// Purges the queue, then deletes its counters and sequences too.
async fn cleanup(store: &RedisStore) {
    store.purge().await.unwrap();
    let keys: Vec<String> = [
        "due",
        "leases",
        "parked",
        "quarantined",
        "all",
        "seq",
        "tok",
        "stats",
        "kinds",
        "entries",
        "dlv",
    ]
    .iter()
    .map(|k| key(store, k))
    .collect();
    let mut conn = raw().await;
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// The field of entry `id` in the `entries` hash (its id, zero-padded).
fn field(id: EntryId) -> String {
    format!("{id:020}")
}

/// An entry's raw value, as stored in the `entries` hash.
async fn raw_value(store: &RedisStore, id: EntryId) -> Option<Vec<u8>> {
    let mut conn = raw().await;
    redis::cmd("HGET")
        .arg(store.entries_key())
        .arg(field(id))
        .query_async(&mut conn)
        .await
        .unwrap()
}

/// Replaces an entry's raw value by hand.
async fn set_raw_value(store: &RedisStore, id: EntryId, value: &[u8]) {
    let mut conn = raw().await;
    let _: () = redis::cmd("HSET")
        .arg(store.entries_key())
        .arg(field(id))
        .arg(value)
        .query_async(&mut conn)
        .await
        .unwrap();
}

/// An entry's raw parts: status line, origin line, payload (see the key layout of `RedisStore`).
async fn raw_entry(store: &RedisStore, id: EntryId) -> Option<(String, String, Vec<u8>)> {
    let v = raw_value(store, id).await?;
    let mut parts = v.splitn(3, |&b| b == b'\n');
    let status = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
    let origin = String::from_utf8(parts.next().unwrap().to_vec()).unwrap();
    Some((status, origin, parts.next().unwrap().to_vec()))
}

/// A field of an entry's status line, as stored.
async fn status_field(store: &RedisStore, id: EntryId, field: &str) -> Option<serde_json::Value> {
    let (status, _, _) = raw_entry(store, id).await?;
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    status.get(field).cloned()
}

/// Replaces, by hand, the JSON value of a field of an entry (`meta` is in the origin line, the
/// others in the status line; `hist` and `meta` are their line's last field) with `json`.
async fn corrupt(store: &RedisStore, id: EntryId, field: &str, json: &str) {
    let (mut status, mut origin, payload) = raw_entry(store, id).await.unwrap();
    let line = if field == "meta" {
        &mut origin
    } else {
        &mut status
    };
    let start = line.find(&format!("\"{field}\":")).unwrap() + field.len() + 3;
    let end = if ["hist", "meta"].contains(&field) {
        line.len() - 1
    } else {
        start + line[start..].find(',').unwrap()
    };
    line.replace_range(start..end, json);
    let mut value = format!("{status}\n{origin}\n").into_bytes();
    value.extend_from_slice(&payload);
    set_raw_value(store, id, &value).await;
}

/// The token of an entry's current lease, read from the `leases` hash (ids zero-padded).
async fn lease_holder(store: &RedisStore, id: EntryId) -> Option<u64> {
    let mut conn = raw().await;
    let v: Option<String> = redis::cmd("HGET")
        .arg(key(store, "leases"))
        .arg(format!("{id:020}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    v.map(|v| v.split(' ').next().unwrap().parse().unwrap())
}

fn entry(op: &str, kind: FailureKind, schedule: Schedule) -> NewEntry {
    NewEntry {
        operation: op.to_owned(),
        payload: format!("{{\"op\":\"{op}\"}}").into_bytes(),
        kind,
        error: format!("{kind} failure"),
        metadata: BTreeMap::from([("trace_id".to_owned(), "abc".to_owned())]),
        schedule,
    }
}

fn due_now() -> Schedule {
    Schedule::RetryIn(Duration::ZERO)
}

async fn redis_now(store: &RedisStore) -> u64 {
    store.stats().await.unwrap().now_ms
}

#[tokio::test]
async fn enqueue_claim_ack() {
    let store = open("basics").await;
    assert_eq!(store.backend(), "redis");
    let before = redis_now(&store).await;
    let mut new = entry("slack.post", FailureKind::Timeout, due_now());
    new.payload = vec![0, 159, 146, 150, 255]; // not UTF-8: payloads are raw bytes
    let a = store.enqueue(new, 100).await.unwrap();
    let b = store
        .enqueue(
            entry("slack.post", FailureKind::ClientError, Schedule::Park),
            100,
        )
        .await
        .unwrap();
    let c = store
        .enqueue(
            entry(
                "github.issue",
                FailureKind::ServerError,
                Schedule::RetryIn(Duration::from_secs(3600)),
            ),
            100,
        )
        .await
        .unwrap();
    let after = redis_now(&store).await;
    assert!(a < b && b < c);

    let e = store.get(a).await.unwrap().unwrap();
    assert_eq!(e.operation, "slack.post");
    assert_eq!(e.payload, vec![0, 159, 146, 150, 255]);
    assert_eq!(e.kind, FailureKind::Timeout);
    assert_eq!(e.error, "timeout failure");
    assert_eq!(e.attempts, 1);
    assert!(before <= e.first_failed_ms && e.first_failed_ms <= after);
    assert_eq!(e.last_failed_ms, e.first_failed_ms);
    assert_eq!(e.next_attempt_ms, Some(e.first_failed_ms));
    assert_eq!(e.state, EntryState::Scheduled);
    assert_eq!(e.metadata["trace_id"], "abc");
    assert!(e.history.is_empty());
    assert_eq!(e.lease_until_ms, None);

    let parked = store.get(b).await.unwrap().unwrap();
    assert_eq!(parked.state, EntryState::Parked);
    assert_eq!(parked.next_attempt_ms, None);
    let later = store.get(c).await.unwrap().unwrap();
    assert_eq!(
        later.next_attempt_ms,
        Some(later.first_failed_ms + 3_600_000)
    );
    assert_eq!(store.get(c + 1000).await.unwrap(), None);

    // Only `a` is due: `b` is parked, `c` due in an hour.
    let leases = store.claim(10, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), 1);
    let lease = &leases[0];
    assert_eq!(lease.entry.id, a);
    assert_eq!(lease.entry.state, EntryState::Leased);
    assert_eq!(lease.entry.next_attempt_ms, None);
    let until = lease.entry.lease_until_ms.unwrap();
    let now = redis_now(&store).await;
    assert!(until > now && until <= now + 30_000, "{until} vs {now}");
    assert!(
        store
            .claim(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 3);
    assert_eq!(stats.by_state[&EntryState::Leased], 1);
    assert_eq!(stats.by_state[&EntryState::Parked], 1);
    assert_eq!(stats.by_state[&EntryState::Scheduled], 1);
    assert_eq!(stats.by_kind.len(), 3);
    assert_eq!(stats.oldest_first_failed_ms, Some(e.first_failed_ms));

    assert!(!store.ack(a, lease.token + 1).await.unwrap());
    assert!(!store.ack(b, lease.token).await.unwrap(), "b is not leased");
    assert!(store.ack(a, lease.token).await.unwrap());
    assert!(!store.ack(a, lease.token).await.unwrap(), "acked twice");
    assert_eq!(store.get(a).await.unwrap(), None);

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 2);
    assert_eq!(stats.by_state.get(&EntryState::Leased), None);
    assert_eq!(stats.by_kind.get(&FailureKind::Timeout), None);
    assert_eq!(stats.totals.enqueued, 3);
    assert_eq!(stats.totals.acked, 1);
    assert_eq!(stats.totals.parked, 1);
    assert_eq!(stats.oldest_first_failed_ms, Some(parked.first_failed_ms));

    cleanup(&store).await;
}

#[tokio::test]
async fn equal_due_times_are_claimed_in_id_order() {
    let store = open("ties").await;
    let mut ids = Vec::new();
    for _ in 0..12 {
        ids.push(
            store
                .enqueue(entry("op", FailureKind::Other, due_now()), 100)
                .await
                .unwrap(),
        );
    }
    // A zero lease expires at once; the next claim makes all 12 due at the same millisecond
    // (one script), so only the member order decides: ids must not sort as strings (10 < 9).
    let first = store.claim(12, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 12);
    let second = store.claim(5, Duration::from_secs(30)).await.unwrap();
    let got: Vec<EntryId> = second.iter().map(|l| l.entry.id).collect();
    assert_eq!(got, ids[..5].to_vec());
    let rest = store.claim(100, Duration::from_secs(30)).await.unwrap();
    let got: Vec<EntryId> = rest.iter().map(|l| l.entry.id).collect();
    assert_eq!(got, ids[5..].to_vec());
    cleanup(&store).await;
}

#[tokio::test]
async fn a_stale_token_is_refused_after_the_lease_expires() {
    let store = open("fencing").await;
    let id = store
        .enqueue(entry("op", FailureKind::Timeout, due_now()), 100)
        .await
        .unwrap();
    let first = store.claim(1, Duration::from_millis(200)).await.unwrap();
    assert_eq!(first.len(), 1);
    let stale = first[0].token;

    // The worker "dies": once its lease expires the entry is claimable again.
    let deadline = Instant::now() + Duration::from_secs(10);
    let second = loop {
        if let Some(l) = store.claim(1, Duration::from_secs(30)).await.unwrap().pop() {
            break l;
        }
        assert!(
            Instant::now() < deadline,
            "the entry was not claimable again within 10 s of a 200 ms lease"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(second.entry.id, id);
    assert_ne!(second.token, stale);
    assert_eq!(second.entry.attempts, 1);

    assert!(!store.ack(id, stale).await.unwrap());
    assert!(
        !store
            .fail(id, stale, FailureKind::Timeout, "late", Schedule::Park)
            .await
            .unwrap()
    );
    assert!(!store.quarantine(id, Some(stale), "late").await.unwrap());
    let e = store.get(id).await.unwrap().unwrap();
    assert_eq!(e.state, EntryState::Leased);
    assert_eq!(e.lease_until_ms, second.entry.lease_until_ms);
    assert_eq!(e.error, "timeout failure");

    assert!(store.ack(id, second.token).await.unwrap());
    let totals = store.stats().await.unwrap().totals;
    assert_eq!((totals.acked, totals.parked, totals.quarantined), (1, 0, 0));
    cleanup(&store).await;
}

#[tokio::test]
async fn one_claim_call_shares_one_token_and_a_new_claim_gets_another() {
    let store = open("tokens").await;
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(
            store
                .enqueue(entry("op", FailureKind::Timeout, due_now()), 100)
                .await
                .unwrap(),
        );
    }
    // A zero lease expires at once: the next claim hands the same entries out again.
    let first = store.claim(4, Duration::ZERO).await.unwrap();
    assert_eq!(first.len(), 4);
    let t1 = first[0].token;
    assert!(
        first.iter().all(|l| l.token == t1),
        "one token per claim call"
    );

    let second = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let got: BTreeSet<EntryId> = second.iter().map(|l| l.entry.id).collect();
    assert_eq!(got, ids.iter().copied().collect::<BTreeSet<_>>());
    let t2 = second[0].token;
    assert!(second.iter().all(|l| l.token == t2));
    assert!(t2 > t1, "a later claim call gets a fresh token");
    for lease in &second {
        assert_eq!(lease.entry.state, EntryState::Leased);
        assert_eq!(lease.entry.attempts, 1);
        assert_eq!(lease_holder(&store, lease.entry.id).await, Some(t2));
    }
    // The first holders' token is stale for the re-claimed entries.
    let stale: Vec<(EntryId, u64)> = first.iter().map(|l| (l.entry.id, t1)).collect();
    assert_eq!(store.ack_many(&stale).await.unwrap(), vec![false; 4]);
    assert!(!store.ack(first[0].entry.id, t1).await.unwrap());
    assert!(
        !store
            .fail(
                first[1].entry.id,
                t1,
                FailureKind::Other,
                "late",
                Schedule::Park
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .quarantine(first[2].entry.id, Some(t1), "late")
            .await
            .unwrap()
    );
    let current: Vec<(EntryId, u64)> = second.iter().map(|l| (l.entry.id, t2)).collect();
    assert_eq!(store.ack_many(&current).await.unwrap(), vec![true; 6]);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.total, stats.totals.acked), (0, 6));
    assert!(stats.by_state.is_empty() && stats.by_kind.is_empty());
    cleanup(&store).await;
}

#[tokio::test]
async fn ack_many_acks_current_leases_and_refuses_the_rest() {
    let store = open("ackmany").await;
    let kinds = [
        FailureKind::Timeout,
        FailureKind::ServerError,
        FailureKind::Timeout,
        FailureKind::RateLimited,
    ];
    let mut ids = Vec::new();
    for kind in kinds {
        ids.push(
            store
                .enqueue(entry("op", kind, due_now()), 100)
                .await
                .unwrap(),
        );
    }
    let parked = store
        .enqueue(entry("op", FailureKind::ClientError, Schedule::Park), 100)
        .await
        .unwrap();
    let leases = store.claim(3, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), 3);
    let t = leases[0].token;
    let (a, b, c, d) = (ids[0], ids[1], ids[2], ids[3]);
    assert_eq!(store.ack_many(&[]).await.unwrap(), Vec::<bool>::new());
    let acks = [
        (a, t),        // current
        (b, t + 1000), // stale token
        (d, t),        // not leased (scheduled)
        (parked, t),   // not leased (parked)
        (d + 1000, t), // unknown id
        (c, t),        // current
        (a, t),        // already acked in this batch
    ];
    assert_eq!(
        store.ack_many(&acks).await.unwrap(),
        vec![true, false, false, false, false, true, false]
    );
    assert_eq!(store.get(a).await.unwrap(), None);
    assert_eq!(store.get(c).await.unwrap(), None);
    let e = store.get(b).await.unwrap().unwrap();
    assert_eq!(e.state, EntryState::Leased);
    assert_eq!(e.lease_until_ms, leases[1].entry.lease_until_ms);
    assert_eq!(
        store.get(d).await.unwrap().unwrap().state,
        EntryState::Scheduled
    );

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 3);
    assert_eq!(stats.totals.acked, 2);
    assert_eq!(stats.by_state[&EntryState::Leased], 1);
    assert_eq!(stats.by_state[&EntryState::Scheduled], 1);
    assert_eq!(stats.by_state[&EntryState::Parked], 1);
    // The two timeouts are gone; the others are counted still.
    assert_eq!(stats.by_kind.get(&FailureKind::Timeout), None);
    assert_eq!(stats.by_kind[&FailureKind::ServerError], 1);
    assert_eq!(stats.by_kind[&FailureKind::RateLimited], 1);
    assert_eq!(stats.by_kind[&FailureKind::ClientError], 1);
    // Same effects as single acks: the list no longer shows them, the rest go on.
    let page = store.list(&Filter::default(), None, 10).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!(got, vec![b, d, parked]);
    assert_eq!(store.ack_many(&[(b, t)]).await.unwrap(), vec![true]);
    assert_eq!(store.stats().await.unwrap().totals.acked, 3);
    cleanup(&store).await;
}

#[tokio::test]
async fn large_claims_and_ack_batches_loop_over_script_calls() {
    let store = open("bigacks").await;
    // More than one claim script (1,000 entries) and one ack script (1,000 acks).
    let n = 1100;
    for _ in 0..n {
        store
            .enqueue(entry("op", FailureKind::Timeout, due_now()), 10_000)
            .await
            .unwrap();
    }
    let leases = store.claim(n, Duration::from_secs(30)).await.unwrap();
    assert_eq!(leases.len(), n);
    let tokens: BTreeSet<u64> = leases.iter().map(|l| l.token).collect();
    assert_eq!(tokens.len(), 2, "two claim calls, two tokens");
    let mut acks: Vec<(EntryId, u64)> = leases.iter().map(|l| (l.entry.id, l.token)).collect();
    acks.push(acks[0]);
    let done = store.ack_many(&acks).await.unwrap();
    assert_eq!(done.len(), n + 1);
    assert!(done[..n].iter().all(|d| *d));
    assert!(!done[n], "acked once");
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.total, stats.totals.acked), (0, n as u64));
    assert!(stats.by_kind.is_empty());
    cleanup(&store).await;
}

#[tokio::test]
async fn fail_keeps_a_bounded_history_and_counts() {
    let store = open("fail").await;
    let id = store
        .enqueue(entry("op", FailureKind::Timeout, due_now()), 100)
        .await
        .unwrap();
    let enqueued = store.get(id).await.unwrap().unwrap();
    let kinds = [
        FailureKind::ServerError,
        FailureKind::Unavailable,
        FailureKind::RateLimited,
        FailureKind::Timeout,
        FailureKind::Other,
        FailureKind::ServerError,
    ];
    let mut previous = enqueued.clone();
    for (n, kind) in kinds.iter().enumerate() {
        let lease = store
            .claim(1, Duration::from_secs(30))
            .await
            .unwrap()
            .pop()
            .unwrap();
        assert!(
            !store
                .fail(id, lease.token + 1, *kind, "stale", due_now())
                .await
                .unwrap()
        );
        let message = format!("failure «{n}» \"quoted\" / slash");
        assert!(
            store
                .fail(id, lease.token, *kind, &message, due_now())
                .await
                .unwrap()
        );
        let e = store.get(id).await.unwrap().unwrap();
        assert_eq!(e.attempts, u32::try_from(n).unwrap() + 2);
        assert_eq!(e.kind, *kind);
        assert_eq!(e.error, message);
        assert_eq!(e.state, EntryState::Scheduled);
        assert_eq!(e.next_attempt_ms, Some(e.last_failed_ms));
        assert_eq!(e.lease_until_ms, None);
        assert!(e.last_failed_ms >= previous.last_failed_ms);
        assert_eq!(e.first_failed_ms, enqueued.first_failed_ms);
        assert_eq!(e.history.len(), (n + 1).min(HISTORY_LEN));
        let newest = e.history.last().unwrap();
        assert_eq!(newest.at_ms, previous.last_failed_ms);
        assert_eq!(newest.kind, previous.kind);
        assert_eq!(newest.error, previous.error);
        previous = e;
    }
    // Six failures after the original: the original's record fell off the history.
    assert_eq!(previous.history[0].error, "failure «0» \"quoted\" / slash");
    assert_eq!(previous.history[0].kind, FailureKind::ServerError);

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_kind.len(), 1);
    assert_eq!(stats.by_kind[&FailureKind::ServerError], 1);

    // A later retry, then exhaustion.
    let lease = store
        .claim(1, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .unwrap();
    let hour = Schedule::RetryIn(Duration::from_secs(3600));
    assert!(
        store
            .fail(id, lease.token, FailureKind::Timeout, "slow", hour)
            .await
            .unwrap()
    );
    let e = store.get(id).await.unwrap().unwrap();
    assert_eq!(e.next_attempt_ms, Some(e.last_failed_ms + 3_600_000));
    assert!(
        store
            .claim(1, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.retry(id).await.unwrap());
    let lease = store
        .claim(1, Duration::from_secs(30))
        .await
        .unwrap()
        .pop()
        .unwrap();
    assert_eq!(lease.entry.attempts, 0);
    assert!(
        store
            .fail(
                id,
                lease.token,
                FailureKind::ClientError,
                "400",
                Schedule::Park
            )
            .await
            .unwrap()
    );
    let e = store.get(id).await.unwrap().unwrap();
    assert_eq!(e.state, EntryState::Parked);
    assert_eq!(e.attempts, 1);
    assert_eq!(e.next_attempt_ms, None);

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_state[&EntryState::Parked], 1);
    assert_eq!(stats.by_kind[&FailureKind::ClientError], 1);
    assert_eq!(stats.by_kind.len(), 1);
    assert_eq!(stats.totals.parked, 1);
    assert_eq!(stats.totals.retried, 1);
    cleanup(&store).await;
}

#[tokio::test]
async fn retry_discard_and_list_with_filters_and_cursor() {
    let store = open("ops").await;
    let mut ids = Vec::new();
    for i in 0..10u32 {
        let (kind, schedule) = if i % 3 == 0 {
            (FailureKind::ClientError, Schedule::Park)
        } else {
            (
                FailureKind::Timeout,
                Schedule::RetryIn(Duration::from_secs(3600)),
            )
        };
        let op = if i % 2 == 0 { "even" } else { "odd" };
        ids.push(store.enqueue(entry(op, kind, schedule), 100).await.unwrap());
    }
    // Parked: 0, 3, 6, 9. Even operations: 0, 2, 4, 6, 8.

    // Cursor paging over everything.
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = store.list(&Filter::default(), after, 3).await.unwrap();
        assert!(page.entries.len() <= 3);
        seen.extend(page.entries.iter().map(|e| e.id));
        match page.next {
            Some(n) => {
                assert_eq!(Some(n), page.entries.last().map(|e| e.id));
                after = Some(n);
            }
            None => break,
        }
    }
    assert_eq!(seen, ids);
    // A page that ends exactly at the last entry has no successor.
    let page = store.list(&Filter::default(), None, 10).await.unwrap();
    assert_eq!((page.entries.len(), page.next), (10, None));
    let page = store.list(&Filter::default(), None, 0).await.unwrap();
    assert_eq!((page.entries.len(), page.next), (0, None));

    let parked = Filter {
        state: Some(EntryState::Parked),
        ..Filter::default()
    };
    let page = store.list(&parked, None, 2).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!(got, vec![ids[0], ids[3]]);
    assert_eq!(page.next, Some(ids[3]));
    let page = store.list(&parked, Some(ids[3]), 2).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!((got, page.next), (vec![ids[6], ids[9]], None));

    let even_timeouts = Filter {
        kind: Some(FailureKind::Timeout),
        operation: Some("even".to_owned()),
        state: None,
    };
    let page = store.list(&even_timeouts, None, 10).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!((got, page.next), (vec![ids[2], ids[4], ids[8]], None));
    let nothing = Filter {
        operation: Some(String::new()),
        ..Filter::default()
    };
    assert!(
        store
            .list(&nothing, None, 10)
            .await
            .unwrap()
            .entries
            .is_empty()
    );

    // Retry: parked and scheduled entries only.
    assert!(store.retry(ids[0]).await.unwrap());
    assert!(store.retry(ids[1]).await.unwrap());
    let e = store.get(ids[0]).await.unwrap().unwrap();
    assert_eq!(
        (e.state, e.attempts),
        (EntryState::Scheduled, 0),
        "retried entries are due now with a fresh budget"
    );
    let leases = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let got: Vec<EntryId> = leases.iter().map(|l| l.entry.id).collect();
    assert_eq!(got, vec![ids[0], ids[1]]);
    assert!(!store.retry(ids[0]).await.unwrap(), "leased");
    assert!(store.quarantine(ids[3], None, "bad payload").await.unwrap());
    assert!(!store.retry(ids[3]).await.unwrap(), "quarantined");
    assert!(!store.retry(ids[9] + 100).await.unwrap(), "unknown");
    let q = store.get(ids[3]).await.unwrap().unwrap();
    assert_eq!(q.state, EntryState::Quarantined);
    assert_eq!(q.error, "bad payload");
    assert_eq!(q.payload, b"{\"op\":\"odd\"}".to_vec());
    let quarantined = Filter {
        state: Some(EntryState::Quarantined),
        ..Filter::default()
    };
    let page = store.list(&quarantined, None, 10).await.unwrap();
    assert_eq!(page.entries, vec![q]);

    // Discard: any state.
    assert!(store.discard(ids[0]).await.unwrap(), "leased");
    assert!(store.discard(ids[3]).await.unwrap(), "quarantined");
    assert!(store.discard(ids[6]).await.unwrap(), "parked");
    assert!(!store.discard(ids[6]).await.unwrap(), "gone");
    assert!(!store.ack(ids[0], leases[0].token).await.unwrap());

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 7);
    assert_eq!(stats.by_state[&EntryState::Parked], 1);
    assert_eq!(stats.by_state[&EntryState::Leased], 1);
    assert_eq!(stats.by_state[&EntryState::Scheduled], 5);
    assert_eq!(stats.by_state.get(&EntryState::Quarantined), None);
    assert_eq!(stats.by_kind[&FailureKind::ClientError], 1);
    assert_eq!(stats.by_kind[&FailureKind::Timeout], 6);
    assert_eq!(stats.totals.retried, 2);
    assert_eq!(stats.totals.discarded, 3);
    assert_eq!(stats.totals.quarantined, 1);
    cleanup(&store).await;
}

#[tokio::test]
async fn eviction_and_trim_by_size_and_age() {
    let store = open("trim").await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            store
                .enqueue(entry("op", FailureKind::Other, due_now()), 1000)
                .await
                .unwrap(),
        );
    }
    let day = Duration::from_secs(86_400);
    let t = store.trim(day, 4).await.unwrap();
    assert_eq!((t.expired, t.evicted), (0, 6));
    let page = store.list(&Filter::default(), None, 100).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!(got, ids[6..].to_vec());

    // At its maximum, enqueue evicts the oldest first.
    let newest = store
        .enqueue(entry("op", FailureKind::Other, Schedule::Park), 4)
        .await
        .unwrap();
    let page = store.list(&Filter::default(), None, 100).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!(got, vec![ids[7], ids[8], ids[9], newest]);
    let stats = store.stats().await.unwrap();
    assert_eq!((stats.totals.evicted, stats.totals.expired), (7, 0));

    // By age: wait until the Redis clock is a second past the newest entry, add one more,
    // and trim with a half-second time to live: all but the last go.
    let newest_first = store.get(newest).await.unwrap().unwrap().first_failed_ms;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_now(&store).await < newest_first + 1000 {
        assert!(
            Instant::now() < deadline,
            "the Redis clock does not advance"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let fresh = store
        .enqueue(entry("op", FailureKind::Other, due_now()), 1000)
        .await
        .unwrap();
    let t = store.trim(Duration::from_millis(500), 1000).await.unwrap();
    assert_eq!((t.expired, t.evicted), (4, 0));
    let page = store.list(&Filter::default(), None, 100).await.unwrap();
    assert_eq!(page.entries.len(), 1);
    assert_eq!(page.entries[0].id, fresh);

    // A zero time to live removes everything older than now.
    let fresh_first = page.entries[0].first_failed_ms;
    while redis_now(&store).await <= fresh_first {
        assert!(
            Instant::now() < deadline,
            "the Redis clock does not advance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = store.trim(Duration::ZERO, 1000).await.unwrap();
    assert_eq!((t.expired, t.evicted), (1, 0));

    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 0);
    assert!(stats.by_state.is_empty() && stats.by_kind.is_empty());
    assert_eq!(stats.oldest_first_failed_ms, None);
    assert_eq!((stats.totals.evicted, stats.totals.expired), (7, 5));
    assert_eq!(stats.totals.enqueued, 12);
    cleanup(&store).await;
}

#[tokio::test]
async fn big_queues_are_listed_trimmed_and_purged_in_batches() {
    let store = open("batches").await;
    // More than two script batches (1,000 entries each).
    let n = 2500;
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let op = if [5, 1500, 2400].contains(&i) {
            "rare"
        } else {
            "bulk"
        };
        let schedule = if i % 500 == 0 {
            Schedule::Park
        } else {
            due_now()
        };
        ids.push(
            store
                .enqueue(entry(op, FailureKind::Timeout, schedule), 100_000)
                .await
                .unwrap(),
        );
    }
    let rare = Filter {
        operation: Some("rare".to_owned()),
        ..Filter::default()
    };
    let page = store.list(&rare, None, 2).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!(got, vec![ids[5], ids[1500]]);
    assert_eq!(page.next, Some(ids[1500]));
    let page = store.list(&rare, page.next, 2).await.unwrap();
    let got: Vec<EntryId> = page.entries.iter().map(|e| e.id).collect();
    assert_eq!((got, page.next), (vec![ids[2400]], None));
    let parked = Filter {
        state: Some(EntryState::Parked),
        ..Filter::default()
    };
    let page = store.list(&parked, None, 100).await.unwrap();
    assert_eq!(page.entries.len(), 5);
    let none = Filter {
        operation: Some("absent".to_owned()),
        ..Filter::default()
    };
    let page = store.list(&none, None, 10).await.unwrap();
    assert_eq!((page.entries.len(), page.next), (0, None));

    let t = store.trim(Duration::from_secs(86_400), 1100).await.unwrap();
    assert_eq!((t.expired, t.evicted), (0, 1400));
    // Enqueue at a far lower maximum: 1,051 evictions, over more than one script call.
    store
        .enqueue(entry("op", FailureKind::Timeout, due_now()), 50)
        .await
        .unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 50);
    assert_eq!(stats.totals.evicted, 1400 + 1051);
    let claimed = store.claim(2000, Duration::from_secs(30)).await.unwrap();
    assert_eq!(claimed.len(), 50);
    assert_eq!(claimed[0].entry.id, ids[2451]);

    assert_eq!(store.purge().await.unwrap(), 50);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 0);
    assert!(stats.by_state.is_empty() && stats.by_kind.is_empty());
    assert_eq!(stats.totals.purged, 50);
    assert_eq!(stats.totals.enqueued, 2501);
    cleanup(&store).await;
}

#[tokio::test]
async fn corrupt_entries_are_named_and_quarantined_by_claim() {
    let store = open("corrupt").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            store
                .enqueue(entry("op", FailureKind::Timeout, due_now()), 100)
                .await
                .unwrap(),
        );
    }
    corrupt(&store, ids[0], "att", "\"many\"").await;
    corrupt(&store, ids[1], "meta", "\"{not json\"").await;
    for (id, field) in [(ids[0], "att"), (ids[1], "meta")] {
        match store.get(id).await {
            Err(StoreError::Corrupt(msg)) => {
                assert!(msg.contains(&format!("entry {id} ")), "{msg}");
                assert!(msg.contains(store.queue()), "{msg}");
                assert!(msg.contains(&format!("field {field}")), "{msg}");
            }
            other => panic!("expected a corrupt entry, got {other:?}"),
        }
    }
    // Listing everything reports the first corrupt entry; a filter that skips it works.
    assert!(matches!(
        store.list(&Filter::default(), None, 10).await,
        Err(StoreError::Corrupt(msg)) if msg.contains("field att")
    ));

    // The first two are due first but do not parse: quarantined, and the claim goes on.
    let leases = store.claim(2, Duration::from_secs(30)).await.unwrap();
    let got: Vec<EntryId> = leases.iter().map(|l| l.entry.id).collect();
    assert_eq!(got, vec![ids[2], ids[3]]);
    for id in &ids[..2] {
        assert_eq!(
            status_field(&store, *id, "state").await,
            Some(serde_json::json!("quarantined"))
        );
        assert!(
            raw_entry(&store, *id).await.unwrap().2 == b"{\"op\":\"op\"}",
            "raw bytes kept"
        );
    }
    assert!(
        status_field(&store, ids[0], "err")
            .await
            .unwrap()
            .as_str()
            .unwrap()
            .contains("field att")
    );
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_state[&EntryState::Quarantined], 2);
    assert_eq!(stats.by_state[&EntryState::Leased], 2);
    assert_eq!(stats.totals.quarantined, 2);
    let leased = Filter {
        state: Some(EntryState::Leased),
        ..Filter::default()
    };
    assert_eq!(
        store.list(&leased, None, 10).await.unwrap().entries.len(),
        2
    );
    assert!(
        store
            .claim(10, Duration::from_secs(30))
            .await
            .unwrap()
            .is_empty()
    );

    // `fail` refuses an entry whose history does not parse, and changes nothing.
    corrupt(&store, ids[2], "hist", "\"oops\"").await;
    match store
        .fail(
            ids[2],
            leases[0].token,
            FailureKind::Other,
            "x",
            Schedule::Park,
        )
        .await
    {
        Err(StoreError::Corrupt(msg)) => {
            assert!(msg.contains(&format!("entry {} ", ids[2])) && msg.contains("field hist"));
        }
        other => panic!("expected a corrupt entry, got {other:?}"),
    }
    assert_eq!(
        status_field(&store, ids[2], "att").await,
        Some(serde_json::json!(1))
    );
    assert_eq!(
        lease_holder(&store, ids[2]).await,
        Some(leases[0].token),
        "still leased"
    );
    // Operators can still remove corrupt entries.
    for id in &ids[..3] {
        assert!(store.discard(*id).await.unwrap());
    }
    assert!(store.ack(ids[3], leases[1].token).await.unwrap());
    assert_eq!(store.stats().await.unwrap().total, 0);
    cleanup(&store).await;
}

#[tokio::test]
async fn stray_members_and_unreadable_entries_do_not_block_the_queue() {
    let store = open("stray").await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            store
                .enqueue(entry("op", FailureKind::Timeout, due_now()), 100)
                .await
                .unwrap(),
        );
    }
    let mut conn = raw().await;
    // An entry deleted by hand leaves members in the indexes; one whose status line is not
    // JSON cannot be read at all.
    let _: () = redis::cmd("HDEL")
        .arg(store.entries_key())
        .arg(field(ids[0]))
        .query_async(&mut conn)
        .await
        .unwrap();
    let (_, origin, payload) = raw_entry(&store, ids[1]).await.unwrap();
    let mut value = format!("not json\n{origin}\n").into_bytes();
    value.extend_from_slice(&payload);
    set_raw_value(&store, ids[1], &value).await;
    match store.get(ids[1]).await {
        Err(StoreError::Corrupt(msg)) => assert!(msg.contains("field status"), "{msg}"),
        other => panic!("expected a corrupt entry, got {other:?}"),
    }
    // The stray member is dropped, the unreadable entry quarantined as it is, the rest leased.
    let leases = store.claim(10, Duration::from_secs(30)).await.unwrap();
    let got: Vec<EntryId> = leases.iter().map(|l| l.entry.id).collect();
    assert_eq!(got, ids[2..].to_vec());
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total, 3);
    assert_eq!(stats.by_state[&EntryState::Quarantined], 1);
    assert_eq!(stats.by_state[&EntryState::Leased], 2);
    assert_eq!(
        raw_value(&store, ids[1]).await,
        Some(value),
        "raw bytes kept"
    );
    // The oldest entry (the unreadable one) has no first failure time; trimming passes it over.
    assert_eq!(stats.oldest_first_failed_ms, None);
    let newest = leases[1].entry.first_failed_ms;
    let deadline = Instant::now() + Duration::from_secs(10);
    while redis_now(&store).await <= newest {
        assert!(
            Instant::now() < deadline,
            "the Redis clock does not advance"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let t = store.trim(Duration::ZERO, 100).await.unwrap();
    assert_eq!((t.expired, t.evicted), (2, 0));
    assert_eq!(store.stats().await.unwrap().total, 1);
    assert!(store.discard(ids[1]).await.unwrap());
    assert_eq!(store.stats().await.unwrap().total, 0);
    cleanup(&store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_never_share_an_entry() {
    let store = open("concurrent").await;
    let n = 200;
    for _ in 0..n {
        store
            .enqueue(entry("op", FailureKind::Timeout, due_now()), 1000)
            .await
            .unwrap();
    }
    let mut tasks = Vec::new();
    for i in 0..4 {
        // Separate connections, as separate processes would have.
        let s = RedisStore::connect(url(), store.queue()).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let leases = s.claim(7 + i, Duration::from_secs(30)).await.unwrap();
                if leases.is_empty() {
                    return mine;
                }
                for l in leases {
                    assert!(s.ack(l.entry.id, l.token).await.unwrap());
                    mine.push(l.entry.id);
                }
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<EntryId> = all.iter().copied().collect();
    assert_eq!(all.len(), n);
    assert_eq!(distinct.len(), n);
    assert_eq!(store.stats().await.unwrap().totals.acked, n as u64);
    cleanup(&store).await;
}

#[tokio::test]
async fn config_checks_and_errors() {
    let store = open("config").await;
    // Whatever the shared Redis's policy is (or if it refuses CONFIG), connecting succeeded.
    if let Some(policy) = store.maxmemory_policy() {
        assert!(!policy.is_empty());
    }
    store.check_config().await.unwrap();
    assert!(format!("{store:?}").contains(store.queue()));

    let secret = RedisStore::new("redis://:s3cret-pw@127.0.0.1:6379", "q").unwrap();
    assert!(!format!("{secret:?}").contains("s3cret"));

    for bad in ["", "has space", "a/b", "{tag}", &"x".repeat(129)] {
        let e = RedisStore::new(url(), bad).unwrap_err();
        assert_eq!(e.field, "queue", "{bad:?}");
    }
    let e = RedisStore::new("http://127.0.0.1:6379", "q").unwrap_err();
    assert_eq!(e.field, "redis_url");
    assert!(matches!(
        RedisStore::connect(url(), "a b").await,
        Err(StoreError::Unavailable(msg)) if msg.contains("queue")
    ));
    cleanup(&store).await;
}

#[tokio::test]
async fn an_unreachable_redis_is_unavailable() {
    let queue = unique_queue("down");
    let store = RedisStore::new("redis://127.0.0.1:1", &queue).unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(30),
        store.enqueue(entry("op", FailureKind::Other, due_now()), 10),
    )
    .await
    .expect("a refused connection must fail fast");
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{result:?}"
    );
    let connected = tokio::time::timeout(
        Duration::from_secs(30),
        RedisStore::connect("redis://127.0.0.1:1", &queue),
    )
    .await
    .expect("a refused connection must fail fast");
    assert!(matches!(connected, Err(StoreError::Unavailable(_))));
}
