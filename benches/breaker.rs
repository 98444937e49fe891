//! Cost of a guarded call through a *closed* circuit breaker: Palisade against the crates a
//! user would pick instead (`failsafe` 1.3 and `tower-resilience` 0.13), measured in one run.
//!
//! Every group has its own bare baseline (the same call with no breaker); the figure that
//! matters is a contender's median minus the bare median of its group. `docs/benchmarks.md`
//! holds the figures and how to read them.
//!
//! | group | what one iteration is |
//! | --- | --- |
//! | `breaker_closed_sync` | a sync closure returning `Ok` (Palisade: `try_acquire` + record) |
//! | `breaker_closed_future` | a ready future polled once with a no-op waker |
//! | `breaker_layer` | `ready().await` + `call().await` on a `tower::service_fn`, current-thread runtime |
//! | `breaker_closed_2_threads` | the sync / future calls from two threads on one shared breaker |
//!
//! Before criterion starts, the bench counts heap allocations per closed call of each
//! contender and prints them to stderr (the goal is none for Palisade).
//!
//! Run: `cargo bench --bench breaker` (one group: `cargo bench --bench breaker -- breaker_layer`).

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Barrier;
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use palisade::breaker::{CircuitBreaker, Outcome};
use tower::{Layer, Service, ServiceExt};
use tower_resilience::circuitbreaker::CircuitBreakerLayer;

// ---------------------------------------------------------------------------------------------
// Allocation counter. Off (one relaxed load per allocation) except around `allocs_per_call`.

mod support;
#[path = "support/tower.rs"]
mod tower_support;
use support::allocs_per_call;
use tower_support::time_service;

// ---------------------------------------------------------------------------------------------
// The guarded work and the breakers under test.

/// The guarded operation of the sync groups: a closure that succeeds.
#[inline(always)]
fn op() -> Result<u64, ()> {
    Ok(black_box(1))
}

/// The guarded operation of the future groups: a future that is ready on its first poll.
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

/// Palisade's breaker with its default configuration (3 consecutive failures, 60 s wait).
fn palisade_breaker() -> CircuitBreaker {
    CircuitBreaker::builder("bench").build().unwrap()
}

/// Palisade's sync guarded call: the permit API around `op`.
#[inline(always)]
fn palisade_permit_call(breaker: &CircuitBreaker) -> Result<u64, ()> {
    let permit = breaker.try_acquire().map_err(|_| ())?;
    let result = op();
    permit.record(if result.is_ok() {
        Outcome::Success
    } else {
        Outcome::Failure
    });
    result
}

/// failsafe's breaker with its default configuration (success rate over a time window, or
/// else consecutive failures; jittered backoff).
macro_rules! failsafe_breaker {
    () => {
        failsafe::Config::new().build()
    };
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// Runs `iters` calls of `f` on each of two threads at once (released together by a barrier)
/// and returns the longer thread's time: the wall time of the contended stretch, so the
/// reported figure is the time per call per thread.
fn two_threads<F>(iters: u64, f: F) -> Duration
where
    F: Fn(&mut Context<'_>) + Sync,
{
    let barrier = Barrier::new(2);
    thread::scope(|s| {
        let workers: Vec<_> = (0..2)
            .map(|_| {
                s.spawn(|| {
                    let mut cx = Context::from_waker(Waker::noop());
                    barrier.wait();
                    let start = Instant::now();
                    for _ in 0..iters {
                        f(&mut cx);
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

fn closed_sync(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_sync");

    g.bench_function("bare", |b| b.iter(|| black_box(op())));

    let breaker = palisade_breaker();
    g.bench_function("palisade_permit", |b| {
        b.iter(|| black_box(palisade_permit_call(&breaker)))
    });

    let fs = failsafe_breaker!();
    g.bench_function("failsafe_sync", |b| {
        b.iter(|| black_box(failsafe::CircuitBreaker::call(&fs, op)))
    });

    g.finish();
}

fn closed_future(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_future");
    let mut cx = Context::from_waker(Waker::noop());

    g.bench_function("bare", |b| {
        b.iter(|| black_box(poll_once(ready_op(), &mut cx)))
    });

    let breaker = palisade_breaker();
    g.bench_function("palisade_call", |b| {
        b.iter(|| black_box(poll_once(breaker.call(ready_op()), &mut cx)))
    });

    let fs = failsafe_breaker!();
    g.bench_function("failsafe_futures", |b| {
        b.iter(|| {
            black_box(poll_once(
                failsafe::futures::CircuitBreaker::call(&fs, ready_op()),
                &mut cx,
            ))
        })
    });

    g.finish();
}

fn layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_layer");
    let rt = current_thread_runtime();
    let bare_service =
        || tower::service_fn(|req: u64| async move { Ok::<u64, ()>(black_box(req)) });

    let mut svc = bare_service();
    g.bench_function("bare_service", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    // No Palisade tower layer yet: the breaker guards the same service's `call` future.
    let breaker = palisade_breaker();
    let mut svc = bare_service();
    g.bench_function("palisade_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let ready = svc.ready().await.unwrap();
                    let r = breaker.call(ready.call(black_box(i))).await;
                    black_box(r).unwrap();
                }
                start.elapsed()
            })
        })
    });

    let cb_layer = CircuitBreakerLayer::builder().build().unwrap();
    let mut svc = cb_layer.layer(bare_service());
    g.bench_function("tower_resilience_circuitbreaker", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    g.finish();
}

fn closed_two_threads(c: &mut Criterion) {
    let mut g = c.benchmark_group("breaker_closed_2_threads");

    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(op()).unwrap();
            })
        })
    });

    let breaker = palisade_breaker();
    g.bench_function("palisade_permit", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(palisade_permit_call(&breaker)).unwrap();
            })
        })
    });
    g.bench_function("palisade_call", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |cx| {
                black_box(poll_once(breaker.call(ready_op()), cx)).unwrap();
            })
        })
    });

    let fs = failsafe_breaker!();
    g.bench_function("failsafe_sync", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(failsafe::CircuitBreaker::call(&fs, op)).unwrap();
            })
        })
    });

    g.finish();
}

/// Prints heap allocations per closed call of every contender (stderr, before criterion runs).
fn allocation_check() {
    const N: u64 = 10_000;
    let mut cx = Context::from_waker(Waker::noop());
    let breaker = palisade_breaker();
    let fs = failsafe_breaker!();
    let rt = current_thread_runtime();
    let svc = tower::service_fn(|req: u64| async move { Ok::<u64, ()>(black_box(req)) });
    let mut bare = svc;
    let mut tr = CircuitBreakerLayer::builder().build().unwrap().layer(svc);

    let rows = [
        (
            "palisade permit, sync",
            allocs_per_call(N, || {
                palisade_permit_call(&breaker).unwrap();
            }),
        ),
        (
            "palisade call, future",
            allocs_per_call(N, || {
                poll_once(breaker.call(ready_op()), &mut cx).unwrap();
            }),
        ),
        (
            "failsafe call, sync",
            allocs_per_call(N, || {
                failsafe::CircuitBreaker::call(&fs, op).unwrap();
            }),
        ),
        (
            "failsafe call, futures",
            allocs_per_call(N, || {
                poll_once(
                    failsafe::futures::CircuitBreaker::call(&fs, ready_op()),
                    &mut cx,
                )
                .unwrap();
            }),
        ),
        (
            "service_fn, bare",
            allocs_per_call(N, || {
                rt.block_on(async { bare.ready().await.unwrap().call(1).await.unwrap() });
            }),
        ),
        (
            "service_fn + palisade call",
            allocs_per_call(N, || {
                rt.block_on(async {
                    let ready = bare.ready().await.unwrap();
                    breaker.call(ready.call(1)).await.unwrap()
                });
            }),
        ),
        (
            "service_fn + tower-resilience",
            allocs_per_call(N, || {
                rt.block_on(async { tr.ready().await.unwrap().call(1).await.unwrap() });
            }),
        ),
    ];
    eprintln!("heap allocations per closed call ({N} calls each):");
    for (name, allocs) in rows {
        eprintln!("  {name:<28} {allocs:.2}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = closed_sync, closed_future, layer, closed_two_threads
}

fn main() {
    allocation_check();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
