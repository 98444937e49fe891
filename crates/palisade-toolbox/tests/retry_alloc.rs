//! Nothing on a retry's first attempt allocates: the plain API (ready, or pending once) and,
//! with feature `tower`, the `RetryLayer`. Counted by a counting global allocator, this thread
//! only.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::future::Future;
use std::pin::{Pin, pin};
use std::task::{Context, Poll, Waker};

use palisade_testkit::alloc::allocations_in;
use palisade_toolbox::retry::Retry;

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

/// Polls `fut` until ready with a no-op waker.
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
fn the_first_attempt_of_the_plain_api_does_not_allocate() {
    let retry = Retry::builder("alloc").build().unwrap();
    // Warm up (the thread's counter stripe is picked on its first use).
    drive(retry.call(|| async { Ok::<_, ()>(1) })).unwrap();
    let allocs = allocations_in(|| {
        for _ in 0..1000 {
            assert_eq!(drive(retry.call(|| async { Ok::<_, ()>(1) })), Ok(1));
            assert_eq!(drive(retry.call(|| PendingOnce(false))), Ok(1));
        }
    });
    assert_eq!(allocs, 0);
    let snap = retry.snapshot();
    assert_eq!((snap.calls_total, snap.budget.deposits_total), (2001, 2001));
}

#[cfg(feature = "tower")]
#[test]
fn the_first_attempt_through_the_layer_does_not_allocate() {
    use palisade_toolbox::retry::RetryLayer;
    use tower::{Layer, Service};

    let retry = Retry::builder("alloc-layer").build().unwrap();
    let mut svc = RetryLayer::new(retry.clone()).layer(tower::service_fn(|req: u64| async move {
        Ok::<u64, ()>(req + 1)
    }));
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
    assert_eq!(retry.snapshot().calls_total, 1001);
}
