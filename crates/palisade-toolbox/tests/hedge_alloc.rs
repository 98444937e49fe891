//! Nothing on a hedge's no-hedge path allocates: a call that answers at once (fixed or
//! percentile delay), and one that is pending while the hedging timer runs (the timer lives
//! inside the call's future). Counted by a counting global allocator, this thread only.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_testkit::alloc::allocations_in;
use palisade_toolbox::hedge::Hedge;

#[global_allocator]
static GLOBAL: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;

/// Pending on its first poll, then `Ok(1)`.
struct PendingOnce(bool);

impl Future for PendingOnce {
    type Output = Result<u64, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if std::mem::replace(&mut self.0, true) {
            Poll::Ready(Ok(1))
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

fn drive<F: Future>(fut: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut fut = pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
    }
}

#[test]
fn the_no_hedge_path_does_not_allocate() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _context = runtime.enter(); // the hedging timer of a pending call
    let fixed = Hedge::builder("alloc-fixed")
        .fixed_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let percentile = Hedge::builder("alloc-p95").build().unwrap();
    for hedge in [&fixed, &percentile] {
        drive(hedge.call_idempotent(|| async { Ok::<_, ()>(1) })).unwrap();
        drive(hedge.call_idempotent(|| PendingOnce(false))).unwrap();
        drive(hedge.call(async { Ok::<_, ()>(1) })).unwrap();
        let allocs = allocations_in(|| {
            for _ in 0..1000 {
                assert_eq!(
                    drive(hedge.call_idempotent(|| async { Ok::<_, ()>(1) })),
                    Ok(1)
                );
                assert_eq!(drive(hedge.call_idempotent(|| PendingOnce(false))), Ok(1));
                assert_eq!(drive(hedge.call(async { Ok::<_, ()>(1) })), Ok(1));
            }
        });
        assert_eq!(allocs, 0, "{}", hedge.name());
        assert_eq!(hedge.snapshot().hedges_sent_total, 0);
    }
    // Every call timed up to 256 latencies, then one in 16.
    assert!(percentile.snapshot().latency_samples > 256);
}

#[cfg(feature = "tower")]
#[test]
fn the_no_hedge_path_through_the_layer_does_not_allocate() {
    use palisade_toolbox::hedge::{AllIdempotent, HedgeLayer};
    use tower::{Layer, Service};

    let hedge = Hedge::builder("alloc-layer")
        .fixed_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let mut svc = HedgeLayer::new(hedge.clone(), AllIdempotent).layer(tower::service_fn(
        |req: u64| async move { Ok::<u64, ()>(req + 1) },
    ));
    let mut cx = Context::from_waker(Waker::noop());
    let mut call = |i: u64| {
        assert!(svc.poll_ready(&mut cx).is_ready());
        drive(svc.call(i)).unwrap()
    };
    call(0);
    let allocs = allocations_in(|| {
        for i in 0..1000 {
            assert_eq!(call(i), i + 1);
        }
    });
    assert_eq!(allocs, 0);
    assert_eq!(hedge.snapshot().idempotent_calls_total, 1001);
}
