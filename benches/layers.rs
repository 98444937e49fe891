//! Cost of Palisade's tower layers on the permitted path: a `ServiceBuilder` stack of rate
//! limiter + bulkhead + circuit breaker (palisade-tower) against the same stack built from
//! `tower-resilience` 0.13 and from bare tower 0.5 (`RateLimit` + `ConcurrencyLimit`; tower has
//! no breaker), and each layer alone, measured in one run.
//!
//! Goal: Palisade's three-layer stack adds under 100 ns to the bare service. Every group has its
//! own bare baseline; the figure that matters is a contender's median minus the bare median of
//! its group. `docs/benchmarks.md` holds the figures and how to read them.
//!
//! | group | what one iteration is |
//! | --- | --- |
//! | `layers_stack` | `ready().await` + `call().await` on a `tower::service_fn` behind rate limit → bulkhead → breaker, current-thread runtime |
//! | `layers_single` | the same, behind one layer |
//!
//! Nothing is ever refused: quotas of 10⁹ per second, bulkheads of 100 slots with one call at a
//! time, breakers that only see successes. Palisade's rate limiter is the local one-bucket
//! `RateLimiter` (like tower-resilience's and tower's, one limit for all calls) or, in the
//! `_keyed` rows, a `KeyedRateLimiter<String>` with `GlobalKey` (one key, hashed per call).
//!
//! Before criterion starts, the bench counts heap allocations per call of each contender and
//! prints them to stderr (the goal is none for Palisade).
//!
//! Run: `cargo bench --bench layers` (one group: `cargo bench --bench layers -- layers_stack`).

#![allow(clippy::unwrap_used)]

use std::convert::Infallible;
use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use palisade::breaker::{CircuitBreaker, ErrorsAreFailures};
use palisade::bulkhead::Bulkhead;
use palisade::ratelimit::{KeyedRateLimiter, Quota, RateLimiter};
use palisade::tower::ratelimit::GlobalKey;
use palisade::tower::{BulkheadLayer, CircuitBreakerLayer, RateLimitLayer};
use tower::limit::{ConcurrencyLimitLayer, RateLimitLayer as TowerRateLimitLayer};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_resilience::bulkhead::BulkheadLayer as TrBulkheadLayer;
use tower_resilience::circuitbreaker::CircuitBreakerLayer as TrCircuitBreakerLayer;
use tower_resilience::ratelimiter::RateLimiterLayer as TrRateLimiterLayer;

// ---------------------------------------------------------------------------------------------
// Allocation counter. Off (one relaxed load per allocation) except around `allocs_per_call`.

mod support;
#[path = "support/tower.rs"]
mod tower_support;
use support::allocs_per_call;
use tower_support::time_service;

// ---------------------------------------------------------------------------------------------
// The service and the layers under test. Nothing is ever refused.

/// Bulkhead slots: never all taken (one call at a time).
const LIMIT: u32 = 100;

/// Rate-limit quota: never spent within a run.
const RATE: u32 = 1_000_000_000;

/// The guarded service: returns its request. Its error type is `Infallible` (Palisade's layers
/// need an error that converts into `tower::BoxError`).
fn bare_service()
-> impl Service<u64, Response = u64, Error = Infallible, Future: Send> + Clone + Send + 'static {
    tower::service_fn(|req: u64| async move { Ok::<u64, Infallible>(black_box(req)) })
}

fn palisade_breaker() -> CircuitBreakerLayer<ErrorsAreFailures> {
    CircuitBreakerLayer::new(CircuitBreaker::builder("bench").build().unwrap())
        .classifier(ErrorsAreFailures)
}

/// Waiting-capable (a non-zero `max_wait`), as in benches/bulkhead.rs: the free-slot path is
/// the one any caller takes when a slot is free.
fn palisade_bulkhead() -> BulkheadLayer {
    BulkheadLayer::new(
        Bulkhead::builder("bench")
            .max_concurrent(LIMIT)
            .max_wait(Duration::from_secs(1))
            .build()
            .unwrap(),
    )
}

fn quota() -> Quota {
    Quota::per_second(RATE).with_burst(RATE)
}

fn palisade_ratelimit() -> RateLimitLayer<RateLimiter, GlobalKey> {
    RateLimitLayer::new(
        RateLimiter::builder("bench")
            .quota(quota())
            .build()
            .unwrap(),
        GlobalKey,
    )
}

fn palisade_ratelimit_keyed() -> RateLimitLayer<KeyedRateLimiter<String>, GlobalKey> {
    RateLimitLayer::new(
        KeyedRateLimiter::<String>::builder("bench")
            .quota(quota())
            .build()
            .unwrap(),
        GlobalKey,
    )
}

/// tower-resilience's breaker with the builder's defaults.
fn tr_breaker() -> TrCircuitBreakerLayer {
    TrCircuitBreakerLayer::builder().build().unwrap()
}

/// tower-resilience's bulkhead with the builder's defaults but the same limit.
fn tr_bulkhead() -> TrBulkheadLayer {
    TrBulkheadLayer::builder()
        .max_concurrent_calls(LIMIT as usize)
        .build()
        .unwrap()
}

/// tower-resilience's rate limiter (default fixed window) with the same quota.
fn tr_ratelimit() -> TrRateLimiterLayer {
    TrRateLimiterLayer::builder()
        .limit_for_period(RATE as usize)
        .refresh_period(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// tower's rate limit (its poll_ready sleeps when the period's quota is spent; never here).
fn tower_ratelimit() -> TowerRateLimitLayer {
    TowerRateLimitLayer::new(u64::from(RATE), Duration::from_secs(1))
}

fn tower_concurrency() -> ConcurrencyLimitLayer {
    ConcurrencyLimitLayer::new(LIMIT as usize)
}

/// Current-thread runtime with the timer (tower's `RateLimit` arms a sleep when it is built).
fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Groups.

fn stack(c: &mut Criterion) {
    let mut g = c.benchmark_group("layers_stack");
    // Built inside the runtime: tower's `RateLimit` creates its sleep when it is built.
    let rt = current_thread_runtime();
    let _guard = rt.enter();

    let mut svc = bare_service();
    g.bench_function("bare_service", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = ServiceBuilder::new()
        .layer(palisade_ratelimit())
        .layer(palisade_bulkhead())
        .layer(palisade_breaker())
        .service(bare_service());
    g.bench_function("palisade", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = ServiceBuilder::new()
        .layer(palisade_ratelimit_keyed())
        .layer(palisade_bulkhead())
        .layer(palisade_breaker())
        .service(bare_service());
    g.bench_function("palisade_keyed", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = ServiceBuilder::new()
        .layer(tr_ratelimit())
        .layer(tr_bulkhead())
        .layer(tr_breaker())
        .service(bare_service());
    g.bench_function("tower_resilience", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    // Bare tower has no circuit breaker: rate limit + concurrency limit only.
    let mut svc = ServiceBuilder::new()
        .layer(tower_ratelimit())
        .layer(tower_concurrency())
        .service(bare_service());
    g.bench_function("tower_ratelimit_concurrencylimit", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    g.finish();
}

fn single(c: &mut Criterion) {
    let mut g = c.benchmark_group("layers_single");
    let rt = current_thread_runtime();
    let _guard = rt.enter();

    let mut svc = bare_service();
    g.bench_function("bare_service", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    macro_rules! one {
        ($name:literal, $layer:expr) => {
            let mut svc = $layer.layer(bare_service());
            g.bench_function($name, |b| {
                b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
            });
        };
    }
    one!("palisade_breaker", palisade_breaker());
    one!("palisade_bulkhead", palisade_bulkhead());
    one!("palisade_ratelimit", palisade_ratelimit());
    one!("palisade_ratelimit_keyed", palisade_ratelimit_keyed());
    one!("tower_resilience_circuitbreaker", tr_breaker());
    one!("tower_resilience_bulkhead", tr_bulkhead());
    one!("tower_resilience_ratelimiter", tr_ratelimit());
    one!("tower_concurrency_limit", tower_concurrency());
    one!("tower_rate_limit", tower_ratelimit());

    g.finish();
}

/// Prints heap allocations per call of every contender (stderr, before criterion runs).
fn allocation_check() {
    const N: u64 = 10_000;
    let rt = current_thread_runtime();
    let _guard = rt.enter();

    fn count<S>(rt: &tokio::runtime::Runtime, mut svc: S) -> f64
    where
        S: Service<u64>,
        S::Error: std::fmt::Debug,
    {
        allocs_per_call(N, || {
            rt.block_on(async { svc.ready().await.unwrap().call(1).await.unwrap() });
        })
    }

    let rows = [
        ("service_fn, bare", count(&rt, bare_service())),
        (
            "palisade stack",
            count(
                &rt,
                ServiceBuilder::new()
                    .layer(palisade_ratelimit())
                    .layer(palisade_bulkhead())
                    .layer(palisade_breaker())
                    .service(bare_service()),
            ),
        ),
        (
            "palisade stack, keyed",
            count(
                &rt,
                ServiceBuilder::new()
                    .layer(palisade_ratelimit_keyed())
                    .layer(palisade_bulkhead())
                    .layer(palisade_breaker())
                    .service(bare_service()),
            ),
        ),
        (
            "tower-resilience stack",
            count(
                &rt,
                ServiceBuilder::new()
                    .layer(tr_ratelimit())
                    .layer(tr_bulkhead())
                    .layer(tr_breaker())
                    .service(bare_service()),
            ),
        ),
        (
            "tower RateLimit+ConcurrencyLimit",
            count(
                &rt,
                ServiceBuilder::new()
                    .layer(tower_ratelimit())
                    .layer(tower_concurrency())
                    .service(bare_service()),
            ),
        ),
        (
            "palisade breaker",
            count(&rt, palisade_breaker().layer(bare_service())),
        ),
        (
            "palisade bulkhead",
            count(&rt, palisade_bulkhead().layer(bare_service())),
        ),
        (
            "palisade rate limit",
            count(&rt, palisade_ratelimit().layer(bare_service())),
        ),
        (
            "tower-resilience breaker",
            count(&rt, tr_breaker().layer(bare_service())),
        ),
        (
            "tower-resilience bulkhead",
            count(&rt, tr_bulkhead().layer(bare_service())),
        ),
        (
            "tower-resilience ratelimiter",
            count(&rt, tr_ratelimit().layer(bare_service())),
        ),
    ];
    eprintln!("heap allocations per call ({N} calls each):");
    for (name, allocs) in rows {
        eprintln!("  {name:<34} {allocs:.2}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = stack, single
}

fn main() {
    allocation_check();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
