//! Cost of a bulkhead slot: Palisade against a bare `tokio::sync::Semaphore` (what Palisade's
//! bulkhead is built on) and the tower layers a user would pick instead (tower 0.5's
//! `ConcurrencyLimit`, `tower-resilience` 0.13's bulkhead), measured in one run.
//!
//! The goal is Palisade within 1.2x of the bare tokio semaphore. Every group has its own
//! baseline (the bare semaphore, or the bare service); the figure that matters is a contender's
//! median against the baseline of its group. `docs/benchmarks.md` holds the figures and how to
//! read them.
//!
//! | group | what one iteration is |
//! | --- | --- |
//! | `bulkhead_uncontended` | `try_acquire` + drop, or `acquire()` polled once with a no-op waker + drop (limit 100) |
//! | `bulkhead_layer` | `ready().await` + `call().await` on a `tower::service_fn`, current-thread runtime (limit 100) |
//! | `bulkhead_2_threads` | the uncontended acquisitions from two threads on one shared semaphore / bulkhead |
//! | `bulkhead_contended` | one `acquire().await` + `yield_now().await` + drop, 16 tasks on a 2-worker runtime, limit 4 |
//!
//! Before criterion starts, the bench counts heap allocations per acquisition of each contender
//! and prints them to stderr (the goal is none for Palisade).
//!
//! Run: `cargo bench --bench bulkhead` (one group: `cargo bench --bench bulkhead -- bulkhead_layer`).

#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::{Arc, Barrier};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use palisade::bulkhead::Bulkhead;
use tokio::sync::Semaphore;
use tower::limit::ConcurrencyLimitLayer;
use tower::{Layer, Service, ServiceExt};
use tower_resilience::bulkhead::BulkheadLayer;

// ---------------------------------------------------------------------------------------------
// Allocation counter. Off (one relaxed load per allocation) except around `allocs_per_call`.

mod support;
#[path = "support/tower.rs"]
mod tower_support;
use support::allocs_per_call;
use tower_support::time_service;

// ---------------------------------------------------------------------------------------------
// The semaphores and bulkheads under test, and one acquisition of each.

/// The limit of the uncontended, layer and 2-thread groups: never reached, so no caller waits.
const LIMIT: u32 = 100;

/// Tasks of the contended group.
const TASKS: u64 = 16;

/// The limit of the contended group: a quarter of the tasks run, the rest wait.
const CONTENDED_LIMIT: u32 = 4;

/// Polls `fut` once; every future of the single-threaded groups is ready on its first poll.
#[inline(always)]
fn poll_once<F: Future>(fut: F, cx: &mut Context<'_>) -> F::Output {
    match pin!(fut).poll(cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benched future was not ready on its first poll"),
    }
}

/// The bare tokio semaphore, as many permits as the bulkheads.
fn tokio_semaphore() -> Semaphore {
    Semaphore::new(LIMIT as usize)
}

/// Palisade's bulkhead in its waiting-capable configuration (a non-zero `max_wait`), so
/// `acquire` is the path a caller that may queue takes.
fn palisade_bulkhead() -> Bulkhead {
    Bulkhead::builder("bench")
        .max_concurrent(LIMIT)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap()
}

/// `try_acquire` + drop on the bare semaphore.
#[inline(always)]
fn tokio_try_acquire_drop(sem: &Semaphore) {
    drop(black_box(sem.try_acquire().unwrap()));
}

/// `try_acquire` + drop on Palisade's bulkhead.
#[inline(always)]
fn palisade_try_acquire_drop(bulkhead: &Bulkhead) {
    drop(black_box(bulkhead.try_acquire().unwrap()));
}

/// `acquire()` polled once + drop on the bare semaphore.
#[inline(always)]
fn tokio_acquire_poll_drop(sem: &Semaphore, cx: &mut Context<'_>) {
    drop(black_box(poll_once(sem.acquire(), cx).unwrap()));
}

/// `acquire()` polled once + drop on Palisade's bulkhead.
#[inline(always)]
fn palisade_acquire_poll_drop(bulkhead: &Bulkhead, cx: &mut Context<'_>) {
    drop(black_box(poll_once(bulkhead.acquire(), cx).unwrap()));
}

/// tower-resilience's bulkhead layer with the builder's defaults (rejection mode, unbounded
/// wait) but the same limit as the others.
fn tower_resilience_layer() -> BulkheadLayer {
    BulkheadLayer::builder()
        .max_concurrent_calls(LIMIT as usize)
        .build()
        .unwrap()
}

fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
}

/// The contended group's runtime: two workers (the machine's cores), with the timer that
/// Palisade's bounded wait needs.
fn multi_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
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

/// Spawns `TASKS` tasks on `rt`, each made by `task(rounds)` and doing `rounds` acquisitions,
/// waits for all of them and returns the wall time scaled to `iters` acquisitions.
fn time_tasks<F, Fut>(rt: &tokio::runtime::Runtime, iters: u64, task: F) -> Duration
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let rounds = iters.div_ceil(TASKS);
    let elapsed = rt.block_on(async {
        let start = Instant::now();
        let handles: Vec<_> = (0..TASKS).map(|_| tokio::spawn(task(rounds))).collect();
        for handle in handles {
            handle.await.unwrap();
        }
        start.elapsed()
    });
    // `rounds * TASKS` acquisitions ran, at least `iters`.
    elapsed.mul_f64(iters as f64 / (rounds * TASKS) as f64)
}

// ---------------------------------------------------------------------------------------------
// Groups.

fn uncontended(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead_uncontended");
    let mut cx = Context::from_waker(Waker::noop());

    g.bench_function("bare", |b| b.iter(|| black_box(1_u64)));

    let sem = tokio_semaphore();
    g.bench_function("tokio_try_acquire_drop", |b| {
        b.iter(|| tokio_try_acquire_drop(&sem))
    });

    let bulkhead = palisade_bulkhead();
    g.bench_function("palisade_try_acquire_drop", |b| {
        b.iter(|| palisade_try_acquire_drop(&bulkhead))
    });

    g.bench_function("tokio_acquire_await_drop", |b| {
        b.iter(|| tokio_acquire_poll_drop(&sem, &mut cx))
    });

    g.bench_function("palisade_acquire_await_drop", |b| {
        b.iter(|| palisade_acquire_poll_drop(&bulkhead, &mut cx))
    });

    g.finish();
}

fn layer(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead_layer");
    let rt = current_thread_runtime();
    let bare_service =
        || tower::service_fn(|req: u64| async move { Ok::<u64, ()>(black_box(req)) });

    let mut svc = bare_service();
    g.bench_function("bare_service", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    // The permit is taken in `poll_ready` and released when the response future completes.
    let mut svc = ConcurrencyLimitLayer::new(LIMIT as usize).layer(bare_service());
    g.bench_function("tower_concurrency_limit", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    // No Palisade tower layer yet: the bulkhead guards the same service's `call` future.
    let bulkhead = palisade_bulkhead();
    let mut svc = bare_service();
    g.bench_function("palisade_call", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for i in 0..iters {
                    let ready = svc.ready().await.unwrap();
                    let r = bulkhead.call(ready.call(black_box(i))).await;
                    black_box(r).unwrap();
                }
                start.elapsed()
            })
        })
    });

    let mut svc = tower_resilience_layer().layer(bare_service());
    g.bench_function("tower_resilience_bulkhead", |b| {
        b.iter_custom(|iters| time_service(&rt, &mut svc, iters))
    });

    g.finish();
}

fn two_threads_group(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead_2_threads");

    g.bench_function("bare", |b| {
        b.iter_custom(|iters| {
            two_threads(iters, |_| {
                black_box(1_u64);
            })
        })
    });

    let sem = tokio_semaphore();
    g.bench_function("tokio_try_acquire_drop", |b| {
        b.iter_custom(|iters| two_threads(iters, |_| tokio_try_acquire_drop(&sem)))
    });

    let bulkhead = palisade_bulkhead();
    g.bench_function("palisade_try_acquire_drop", |b| {
        b.iter_custom(|iters| two_threads(iters, |_| palisade_try_acquire_drop(&bulkhead)))
    });

    g.bench_function("tokio_acquire_await_drop", |b| {
        b.iter_custom(|iters| two_threads(iters, |cx| tokio_acquire_poll_drop(&sem, cx)))
    });

    g.bench_function("palisade_acquire_await_drop", |b| {
        b.iter_custom(|iters| two_threads(iters, |cx| palisade_acquire_poll_drop(&bulkhead, cx)))
    });

    g.finish();
}

fn contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("bulkhead_contended");
    let rt = multi_thread_runtime();

    let sem = Arc::new(Semaphore::new(CONTENDED_LIMIT as usize));
    g.bench_function("tokio_acquire_await_drop", |b| {
        b.iter_custom(|iters| {
            time_tasks(&rt, iters, |rounds| {
                let sem = Arc::clone(&sem);
                async move {
                    for _ in 0..rounds {
                        let permit = sem.acquire().await.unwrap();
                        tokio::task::yield_now().await;
                        drop(black_box(permit));
                    }
                }
            })
        })
    });

    // What a tokio user writes for a bounded wait: the like-for-like baseline for Palisade,
    // whose waits are always bounded (`max_wait`).
    g.bench_function("tokio_timeout_acquire_await_drop", |b| {
        b.iter_custom(|iters| {
            time_tasks(&rt, iters, |rounds| {
                let sem = Arc::clone(&sem);
                async move {
                    for _ in 0..rounds {
                        let permit = tokio::time::timeout(Duration::from_secs(60), sem.acquire())
                            .await
                            .unwrap()
                            .unwrap();
                        tokio::task::yield_now().await;
                        drop(black_box(permit));
                    }
                }
            })
        })
    });

    // A wait far longer than any sample: every acquisition succeeds, after queueing.
    let bulkhead = Bulkhead::builder("bench-contended")
        .max_concurrent(CONTENDED_LIMIT)
        .max_wait(Duration::from_secs(60))
        .build()
        .unwrap();
    g.bench_function("palisade_acquire_await_drop", |b| {
        b.iter_custom(|iters| {
            time_tasks(&rt, iters, |rounds| {
                let bulkhead = bulkhead.clone();
                async move {
                    for _ in 0..rounds {
                        let permit = bulkhead.acquire().await.unwrap();
                        tokio::task::yield_now().await;
                        drop(black_box(permit));
                    }
                }
            })
        })
    });

    g.finish();
}

/// Prints heap allocations per uncontended acquisition of every contender (stderr, before
/// criterion runs).
fn allocation_check() {
    const N: u64 = 10_000;
    let mut cx = Context::from_waker(Waker::noop());
    let sem = tokio_semaphore();
    let bulkhead = palisade_bulkhead();
    let rt = current_thread_runtime();
    let svc = tower::service_fn(|req: u64| async move { Ok::<u64, ()>(black_box(req)) });
    let mut bare = svc;
    let mut limit = ConcurrencyLimitLayer::new(LIMIT as usize).layer(svc);
    let mut tr = tower_resilience_layer().layer(svc);

    let rows = [
        (
            "tokio try_acquire + drop",
            allocs_per_call(N, || tokio_try_acquire_drop(&sem)),
        ),
        (
            "palisade try_acquire + drop",
            allocs_per_call(N, || palisade_try_acquire_drop(&bulkhead)),
        ),
        (
            "tokio acquire poll + drop",
            allocs_per_call(N, || tokio_acquire_poll_drop(&sem, &mut cx)),
        ),
        (
            "palisade acquire poll + drop",
            allocs_per_call(N, || palisade_acquire_poll_drop(&bulkhead, &mut cx)),
        ),
        (
            "service_fn, bare",
            allocs_per_call(N, || {
                rt.block_on(async { bare.ready().await.unwrap().call(1).await.unwrap() });
            }),
        ),
        (
            "service_fn + ConcurrencyLimit",
            allocs_per_call(N, || {
                rt.block_on(async { limit.ready().await.unwrap().call(1).await.unwrap() });
            }),
        ),
        (
            "service_fn + palisade call",
            allocs_per_call(N, || {
                rt.block_on(async {
                    let ready = bare.ready().await.unwrap();
                    bulkhead.call(ready.call(1)).await.unwrap()
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
    eprintln!("heap allocations per uncontended acquisition ({N} calls each):");
    for (name, allocs) in rows {
        eprintln!("  {name:<30} {allocs:.2}");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    targets = uncontended, layer, two_threads_group, contended
}

fn main() {
    allocation_check();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
