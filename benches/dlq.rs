//! Throughput of Palisade's Redis dead-letter store (`palisade_dlq::RedisStore`) against a naive
//! queue of raw Redis commands on the same server, and of the full `DeadLetterQueue` worker.
//!
//! Issue goal: at least 80 000 claim+ack cycles per second on a machine like ours (Redis without
//! persistence).
//!
//! Everything runs against the Redis at `REDIS_URL` (default `redis://127.0.0.1:6379`), on tokio
//! tasks of a 2-worker multi-thread runtime. Each run uses a fresh queue (`bench-<pid>-<n>` for
//! Palisade, keys under `palisade-bench-<pid>:raw<n>:` for the baseline) whose keys are deleted
//! afterwards; nothing else on the Redis is touched. The two contenders alternate (baseline then
//! Palisade, at each concurrency and variant) to reduce drift.
//!
//! | section | what one operation is | Palisade | baseline (`raw`) |
//! | --- | --- | --- | --- |
//! | `enqueue` | one entry added (~100-byte payload, due now) | `store.enqueue(NewEntry, 1_000_000)`: one `EVALSHA` | one `MULTI`/`EXEC` of `INCR seq`, `HSET` of the same 12 fields, `ZADD due` |
//! | `claim_ack` | one entry claimed under a 30 s lease, then acked | `claim(1, 30s)` + `ack(id, token)`: 2 `EVALSHA` | `ZPOPMIN due 1`; `MULTI` `ZADD leased` + `HGETALL entry`; `MULTI` `DEL entry` + `ZREM leased` |
//! | `claim16_ack` | as above, claimed 16 at a time (figures per entry; latency per batch) | `claim(16, 30s)` + one `ack_many` of the 16 | `ZPOPMIN due 16`; `MULTI` `ZADD leased` (16) + 16 `HGETALL`; 16 × (`MULTI` `DEL` + `ZREM`) |
//! | `worker` | one entry handled and acked by `DeadLetterQueue::worker` (concurrency 64, 1 ms poll, handler `Ok(())`) | until the pre-filled queue is empty | — |
//!
//! A naive client cannot lease an entry in the round trip that pops it (it needs the member
//! first), so the baseline cycle takes three round trips where Palisade's scripts take two.
//!
//! Every enqueue and claim run lasts 1 s of warm-up and 3 s of measurement, with 1 and 64
//! concurrent tasks, and reports operations per second and the p50/p99 latency of one operation
//! (of one batch for `claim16_ack`). The claim runs start on a pre-filled queue sized from the
//! rates measured before; should a queue still run dry, the run measures until then and is
//! flagged `ran_dry` (reported over the shorter span).
//!
//! Beside each run's figures, the table shows the round trips per entry and the CPU time Redis
//! spent per entry handled (`used_cpu_user` + `used_cpu_sys` of `INFO cpu` over the whole run,
//! warm-up included; other clients of the same Redis count too): the server-side cost, which
//! bounds throughput once Redis saturates a core.
//!
//! Before the runs, the bench counts heap allocations per enqueue and per claim+ack of each
//! contender (current-thread runtime, redis crate included).
//!
//! The table goes to stderr and the figures to `target/dlq-redis.json`.
//! `PALISADE_BENCH_NO_REDIS=1` skips everything; otherwise an unreachable Redis fails the bench.
//!
//! Run: `cargo bench --bench dlq` (about 2 minutes once built).

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use palisade::dlq::{
    DeadLetterQueue, DlqConfig, Entry, Failure, FailureKind, NewEntry, RedisStore, Schedule, Store,
};
use redis::Value;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};

// ---------------------------------------------------------------------------------------------
// Allocation counter. Off (one relaxed load per allocation) except around `allocs_per_call`.

#[path = "support/redis.rs"]
mod redis_support;
mod support;
use redis_support::{connect, quantile_us, redacted};
use support::allocs_per_call;

// ---------------------------------------------------------------------------------------------
// What is enqueued.

/// Concurrent tasks of each enqueue and claim run.
const CONCURRENCY: [usize; 2] = [1, 64];

/// Entries per claim of the batched variant.
const BATCH: usize = 16;

/// The queue bound passed to every enqueue: far above what a run enqueues, so nothing is
/// evicted (the bench checks).
const MAX_ENTRIES: u64 = 1_000_000;

/// Lease of every claim.
const LEASE: Duration = Duration::from_secs(30);

/// Concurrent enqueuers that pre-fill a Palisade queue.
const FILLERS: usize = 128;

/// Largest pre-fill of a claim run.
const MAX_FILL: u64 = 1_500_000;

const OPERATION: &str = "slack.post_message";
const ERROR: &str = "upstream timed out after 10 s";

/// The typed payload of the worker run; its JSON is the payload of every entry.
#[derive(Debug, Serialize, Deserialize)]
struct SlackPost {
    channel: String,
    text: String,
    thread: u64,
}

/// About 100 bytes of JSON.
fn payload() -> Vec<u8> {
    serde_json::to_vec(&SlackPost {
        channel: "#deployments".into(),
        text: "deploy of api-gateway v2.14.3 to eu-west-1 finished in 4m12s".into(),
        thread: 1_712_345_678,
    })
    .unwrap()
}

fn new_entry() -> NewEntry {
    NewEntry {
        operation: OPERATION.into(),
        payload: payload(),
        kind: FailureKind::Timeout,
        error: ERROR.into(),
        metadata: BTreeMap::new(),
        schedule: Schedule::RetryIn(Duration::ZERO),
    }
}

fn now_ms() -> u64 {
    u64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// The baseline: a naive queue of raw commands (no scripts), with the same entry fields.

/// Keys of one baseline queue: `<prefix>seq`, `<prefix>due`, `<prefix>leased`, `<prefix>e:<id>`.
#[derive(Clone)]
struct RawQueue {
    conn: ConnectionManager,
    prefix: Arc<str>,
    seq: Arc<str>,
    due: Arc<str>,
    leased: Arc<str>,
    payload: Arc<[u8]>,
}

impl RawQueue {
    fn new(conn: ConnectionManager, prefix: String) -> Self {
        RawQueue {
            conn,
            seq: format!("{prefix}seq").into(),
            due: format!("{prefix}due").into(),
            leased: format!("{prefix}leased").into(),
            prefix: prefix.into(),
            payload: payload().into(),
        }
    }

    fn entry_key(&self, id: &str) -> String {
        format!("{}e:{id}", self.prefix)
    }

    /// `HSET` of a new entry's fields, as the store writes them.
    fn hset(&self, id: &str, now: u64) -> redis::Cmd {
        let mut c = redis::cmd("HSET");
        c.arg(self.entry_key(id))
            .arg("op")
            .arg(OPERATION)
            .arg("kind")
            .arg("timeout")
            .arg("err")
            .arg(ERROR)
            .arg("att")
            .arg(1)
            .arg("first")
            .arg(now)
            .arg("last")
            .arg(now)
            .arg("meta")
            .arg("{}")
            .arg("hist")
            .arg("[]")
            .arg("payload")
            .arg(&self.payload[..])
            .arg("token")
            .arg(0)
            .arg("state")
            .arg("scheduled")
            .arg("next")
            .arg(now);
        c
    }

    /// One enqueue: a single `MULTI`/`EXEC` round trip. The id is the client's (a naive queue
    /// numbering entries with `INCR` needs the reply first); `INCR seq` is kept so that the
    /// commands are those of such a queue.
    async fn enqueue(&mut self, id: &str) {
        let now = now_ms();
        let hset = self.hset(id, now);
        let () = redis::pipe()
            .atomic()
            .cmd("INCR")
            .arg(&*self.seq)
            .ignore()
            .add_command(hset)
            .ignore()
            .cmd("ZADD")
            .arg(&*self.due)
            .arg(now)
            .arg(id)
            .ignore()
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }

    /// Claims up to `max` entries (pop, then lease and fetch) and acks each; how many.
    async fn claim_ack(&mut self, max: usize) -> usize {
        let popped: Vec<String> = redis::cmd("ZPOPMIN")
            .arg(&*self.due)
            .arg(max)
            .query_async(&mut self.conn)
            .await
            .unwrap();
        // Member, score, member, score...
        let members: Vec<&String> = popped.iter().step_by(2).collect();
        if members.is_empty() {
            return 0;
        }
        let deadline = now_ms() + LEASE.as_secs() * 1000;
        let mut zadd = redis::cmd("ZADD");
        zadd.arg(&*self.leased);
        for m in &members {
            zadd.arg(deadline).arg(*m);
        }
        let mut lease = redis::pipe();
        lease.atomic().add_command(zadd).ignore();
        for m in &members {
            lease.cmd("HGETALL").arg(self.entry_key(m));
        }
        let entries: Vec<Value> = lease.query_async(&mut self.conn).await.unwrap();
        assert_eq!(entries.len(), members.len());
        for (m, entry) in members.iter().zip(entries) {
            assert!(
                matches!(&entry, Value::Array(fields) if !fields.is_empty()),
                "baseline entry {m} vanished"
            );
            black_box(entry);
            let (deleted, unleased): (i64, i64) = redis::pipe()
                .atomic()
                .cmd("DEL")
                .arg(self.entry_key(m))
                .cmd("ZREM")
                .arg(&*self.leased)
                .arg(*m)
                .query_async(&mut self.conn)
                .await
                .unwrap();
            assert_eq!((deleted, unleased), (1, 1), "baseline ack of {m}");
        }
        members.len()
    }

    /// Adds `n` due entries (ids `0..n`), pipelined.
    async fn fill(&self, n: u64) {
        const CHUNK: u64 = 1000;
        let next = Arc::new(AtomicU64::new(0));
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let (q, next) = (self.clone(), Arc::clone(&next));
                tokio::spawn(async move {
                    let mut conn = q.conn.clone();
                    loop {
                        let from = next.fetch_add(CHUNK, Ordering::Relaxed);
                        if from >= n {
                            break;
                        }
                        let now = now_ms();
                        let mut p = redis::pipe();
                        for id in from..(from + CHUNK).min(n) {
                            let id = id.to_string();
                            p.add_command(q.hset(&id, now)).ignore();
                            p.cmd("ZADD").arg(&*q.due).arg(now).arg(id).ignore();
                        }
                        let () = p.query_async(&mut conn).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
    }

    /// Deletes every key of the queue.
    async fn delete(&mut self) {
        for set in [self.due.clone(), self.leased.clone()] {
            loop {
                let popped: Vec<String> = redis::cmd("ZPOPMIN")
                    .arg(&*set)
                    .arg(1000)
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
                if popped.is_empty() {
                    break;
                }
                let keys: Vec<String> = popped
                    .iter()
                    .step_by(2)
                    .map(|m| self.entry_key(m))
                    .collect();
                let _: i64 = redis::cmd("DEL")
                    .arg(keys)
                    .query_async(&mut self.conn)
                    .await
                    .unwrap();
            }
        }
        let _: i64 = redis::cmd("DEL")
            .arg(&*self.seq)
            .arg(&*self.due)
            .arg(&*self.leased)
            .query_async(&mut self.conn)
            .await
            .unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// Palisade's store.

/// Adds `n` due entries through `store.enqueue`, `FILLERS` at a time.
async fn palisade_fill(store: &Arc<RedisStore>, n: u64) {
    let left = Arc::new(AtomicU64::new(n));
    let tasks: Vec<_> = (0..FILLERS)
        .map(|_| {
            let (store, left) = (Arc::clone(store), Arc::clone(&left));
            tokio::spawn(async move {
                let entry = new_entry();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    store.enqueue(entry.clone(), MAX_ENTRIES).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
}

/// Claims up to `max` entries and acks them (one `ack` for a single entry, one `ack_many` for a
/// batch, as the worker does); how many. Panics if an ack is refused.
async fn palisade_claim_ack(store: &dyn Store, max: usize) -> usize {
    let leases = store.claim(max, LEASE).await.unwrap();
    if leases.len() == 1 {
        let lease = &leases[0];
        assert!(
            store.ack(lease.entry.id, lease.token).await.unwrap(),
            "Palisade refused the ack of entry {}: its lease is current",
            lease.entry.id
        );
    } else if !leases.is_empty() {
        let acks: Vec<_> = leases.iter().map(|l| (l.entry.id, l.token)).collect();
        let ok = store.ack_many(&acks).await.unwrap();
        assert!(
            ok.iter().all(|&b| b),
            "Palisade refused an ack of a current lease"
        );
    }
    leases.len()
}

/// Purges Palisade queue `queue`, then deletes every key of the queue the purge keeps
/// (sequences, counters).
async fn palisade_delete(conn: &mut ConnectionManager, store: &RedisStore) {
    store.purge().await.unwrap();
    let pattern = format!("palisade:dlq:{{{}}}:*", store.queue());
    let keys = leftovers(conn, &pattern).await;
    if !keys.is_empty() {
        let _: i64 = redis::cmd("DEL").arg(keys).query_async(conn).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// One timed run.

/// Warm-up and measurement time of one run.
#[derive(Debug, Clone, Copy)]
struct Window {
    warm_up: Duration,
    measure: Duration,
}

impl Window {
    fn total(self) -> Duration {
        self.warm_up + self.measure
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Section {
    Enqueue,
    ClaimAck,
    ClaimBatchAck,
}

impl Section {
    fn name(self) -> &'static str {
        match self {
            Section::Enqueue => "enqueue",
            Section::ClaimAck => "claim_ack",
            Section::ClaimBatchAck => "claim16_ack",
        }
    }

    fn claim_max(self) -> usize {
        match self {
            Section::Enqueue => 0,
            Section::ClaimAck => 1,
            Section::ClaimBatchAck => BATCH,
        }
    }
}

/// One task's handle on a contender.
#[derive(Clone)]
enum Contender {
    Raw(RawQueue),
    Palisade(Arc<RedisStore>),
}

impl Contender {
    fn name(&self) -> &'static str {
        match self {
            Contender::Raw(_) => "raw",
            Contender::Palisade(_) => "palisade",
        }
    }

    /// Round trips to Redis per entry, for the table.
    fn round_trips(&self, section: Section) -> f64 {
        let per_batch = match (self, section) {
            (_, Section::Enqueue) => return 1.0,
            (Contender::Raw(_), s) => 2 + s.claim_max(),
            (Contender::Palisade(_), s) => 1 + s.claim_max(),
        };
        per_batch as f64 / section.claim_max() as f64
    }

    /// One operation of `section`: entries handled (0: the queue is empty).
    async fn op(&mut self, section: Section, task: usize, n: u64, entry: &NewEntry) -> usize {
        match (self, section) {
            (Contender::Raw(q), Section::Enqueue) => {
                q.enqueue(&format!("{task}-{n}")).await;
                1
            }
            (Contender::Palisade(store), Section::Enqueue) => {
                store.enqueue(entry.clone(), MAX_ENTRIES).await.unwrap();
                1
            }
            (Contender::Raw(q), s) => q.claim_ack(s.claim_max()).await,
            (Contender::Palisade(store), s) => palisade_claim_ack(&**store, s.claim_max()).await,
        }
    }
}

/// One operation as a task saw it.
#[derive(Clone, Copy)]
struct Sample {
    /// Start, in µs since the run's start.
    start_us: u32,
    /// Latency in ns.
    nanos: u32,
    /// Entries it handled.
    entries: u32,
}

struct TaskResult {
    samples: Vec<Sample>,
    /// When this task found the queue empty.
    dry_at: Option<Instant>,
}

/// One task: operations in a loop until `end`, or until a claim comes back empty.
async fn task(
    mut contender: Contender,
    section: Section,
    t: usize,
    start: Instant,
    end: Instant,
    dry: Arc<AtomicBool>,
    capacity: usize,
) -> TaskResult {
    let entry = new_entry();
    let mut samples = Vec::with_capacity(capacity);
    let mut n = 0;
    loop {
        let begin = Instant::now();
        if begin >= end || dry.load(Ordering::Relaxed) {
            return TaskResult {
                samples,
                dry_at: None,
            };
        }
        let entries = contender.op(section, t, n, &entry).await;
        let nanos = begin.elapsed().as_nanos();
        if entries == 0 {
            dry.store(true, Ordering::Relaxed);
            return TaskResult {
                samples,
                dry_at: Some(begin),
            };
        }
        samples.push(Sample {
            start_us: u32::try_from((begin - start).as_micros()).unwrap(),
            nanos: u32::try_from(nanos).unwrap_or(u32::MAX),
            entries: u32::try_from(entries).unwrap(),
        });
        n += 1;
    }
}

/// The figures of one run.
struct RunResult {
    section: Section,
    contender: &'static str,
    concurrency: usize,
    /// Entries handled in the measured span.
    entries: u64,
    seconds: f64,
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    round_trips: f64,
    /// Redis CPU time (user + system, whole run) per entry handled, in µs.
    redis_cpu_us: f64,
    prefill: u64,
    /// The queue ran dry: measured until then.
    ran_dry: bool,
    /// It ran dry during the warm-up: the warm-up is included.
    warm_up_included: bool,
}

impl RunResult {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "section": self.section.name(),
            "contender": self.contender,
            "concurrency": self.concurrency,
            "entries": self.entries,
            "seconds": self.seconds,
            "entries_per_sec": self.per_sec,
            "latency_of": if self.section == Section::ClaimBatchAck { "batch" } else { "entry" },
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "round_trips_per_entry": self.round_trips,
            "redis_cpu_us_per_entry": self.redis_cpu_us,
            "prefill": self.prefill,
            "ran_dry": self.ran_dry,
            "warm_up_included": self.warm_up_included,
        })
    }
}

/// Runs `concurrency` tasks of `contender` for one window (or until the queue is empty).
#[allow(clippy::too_many_arguments)]
fn run(
    rt: &tokio::runtime::Runtime,
    url: &str,
    contender: &Contender,
    section: Section,
    concurrency: usize,
    window: Window,
    prefill: u64,
    rate_guess: f64,
) -> RunResult {
    let capacity = (rate_guess * window.total().as_secs_f64() * 1.5) as usize / concurrency + 1024;
    let dry = Arc::new(AtomicBool::new(false));
    let mut conn = match contender {
        Contender::Raw(q) => q.conn.clone(),
        Contender::Palisade(_) => rt.block_on(connect(url, "the dlq bench")),
    };
    let cpu_before = rt.block_on(redis_cpu_seconds(&mut conn));
    let start = Instant::now();
    let results: Vec<TaskResult> = rt.block_on(async {
        let end = start + window.total();
        let handles: Vec<_> = (0..concurrency)
            .map(|t| {
                tokio::spawn(task(
                    contender.clone(),
                    section,
                    t,
                    start,
                    end,
                    Arc::clone(&dry),
                    capacity,
                ))
            })
            .collect();
        let mut results = Vec::with_capacity(concurrency);
        for h in handles {
            results.push(h.await.unwrap());
        }
        results
    });
    let redis_cpu = rt.block_on(redis_cpu_seconds(&mut conn)) - cpu_before;
    let all_entries: u64 = results
        .iter()
        .flat_map(|r| &r.samples)
        .map(|s| u64::from(s.entries))
        .sum();
    let dry_at = results.iter().filter_map(|r| r.dry_at).min();
    let measure_from = start + window.warm_up;
    let mut stop = start + window.total();
    let mut from = measure_from;
    let mut warm_up_included = false;
    if let Some(d) = dry_at {
        stop = stop.min(d);
        if stop < measure_from + window.measure / 4 {
            from = start;
            warm_up_included = true;
        }
    }
    let (from_us, stop_us) = ((from - start).as_micros(), (stop - start).as_micros());
    let mut latencies = Vec::new();
    let mut entries = 0_u64;
    for s in results.iter().flat_map(|r| &r.samples) {
        let at = u128::from(s.start_us);
        if at >= from_us && at < stop_us {
            latencies.push(s.nanos);
            entries += u64::from(s.entries);
        }
    }
    latencies.sort_unstable();
    let seconds = (stop - from).as_secs_f64();
    RunResult {
        section,
        contender: contender.name(),
        concurrency,
        entries,
        seconds,
        per_sec: entries as f64 / seconds,
        p50_us: quantile_us(&latencies, 0.50),
        p99_us: quantile_us(&latencies, 0.99),
        round_trips: contender.round_trips(section),
        redis_cpu_us: redis_cpu * 1e6 / all_entries as f64,
        prefill,
        ran_dry: dry_at.is_some(),
        warm_up_included,
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up and the sections.

/// CPU time Redis has used (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`), in seconds.
async fn redis_cpu_seconds(conn: &mut ConnectionManager) -> f64 {
    let info: String = redis::cmd("INFO")
        .arg("cpu")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .filter_map(|l| l.split_once(':'))
        .filter(|(k, _)| matches!(*k, "used_cpu_user" | "used_cpu_sys"))
        .map(|(_, v)| v.trim().parse::<f64>().unwrap())
        .sum()
}

/// Hands out fresh queue names and baseline prefixes.
struct Names {
    pid: u32,
    next: u64,
}

impl Names {
    fn palisade(&mut self) -> String {
        self.next += 1;
        format!("bench-{}-{}", self.pid, self.next)
    }

    fn raw(&mut self) -> String {
        self.next += 1;
        format!("palisade-bench-{}:raw{}:", self.pid, self.next)
    }
}

/// A Palisade store on a fresh queue, connected (fails loudly otherwise).
async fn fresh_store(url: &str, names: &mut Names) -> Arc<RedisStore> {
    let store = RedisStore::connect(url, &names.palisade()).await.unwrap();
    if let Some(policy) = store.maxmemory_policy() {
        assert_eq!(
            policy, "noeviction",
            "Redis maxmemory-policy must be noeviction for a dead-letter store"
        );
    }
    Arc::new(store)
}

/// Heap allocations per enqueue and per claim+ack (single entry) of each contender, on a
/// current-thread runtime so that the redis crate's connection task runs (and allocates) on
/// the counted thread.
fn allocation_check(url: &str, names: &mut Names, n: u64) -> serde_json::Value {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut conn = rt.block_on(connect(url, "the dlq bench"));
    let store = rt.block_on(fresh_store(url, names));
    let mut raw = RawQueue::new(conn.clone(), names.raw());
    let entry = new_entry();

    // Each enqueue check adds n + 1 entries: as many as the claim+ack check takes.
    let mut i = 0_u64;
    let raw_enqueue = allocs_per_call(n, || {
        i += 1;
        rt.block_on(raw.enqueue(&i.to_string()));
    });
    let palisade_enqueue = allocs_per_call(n, || {
        rt.block_on(store.enqueue(entry.clone(), MAX_ENTRIES))
            .unwrap();
    });
    let raw_cycle = allocs_per_call(n, || {
        assert_eq!(rt.block_on(raw.claim_ack(1)), 1);
    });
    let palisade_cycle = allocs_per_call(n, || {
        assert_eq!(rt.block_on(palisade_claim_ack(&*store, 1)), 1);
    });
    rt.block_on(async {
        raw.delete().await;
        palisade_delete(&mut conn, &store).await;
    });

    eprintln!(
        "heap allocations per operation ({n} each, current-thread runtime, redis crate \
         included; Palisade's enqueue includes cloning the NewEntry):"
    );
    for (name, allocs) in [
        ("raw enqueue", raw_enqueue),
        ("palisade enqueue", palisade_enqueue),
        ("raw claim+ack", raw_cycle),
        ("palisade claim+ack", palisade_cycle),
    ] {
        eprintln!("  {name:<22} {allocs:.1}");
    }
    serde_json::json!({
        "calls": n,
        "raw_enqueue": raw_enqueue,
        "palisade_enqueue": palisade_enqueue,
        "raw_claim_ack": raw_cycle,
        "palisade_claim_ack": palisade_cycle,
    })
}

/// The enqueue runs, interleaved; returns them and checks that nothing was evicted.
fn enqueue_section(
    rt: &tokio::runtime::Runtime,
    conn: &ConnectionManager,
    url: &str,
    names: &mut Names,
    window: Window,
) -> Vec<RunResult> {
    let mut runs = Vec::new();
    for c in CONCURRENCY {
        let mut raw = RawQueue::new(conn.clone(), names.raw());
        runs.push(run(
            rt,
            url,
            &Contender::Raw(raw.clone()),
            Section::Enqueue,
            c,
            window,
            0,
            50_000.0,
        ));
        rt.block_on(raw.delete());

        let store = rt.block_on(fresh_store(url, names));
        runs.push(run(
            rt,
            url,
            &Contender::Palisade(Arc::clone(&store)),
            Section::Enqueue,
            c,
            window,
            0,
            50_000.0,
        ));
        let stats = rt.block_on(store.stats()).unwrap();
        assert_eq!(stats.totals.evicted, 0, "the enqueue run evicted entries");
        rt.block_on(palisade_delete(&mut conn.clone(), &store));
    }
    runs
}

/// Entries to pre-fill for a run expected to handle `rate` per second.
fn fill_size(rate: f64, window: Window) -> u64 {
    ((rate * window.total().as_secs_f64() * 1.3) as u64).clamp(1000, MAX_FILL)
}

/// The claim+ack runs (single and batched), interleaved, each on a pre-filled fresh queue.
/// `enqueued` holds the enqueue rates `(raw, palisade)` per concurrency, to size the fills.
fn claim_section(
    rt: &tokio::runtime::Runtime,
    conn: &ConnectionManager,
    url: &str,
    names: &mut Names,
    window: Window,
    enqueued: &[(f64, f64)],
) -> Vec<RunResult> {
    let mut runs = Vec::new();
    for (&c, &(raw_rate, palisade_rate)) in CONCURRENCY.iter().zip(enqueued) {
        // Guesses of each contender's cycle rate; the batched variant starts from the single one.
        let mut guesses = [raw_rate * 1.5, palisade_rate * 1.5];
        for section in [Section::ClaimAck, Section::ClaimBatchAck] {
            if section == Section::ClaimBatchAck {
                guesses = guesses.map(|g| g * 2.0);
            }

            let mut raw = RawQueue::new(conn.clone(), names.raw());
            let fill = fill_size(guesses[0], window);
            rt.block_on(raw.fill(fill));
            let r = run(
                rt,
                url,
                &Contender::Raw(raw.clone()),
                section,
                c,
                window,
                fill,
                guesses[0],
            );
            rt.block_on(raw.delete());
            guesses[0] = guesses[0].max(r.per_sec * 1.2);
            runs.push(r);

            let store = rt.block_on(fresh_store(url, names));
            let fill = fill_size(guesses[1], window);
            rt.block_on(palisade_fill(&store, fill));
            let r = run(
                rt,
                url,
                &Contender::Palisade(Arc::clone(&store)),
                section,
                c,
                window,
                fill,
                guesses[1],
            );
            let stats = rt.block_on(store.stats()).unwrap();
            assert_eq!(
                (stats.totals.evicted, stats.totals.quarantined),
                (0, 0),
                "the claim run evicted or quarantined entries"
            );
            rt.block_on(palisade_delete(&mut conn.clone(), &store));
            guesses[1] = guesses[1].max(r.per_sec * 1.2);
            runs.push(r);
        }
    }
    runs
}

/// The worker end to end: `entries` pre-filled, then `DeadLetterQueue::worker` (concurrency 64,
/// 1 ms poll) with a handler that succeeds, timed until every entry is acked.
fn worker_section(
    rt: &tokio::runtime::Runtime,
    conn: &ConnectionManager,
    url: &str,
    names: &mut Names,
    entries: u64,
) -> serde_json::Value {
    const CONCURRENCY: u32 = 64;
    rt.block_on(async {
        let store = fresh_store(url, names).await;
        palisade_fill(&store, entries).await;
        let dlq = DeadLetterQueue::<SlackPost>::builder(store.queue())
            .store(Arc::clone(&store) as Arc<dyn Store>)
            .config(DlqConfig {
                concurrency: CONCURRENCY,
                poll_interval: Duration::from_millis(1),
                max_entries: 10 * MAX_ENTRIES,
                trim_interval: Duration::from_secs(3600),
                ..DlqConfig::default()
            })
            .build()
            .unwrap();
        let start = Instant::now();
        let worker = dlq.worker(|entry: Entry<SlackPost>| async move {
            black_box(entry);
            Ok::<(), Failure>(())
        });
        let mut last = (0, Instant::now());
        let elapsed = loop {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let acked = worker.snapshot().acked_total;
            if acked >= entries {
                break start.elapsed();
            }
            if acked > last.0 {
                last = (acked, Instant::now());
            }
            assert!(
                last.1.elapsed() < Duration::from_secs(10),
                "the worker made no progress for 10 s at {acked} of {entries} entries: {:?}",
                worker.snapshot()
            );
        };
        let snapshot = worker.snapshot();
        worker.shutdown(Duration::from_secs(5)).await;
        let stats = dlq.stats().await.unwrap();
        assert_eq!(
            (stats.store.total, stats.store.totals.acked),
            (0, entries),
            "the worker left entries behind"
        );
        palisade_delete(&mut conn.clone(), &store).await;
        let per_sec = entries as f64 / elapsed.as_secs_f64();
        serde_json::json!({
            "entries": entries,
            "concurrency": CONCURRENCY,
            "poll_interval_ms": 1,
            "seconds": elapsed.as_secs_f64(),
            "acked_per_sec": per_sec,
            "stale": snapshot.stale_total,
            "store_errors": snapshot.store_errors_total,
        })
    })
}

/// Keys matching `pattern` left on the Redis (there should be none).
async fn leftovers(conn: &mut ConnectionManager, pattern: &str) -> Vec<String> {
    let mut cursor = 0_u64;
    let mut found = Vec::new();
    loop {
        let (next, keys): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(pattern)
            .arg("COUNT")
            .arg(1000)
            .query_async(conn)
            .await
            .unwrap();
        found.extend(keys);
        if next == 0 {
            return found;
        }
        cursor = next;
    }
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn print_table(runs: &[RunResult]) {
    eprintln!(
        "  {:<12} {:<9} {:>4} {:>10} {:>9} {:>9} {:>6} {:>11} {:>9}  notes",
        "section",
        "contender",
        "conc",
        "entries/s",
        "p50 µs",
        "p99 µs",
        "rt/e",
        "redis cpu µs",
        "prefill"
    );
    for pair in runs.chunks(2) {
        for r in pair {
            let mut notes = String::new();
            if r.section == Section::ClaimBatchAck {
                notes.push_str("latency per batch of 16");
            }
            if r.ran_dry {
                notes.push_str(&format!(
                    "{}ran dry: {:.2} s measured{}",
                    if notes.is_empty() { "" } else { "; " },
                    r.seconds,
                    if r.warm_up_included {
                        " incl. warm-up"
                    } else {
                        ""
                    }
                ));
            }
            eprintln!(
                "  {:<12} {:<9} {:>4} {:>10.0} {:>9.1} {:>9.1} {:>6.2} {:>11.1} {:>9}  {notes}",
                r.section.name(),
                r.contender,
                r.concurrency,
                r.per_sec,
                r.p50_us,
                r.p99_us,
                r.round_trips,
                r.redis_cpu_us,
                r.prefill
            );
        }
        if let [base, pal] = pair {
            eprintln!(
                "  {:<12} {:<9} {:>4} {:>9.2}x {:>8.2}x {:>8.2}x",
                "",
                "pal/raw",
                base.concurrency,
                pal.per_sec / base.per_sec,
                pal.p50_us / base.p50_us,
                pal.p99_us / base.p99_us
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list")
        || std::env::var_os("PALISADE_BENCH_NO_REDIS").is_some_and(|v| v == "1")
    {
        return;
    }
    // Without `--bench` (`cargo test --benches`) the runs are shortened and nothing is written.
    let quick = !args.iter().any(|a| a == "--bench");
    let window = if quick {
        Window {
            warm_up: Duration::from_millis(50),
            measure: Duration::from_millis(200),
        }
    } else {
        Window {
            warm_up: Duration::from_secs(1),
            measure: Duration::from_secs(3),
        }
    };
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut names = Names {
        pid: std::process::id(),
        next: 0,
    };
    let started = Instant::now();

    let allocs = allocation_check(&url, &mut names, if quick { 100 } else { 2_000 });

    // Two workers: the machine's cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut conn = rt.block_on(connect(&url, "the dlq bench"));

    let mut runs = enqueue_section(&rt, &conn, &url, &mut names, window);
    let enqueued: Vec<(f64, f64)> = runs
        .chunks(2)
        .map(|p| (p[0].per_sec, p[1].per_sec))
        .collect();
    runs.extend(claim_section(
        &rt, &conn, &url, &mut names, window, &enqueued,
    ));
    // About 3 s of work at the single-entry claim rate at 64.
    let worker_entries = runs
        .iter()
        .find(|r| {
            r.section == Section::ClaimAck && r.contender == "palisade" && r.concurrency == 64
        })
        .map_or(10_000, |r| {
            (r.per_sec * if quick { 0.2 } else { 3.0 }) as u64
        })
        .clamp(1000, 300_000);
    let worker = worker_section(&rt, &conn, &url, &mut names, worker_entries);

    let left: Vec<String> = rt.block_on(async {
        let mut left = leftovers(&mut conn, &format!("palisade:dlq:{{bench-{}-*", names.pid)).await;
        left.extend(leftovers(&mut conn, &format!("palisade-bench-{}:*", names.pid)).await);
        left
    });

    eprintln!(
        "\ndead-letter store on Redis at {}: tokio multi-thread runtime with 2 workers, {:?} \
         warm-up + {:?} measured per run, ~{}-byte payloads, {:.0} s in all",
        redacted(&url),
        window.warm_up,
        window.measure,
        payload().len(),
        started.elapsed().as_secs_f64()
    );
    print_table(&runs);
    eprintln!(
        "  worker end to end (concurrency 64, 1 ms poll): {} entries acked in {:.2} s = {:.0}/s \
         ({} stale, {} store errors)",
        worker["entries"],
        worker["seconds"].as_f64().unwrap(),
        worker["acked_per_sec"].as_f64().unwrap(),
        worker["stale"],
        worker["store_errors"]
    );

    let json = serde_json::json!({
        "redis_url": redacted(&url),
        "worker_threads": 2,
        "warm_up_ms": window.warm_up.as_millis(),
        "measure_ms": window.measure.as_millis(),
        "payload_bytes": payload().len(),
        "batch": BATCH,
        "lease_ms": LEASE.as_millis(),
        "runs": runs.iter().map(RunResult::json).collect::<Vec<_>>(),
        "worker": worker,
        "allocations": allocs,
    });
    // A shortened run (`cargo test --benches`) leaves the last real figures in place.
    if !quick {
        let path = target_dir().join("dlq-redis.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        eprintln!("  figures written to {}\n", path.display());
    }
    assert!(left.is_empty(), "the bench left keys behind: {left:?}");
}
