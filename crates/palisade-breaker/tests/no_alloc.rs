//! The closed path (and the open-state refusal) allocate nothing.
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_breaker::{CircuitBreaker, FailureRateConfig, SlidingWindow};
use palisade_core::ManualClock;

#[global_allocator]
static GLOBAL: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;

use palisade_testkit::alloc::allocations_in;

fn poll_once<F: Future>(f: F) -> Poll<F::Output> {
    let mut cx = Context::from_waker(Waker::noop());
    pin!(f).poll(&mut cx)
}

#[test]
fn closed_path_does_not_allocate() {
    let clock = ManualClock::new();
    let default = CircuitBreaker::builder("plain")
        .clock(clock.shared())
        .build()
        .unwrap();
    let windowed = CircuitBreaker::builder("windowed")
        .failure_rate(FailureRateConfig {
            window: SlidingWindow::Time {
                length: Duration::from_secs(10),
            },
            slow_call_duration: Some(Duration::from_secs(1)),
            ..Default::default()
        })
        .clock(clock.shared())
        .build()
        .unwrap();
    for cb in [&default, &windowed] {
        // Warm up thread-locals (the striped counters' stripe index).
        cb.try_acquire().unwrap().success();
        let n = allocations_in(|| {
            for i in 0..10_000u32 {
                let p = cb.try_acquire().unwrap();
                if i % 2 == 0 {
                    p.failure()
                } else {
                    p.success()
                }
                let r = poll_once(cb.call(async { Ok::<_, ()>(i) }));
                assert!(matches!(r, Poll::Ready(Ok(_))));
            }
        });
        assert_eq!(n, 0, "{} allocated on the closed path", cb.name());
    }
}

#[test]
fn refusing_while_open_does_not_allocate() {
    let clock = ManualClock::new();
    let cb = CircuitBreaker::builder("open")
        .clock(clock.shared())
        .build()
        .unwrap();
    cb.force_open();
    let n = allocations_in(|| {
        for _ in 0..1000 {
            assert!(cb.try_acquire().is_err());
        }
    });
    assert_eq!(n, 0);
}
