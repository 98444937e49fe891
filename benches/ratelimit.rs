//! Cost of a rate-limit decision: Palisade's local limiters against governor 0.10 (the crate
//! users would pick instead, same GCRA algorithm) in one run, and Palisade's Redis-backed
//! limiter against the same Lua script driven directly through the redis crate on the same Redis.
//!
//! Every local group has its own baseline (the bare loop); the figure that matters is a
//! contender's median against the baseline of its group. Each quota is so large that every call
//! is admitted (a refused call would panic), so the figures are those of the admit path.
//!
//! | group | what one iteration is |
//! | --- | --- |
//! | `ratelimit_direct` | one `check()` on a direct limiter (10⁹ per second, bursts of 10⁹) |
//! | `ratelimit_keyed` | one `check_key(..)` on a keyed limiter, cycling over 1000 pre-built `String` keys |
//! | `ratelimit_2_threads` | the direct `check()` from two threads at once on one shared limiter |
//!
//! After the local groups, a plain table prints palisade/governor ratios of this run's medians
//! (read back from `target/criterion/<group>/<bench>/new/estimates.json`).
//!
//! The distributed section does not use criterion. Against the Redis at `REDIS_URL` (default
//! `redis://127.0.0.1:6379`), for 1, 16 and 64 concurrent callers (tokio tasks on a 2-worker
//! runtime), each caller decides in a loop for 1 s of warm-up and 3 s of measurement, cycling
//! over 1000 keys, and the section reports decisions per second and the p50/p99/p99.9 latency of
//! one decision:
//!
//! - `redis_script`: the baseline, `redis::Script::new(GCRA_SCRIPT)` invoked (`EVALSHA`) through
//!   one `redis::aio::ConnectionManager` shared by all callers, on pre-built keys;
//! - `palisade_decide`: `RedisRateLimiter::decide(key, 1)`, 1 s timeout (no fallback happens: the
//!   bench fails if any decision did not come from Redis).
//!
//! The two contenders alternate (baseline then Palisade, at each concurrency) to reduce drift.
//! The table goes to stderr and the figures to `target/ratelimit-redis.json`. Keys live under
//! `palisade-bench-<pid>:` and are deleted at the end; nothing else on the Redis is touched.
//! `PALISADE_BENCH_NO_REDIS=1` skips the section; otherwise an unreachable Redis fails the bench.
//!
//! Before criterion starts, the bench counts heap allocations per decision of each contender
//! and prints them to stderr.
//!
//! Run: `cargo bench --bench ratelimit` (about 2 minutes once built; one local group:
//! `cargo bench --bench ratelimit -- ratelimit_keyed`, which still runs the Redis section unless
//! `PALISADE_BENCH_NO_REDIS=1`).

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use criterion::{Criterion, criterion_group};
use palisade::ratelimit::{
    GCRA_SCRIPT, KeyedRateLimiter, MAX_RATE, Quota, RateLimiter, RedisOptions, RedisRateLimiter,
};
use redis::aio::ConnectionManager;

// ---------------------------------------------------------------------------------------------
// Allocation counter. Off (one relaxed load per allocation) except around `allocs_per_call`.

#[path = "support/redis.rs"]
mod redis_support;
mod support;
use redis_support::{connect, quantile_us, redacted};
use support::allocs_per_call;

// ---------------------------------------------------------------------------------------------
// The local limiters under test, and one decision of each.

/// Rate and burst of every local limiter: one cell per nanosecond, a second's worth of burst.
/// A call takes longer than a nanosecond, so every call is admitted.
const LOCAL_RATE: u32 = 1_000_000_000;

/// Keys of the keyed group (and of the Redis section), visited in turn.
const KEYS: usize = 1000;

type GovernorDirect = governor::DefaultDirectRateLimiter;
type GovernorKeyed = governor::DefaultKeyedRateLimiter<String>;

/// `KEYS` client addresses, `10.0.0.0` to `10.0.3.231`.
fn keys() -> Vec<String> {
    (0..KEYS)
        .map(|i| format!("10.0.{}.{}", i / 256, i % 256))
        .collect()
}

fn governor_quota() -> governor::Quota {
    // Bursts of `LOCAL_RATE` too: `per_second` sets the burst to the rate.
    governor::Quota::per_second(NonZeroU32::new(LOCAL_RATE).unwrap())
}

fn palisade_quota() -> Quota {
    Quota::per_second(LOCAL_RATE).with_burst(LOCAL_RATE)
}

fn governor_direct() -> GovernorDirect {
    governor::RateLimiter::direct(governor_quota())
}

fn governor_keyed() -> GovernorKeyed {
    governor::RateLimiter::keyed(governor_quota())
}

fn palisade_direct() -> RateLimiter {
    RateLimiter::builder("bench")
        .quota(palisade_quota())
        .build()
        .unwrap()
}

/// With the default bound (100 000 keys): the 1000 keys stay tracked.
fn palisade_keyed() -> KeyedRateLimiter<String> {
    KeyedRateLimiter::<String>::builder("bench-keyed")
        .quota(palisade_quota())
        .build()
        .unwrap()
}

#[inline(always)]
fn governor_check(limiter: &GovernorDirect) {
    black_box(limiter.check()).unwrap();
}

#[inline(always)]
fn palisade_check(limiter: &RateLimiter) {
    black_box(limiter.check()).unwrap();
}

#[inline(always)]
fn governor_check_key(limiter: &GovernorKeyed, key: &String) {
    black_box(limiter.check_key(key)).unwrap();
}

#[inline(always)]
fn palisade_check_key(limiter: &KeyedRateLimiter<String>, key: &str) {
    black_box(limiter.check_key(key)).unwrap();
}

/// Runs `iters` calls of `f`, on `keys` in turn, and returns the time taken.
#[inline(always)]
fn cycle_keys(iters: u64, keys: &[String], mut f: impl FnMut(&String)) -> Duration {
    let start = Instant::now();
    let mut i = 0;
    for _ in 0..iters {
        f(&keys[i]);
        i += 1;
        if i == keys.len() {
            i = 0;
        }
    }
    start.elapsed()
}

/// Runs `iters` calls of `f` on each of two threads at once (released together by a barrier)
/// and returns the longer thread's time: the wall time of the contended stretch, so the
/// reported figure is the time per call per thread.
fn two_threads<F>(iters: u64, f: F) -> Duration
where
    F: Fn() + Sync,
{
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        f();
                    }
                    start.elapsed()
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().unwrap())
            .max()
            .unwrap()
    })
}

// ---------------------------------------------------------------------------------------------
// Groups.

fn direct(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit_direct");

    g.bench_function("bare", |b| b.iter(|| black_box(1_u64)));

    let limiter = palisade_direct();
    g.bench_function("palisade_check", |b| b.iter(|| palisade_check(&limiter)));

    let gov = governor_direct();
    g.bench_function("governor_check", |b| b.iter(|| governor_check(&gov)));

    g.finish();
}

fn keyed(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit_keyed");
    let keys = keys();

    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            cycle_keys(iters, &keys, |k| {
                black_box(k);
            })
        })
    });

    let limiter = palisade_keyed();
    g.bench_function("palisade_check_key", |b| {
        b.iter_custom(|iters| cycle_keys(iters, &keys, |k| palisade_check_key(&limiter, k)))
    });

    let gov = governor_keyed();
    g.bench_function("governor_check_key", |b| {
        b.iter_custom(|iters| cycle_keys(iters, &keys, |k| governor_check_key(&gov, k)))
    });

    g.finish();
}

fn two_threads_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("ratelimit_2_threads");

    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, || {
                black_box(1_u64);
            })
        })
    });

    let limiter = palisade_direct();
    g.bench_function("palisade_check", |b| {
        b.iter_custom(|iters| two_threads(iters, || palisade_check(&limiter)))
    });

    let gov = governor_direct();
    g.bench_function("governor_check", |b| {
        b.iter_custom(|iters| two_threads(iters, || governor_check(&gov)))
    });

    g.finish();
}

/// Prints heap allocations per local decision of every contender (stderr, before criterion
/// runs). The keyed limiters already track every key, as in the keyed group.
fn allocation_check() {
    const N: u64 = 10_000;
    let keys = keys();
    let limiter = palisade_direct();
    let gov = governor_direct();
    let keyed = palisade_keyed();
    let gov_keyed = governor_keyed();
    for k in &keys {
        palisade_check_key(&keyed, k);
        governor_check_key(&gov_keyed, k);
    }
    let mut i = 0;
    let mut next_key = || {
        i = (i + 1) % KEYS;
        &keys[i]
    };

    let rows = [
        (
            "palisade check (direct)",
            allocs_per_call(N, || palisade_check(&limiter)),
        ),
        (
            "governor check (direct)",
            allocs_per_call(N, || governor_check(&gov)),
        ),
        (
            "palisade check_key (keyed)",
            allocs_per_call(N, || palisade_check_key(&keyed, next_key())),
        ),
        (
            "governor check_key (keyed)",
            allocs_per_call(N, || governor_check_key(&gov_keyed, next_key())),
        ),
    ];
    eprintln!("heap allocations per local decision ({N} calls each):");
    for (name, allocs) in rows {
        eprintln!("  {name:<30} {allocs:.2}");
    }
}

// ---------------------------------------------------------------------------------------------
// The distributed section: decisions per second and latency on a real Redis.

/// Concurrent callers of each distributed run.
const REDIS_CALLERS: [usize; 3] = [1, 16, 64];

/// Name of Palisade's Redis limiter; the baseline's keys use the same-length segment
/// `baseline`, so both contenders send keys of the same length.
const REDIS_LIMITER_NAME: &str = "palisade";

/// The quota of the distributed contenders: one cell per second, bursts of 10⁹. Every decision
/// is admitted, and a key's bucket is never full again during the run, so its key stays in
/// Redis and each decision reads and rewrites an existing key (as for a client that spends its
/// quota), rather than creating one that expires a millisecond later.
fn redis_quota() -> Quota {
    Quota::per_second(1).with_burst(MAX_RATE)
}

/// Warm-up and measurement time of one distributed run.
#[derive(Debug, Clone, Copy)]
struct Window {
    warm_up: Duration,
    measure: Duration,
}

/// One caller's handle on a contender of the distributed section.
#[derive(Clone)]
enum RedisContender {
    /// `GCRA_SCRIPT` through the redis crate, as Palisade runs it, on pre-built Redis keys.
    Script {
        conn: ConnectionManager,
        script: Arc<redis::Script>,
        keys: Arc<[String]>,
        interval_us: u64,
        tolerance_us: u64,
    },
    /// `RedisRateLimiter::decide(key, 1)` on the client keys.
    Palisade {
        limiter: RedisRateLimiter,
        keys: Arc<[String]>,
    },
}

impl RedisContender {
    fn name(&self) -> &'static str {
        match self {
            RedisContender::Script { .. } => "redis_script",
            RedisContender::Palisade { .. } => "palisade_decide",
        }
    }

    /// One decision on key `i`; whether it was admitted. Panics on a Redis error.
    async fn decide(&mut self, i: usize) -> bool {
        match self {
            RedisContender::Script {
                conn,
                script,
                keys,
                interval_us,
                tolerance_us,
            } => {
                let (allowed, _remaining, _retry_us, _reset_us): (i64, i64, i64, i64) = script
                    .key(&keys[i])
                    .arg(*interval_us)
                    .arg(*tolerance_us)
                    .arg(1)
                    .invoke_async(conn)
                    .await
                    .unwrap();
                allowed == 1
            }
            RedisContender::Palisade { limiter, keys } => {
                limiter.decide(&keys[i], 1).await.unwrap().allowed
            }
        }
    }
}

/// What one caller saw: latencies (ns) of the decisions it started in the measurement window,
/// and how many of all its decisions were refused.
struct CallerResult {
    latencies: Vec<u32>,
    refused: u64,
}

/// One caller: decides in a loop, from key `first` on, until `end`; records the decisions that
/// started at or after `measure_from`.
async fn caller(
    mut contender: RedisContender,
    first: usize,
    measure_from: Instant,
    end: Instant,
    capacity: usize,
) -> CallerResult {
    let mut latencies = Vec::with_capacity(capacity);
    let mut refused = 0;
    let mut i = first;
    loop {
        let start = Instant::now();
        if start >= end {
            break;
        }
        let allowed = contender.decide(i).await;
        let nanos = start.elapsed().as_nanos();
        if !allowed {
            refused += 1;
        }
        if start >= measure_from {
            latencies.push(u32::try_from(nanos).unwrap_or(u32::MAX));
        }
        i += 1;
        if i == KEYS {
            i = 0;
        }
    }
    CallerResult { latencies, refused }
}

/// The figures of one distributed run.
struct RunResult {
    contender: &'static str,
    callers: usize,
    decisions: usize,
    per_sec: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    refused: u64,
}

impl RunResult {
    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "contender": self.contender,
            "callers": self.callers,
            "decisions": self.decisions,
            "decisions_per_sec": self.per_sec,
            "p50_us": self.p50_us,
            "p99_us": self.p99_us,
            "p999_us": self.p999_us,
            "refused": self.refused,
        })
    }
}

/// Runs `callers` tasks of `contender` on `rt` for one window, spread evenly over the keys.
fn redis_run(
    rt: &tokio::runtime::Runtime,
    contender: &RedisContender,
    callers: usize,
    window: Window,
) -> RunResult {
    let capacity = (window.measure.as_secs_f64() * 100_000.0) as usize / callers + 1024;
    let results: Vec<CallerResult> = rt.block_on(async {
        let start = Instant::now();
        let measure_from = start + window.warm_up;
        let end = measure_from + window.measure;
        let handles: Vec<_> = (0..callers)
            .map(|t| {
                tokio::spawn(caller(
                    contender.clone(),
                    t * KEYS / callers,
                    measure_from,
                    end,
                    capacity,
                ))
            })
            .collect();
        let mut results = Vec::with_capacity(callers);
        for handle in handles {
            results.push(handle.await.unwrap());
        }
        results
    });
    let refused = results.iter().map(|r| r.refused).sum();
    let mut all: Vec<u32> = results.into_iter().flat_map(|r| r.latencies).collect();
    all.sort_unstable();
    RunResult {
        contender: contender.name(),
        callers,
        decisions: all.len(),
        per_sec: all.len() as f64 / window.measure.as_secs_f64(),
        p50_us: quantile_us(&all, 0.50),
        p99_us: quantile_us(&all, 0.99),
        p999_us: quantile_us(&all, 0.999),
        refused,
    }
}

/// Both contenders of the distributed section, built on the current runtime.
struct RedisSetup {
    conn: ConnectionManager,
    limiter: RedisRateLimiter,
    script: RedisContender,
    palisade: RedisContender,
}

async fn redis_setup(url: &str, key_prefix: &str) -> RedisSetup {
    let conn = connect(url, "the distributed section").await;
    let quota = redis_quota();
    let limiter = RedisRateLimiter::builder(REDIS_LIMITER_NAME, url)
        .quota(quota)
        .options(RedisOptions {
            key_prefix: key_prefix.to_owned(),
            ..RedisOptions::default()
        })
        // Far above any round trip here: every decision is Redis's, none the fallback's.
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    let client_keys: Arc<[String]> = keys().into();
    // The arguments Palisade passes: emission interval and tolerance in µs.
    let interval_ns = quota.emission_interval().as_nanos();
    let interval_us = u64::try_from(interval_ns / 1000).unwrap().max(1);
    let tolerance_us = u64::try_from(interval_ns * u128::from(quota.burst()) / 1000).unwrap();
    let script = RedisContender::Script {
        conn: conn.clone(),
        script: Arc::new(redis::Script::new(GCRA_SCRIPT)),
        keys: client_keys
            .iter()
            .map(|k| format!("{key_prefix}:baseline:{{{k}}}"))
            .collect(),
        interval_us,
        tolerance_us,
    };
    let palisade = RedisContender::Palisade {
        limiter: limiter.clone(),
        keys: client_keys,
    };
    RedisSetup {
        conn,
        limiter,
        script,
        palisade,
    }
}

/// Every Redis key the section wrote.
fn written_keys(setup: &RedisSetup) -> Vec<String> {
    let mut written = Vec::with_capacity(2 * KEYS);
    if let RedisContender::Script { keys, .. } = &setup.script {
        written.extend(keys.iter().cloned());
    }
    if let RedisContender::Palisade { limiter, keys } = &setup.palisade {
        written.extend(keys.iter().map(|k| limiter.redis_key(k)));
    }
    written
}

async fn delete_keys(conn: &mut ConnectionManager, keys: &[String]) {
    for chunk in keys.chunks(500) {
        let _: i64 = redis::cmd("DEL")
            .arg(chunk)
            .query_async(conn)
            .await
            .unwrap();
    }
}

/// Heap allocations per distributed decision, on a current-thread runtime so that the redis
/// crate's connection task runs (and allocates) on the counted thread.
fn redis_allocation_check(url: &str, key_prefix: &str, n: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut setup = rt.block_on(redis_setup(url, key_prefix));
    let mut rows = Vec::new();
    for contender in [&mut setup.script, &mut setup.palisade] {
        let mut i = 0;
        let allocs = allocs_per_call(n, || {
            assert!(rt.block_on(contender.decide(i)));
            i = (i + 1) % KEYS;
        });
        rows.push((contender.name(), allocs));
    }
    eprintln!(
        "heap allocations per Redis decision ({n} decisions each, current-thread runtime, \
         redis crate included):"
    );
    for (name, allocs) in rows {
        eprintln!("  {name:<30} {allocs:.2}");
    }
    let written = written_keys(&setup);
    rt.block_on(delete_keys(&mut setup.conn, &written));
}

/// Where cargo builds: `CARGO_TARGET_DIR`, or the workspace's `target`.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The distributed section: allocation counts, then the interleaved runs; prints a table,
/// writes `target/ratelimit-redis.json`, and fails if any decision was not Redis's.
fn redis_section(quick: bool) {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let key_prefix = format!("palisade-bench-{}", std::process::id());
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

    redis_allocation_check(&url, &key_prefix, if quick { 100 } else { 2_000 });

    // Two workers: the machine's cores.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut setup = rt.block_on(redis_setup(&url, &key_prefix));
    let mut runs = Vec::new();
    for callers in REDIS_CALLERS {
        runs.push(redis_run(&rt, &setup.script, callers, window));
        runs.push(redis_run(&rt, &setup.palisade, callers, window));
    }
    let written = written_keys(&setup);
    rt.block_on(delete_keys(&mut setup.conn, &written));
    let status = setup.limiter.redis_status();
    let snapshot = setup.limiter.snapshot();

    eprintln!(
        "\ndistributed limiter on Redis at {}: {} keys, tokio multi-thread runtime with 2 \
         workers, {:?} warm-up + {:?} measured per run",
        redacted(&url),
        KEYS,
        window.warm_up,
        window.measure
    );
    eprintln!(
        "  {:<16} {:>7} {:>12} {:>9} {:>9} {:>9}",
        "contender", "callers", "decisions/s", "p50 µs", "p99 µs", "p99.9 µs"
    );
    let mut ratios = Vec::new();
    for pair in runs.chunks(2) {
        for r in pair {
            eprintln!(
                "  {:<16} {:>7} {:>12.0} {:>9.1} {:>9.1} {:>9.1}",
                r.contender, r.callers, r.per_sec, r.p50_us, r.p99_us, r.p999_us
            );
        }
        let (base, pal) = (&pair[0], &pair[1]);
        let ratio = serde_json::json!({
            "callers": base.callers,
            "throughput": pal.per_sec / base.per_sec,
            "p50": pal.p50_us / base.p50_us,
            "p99": pal.p99_us / base.p99_us,
        });
        eprintln!(
            "  {:<16} {:>7} {:>11.2}x {:>8.2}x {:>8.2}x",
            "palisade/script",
            base.callers,
            pal.per_sec / base.per_sec,
            pal.p50_us / base.p50_us,
            pal.p99_us / base.p99_us
        );
        ratios.push(ratio);
    }
    eprintln!(
        "  palisade limiter: {} permitted, {} rejected, {} backend errors, {} fallback decisions",
        snapshot.permitted_total,
        snapshot.rejected_total,
        status.backend_errors_total,
        status.fallback_decisions_total
    );

    let json = serde_json::json!({
        "redis_url": redacted(&url),
        "keys": KEYS,
        "worker_threads": 2,
        "warm_up_ms": window.warm_up.as_millis(),
        "measure_ms": window.measure.as_millis(),
        "quota": redis_quota(),
        "runs": runs.iter().map(RunResult::json).collect::<Vec<_>>(),
        "palisade_over_script": ratios,
        "palisade_redis_status": status,
    });
    // A shortened run (`cargo test --benches`) leaves the last real figures in place.
    if !quick {
        let path = target_dir().join("ratelimit-redis.json");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, serde_json::to_string_pretty(&json).unwrap()).unwrap();
        eprintln!("  figures written to {}\n", path.display());
    }

    assert!(
        runs.iter().all(|r| r.refused == 0),
        "a distributed decision was refused: the quota should admit them all"
    );
    assert_eq!(
        (
            status.backend_errors_total,
            status.fallback_decisions_total,
            status.deny_cache_hits_total
        ),
        (0, 0, 0),
        "some of Palisade's decisions were not Redis's (backend errors, fallback decisions, \
         deny-cache hits): its figures are not those of Redis round trips"
    );
}

// ---------------------------------------------------------------------------------------------
// Ratios of this run's criterion medians.

/// This run's median (ns) of `group/bench`, if criterion measured it in this process.
fn median_ns(group: &str, bench: &str, since: SystemTime) -> Option<f64> {
    let dir = std::env::var_os("CRITERION_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| target_dir().join("criterion"));
    let path = dir.join(group).join(bench).join("new/estimates.json");
    if std::fs::metadata(&path).ok()?.modified().ok()? < since {
        return None;
    }
    let estimates: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// Prints palisade/governor ratios of the medians criterion measured in this run.
fn print_ratios(since: SystemTime) {
    let groups = [
        ("ratelimit_direct", "palisade_check", "governor_check"),
        (
            "ratelimit_keyed",
            "palisade_check_key",
            "governor_check_key",
        ),
        ("ratelimit_2_threads", "palisade_check", "governor_check"),
    ];
    let mut header = false;
    for (group, palisade, governor) in groups {
        let (Some(bare), Some(pal), Some(gov)) = (
            median_ns(group, "bare", since),
            median_ns(group, palisade, since),
            median_ns(group, governor, since),
        ) else {
            continue;
        };
        if !header {
            eprintln!("\npalisade against governor, this run's criterion medians (ns per call):");
            eprintln!(
                "  {:<20} {:>8} {:>9} {:>9} {:>8} {:>17}",
                "group", "bare", "palisade", "governor", "ratio", "overhead ratio"
            );
            header = true;
        }
        let overhead = if gov > bare {
            format!("{:.2}x", (pal - bare) / (gov - bare))
        } else {
            "-".into()
        };
        eprintln!(
            "  {group:<20} {bare:>8.2} {pal:>9.2} {gov:>9.2} {:>7.2}x {overhead:>17}",
            pal / gov
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = direct, keyed, two_threads_group
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let listing = args.iter().any(|a| a == "--list");
    // As criterion decides: without `--bench` (`cargo test --benches`) every benchmark runs
    // once, so the distributed runs are shortened too.
    let quick = !args.iter().any(|a| a == "--bench");
    let started = SystemTime::now();

    allocation_check();
    if !listing && std::env::var_os("PALISADE_BENCH_NO_REDIS").is_none_or(|v| v != "1") {
        redis_section(quick);
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
    if !listing {
        print_ratios(started);
    }
}
