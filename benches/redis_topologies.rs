//! Palisade's Redis-backed components on two Redis deployments in one run: a single Redis node
//! beside a 3-primary Redis Cluster (no replicas). Both are private `redis-server` processes
//! that the bench starts itself (`palisade_testkit::RedisServer::start()` and
//! `palisade_testkit::RedisCluster::start(3, 0)`, no persistence) and kills before it returns;
//! the Redis at `REDIS_URL` is not used. Palisade is given the URL of each: `redis://127.0.0.1:P`
//! for the node, `redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3` for the cluster.
//!
//! Everything runs on tokio tasks of a 2-worker multi-thread runtime.
//!
//! | measure | what one operation is | concurrency | figures |
//! | --- | --- | --- | --- |
//! | `ratelimit decide` | `RedisRateLimiter::decide(key, 1)` over 10 000 client keys (each caller starts at its own offset and cycles), quota 1/s with bursts of 10⁹ (every decision admitted), 1 s timeout | 1, 16, 64 callers | decisions/s and p50/p99 of one decision, over a measured window after a warm-up |
//! | `dlq enqueue` | `RedisStore::enqueue(NewEntry, 1 000 000)` of a ~200-byte payload, due now | 16 tasks | entries/s and p50/p99 of one enqueue, over the two fills below |
//! | `dlq claim+ack` | `claim(100, 60 s)` then one `ack_many` of the leases it returned | 1, 4 workers | entries/s and p50/p99 of one claim+ack cycle (a batch), each run draining a freshly filled queue until a claim returns nothing |
//!
//! The rate-limiter runs alternate between the topologies (single then cluster, at each
//! concurrency) to reduce drift; warm-up 1 s + 3 s measured per run (`--quick`: 0.3 s + 1 s).
//! The dead-letter section runs on each topology in turn: an unmeasured warm-up (fill and drain
//! of 2 000 entries), then fill N = 150 000 entries (`--quick`: 10 000; enough for drains of a
//! second or more), drain with 1 worker, fill N, drain with 4 workers, purge. A dead-letter
//! error (a store that refuses the cluster URL, a connection that fails) is printed and
//! recorded, and the run goes on without that topology's remaining dead-letter steps.
//!
//! Beside each run's figures, the table shows what the run cost, warm-up included: the CPU time
//! of the topology's `redis-server` processes (`used_cpu_user` + `used_cpu_sys` of `INFO cpu`,
//! summed over the nodes), in all and per operation; the bench process's own CPU time per
//! operation and in all (`/proc/self/stat`: the client side, where the redis crate's async
//! cluster connection hands every command to a routing task of its own); the CPU time of every
//! other process of the machine (`/proc/stat` busy time minus those two: near 0 on a quiet
//! machine, else the run competed with something); and the run's wall time. The Redis
//! processes and the bench share the machine's cores, so a 3-node cluster on 2 cores is
//! expected to be CPU-bound. The summary under the table gives each topology's idle
//! `redis-server` CPU (measured over 1 s before the runs) and the `MOVED`/`ASK` replies its
//! nodes gave (`INFO errorstats`; 0 once a cluster client knows the slots); the header, the
//! machine's 1-minute load average before and after.
//!
//! Measure on a quiet machine (other CPU s near 0), and compare runs rather than trust one:
//! the single-caller figures are round trips with nothing else in flight, so they depend on how
//! fast an idle core (on a VM, an idle vCPU) wakes up, and vary from run to run.
//!
//! The markdown table goes to stdout, progress and notes to stderr, and (in a full run) the
//! figures to `target/bench-results/redis_topologies.json`. The bench fails, after printing
//! and writing its figures, if a rate-limiter decision was refused, failed, or did not come from
//! Redis (`redis_status()`: backend errors, fallback decisions), or if a dead-letter step on the
//! single node failed.
//!
//! Run: `cargo bench --bench redis_topologies` (about 80 s once built), or
//! `cargo bench --bench redis_topologies -- --quick` (about 15 s; figures printed, not written,
//! so the last full run's JSON stays in place). Without `--bench` (`cargo test --benches`) it
//! runs as `--quick`.

#![allow(clippy::unwrap_used)]
// The table goes to stdout, to be piped or pasted.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use palisade::dlq::{NewEntry, RedisStore, Schedule, Store};
use palisade::ratelimit::{MAX_RATE, Quota, RedisRateLimiter, RedisStatus};
use palisade_testkit::{RedisCluster, RedisServer};
use redis::aio::ConnectionManager;
use serde::Serialize;

#[path = "support/redis.rs"]
mod redis_support;
use redis_support::{connect, quantile_us, redacted};

// ---------------------------------------------------------------------------------------------
// Settings.

/// Distinct client keys of the rate-limiter runs.
const KEYS: usize = 10_000;

/// Concurrent callers of the rate-limiter runs.
const CALLERS: [usize; 3] = [1, 16, 64];

/// Concurrent enqueuers that fill a dead-letter queue.
const FILLERS: usize = 16;

/// Concurrent workers of the claim+ack runs.
const WORKERS: [usize; 2] = [1, 4];

/// Entries per claim.
const CLAIM: usize = 100;

/// Lease of every claim: far longer than a run, so no entry is handed out twice.
const LEASE: Duration = Duration::from_secs(60);

/// The queue bound passed to every enqueue: far above a fill, so nothing is evicted.
const MAX_ENTRIES: u64 = 1_000_000;

/// The longest one dead-letter step (a fill, a drain, the purge) may take before the topology's
/// dead-letter section is given up: a stuck connection must not hang the bench.
const STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Run lengths and sizes, full or `--quick`.
#[derive(Debug, Clone, Copy, Serialize)]
struct Settings {
    quick: bool,
    #[serde(rename = "warm_up_ms", serialize_with = "ser_ms")]
    warm_up: Duration,
    #[serde(rename = "measure_ms", serialize_with = "ser_ms")]
    measure: Duration,
    /// Entries of each dead-letter fill.
    entries: u64,
    /// Entries of the unmeasured dead-letter warm-up.
    warm_up_entries: u64,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

impl Settings {
    fn from_args(args: &[String]) -> Self {
        // `cargo bench` passes `--bench`; `cargo test --benches` does not, and gets short runs.
        let quick = args.iter().any(|a| a == "--quick") || !args.iter().any(|a| a == "--bench");
        if quick {
            Settings {
                quick,
                warm_up: Duration::from_millis(300),
                measure: Duration::from_secs(1),
                entries: 10_000,
                warm_up_entries: 500,
            }
        } else {
            Settings {
                quick,
                warm_up: Duration::from_secs(1),
                measure: Duration::from_secs(3),
                entries: 150_000,
                warm_up_entries: 2_000,
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The two deployments and what their processes cost.

/// One Redis deployment under test.
struct Topology {
    /// `single` or `cluster`.
    name: &'static str,
    /// The URL Palisade's components are given.
    url: String,
    /// `redis://127.0.0.1:P` of every node, for `INFO cpu`.
    node_urls: Vec<String>,
    /// One connection per node, for `INFO cpu`.
    nodes: Vec<ConnectionManager>,
}

impl Topology {
    async fn new(name: &'static str, url: String, node_urls: Vec<String>) -> Self {
        let mut nodes = Vec::with_capacity(node_urls.len());
        for node in &node_urls {
            nodes.push(connect(node, "the redis_topologies bench").await);
        }
        Topology {
            name,
            url,
            node_urls,
            nodes,
        }
    }

    /// Summed over the nodes: `used_cpu_user` + `used_cpu_sys` (`INFO cpu`), in seconds, and
    /// the `MOVED` and `ASK` redirections answered (`INFO errorstats`).
    async fn redis_counters(&mut self) -> (f64, u64) {
        let (mut cpu_s, mut redirections) = (0.0, 0);
        for conn in &mut self.nodes {
            let info: String = redis::cmd("INFO")
                .arg("cpu")
                .arg("errorstats")
                .query_async(conn)
                .await
                .unwrap();
            cpu_s += info_f64(&info, "used_cpu_user") + info_f64(&info, "used_cpu_sys");
            // `errorstat_MOVED:count=12`, absent until the first one.
            for error in ["errorstat_MOVED", "errorstat_ASK"] {
                redirections += info_field(&info, error)
                    .and_then(|v| v.strip_prefix("count=")?.split(',').next()?.parse().ok())
                    .unwrap_or(0_u64);
            }
        }
        (cpu_s, redirections)
    }

    /// `redis_version` of the first node.
    async fn redis_version(&mut self) -> String {
        let info: String = redis::cmd("INFO")
            .arg("server")
            .query_async(&mut self.nodes[0])
            .await
            .unwrap();
        info_field(&info, "redis_version").unwrap_or("?").to_owned()
    }
}

/// `field:value` of an `INFO` reply.
fn info_field<'a>(info: &'a str, field: &str) -> Option<&'a str> {
    info.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(str::trim)
}

fn info_f64(info: &str, field: &str) -> f64 {
    info_field(info, field)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("INFO has no numeric {field}"))
}

/// User + system CPU time of this process (every thread), in seconds; 0 where `/proc` is
/// missing. `/proc/<pid>/stat` counts in USER_HZ ticks, 100 per second on Linux.
fn own_cpu_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: state is the first, utime the 12th, stime the 13th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Busy CPU time of the whole machine (every core, every process), in seconds; 0 where
/// `/proc` is missing. The `cpu` line of `/proc/stat`, in USER_HZ ticks: everything but idle
/// and iowait.
fn machine_busy_s() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<u64> = stat
        .lines()
        .find_map(|l| l.strip_prefix("cpu "))
        .map(|l| {
            l.split_whitespace()
                .filter_map(|t| t.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    // user nice system idle iowait irq softirq steal (guest time is in user already).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|&(i, _)| i != 3 && i != 4)
        .map(|(_, t)| t)
        .sum();
    busy as f64 / 100.0
}

/// The 1-minute load average (`/proc/loadavg`), to tell a quiet machine from a busy one.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The counters at the start of a run.
struct UsageMark {
    at: Instant,
    redis_cpu_s: f64,
    redirections: u64,
    bench_cpu_s: f64,
    machine_busy_s: f64,
}

/// What a run (or several, added up) cost, over its whole span, warm-up included.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Usage {
    wall_s: f64,
    /// CPU time of the topology's `redis-server` processes.
    redis_cpu_s: f64,
    /// CPU time of the bench process (client, runtime, connections).
    bench_cpu_s: f64,
    /// CPU time of every other process of the machine (its busy time minus the two above): what
    /// else competed for the cores. Near 0 on a quiet machine.
    other_cpu_s: f64,
    /// `MOVED` and `ASK` replies of the topology's nodes (0 once a cluster client knows the
    /// slots).
    redirections: u64,
    /// Operations (decisions, entries) over the span: what `redis_cpu_us_per_op` divides by.
    ops: u64,
}

impl Usage {
    async fn mark(topology: &mut Topology) -> UsageMark {
        let (redis_cpu_s, redirections) = topology.redis_counters().await;
        UsageMark {
            redis_cpu_s,
            redirections,
            bench_cpu_s: own_cpu_s(),
            machine_busy_s: machine_busy_s(),
            at: Instant::now(),
        }
    }

    /// The usage since `mark`, of `ops` operations.
    async fn since(mark: UsageMark, topology: &mut Topology, ops: u64) -> Usage {
        let wall_s = mark.at.elapsed().as_secs_f64();
        let bench_cpu_s = own_cpu_s() - mark.bench_cpu_s;
        let machine_busy_s = machine_busy_s() - mark.machine_busy_s;
        let (redis_cpu_s, redirections) = topology.redis_counters().await;
        let redis_cpu_s = redis_cpu_s - mark.redis_cpu_s;
        Usage {
            wall_s,
            redis_cpu_s,
            bench_cpu_s,
            other_cpu_s: (machine_busy_s - redis_cpu_s - bench_cpu_s).max(0.0),
            redirections: redirections - mark.redirections,
            ops,
        }
    }

    fn add(&mut self, other: Usage) {
        self.wall_s += other.wall_s;
        self.redis_cpu_s += other.redis_cpu_s;
        self.bench_cpu_s += other.bench_cpu_s;
        self.other_cpu_s += other.other_cpu_s;
        self.redirections += other.redirections;
        self.ops += other.ops;
    }

    /// Redis CPU time per operation, in µs.
    fn redis_cpu_us_per_op(&self) -> f64 {
        self.redis_cpu_s * 1e6 / self.ops as f64
    }

    /// Bench CPU time per operation, in µs.
    fn bench_cpu_us_per_op(&self) -> f64 {
        self.bench_cpu_s * 1e6 / self.ops as f64
    }
}

/// CPU time (s) the topology's idle `redis-server` processes spend per second (cron, cluster
/// bus), measured over one second before the runs: the floor under the per-run figures.
async fn idle_cpu_per_s(topology: &mut Topology) -> f64 {
    const IDLE: Duration = Duration::from_secs(1);
    let (before, _) = topology.redis_counters().await;
    tokio::time::sleep(IDLE).await;
    let (after, _) = topology.redis_counters().await;
    (after - before) / IDLE.as_secs_f64()
}

// ---------------------------------------------------------------------------------------------
// One row of the results.

#[derive(Debug, Clone, Serialize)]
struct Row {
    topology: &'static str,
    /// `ratelimit decide`, `dlq enqueue` or `dlq claim+ack`.
    measure: &'static str,
    /// Concurrent callers, enqueuers or workers.
    concurrency: usize,
    /// Operations (decisions, entries) counted in `per_sec`.
    ops: u64,
    /// Decisions or entries per second.
    per_sec: f64,
    /// What `p50_us` and `p99_us` time.
    latency_of: &'static str,
    p50_us: f64,
    p99_us: f64,
    /// Failed operations (and, for the limiter, backend errors: decisions that were not Redis's).
    errors: u64,
    /// Over the whole run, warm-up included.
    usage: Usage,
    /// Figures specific to the measure.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    extra: BTreeMap<&'static str, u64>,
}

/// Sorts `latencies` (ns) and returns their p50 and p99 in µs.
fn p50_p99(latencies: &mut [u32]) -> (f64, f64) {
    latencies.sort_unstable();
    (quantile_us(latencies, 0.50), quantile_us(latencies, 0.99))
}

fn elapsed_ns(start: Instant) -> u32 {
    u32::try_from(start.elapsed().as_nanos()).unwrap_or(u32::MAX)
}

// ---------------------------------------------------------------------------------------------
// The rate limiter.

/// `KEYS` client addresses, `10.0.0.0` to `10.0.39.15`.
fn client_keys() -> Arc<[String]> {
    (0..KEYS)
        .map(|i| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255))
        .collect()
}

/// Call inside the runtime (the limiter connects lazily on it).
fn limiter(url: &str) -> RedisRateLimiter {
    RedisRateLimiter::builder("bench", url)
        // One cell per second, bursts of 10⁹: every decision is admitted, and each rewrites an
        // existing key (as in benches/ratelimit.rs).
        .quota(Quota::per_second(1).with_burst(MAX_RATE))
        // Far above any round trip here: every decision is Redis's, none the fallback's.
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// What one caller saw.
#[derive(Default)]
struct CallerResult {
    /// Latencies (ns) of the decisions started in the measured window.
    latencies: Vec<u32>,
    /// Decisions over the whole run, warm-up included.
    total: u64,
    refused: u64,
    failed: u64,
}

/// Decides in a loop, from key `first` on, until `end`; times the decisions that start at or
/// after `measure_from`.
async fn caller(
    limiter: RedisRateLimiter,
    keys: Arc<[String]>,
    first: usize,
    measure_from: Instant,
    end: Instant,
) -> CallerResult {
    let mut r = CallerResult::default();
    let mut i = first;
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        match limiter.decide(&keys[i], 1).await {
            Ok(d) if d.allowed => {}
            Ok(_) => r.refused += 1,
            Err(_) => r.failed += 1,
        }
        let nanos = elapsed_ns(start);
        r.total += 1;
        if start >= measure_from {
            r.latencies.push(nanos);
        }
        i = (i + 1) % keys.len();
    }
    r
}

/// One rate-limiter run: `callers` tasks for a warm-up and a measured window.
async fn ratelimit_run(
    topology: &mut Topology,
    limiter: &RedisRateLimiter,
    keys: &Arc<[String]>,
    callers: usize,
    settings: Settings,
) -> Row {
    let before: RedisStatus = limiter.redis_status();
    let mark = Usage::mark(topology).await;
    let start = Instant::now();
    let measure_from = start + settings.warm_up;
    let end = measure_from + settings.measure;
    let tasks: Vec<_> = (0..callers)
        .map(|t| {
            tokio::spawn(caller(
                limiter.clone(),
                Arc::clone(keys),
                t * KEYS / callers,
                measure_from,
                end,
            ))
        })
        .collect();
    let mut results = Vec::with_capacity(callers);
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let total: u64 = results.iter().map(|r| r.total).sum();
    let usage = Usage::since(mark, topology, total).await;
    let after = limiter.redis_status();

    let backend_errors = after.backend_errors_total - before.backend_errors_total;
    let fallback = after.fallback_decisions_total - before.fallback_decisions_total;
    let refused: u64 = results.iter().map(|r| r.refused).sum();
    let failed: u64 = results.iter().map(|r| r.failed).sum();
    let mut latencies: Vec<u32> = results.into_iter().flat_map(|r| r.latencies).collect();
    let (p50_us, p99_us) = p50_p99(&mut latencies);
    Row {
        topology: topology.name,
        measure: "ratelimit decide",
        concurrency: callers,
        ops: latencies.len() as u64,
        per_sec: latencies.len() as f64 / settings.measure.as_secs_f64(),
        latency_of: "decision",
        p50_us,
        p99_us,
        errors: failed + backend_errors,
        usage,
        extra: BTreeMap::from([
            ("refused", refused),
            ("failed", failed),
            ("backend_errors", backend_errors),
            ("fallback_decisions", fallback),
        ]),
    }
}

// ---------------------------------------------------------------------------------------------
// The dead-letter store.

/// About 200 bytes of JSON: a tool call that failed.
fn payload() -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "tool": "slack.post_message",
        "arguments": {
            "channel": "#deployments",
            "text": "deploy of api-gateway v2.14.3 to eu-west-1 finished in 4m12s",
            "thread_ts": "1712345678.000200",
        },
        "request_id": "4f8e2a1c-9b7d-4e3f-a2c5-d6e7f8091a2b",
    }))
    .unwrap()
}

fn new_entry() -> NewEntry {
    NewEntry {
        operation: "slack.post_message".into(),
        payload: payload(),
        kind: palisade::dlq::FailureKind::Timeout,
        error: "upstream timed out after 10 s".into(),
        metadata: BTreeMap::new(),
        schedule: Schedule::RetryIn(Duration::ZERO),
    }
}

/// Runs `step`, failing with a message naming it when it fails or takes over `STEP_TIMEOUT`.
async fn step<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(STEP_TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer within {STEP_TIMEOUT:?}")),
    }
}

/// Adds `n` due entries, `FILLERS` enqueues at a time; the latency (ns) of each.
async fn fill(store: &Arc<RedisStore>, n: u64) -> Result<Vec<u32>, String> {
    let left = Arc::new(AtomicU64::new(n));
    let tasks: Vec<_> = (0..FILLERS)
        .map(|_| {
            let (store, left) = (Arc::clone(store), Arc::clone(&left));
            tokio::spawn(async move {
                let entry = new_entry();
                let mut latencies = Vec::new();
                while left
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                    .is_ok()
                {
                    let start = Instant::now();
                    store
                        .enqueue(entry.clone(), MAX_ENTRIES)
                        .await
                        .map_err(|e| e.to_string())?;
                    latencies.push(elapsed_ns(start));
                }
                Ok::<_, String>(latencies)
            })
        })
        .collect();
    let mut latencies = Vec::with_capacity(usize::try_from(n).unwrap());
    let mut error = None;
    for t in tasks {
        match t.await.unwrap() {
            Ok(l) => latencies.extend(l),
            Err(e) => error = Some(e),
        }
    }
    error.map_or(Ok(latencies), Err)
}

/// Claims and acks with `workers` workers until a claim returns nothing; the entries acked and
/// the latency (ns) of each claim+ack cycle that got entries.
async fn drain(store: &Arc<RedisStore>, workers: usize) -> Result<(u64, Vec<u32>), String> {
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let store = Arc::clone(store);
            tokio::spawn(async move {
                let (mut acked, mut latencies) = (0_u64, Vec::new());
                loop {
                    let start = Instant::now();
                    let leases = store.claim(CLAIM, LEASE).await.map_err(|e| e.to_string())?;
                    if leases.is_empty() {
                        return Ok::<_, String>((acked, latencies));
                    }
                    let acks: Vec<_> = leases.iter().map(|l| (l.entry.id, l.token)).collect();
                    let ok = store.ack_many(&acks).await.map_err(|e| e.to_string())?;
                    latencies.push(elapsed_ns(start));
                    let refused = ok.iter().filter(|&&b| !b).count();
                    if refused > 0 {
                        return Err(format!("{refused} acks of current leases were refused"));
                    }
                    acked += leases.len() as u64;
                }
            })
        })
        .collect();
    let (mut acked, mut latencies, mut error) = (0, Vec::new(), None);
    for t in tasks {
        match t.await.unwrap() {
            Ok((a, l)) => {
                acked += a;
                latencies.extend(l);
            }
            Err(e) => error = Some(e),
        }
    }
    error.map_or(Ok((acked, latencies)), Err)
}

/// The dead-letter section on one topology: warm-up, fill, drain by 1, fill, drain by 4, purge.
/// Pushes each row as soon as it is measured; an error ends the section (its message returned).
async fn dlq_section(
    topology: &mut Topology,
    settings: Settings,
    rows: &mut Vec<Row>,
) -> Result<(), String> {
    let queue = format!("bench-{}", std::process::id());
    let store = Arc::new(
        RedisStore::new(&topology.url, &queue).map_err(|e| format!("RedisStore::new: {e}"))?,
    );
    eprintln!("  {}: dead-letter warm-up", topology.name);
    step("warm-up fill", fill(&store, settings.warm_up_entries)).await?;
    let (acked, _) = step("warm-up drain", drain(&store, 4)).await?;
    check_drained("warm-up", acked, settings.warm_up_entries)?;

    let mut enqueue_latencies = Vec::new();
    let mut enqueue_usage = Usage::default();
    for workers in WORKERS {
        eprintln!(
            "  {}: dead-letter fill of {} entries, {FILLERS} enqueuers",
            topology.name, settings.entries
        );
        let mark = Usage::mark(topology).await;
        let latencies = step("fill", fill(&store, settings.entries)).await?;
        let enqueued = latencies.len() as u64;
        enqueue_usage.add(Usage::since(mark, topology, enqueued).await);
        enqueue_latencies.extend(latencies);

        eprintln!(
            "  {}: dead-letter claim+ack, {workers} worker(s)",
            topology.name
        );
        let mark = Usage::mark(topology).await;
        let start = Instant::now();
        let (acked, mut latencies) = step("claim+ack", drain(&store, workers)).await?;
        let seconds = start.elapsed().as_secs_f64();
        let usage = Usage::since(mark, topology, acked).await;
        check_drained("claim+ack", acked, settings.entries)?;
        let (p50_us, p99_us) = p50_p99(&mut latencies);
        rows.push(Row {
            topology: topology.name,
            measure: "dlq claim+ack",
            concurrency: workers,
            ops: acked,
            per_sec: acked as f64 / seconds,
            latency_of: "claim(100) + ack_many",
            p50_us,
            p99_us,
            errors: 0,
            usage,
            extra: BTreeMap::from([("cycles", latencies.len() as u64)]),
        });
    }
    let (p50_us, p99_us) = p50_p99(&mut enqueue_latencies);
    let enqueued = enqueue_latencies.len() as u64;
    // Before the claim+ack rows, as the fills came before the drains.
    let at = rows.len() - WORKERS.len();
    rows.insert(
        at,
        Row {
            topology: topology.name,
            measure: "dlq enqueue",
            concurrency: FILLERS,
            ops: enqueued,
            per_sec: enqueued as f64 / enqueue_usage.wall_s,
            latency_of: "enqueue",
            p50_us,
            p99_us,
            errors: 0,
            usage: enqueue_usage,
            extra: BTreeMap::from([("fills", WORKERS.len() as u64)]),
        },
    );

    let purged = step("purge", store.purge()).await?;
    if purged != 0 {
        return Err(format!("purge removed {purged} entries of a drained queue"));
    }
    Ok(())
}

fn check_drained(what: &str, acked: u64, filled: u64) -> Result<(), String> {
    if acked == filled {
        Ok(())
    } else {
        Err(format!(
            "{what}: {acked} entries acked of {filled} enqueued"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Output.

/// µs with one decimal below 100, none above.
fn us(v: f64) -> String {
    if v < 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.0}")
    }
}

fn print_table(rows: &[Row]) {
    const HEADER: [&str; 13] = [
        "topology",
        "measure",
        "callers/workers",
        "per second",
        "p50 µs",
        "p99 µs",
        "errors",
        "redis-server CPU s",
        "redis-server CPU µs/op",
        "bench CPU s",
        "bench CPU µs/op",
        "other CPU s",
        "wall s",
    ];
    println!("| {} |", HEADER.join(" | "));
    let align: Vec<&str> = (0..HEADER.len())
        .map(|i| if i < 2 { "---" } else { "---:" })
        .collect();
    println!("| {} |", align.join(" | "));
    for r in rows {
        let cells = [
            r.topology.to_owned(),
            r.measure.to_owned(),
            r.concurrency.to_string(),
            format!("{:.0}", r.per_sec),
            us(r.p50_us),
            us(r.p99_us),
            r.errors.to_string(),
            format!("{:.2}", r.usage.redis_cpu_s),
            format!("{:.1}", r.usage.redis_cpu_us_per_op()),
            format!("{:.2}", r.usage.bench_cpu_s),
            format!("{:.1}", r.usage.bench_cpu_us_per_op()),
            format!("{:.2}", r.usage.other_cpu_s),
            format!("{:.2}", r.usage.wall_s),
        ];
        println!("| {} |", cells.join(" | "));
    }
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

// ---------------------------------------------------------------------------------------------

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--list") {
        return;
    }
    let settings = Settings::from_args(&args);
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let started = Instant::now();
    let load_before = load_average();

    // Declared before the runtime, so dropped after it: no connection outlives its server.
    eprintln!("starting a single Redis node and a 3-primary Redis Cluster...");
    let server = RedisServer::start();
    let cluster = RedisCluster::start(3, 0);
    let cluster_url = format!(
        "redis+cluster://{}",
        cluster
            .ports()
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",")
    );

    // Two workers: the machine's cores (here).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut topologies = rt.block_on(async {
        vec![
            Topology::new("single", server.url(), vec![server.url()]).await,
            Topology::new("cluster", cluster_url, cluster.seeds()).await,
        ]
    });
    let redis_version = rt.block_on(topologies[0].redis_version());
    let idle: BTreeMap<&str, f64> = rt.block_on(async {
        let mut idle = BTreeMap::new();
        for t in &mut topologies {
            idle.insert(t.name, idle_cpu_per_s(t).await);
        }
        idle
    });
    let mut rows = Vec::new();

    // The rate limiter: single then cluster at each concurrency.
    let keys = client_keys();
    let limiters: Vec<RedisRateLimiter> = {
        let _runtime = rt.enter();
        topologies.iter().map(|t| limiter(&t.url)).collect()
    };
    for callers in CALLERS {
        for (topology, limiter) in topologies.iter_mut().zip(&limiters) {
            eprintln!("  {}: rate limiter, {callers} caller(s)", topology.name);
            rows.push(rt.block_on(ratelimit_run(topology, limiter, &keys, callers, settings)));
        }
    }
    let statuses: BTreeMap<&str, RedisStatus> = topologies
        .iter()
        .zip(&limiters)
        .map(|(t, l)| (t.name, l.redis_status()))
        .collect();
    drop(limiters);

    // The dead-letter store, on each topology in turn.
    let mut dlq_errors = BTreeMap::new();
    for topology in &mut topologies {
        if let Err(e) = rt.block_on(dlq_section(topology, settings, &mut rows)) {
            eprintln!(
                "  {}: dead-letter section failed, going on without it: {e}",
                topology.name
            );
            dlq_errors.insert(topology.name, e);
        }
    }

    // Output.
    let load_after = load_average();
    let load = |l: Option<f64>| l.map_or("?".into(), |l| format!("{l:.2}"));
    println!(
        "\nPalisade on a single Redis node and a 3-primary Redis Cluster \
         (redis-server {redis_version}, no persistence), {cores} cores; tokio multi-thread \
         runtime with 2 workers; rate limiter: {KEYS} keys, {:?} warm-up + {:?} measured per \
         run; dead-letter queue: fills of {} entries ({}-byte payloads), claims of {CLAIM} \
         under a {:?} lease; {:.0} s in all{}; 1-minute load average {} before, {} after.\n",
        settings.warm_up,
        settings.measure,
        settings.entries,
        payload().len(),
        LEASE,
        started.elapsed().as_secs_f64(),
        if settings.quick { " (--quick)" } else { "" },
        load(load_before),
        load(load_after),
    );
    print_table(&rows);
    println!(
        "\nThe redis-server processes (1 for single, 3 for cluster) and the bench share this \
         machine's {cores} cores: the cluster runs 3 redis-server processes on them, so it is \
         expected to be CPU-bound. CPU and wall times cover each whole run, warm-up included \
         (enqueue: both fills); redis-server CPU µs/op divides the nodes' CPU time by the \
         operations of that span (decisions, warm-up included; entries), and bench CPU µs/op \
         the bench process's (client, runtime and connections); other CPU s is the CPU time \
         of every other process of the machine during the run (/proc/stat busy time minus the \
         two), near 0 on a quiet machine."
    );
    for topology in &topologies {
        for (section, prefix) in [("rate limiter", "ratelimit"), ("dead-letter", "dlq")] {
            let mut total = Usage::default();
            for r in rows
                .iter()
                .filter(|r| r.topology == topology.name && r.measure.starts_with(prefix))
            {
                total.add(r.usage);
            }
            if total.ops > 0 {
                println!(
                    "{} ({} redis-server process{}), {section} runs: {:.2} s redis-server CPU, \
                     {:.2} s bench CPU over {:.2} s wall; {} MOVED/ASK redirections; idle \
                     redis-server CPU {:.3} s per s",
                    topology.name,
                    topology.nodes.len(),
                    if topology.nodes.len() == 1 { "" } else { "es" },
                    total.redis_cpu_s,
                    total.bench_cpu_s,
                    total.wall_s,
                    total.redirections,
                    idle[topology.name],
                );
            }
        }
    }
    for (name, e) in &dlq_errors {
        println!("\n{name}: dead-letter section not measured: {e}");
    }

    let json = serde_json::json!({
        "cores": cores,
        "worker_threads": 2,
        "redis_version": redis_version,
        "load_average_1m": { "before": load_before, "after": load_after },
        "idle_redis_cpu_s_per_s": idle,
        "settings": settings,
        "keys": KEYS,
        "fillers": FILLERS,
        "claim": CLAIM,
        "lease_ms": LEASE.as_millis(),
        "payload_bytes": payload().len(),
        "topologies": topologies.iter().map(|t| serde_json::json!({
            "name": t.name,
            "url": redacted(&t.url),
            "nodes": t.node_urls,
        })).collect::<Vec<_>>(),
        "rows": rows.iter().map(|r| {
            let mut row = serde_json::to_value(r).unwrap();
            row["usage"]["redis_cpu_us_per_op"] = r.usage.redis_cpu_us_per_op().into();
            row["usage"]["bench_cpu_us_per_op"] = r.usage.bench_cpu_us_per_op().into();
            row
        }).collect::<Vec<_>>(),
        "limiter_redis_status": statuses,
        "dlq_errors": dlq_errors,
    });
    if settings.quick {
        eprintln!("\n(--quick: figures not written; the last full run's JSON stays in place)");
    } else {
        let path = target_dir().join("bench-results/redis_topologies.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        eprintln!("\nfigures written to {}", path.display());
    }

    // Stop everything before judging: connections first, then the servers.
    drop(topologies);
    drop(rt);
    drop(cluster);
    drop(server);

    for r in rows.iter().filter(|r| r.measure == "ratelimit decide") {
        assert_eq!(
            (r.errors, r.extra["refused"], r.extra["fallback_decisions"]),
            (0, 0, 0),
            "{} rate limiter, {} callers: errors, refused and fallback decisions must be 0",
            r.topology,
            r.concurrency
        );
    }
    for (name, status) in &statuses {
        assert_eq!(
            status.backend_errors_total, 0,
            "{name} rate limiter: backend errors"
        );
    }
    assert!(
        !dlq_errors.contains_key("single"),
        "the dead-letter section failed on the single node: {}",
        dlq_errors["single"]
    );
}
