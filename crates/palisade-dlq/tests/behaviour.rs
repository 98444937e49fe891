//! One behavioural suite, run against every store: the in-memory store, the Redis store on
//! the single Redis the test command starts, and the Redis store on the 3-primary Redis
//! Cluster it starts. Time is real here (Redis keeps its own); waits are
//! polls with a deadline, and retry delays are zero or a few milliseconds.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use palisade_core::{ComponentKind, Registry};
use palisade_dlq::{
    Backoff, DeadLetterQueue, DlqConfig, DlqError, EntryId, EntryState, Failure, FailureKind,
    Filter, Lease, MemoryStore, NewEntry, Page, Policies, RedisStore, RetryPolicy, Schedule, Store,
    StoreError, StoreStats, StoredEntry, Trimmed,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Call {
    tool: String,
    n: u64,
}

fn call(n: u64) -> Call {
    Call {
        tool: "search".into(),
        n,
    }
}

/// Every kind retried at once (no backoff), 3 attempts; client errors parked at once.
fn fast_policies(max_attempts: u32) -> Policies {
    let mut p = Policies::default();
    for kind in FailureKind::ALL {
        p.set(
            kind,
            RetryPolicy {
                max_attempts,
                backoff: Backoff::Fixed {
                    schedule: vec![Duration::ZERO],
                },
            },
        );
    }
    p.set(FailureKind::ClientError, RetryPolicy::park());
    p
}

fn fast_config() -> DlqConfig {
    DlqConfig {
        policies: fast_policies(3),
        poll_interval: Duration::from_millis(5),
        concurrency: 8,
        ..DlqConfig::default()
    }
}

fn queue<T>(name: &str, store: Arc<dyn Store>, config: DlqConfig) -> DeadLetterQueue<T>
where
    T: Serialize + serde::de::DeserializeOwned + Send + Sync + 'static,
{
    DeadLetterQueue::builder(name)
        .store(store)
        .config(config)
        .build()
        .unwrap()
}

/// Polls `cond` until it holds, failing the test after 30 s.
async fn until<F, Fut>(what: &str, cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    palisade_testkit::eventually(what, Duration::from_secs(30), cond).await;
}

async fn memory_store(_name: &str) -> Arc<dyn Store> {
    Arc::new(MemoryStore::new())
}

async fn redis_store(name: &str) -> Arc<dyn Store> {
    let (url, _conn) = palisade_testkit::shared_redis().await;
    Arc::new(RedisStore::new(&url, name).unwrap())
}

/// The shared 3-primary Redis Cluster: every script's keys are declared and share the
/// queue's hash tag, so each call runs on the primary of the queue's slot.
async fn cluster_store(name: &str) -> Arc<dyn Store> {
    let seeds = palisade_testkit::shared_cluster();
    let config = palisade_core::redis::RedisConfig::cluster(&seeds).unwrap();
    Arc::new(RedisStore::new(config, name).unwrap())
}

/// Sets its flag when dropped: tells a test that a handler's future was dropped.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Counts handler runs, and the most that ran at once.
#[derive(Clone, Default)]
struct Runs(Arc<Mutex<(u32, u32, u32)>>); // (now, max, total)

impl Runs {
    fn enter(&self) -> RunGuard {
        let mut r = self.0.lock();
        r.0 += 1;
        r.1 = r.1.max(r.0);
        r.2 += 1;
        RunGuard(self.clone())
    }
    fn max(&self) -> u32 {
        self.0.lock().1
    }
    fn total(&self) -> u32 {
        self.0.lock().2
    }
}

struct RunGuard(Runs);

impl Drop for RunGuard {
    fn drop(&mut self) {
        self.0.0.lock().0 -= 1;
    }
}

/// A store that cannot extend leases (as if Redis were unreachable for that call only).
struct NoExtend(Arc<dyn Store>);

#[async_trait::async_trait]
impl Store for NoExtend {
    fn backend(&self) -> &'static str {
        self.0.backend()
    }
    async fn enqueue(&self, entry: NewEntry, max: u64) -> Result<EntryId, StoreError> {
        self.0.enqueue(entry, max).await
    }
    async fn claim(&self, max: usize, lease: Duration) -> Result<Vec<Lease>, StoreError> {
        self.0.claim(max, lease).await
    }
    async fn ack(&self, id: EntryId, token: u64) -> Result<bool, StoreError> {
        self.0.ack(id, token).await
    }
    async fn extend(&self, _: EntryId, _: u64, _: Duration) -> Result<bool, StoreError> {
        Err(StoreError::Unavailable("test: extend refused".into()))
    }
    async fn ack_many(&self, acks: &[(EntryId, u64)]) -> Result<Vec<bool>, StoreError> {
        self.0.ack_many(acks).await
    }
    async fn fail(
        &self,
        id: EntryId,
        token: u64,
        kind: FailureKind,
        error: &str,
        schedule: Schedule,
    ) -> Result<bool, StoreError> {
        self.0.fail(id, token, kind, error, schedule).await
    }
    async fn quarantine(
        &self,
        id: EntryId,
        token: Option<u64>,
        reason: &str,
    ) -> Result<bool, StoreError> {
        self.0.quarantine(id, token, reason).await
    }
    async fn get(&self, id: EntryId) -> Result<Option<StoredEntry>, StoreError> {
        self.0.get(id).await
    }
    async fn list(
        &self,
        filter: &Filter,
        after: Option<EntryId>,
        limit: usize,
    ) -> Result<Page<StoredEntry>, StoreError> {
        self.0.list(filter, after, limit).await
    }
    async fn retry(&self, id: EntryId) -> Result<bool, StoreError> {
        self.0.retry(id).await
    }
    async fn discard(&self, id: EntryId) -> Result<bool, StoreError> {
        self.0.discard(id).await
    }
    async fn trim(&self, ttl: Duration, max: u64) -> Result<Trimmed, StoreError> {
        self.0.trim(ttl, max).await
    }
    async fn purge(&self) -> Result<u64, StoreError> {
        self.0.purge().await
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.0.stats().await
    }
}

mod cases {
    use super::*;

    pub async fn push_get_list_and_cursor(store: Arc<dyn Store>) {
        let dlq = queue::<Call>("cases-list", store, fast_config());
        let mut ids = Vec::new();
        for n in 0..7 {
            let failure = if n % 2 == 0 {
                Failure::timeout(format!("timeout {n}"))
            } else {
                Failure::client_error("400")
            };
            let mut meta = BTreeMap::new();
            meta.insert("trace_id".to_string(), format!("t-{n}"));
            ids.push(
                dlq.push_with("github.search", &call(n), failure, meta)
                    .await
                    .unwrap(),
            );
        }
        let e = dlq.get(ids[2]).await.unwrap().unwrap();
        assert_eq!(e.payload, call(2));
        assert_eq!(
            (e.kind, e.attempts, e.state),
            (FailureKind::Timeout, 1, EntryState::Scheduled)
        );
        assert_eq!(e.metadata["trace_id"], "t-2");
        assert_eq!(e.first_failed_ms, e.last_failed_ms);
        let parked = dlq.get(ids[1]).await.unwrap().unwrap();
        assert_eq!(
            parked.state,
            EntryState::Parked,
            "client errors are parked at once"
        );
        assert!(dlq.get(999_999_999).await.unwrap().is_none());

        // Pages of 2 over the 4 timeouts, oldest first.
        let filter = Filter {
            kind: Some(FailureKind::Timeout),
            ..Filter::default()
        };
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let page = dlq.list(&filter, after, 2).await.unwrap();
            assert!(page.entries.len() <= 2);
            seen.extend(page.entries.iter().map(|e| e.id));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert_eq!(seen, vec![ids[0], ids[2], ids[4], ids[6]]);
        let parked = Filter {
            state: Some(EntryState::Parked),
            ..Filter::default()
        };
        assert_eq!(dlq.list(&parked, None, 100).await.unwrap().entries.len(), 3);
        let page = dlq.list(&Filter::default(), None, 1).await.unwrap();
        assert_eq!(page.entries[0].payload["n"], 0, "listed payloads are JSON");

        let stats = dlq.stats().await.unwrap();
        assert_eq!(stats.store.total, 7);
        assert_eq!(stats.store.by_kind[&FailureKind::Timeout], 4);
        assert_eq!(stats.store.by_state[&EntryState::Parked], 3);
        assert_eq!(stats.store.totals.enqueued, 7);
        assert!(stats.oldest_age_ms.is_some());
        dlq.purge().await.unwrap();
    }

    pub async fn failures_are_retried_then_parked_with_history(store: Arc<dyn Store>) {
        let dlq = queue::<Call>("cases-retry", store, fast_config());
        let id = dlq
            .push("slack.post", &call(1), Failure::timeout("first"))
            .await
            .unwrap();
        let ok = dlq
            .push("slack.post", &call(2), Failure::unavailable("down"))
            .await
            .unwrap();
        let worker = dlq.worker(move |e| async move {
            if e.payload.n == 1 {
                Err(Failure::server_error(format!(
                    "503 on attempt {}",
                    e.attempts + 1
                )))
            } else {
                Ok(())
            }
        });
        until("entry parked", || {
            let dlq = dlq.clone();
            async move {
                dlq.get(id)
                    .await
                    .unwrap()
                    .is_some_and(|e| e.state == EntryState::Parked)
            }
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        let e = dlq.get(id).await.unwrap().unwrap();
        assert_eq!(e.attempts, 3);
        assert_eq!(e.kind, FailureKind::ServerError);
        assert_eq!(e.error, "503 on attempt 3");
        let kinds: Vec<_> = e
            .history
            .iter()
            .map(|h| (h.kind, h.error.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (FailureKind::Timeout, "first"),
                (FailureKind::ServerError, "503 on attempt 2")
            ]
        );
        assert!(
            dlq.get(ok).await.unwrap().is_none(),
            "the success was acknowledged"
        );
        let totals = dlq.stats().await.unwrap().store.totals;
        assert_eq!((totals.acked, totals.parked), (1, 1));

        // An operator retries it: a fresh budget, due at once.
        let report = dlq
            .retry_matching(&Filter {
                state: Some(EntryState::Parked),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!((report.retried, report.failed), (1, 0));
        let e = dlq.get(id).await.unwrap().unwrap();
        assert_eq!((e.state, e.attempts), (EntryState::Scheduled, 0));
        dlq.purge().await.unwrap();
    }

    pub async fn a_stale_lease_cannot_ack(store: Arc<dyn Store>) {
        let dlq = queue::<Call>("cases-fence", store.clone(), fast_config());
        let id = dlq
            .push("op", &call(1), Failure::timeout("t"))
            .await
            .unwrap();
        let first = store.claim(10, Duration::from_millis(100)).await.unwrap();
        assert_eq!(first.len(), 1);
        assert!(
            store
                .claim(10, Duration::from_millis(100))
                .await
                .unwrap()
                .is_empty()
        );
        // The first holder stalls past its lease; someone else gets the entry.
        let second = {
            let store = store.clone();
            let got = Arc::new(Mutex::new(Vec::new()));
            until("lease expiry and redelivery", || {
                let (store, got) = (store.clone(), got.clone());
                async move {
                    let leases = store.claim(10, Duration::from_secs(30)).await.unwrap();
                    let found = !leases.is_empty();
                    got.lock().extend(leases);
                    found
                }
            })
            .await;
            let mut got = got.lock();
            got.remove(0)
        };
        assert_eq!(second.entry.id, id);
        assert_ne!(second.token, first[0].token);
        assert!(
            !store.ack(id, first[0].token).await.unwrap(),
            "stale ack refused"
        );
        assert!(
            !store
                .fail(
                    id,
                    first[0].token,
                    FailureKind::Other,
                    "late",
                    palisade_dlq::Schedule::Park
                )
                .await
                .unwrap(),
            "stale fail refused"
        );
        assert!(store.ack(id, second.token).await.unwrap());
        assert!(!store.ack(id, second.token).await.unwrap(), "acked once");
        assert_eq!(dlq.stats().await.unwrap().store.totals.acked, 1);
    }

    pub async fn undecodable_entries_are_quarantined_and_the_worker_carries_on(
        store: Arc<dyn Store>,
    ) {
        // Written by an older version with another payload shape.
        let old = queue::<serde_json::Value>("cases-quarantine", store.clone(), fast_config());
        let bad = old
            .push(
                "op",
                &serde_json::json!({"legacy": true}),
                Failure::timeout("t"),
            )
            .await
            .unwrap();
        let dlq = queue::<Call>("cases-quarantine", store, fast_config());
        let good = dlq
            .push("op", &call(5), Failure::timeout("t"))
            .await
            .unwrap();
        assert!(matches!(dlq.get(bad).await, Err(DlqError::Decode { id, .. }) if id == bad));
        let handled = Arc::new(Mutex::new(Vec::new()));
        let h = handled.clone();
        let worker = dlq.worker(move |e| {
            let h = h.clone();
            async move {
                h.lock().push(e.id);
                Ok(())
            }
        });
        until("good entry acked", || {
            let dlq = dlq.clone();
            async move { dlq.stats().await.unwrap().store.totals.acked == 1 }
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(*handled.lock(), vec![good]);
        let q = old.get(bad).await.unwrap().unwrap();
        assert_eq!(q.state, EntryState::Quarantined);
        assert_eq!(
            q.payload,
            serde_json::json!({"legacy": true}),
            "raw bytes kept"
        );
        assert!(q.error.contains("does not decode"), "{}", q.error);
        let stats = dlq.stats().await.unwrap();
        assert_eq!(stats.store.totals.quarantined, 1);
        assert_eq!(stats.store.by_state[&EntryState::Quarantined], 1);
        // A quarantined entry is not retried, but it can be discarded.
        assert!(!dlq.retry(bad).await.unwrap());
        assert!(dlq.discard(bad).await.unwrap());
        dlq.purge().await.unwrap();
    }

    pub async fn operators_retry_discard_and_purge(store: Arc<dyn Store>) {
        let dlq = queue::<Call>("cases-ops", store.clone(), fast_config());
        for n in 0..4 {
            dlq.push("a", &call(n), Failure::client_error("400"))
                .await
                .unwrap();
        }
        let held = dlq
            .push("b", &call(9), Failure::timeout("t"))
            .await
            .unwrap();
        let lease = store.claim(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(lease[0].entry.id, held);
        // Retry everything: 4 parked entries go back; the leased one cannot.
        let report = dlq.retry_matching(&Filter::default()).await.unwrap();
        assert_eq!((report.retried, report.failed), (4, 1));
        let n = dlq
            .discard_matching(&Filter {
                operation: Some("a".into()),
                ..Filter::default()
            })
            .await
            .unwrap();
        assert_eq!(n, 4);
        assert!(!dlq.discard(123_456_789).await.unwrap());
        let stats = dlq.stats().await.unwrap();
        assert_eq!(stats.store.total, 1);
        assert_eq!(stats.store.totals.retried, 4);
        assert_eq!(stats.store.totals.discarded, 4);
        assert_eq!(dlq.purge().await.unwrap(), 1);
        assert_eq!(dlq.stats().await.unwrap().store.totals.purged, 1);
    }

    pub async fn parked_entries_wait_for_an_operator(store: Arc<dyn Store>) {
        let dlq = queue::<Call>("cases-park", store.clone(), fast_config());
        // A timeout would be retried at once under these policies; parked, it is not.
        let parked = dlq
            .park("send", &call(1), Failure::timeout("no answer"))
            .await
            .unwrap();
        let scheduled = dlq
            .push("send", &call(2), Failure::timeout("no answer"))
            .await
            .unwrap();
        let e = dlq.get(parked).await.unwrap().unwrap();
        assert_eq!(
            (e.state, e.kind, e.attempts),
            (EntryState::Parked, FailureKind::Timeout, 1)
        );
        assert_eq!(e.next_attempt_ms, None);
        // Only the scheduled entry can be claimed.
        let leases = store.claim(10, Duration::from_secs(60)).await.unwrap();
        let claimed: Vec<EntryId> = leases.iter().map(|l| l.entry.id).collect();
        assert_eq!(claimed, vec![scheduled]);
        // An operator's retry makes it due.
        assert!(dlq.retry(parked).await.unwrap());
        let leases = store.claim(10, Duration::from_secs(60)).await.unwrap();
        assert_eq!(leases.len(), 1);
        assert_eq!(leases[0].entry.id, parked);
        dlq.purge().await.unwrap();
    }

    pub async fn the_size_bound_evicts_the_oldest_and_counts_them(store: Arc<dyn Store>) {
        let config = DlqConfig {
            max_entries: 5,
            ..fast_config()
        };
        let dlq = queue::<Call>("cases-bound", store, config);
        let mut ids = Vec::new();
        for n in 0..8 {
            ids.push(
                dlq.push("op", &call(n), Failure::client_error("x"))
                    .await
                    .unwrap(),
            );
        }
        let stats = dlq.stats().await.unwrap();
        assert_eq!(stats.store.total, 5);
        assert_eq!(stats.store.totals.evicted, 3);
        assert!(dlq.get(ids[2]).await.unwrap().is_none());
        assert!(dlq.get(ids[3]).await.unwrap().is_some());
        dlq.purge().await.unwrap();
    }

    pub async fn ten_thousand_entries_end_acked_or_parked_exactly_once(store: Arc<dyn Store>) {
        const N: u64 = 10_000;
        let config = DlqConfig {
            concurrency: 32,
            max_entries: 20_000,
            ..fast_config()
        };
        let dlq = queue::<Call>("cases-10k", store, config);
        let mut ids = BTreeSet::new();
        for n in 0..N {
            let failure = match n % 4 {
                0 => Failure::timeout("t"),
                1 => Failure::unavailable("u"),
                2 => Failure::server_error("s"),
                _ => Failure::rate_limited("r", Duration::ZERO),
            };
            ids.insert(dlq.push("op", &call(n), failure).await.unwrap());
        }
        let acked = Arc::new(Mutex::new(Vec::new()));
        let a = acked.clone();
        let worker = dlq.worker(move |e| {
            let a = a.clone();
            async move {
                // A deterministic "random" outcome per entry and attempt.
                let roll = (e.payload.n * 7919 + u64::from(e.attempts) * 104_729) % 10;
                match roll {
                    0..=4 => {
                        a.lock().push(e.id);
                        Ok(())
                    }
                    5 => Err(Failure::client_error("400")),
                    6 | 7 => Err(Failure::timeout("slow")),
                    _ => Err(Failure::server_error("500")),
                }
            }
        });
        until("every entry acked or parked", || {
            let dlq = dlq.clone();
            async move {
                let s = dlq.stats().await.unwrap().store;
                s.by_state.get(&EntryState::Scheduled).copied().unwrap_or(0) == 0
                    && s.by_state.get(&EntryState::Leased).copied().unwrap_or(0) == 0
            }
        })
        .await;
        worker.shutdown(Duration::from_secs(10)).await;
        let acked: Vec<_> = acked.lock().clone();
        let acked_set: BTreeSet<_> = acked.iter().copied().collect();
        assert_eq!(
            acked.len(),
            acked_set.len(),
            "an entry was handled successfully twice"
        );
        let mut parked = BTreeSet::new();
        let filter = Filter {
            state: Some(EntryState::Parked),
            ..Filter::default()
        };
        let mut after = None;
        loop {
            let page = dlq.list(&filter, after, 1000).await.unwrap();
            parked.extend(page.entries.iter().map(|e| e.id));
            match page.next {
                Some(n) => after = Some(n),
                None => break,
            }
        }
        assert!(acked_set.is_disjoint(&parked));
        let all: BTreeSet<_> = acked_set.union(&parked).copied().collect();
        assert_eq!(all, ids, "entries lost or invented");
        let stats = dlq.stats().await.unwrap();
        assert_eq!(stats.store.total, parked.len() as u64);
        assert_eq!(stats.store.totals.acked, acked_set.len() as u64);
        assert!(!parked.is_empty() && !acked_set.is_empty());
        dlq.purge().await.unwrap();
    }

    pub async fn an_aborted_worker_leaves_a_lease_that_expires(store: Arc<dyn Store>) {
        let config = DlqConfig {
            lease: Duration::from_millis(300),
            ..fast_config()
        };
        let dlq = queue::<Call>("cases-abort", store, config);
        let id = dlq
            .push("op", &call(1), Failure::timeout("t"))
            .await
            .unwrap();
        let started = Arc::new(tokio::sync::Notify::new());
        let s = started.clone();
        let stuck = dlq.worker(move |_| {
            let s = s.clone();
            async move {
                s.notify_one();
                std::future::pending::<()>().await;
                Ok(())
            }
        });
        started.notified().await;
        stuck.abort();
        assert_eq!(
            dlq.get(id).await.unwrap().unwrap().state,
            EntryState::Leased
        );
        let delivered = Arc::new(Mutex::new(0u32));
        let d = delivered.clone();
        let worker = dlq.worker(move |_| {
            let d = d.clone();
            async move {
                *d.lock() += 1;
                Ok(())
            }
        });
        until("redelivery after the lease expired", || {
            let dlq = dlq.clone();
            async move { dlq.get(id).await.unwrap().is_none() }
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(*delivered.lock(), 1);
        assert_eq!(dlq.stats().await.unwrap().store.totals.acked, 1);
    }

    pub async fn a_worker_that_cannot_extend_its_lease_stops_before_another_runs_the_entry(
        store: Arc<dyn Store>,
    ) {
        let lease = Duration::from_millis(300);
        let config = DlqConfig {
            lease,
            ..fast_config()
        };
        // Two processes on one queue; the first one's store refuses to extend leases (as if it
        // could not reach Redis for a while).
        let cut_off = queue::<Call>(
            "cases-no-extend",
            Arc::new(NoExtend(store.clone())),
            DlqConfig {
                concurrency: 1,
                ..config.clone()
            },
        );
        let healthy = queue::<Call>("cases-no-extend", store, config);
        let id = cut_off
            .push("op", &call(1), Failure::timeout("t"))
            .await
            .unwrap();
        let runs = Runs::default();
        let dropped = Arc::new(AtomicBool::new(false));
        let stuck = {
            let (runs, dropped) = (runs.clone(), dropped.clone());
            cut_off.worker(move |_| {
                let (runs, flag) = (runs.clone(), DropFlag(dropped.clone()));
                async move {
                    let _running = runs.enter();
                    let _flag = flag;
                    std::future::pending::<()>().await;
                    Ok(())
                }
            })
        };
        until("the cut-off worker stops its handler", || {
            let dropped = dropped.load(Ordering::SeqCst);
            async move { dropped }
        })
        .await;
        until("the lost lease is counted", || {
            let stale = stuck.snapshot().stale_total;
            async move { stale >= 1 }
        })
        .await;
        assert_eq!(stuck.snapshot().acked_total, 0);
        stuck.shutdown(Duration::from_secs(5)).await;
        let worker = {
            let runs = runs.clone();
            healthy.worker(move |_| {
                let runs = runs.clone();
                async move {
                    let _running = runs.enter();
                    Ok(())
                }
            })
        };
        until("the entry acked by the healthy worker", || {
            let q = healthy.clone();
            async move { q.get(id).await.unwrap().is_none() }
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(runs.max(), 1, "never two runs at once");
        assert!(runs.total() >= 2);
    }

    pub async fn a_handler_slower_than_its_lease_never_runs_twice_at_once(store: Arc<dyn Store>) {
        let lease = Duration::from_millis(300);
        let config = DlqConfig {
            lease,
            ..fast_config()
        };
        // Two workers on one queue, each free to claim what the other's lease lets go.
        let a = queue::<Call>("cases-slow", store.clone(), config.clone());
        let b = queue::<Call>("cases-slow", store, config);
        let id = a.push("op", &call(1), Failure::timeout("t")).await.unwrap();
        let runs = Runs::default();
        let handler = |runs: Runs| {
            move |_| {
                let runs = runs.clone();
                async move {
                    let _running = runs.enter();
                    // Three leases long: the lease is extended while it runs.
                    tokio::time::sleep(Duration::from_millis(900)).await;
                    Ok(())
                }
            }
        };
        let wa = a.worker(handler(runs.clone()));
        let wb = b.worker(handler(runs.clone()));
        until("the entry acked", || {
            let q = a.clone();
            async move { q.get(id).await.unwrap().is_none() }
        })
        .await;
        wa.shutdown(Duration::from_secs(5)).await;
        wb.shutdown(Duration::from_secs(5)).await;
        assert_eq!(runs.max(), 1, "never two runs at once");
        assert_eq!(runs.total(), 1, "one run, acked");
        assert_eq!(a.stats().await.unwrap().store.totals.acked, 1);
    }

    pub async fn entries_delivered_too_often_are_quarantined_as_poison(store: Arc<dyn Store>) {
        let lease = Duration::from_millis(50);
        let config = DlqConfig {
            lease,
            max_deliveries: 2,
            ..fast_config()
        };
        let dlq = queue::<Call>("cases-poison", store.clone(), config);
        let id = dlq
            .push("op", &call(1), Failure::timeout("t"))
            .await
            .unwrap();
        // Two holders die with it (claims that never record an outcome).
        for expected in 1..=2 {
            let claimed = Arc::new(Mutex::new(Vec::new()));
            until("the entry can be claimed", || {
                let (store, claimed) = (store.clone(), claimed.clone());
                async move {
                    let got = store.claim(1, lease).await.unwrap();
                    let any = !got.is_empty();
                    *claimed.lock() = got;
                    any
                }
            })
            .await;
            let leases = claimed.lock().clone();
            assert_eq!(leases[0].entry.id, id);
            assert_eq!(leases[0].deliveries, expected);
        }
        let runs = Runs::default();
        let worker = {
            let runs = runs.clone();
            dlq.worker(move |_| {
                let runs = runs.clone();
                async move {
                    let _running = runs.enter();
                    Ok(())
                }
            })
        };
        until("the poison entry is quarantined", || {
            let dlq = dlq.clone();
            async move {
                dlq.get(id)
                    .await
                    .unwrap()
                    .is_some_and(|e| e.state == EntryState::Quarantined)
            }
        })
        .await;
        worker.shutdown(Duration::from_secs(5)).await;
        assert_eq!(runs.total(), 0, "its handler never ran a third time");
        let e = dlq.get(id).await.unwrap().unwrap();
        assert!(e.error.contains("delivered 3 times"), "{}", e.error);
        // A failure recorded by a handler resets the count: a normal retry is no delivery
        // without an outcome.
        let other = dlq
            .push("op", &call(2), Failure::timeout("t"))
            .await
            .unwrap();
        let leases = store.claim(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!(leases[0].entry.id, other);
        assert!(
            store
                .fail(
                    other,
                    leases[0].token,
                    FailureKind::Timeout,
                    "t",
                    Schedule::RetryIn(Duration::ZERO)
                )
                .await
                .unwrap()
        );
        let again = store.claim(1, Duration::from_secs(60)).await.unwrap();
        assert_eq!((again[0].entry.id, again[0].deliveries), (other, 1));
        dlq.purge().await.unwrap();
    }

    pub async fn handlers_stop_with_their_worker(store: Arc<dyn Store>) {
        // Short leases: the second worker gets the entries the aborted one held once their
        // leases run out, not after the default 30 s.
        let config = DlqConfig {
            lease: Duration::from_secs(1),
            ..fast_config()
        };
        let dlq = queue::<Call>("cases-handlers-stop", store, config);
        for n in 0..2 {
            dlq.push("op", &call(n), Failure::timeout("t"))
                .await
                .unwrap();
        }
        // One worker aborted, one shut down with a short grace: both hold a handler that never
        // ends.
        for stop in ["abort", "shutdown"] {
            let (started, dropped) = (
                Arc::new(AtomicBool::new(false)),
                Arc::new(AtomicBool::new(false)),
            );
            let worker = {
                let (started, dropped) = (started.clone(), dropped.clone());
                dlq.worker(move |_| {
                    let flag = DropFlag(dropped.clone());
                    started.store(true, Ordering::SeqCst);
                    async move {
                        let _flag = flag;
                        std::future::pending::<()>().await;
                        Ok(())
                    }
                })
            };
            until("a handler runs", || {
                let started = started.load(Ordering::SeqCst);
                async move { started }
            })
            .await;
            if stop == "abort" {
                worker.abort();
            } else {
                worker.shutdown(Duration::from_millis(50)).await;
            }
            until(
                &format!("the handler stops with its {stop}ed worker"),
                || {
                    let dropped = dropped.load(Ordering::SeqCst);
                    async move { dropped }
                },
            )
            .await;
        }
        dlq.purge().await.unwrap();
    }

    pub async fn graceful_shutdown_finishes_entries_in_hand(store: Arc<dyn Store>) {
        let dlq = queue::<Call>("cases-graceful", store, fast_config());
        let id = dlq
            .push("op", &call(1), Failure::timeout("t"))
            .await
            .unwrap();
        let started = Arc::new(tokio::sync::Notify::new());
        let s = started.clone();
        let worker = dlq.worker(move |_| {
            let s = s.clone();
            async move {
                s.notify_one();
                tokio::time::sleep(Duration::from_millis(50)).await;
                Ok(())
            }
        });
        started.notified().await;
        worker.shutdown(Duration::from_secs(10)).await;
        assert!(
            dlq.get(id).await.unwrap().is_none(),
            "acked before shutdown returned"
        );
    }

    pub async fn admin_commands_through_the_registry(store: Arc<dyn Store>) {
        let registry = Registry::new();
        let dlq: DeadLetterQueue<Call> = DeadLetterQueue::builder("cases-admin")
            .store(store)
            .config(fast_config())
            .registry(&registry)
            .build()
            .unwrap();
        let a = dlq
            .push("jira.create", &call(1), Failure::timeout("t"))
            .await
            .unwrap();
        dlq.push("jira.create", &call(2), Failure::client_error("400"))
            .await
            .unwrap();
        let control = |cmd: serde_json::Value| {
            let registry = registry.clone();
            async move {
                registry
                    .control(ComponentKind::DeadLetterQueue, "cases-admin", cmd)
                    .await
            }
        };
        let page = control(serde_json::json!({"action": "list", "kind": "timeout"}))
            .await
            .unwrap();
        assert_eq!(page["entries"].as_array().unwrap().len(), 1);
        assert_eq!(page["entries"][0]["payload"]["n"], 1);
        let one = control(serde_json::json!({"action": "get", "id": a}))
            .await
            .unwrap();
        assert_eq!(one["operation"], "jira.create");
        let r = control(serde_json::json!({"action": "retry", "state": "parked"}))
            .await
            .unwrap();
        assert_eq!(r, serde_json::json!({"retried": 1, "failed": 0}));
        // One id: an unknown one is refused by name, not counted as a failed retry.
        let err = control(serde_json::json!({"action": "retry", "id": 987_654}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no entry 987654"), "{err}");
        let err = control(serde_json::json!({"action": "discard"}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("purge"), "{err}");
        let err = control(serde_json::json!({"action": "retry", "kind": "sometimes"}))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("malformed"), "{err}");
        let d = control(serde_json::json!({"action": "discard", "id": a}))
            .await
            .unwrap();
        assert_eq!(d["discarded"], 1);
        let stats = control(serde_json::json!({"action": "stats"}))
            .await
            .unwrap();
        assert_eq!(stats["total"], 1);
        assert_eq!(stats["level"], "ok");
        let snap = registry
            .snapshot(ComponentKind::DeadLetterQueue, "cases-admin")
            .unwrap();
        assert_eq!(snap["stats"]["total"], 1, "{snap}");
        control(serde_json::json!({"action": "purge"}))
            .await
            .unwrap();
    }

    pub async fn bad_input_is_refused_with_a_named_reason(store: Arc<dyn Store>) {
        let config = DlqConfig {
            max_payload_bytes: 64,
            ..fast_config()
        };
        let dlq = queue::<String>("cases-bad", store.clone(), config);
        let err = dlq
            .push("op", &"x".repeat(100), Failure::timeout("t"))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                DlqError::PayloadTooLarge {
                    size: 102,
                    max: 64,
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("max_payload_bytes"));
        // Oversized messages are truncated, not refused.
        let id = dlq
            .push("op", &"ok".into(), Failure::timeout("e".repeat(5000)))
            .await
            .unwrap();
        assert!(dlq.get(id).await.unwrap().unwrap().error.len() <= 1024);
        let bad = DeadLetterQueue::<String>::builder("cases-bad-2")
            .store(store)
            .config(DlqConfig {
                concurrency: 0,
                ..DlqConfig::default()
            })
            .build()
            .unwrap_err();
        assert!(bad.to_string().contains("concurrency"), "{bad}");
        dlq.purge().await.unwrap();
    }
}

macro_rules! suite {
    ($backend:ident) => {
        mod $backend {
            use super::*;

            async fn store(case: &str) -> Arc<dyn Store> {
                let name = palisade_testkit::unique(case);
                super::$backend(&name).await
            }

            suite!(@cases
                push_get_list_and_cursor,
                failures_are_retried_then_parked_with_history,
                a_stale_lease_cannot_ack,
                undecodable_entries_are_quarantined_and_the_worker_carries_on,
                operators_retry_discard_and_purge,
                parked_entries_wait_for_an_operator,
                the_size_bound_evicts_the_oldest_and_counts_them,
                ten_thousand_entries_end_acked_or_parked_exactly_once,
                an_aborted_worker_leaves_a_lease_that_expires,
                a_worker_that_cannot_extend_its_lease_stops_before_another_runs_the_entry,
                a_handler_slower_than_its_lease_never_runs_twice_at_once,
                handlers_stop_with_their_worker,
                entries_delivered_too_often_are_quarantined_as_poison,
                graceful_shutdown_finishes_entries_in_hand,
                admin_commands_through_the_registry,
                bad_input_is_refused_with_a_named_reason
            );
        }
    };
    (@cases $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                cases::$case(store(stringify!($case)).await).await;
            }
        )*
    };
}

suite!(memory_store);
suite!(redis_store);
suite!(cluster_store);
