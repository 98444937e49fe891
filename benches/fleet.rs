//! Shared breakers (palisade-fleet): the cost of the closed path of a breaker shared with a
//! fleet, beside the same breaker unshared and beside what a hand-made shared breaker does (a
//! Redis command per call), in one run; then the Redis commands the sharing sends per publish
//! interval, idle and under load.
//!
//! | group / check | what |
//! | --- | --- |
//! | `fleet_breaker_closed/local` | `try_acquire` + `success` on a breaker that is not shared |
//! | `fleet_breaker_closed/shared` | the same on a breaker shared with a fleet whose exchange runs every 100 ms meanwhile |
//! | `fleet_breaker_closed/redis_incr_per_call` | the same local call plus one `INCR` on Redis (a shared breaker that counts in Redis on every call) |
//! | commands per interval (stderr) | `EVALSHA` calls seen by a private `redis-server` over 20 publish intervals of one instance sharing 3 breakers, with no calls and with a thread calling as fast as it can |
//!
//! Needs `redis-server` on the PATH (it starts its own on a spare port).
//!
//! Run: `cargo bench --bench fleet`.

#![allow(clippy::unwrap_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use palisade::breaker::CircuitBreaker;
use palisade::core::Registry;
use palisade_fleet::{Fleet, FleetConfig, ShareMode};
use palisade_testkit::RedisServer;

/// How often the bench's instance exchanges (10× the default, so that exchanges run while
/// the closed path is measured).
const PUBLISH: Duration = Duration::from_millis(100);

struct Setup {
    runtime: tokio::runtime::Runtime,
    _server: RedisServer,
    url: String,
    fleet: Fleet,
    local: CircuitBreaker,
    shared: Vec<CircuitBreaker>,
}

fn setup() -> Setup {
    let server = RedisServer::start();
    let url = server.url();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let registry = Registry::new();
    let local = CircuitBreaker::builder("local").build().unwrap();
    let config = FleetConfig {
        // Only the exchange runs during the count (the heartbeat and the command read are
        // separate, constant and counted in docs/benchmarks.md).
        heartbeat: Duration::from_secs(3600),
        ttl: Duration::from_secs(3 * 3600),
        publish_interval: PUBLISH,
        ..FleetConfig::new("bench", "a")
    };
    let fleet = runtime
        .block_on(Fleet::join(url.clone(), config, &registry))
        .unwrap();
    let shared: Vec<CircuitBreaker> = ["github", "slack", "weather"]
        .into_iter()
        .map(|name| {
            let b = CircuitBreaker::builder(name)
                .registry(&registry)
                .build()
                .unwrap();
            fleet
                .share_breaker(&b, ShareMode::failure_rate(50.0, 20))
                .unwrap();
            b
        })
        .collect();
    Setup {
        runtime,
        _server: server,
        url,
        fleet,
        local,
        shared,
    }
}

#[inline(always)]
fn closed_call(b: &CircuitBreaker) {
    if let Ok(permit) = b.try_acquire() {
        black_box(());
        permit.success();
    }
}

fn evalsha_calls(conn: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("commandstats").query(conn).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|rest| rest.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

/// EVALSHA commands per publish interval over 20 intervals, with `load` calling meanwhile.
fn commands_per_interval(s: &Setup, load: bool) -> (f64, u64) {
    let mut conn = redis::Client::open(s.url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let worker = load.then(|| {
        let (stop, calls) = (Arc::clone(&stop), Arc::clone(&calls));
        let breakers = s.shared.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..1000 {
                    for b in &breakers {
                        closed_call(b);
                    }
                }
                calls.fetch_add(3000, Ordering::Relaxed);
            }
        })
    });
    let before = evalsha_calls(&mut conn);
    let started = std::time::Instant::now();
    std::thread::sleep(PUBLISH * 20);
    let after = evalsha_calls(&mut conn);
    let intervals = started.elapsed().as_secs_f64() / PUBLISH.as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    if let Some(w) = worker {
        w.join().unwrap();
    }
    (
        (after - before) as f64 / intervals,
        calls.load(Ordering::Relaxed),
    )
}

fn closed(c: &mut Criterion) {
    let s = setup();
    // The counts reach Redis: the exchange really runs.
    for b in &s.shared {
        closed_call(b);
    }
    s.runtime.block_on(s.fleet.exchange_breakers()).unwrap();
    assert_eq!(
        s.shared[0].snapshot().shared.unwrap().status,
        palisade::breaker::SharingStatus::Shared
    );
    for load in [false, true] {
        let (per_interval, calls) = commands_per_interval(&s, load);
        eprintln!(
            "fleet: 1 instance, 3 shared breakers, {} ms interval, {}: {per_interval:.2} \
             EVALSHA per interval ({calls} calls made meanwhile)",
            PUBLISH.as_millis(),
            if load {
                "one thread calling flat out"
            } else {
                "no calls"
            },
        );
    }
    let mut redis_conn = s.runtime.block_on(async {
        redis::Client::open(s.url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    });
    let mut g = c.benchmark_group("fleet_breaker_closed");
    g.bench_function("local", |b| b.iter(|| closed_call(&s.local)));
    g.bench_function("shared", |b| b.iter(|| closed_call(&s.shared[0])));
    g.bench_function("redis_incr_per_call", |b| {
        b.iter(|| {
            closed_call(&s.local);
            let n: u64 = s
                .runtime
                .block_on(
                    redis::cmd("INCR")
                        .arg("bench:calls")
                        .query_async(&mut redis_conn),
                )
                .unwrap();
            black_box(n);
        })
    });
    g.finish();
    s.runtime.block_on(s.fleet.leave()).unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = closed
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
