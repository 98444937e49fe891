//! Cost of palisade-toolbox's retry and hedging on the path every call takes: the **first,
//! successful attempt** of a retried call, and the **no-hedge path** of a hedged call (an answer
//! before the hedging delay), against `tower-resilience` 0.13's retry and hedge layers, measured
//! in one run.
//!
//! Goal (issue 19): the first-attempt overhead of Palisade's retry (and, later, retry +
//! timeout) at most 0.25× tower-resilience's retry layer's, with no allocation. Every group has
//! its own bare baseline; the figure that matters is a contender's median minus the bare median
//! of its group. `docs/benchmarks.md` ("Retry and hedging") holds the figures.
//!
//! | group | what one iteration is |
//! | --- | --- |
//! | `retry_first_attempt` | an `async` fn returning `Ok`, polled once with a no-op waker; Palisade: `retry.call(|| op())` |
//! | `retry_layer` | `ready().await` + `call().await` on a `tower::service_fn` in a current-thread runtime loop, bare or behind a retry layer |
//! | `hedge_fast_path` | `call_idempotent(|| op())` polled once (fixed delay; percentile delay, which reads the clock twice per call to track latencies) |
//! | `hedge_layer` | the `retry_layer` loop behind a hedge layer (every request idempotent, 100 ms delay: never reached) |
//!
//! Before criterion starts, the bench counts heap allocations per call of each contender and
//! prints them to stderr (the goal is none for Palisade).
//!
//! Run: `cargo bench --bench toolbox` (one group: `cargo bench --bench toolbox -- retry_layer`).

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use palisade_toolbox::hedge::{AllIdempotent, Hedge, HedgeLayer};
use palisade_toolbox::retry::{Retry, RetryLayer};
use palisade_toolbox::{Timeout, TimeoutLayer};
use tower::{Layer, Service, ServiceExt};
use tower_resilience::hedge::HedgeLayer as TrHedgeLayer;
use tower_resilience::retry::RetryLayer as TrRetryLayer;

// ---------------------------------------------------------------------------------------------
// Allocation counter. Off (one relaxed load per allocation) except around `allocs_per_call`.

mod support;
#[path = "support/tower.rs"]
mod tower_support;
use support::allocs_per_call;
use tower_support::time_service;

// ---------------------------------------------------------------------------------------------
// The work and the components under test. Every attempt succeeds.

/// Hedging delay of every hedge here: never reached by a ready service.
const HEDGE_DELAY: Duration = Duration::from_millis(100);

/// The operation of the future groups: a future that is ready on its first poll.
#[inline(always)]
async fn ready_op() -> Result<u64, ()> {
    Ok(black_box(1))
}

/// Polls `fut` once; every future of these benches is ready on its first poll.
#[inline(always)]
fn poll_once<F: Future>(fut: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(fut).poll(cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benched future was not ready on its first poll"),
    }
}

/// The guarded service: returns its request.
fn bare_service()
-> impl Service<u64, Response = u64, Error = (), Future: Send> + Clone + Send + Sync + 'static {
    tower::service_fn(|req: u64| async move { Ok::<u64, ()>(black_box(req)) })
}

/// Palisade's retry with its defaults: 3 attempts, 100 ms base, 10 s cap, a 20 % budget.
fn palisade_retry() -> Retry {
    Retry::builder("bench").build().unwrap()
}

/// Palisade's timeout with its default 10 s deadline.
fn palisade_timeout() -> Timeout {
    Timeout::builder("bench").build().unwrap()
}

/// Palisade's hedge with a fixed 100 ms delay.
fn palisade_hedge_fixed() -> Hedge {
    Hedge::builder("bench-fixed")
        .fixed_delay(HEDGE_DELAY)
        .build()
        .unwrap()
}

/// Palisade's hedge with its default delay: the p95 of recent successful calls, at least
/// 10 ms (tracking latencies reads the clock twice per call).
fn palisade_hedge_percentile() -> Hedge {
    Hedge::builder("bench-p95").build().unwrap()
}

/// tower-resilience's retry as its docs show it: 3 attempts, exponential backoff from 100 ms.
fn tower_resilience_retry() -> TrRetryLayer<u64, u64, ()> {
    TrRetryLayer::<u64, u64, ()>::builder()
        .max_attempts(3)
        .exponential_backoff(Duration::from_millis(100))
        .build()
}

/// tower-resilience's hedge: one hedge after 100 ms.
fn tower_resilience_hedge() -> TrHedgeLayer {
    TrHedgeLayer::builder()
        .delay(HEDGE_DELAY)
        .max_hedged_attempts(2)
        .build()
}

/// A component for `from_static` layers: leaked once, as a process-lifetime component would be.
fn leak<T>(component: T) -> &'static T {
    Box::leak(Box::new(component))
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    // Timers enabled: tower-resilience's hedge arms one per call, Palisade's only for a call
    // still pending when first polled.
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Groups.

fn retry_first_attempt(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_first_attempt");
    let mut cx = Context::from_waker(Waker::noop());

    g.bench_function("bare", |b| {
        b.iter(|| black_box(poll_once(ready_op(), &mut cx)))
    });

    let retry = palisade_retry();
    g.bench_function("palisade_call", |b| {
        b.iter(|| black_box(poll_once(retry.call(ready_op), &mut cx)))
    });

    // Retry + timeout: each attempt under a `Timeout` (ready at once: no timer is armed).
    let timeout = palisade_timeout();
    g.bench_function("palisade_call_timeout", |b| {
        b.iter(|| black_box(poll_once(retry.call(|| timeout.call(ready_op())), &mut cx)))
    });

    g.finish();
}

fn retry_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("retry_layer");
    let rt = current_thread_runtime();

    let mut svc = bare_service();
    g.bench_function("bare_service", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = RetryLayer::new(palisade_retry()).layer(bare_service());
    g.bench_function("palisade_retry_layer", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = RetryLayer::from_static(leak(palisade_retry())).layer(bare_service());
    g.bench_function("palisade_retry_layer_static", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    // Retry + timeout: the timeout inside the retry (one deadline per attempt).
    let mut svc = RetryLayer::new(palisade_retry())
        .layer(TimeoutLayer::new(palisade_timeout()).layer(bare_service()));
    g.bench_function("palisade_retry_timeout_layer", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = RetryLayer::from_static(leak(palisade_retry()))
        .layer(TimeoutLayer::from_static(leak(palisade_timeout())).layer(bare_service()));
    g.bench_function("palisade_retry_timeout_layer_static", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = tower_resilience_retry().layer(bare_service());
    g.bench_function("tower_resilience_retry", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    g.finish();
}

fn hedge_fast_path(c: &mut Criterion) {
    let mut g = c.benchmark_group("hedge_fast_path");
    let mut cx = Context::from_waker(Waker::noop());

    g.bench_function("bare", |b| {
        b.iter(|| black_box(poll_once(ready_op(), &mut cx)))
    });

    let fixed = palisade_hedge_fixed();
    g.bench_function("palisade_call_idempotent_fixed", |b| {
        b.iter(|| black_box(poll_once(fixed.call_idempotent(ready_op), &mut cx)))
    });

    let percentile = palisade_hedge_percentile();
    g.bench_function("palisade_call_idempotent_p95", |b| {
        b.iter(|| black_box(poll_once(percentile.call_idempotent(ready_op), &mut cx)))
    });

    g.finish();
}

fn hedge_layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("hedge_layer");
    let rt = current_thread_runtime();

    let mut svc = bare_service();
    g.bench_function("bare_service", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = HedgeLayer::new(palisade_hedge_fixed(), AllIdempotent).layer(bare_service());
    g.bench_function("palisade_hedge_layer_fixed", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc =
        HedgeLayer::from_static(leak(palisade_hedge_fixed()), AllIdempotent).layer(bare_service());
    g.bench_function("palisade_hedge_layer_fixed_static", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = HedgeLayer::new(palisade_hedge_percentile(), AllIdempotent).layer(bare_service());
    g.bench_function("palisade_hedge_layer_p95", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    let mut svc = tower_resilience_hedge().layer(bare_service());
    g.bench_function("tower_resilience_hedge", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    g.finish();
}

/// Prints heap allocations per call of every contender (stderr, before criterion runs).
fn allocation_check() {
    const N: u64 = 10_000;
    let mut cx = Context::from_waker(Waker::noop());
    let rt = current_thread_runtime();
    let retry = palisade_retry();
    let fixed = palisade_hedge_fixed();
    let percentile = palisade_hedge_percentile();
    let mut bare = bare_service();
    let mut p_retry = RetryLayer::new(palisade_retry()).layer(bare_service());
    let mut p_retry_static = RetryLayer::from_static(leak(palisade_retry())).layer(bare_service());
    let timeout = palisade_timeout();
    let mut p_retry_timeout = RetryLayer::new(palisade_retry())
        .layer(TimeoutLayer::new(palisade_timeout()).layer(bare_service()));
    let mut tr_retry = tower_resilience_retry().layer(bare_service());
    let mut p_hedge = HedgeLayer::new(palisade_hedge_fixed(), AllIdempotent).layer(bare_service());
    let mut p_hedge_static =
        HedgeLayer::from_static(leak(palisade_hedge_fixed()), AllIdempotent).layer(bare_service());
    let mut tr_hedge = tower_resilience_hedge().layer(bare_service());

    macro_rules! service_call {
        ($svc:expr) => {
            allocs_per_call(N, || {
                rt.block_on(async { $svc.ready().await.unwrap().call(1).await.unwrap() });
            })
        };
    }

    let rows = [
        (
            "palisade retry.call, future",
            allocs_per_call(N, || {
                poll_once(retry.call(ready_op), &mut cx).unwrap();
            }),
        ),
        (
            "palisade retry.call + timeout, future",
            allocs_per_call(N, || {
                poll_once(retry.call(|| timeout.call(ready_op())), &mut cx).unwrap();
            }),
        ),
        (
            "palisade call_idempotent, fixed",
            allocs_per_call(N, || {
                poll_once(fixed.call_idempotent(ready_op), &mut cx).unwrap();
            }),
        ),
        (
            "palisade call_idempotent, p95",
            allocs_per_call(N, || {
                poll_once(percentile.call_idempotent(ready_op), &mut cx).unwrap();
            }),
        ),
        ("service_fn, bare", service_call!(bare)),
        ("service_fn + palisade RetryLayer", service_call!(p_retry)),
        (
            "service_fn + palisade RetryLayer + TimeoutLayer",
            service_call!(p_retry_timeout),
        ),
        (
            "service_fn + palisade RetryLayer, static",
            service_call!(p_retry_static),
        ),
        (
            "service_fn + tower-resilience retry",
            service_call!(tr_retry),
        ),
        ("service_fn + palisade HedgeLayer", service_call!(p_hedge)),
        (
            "service_fn + palisade HedgeLayer, static",
            service_call!(p_hedge_static),
        ),
        (
            "service_fn + tower-resilience hedge",
            service_call!(tr_hedge),
        ),
    ];
    eprintln!("heap allocations per call, first attempt succeeding ({N} calls each):");
    for (name, allocs) in rows {
        eprintln!("  {name:<44} {allocs:.2}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = retry_first_attempt, retry_layer, hedge_fast_path, hedge_layer
}

fn main() {
    allocation_check();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
