//! The closed path (and the open-state refusal) allocate nothing.
#![allow(unsafe_code)] // a counting global allocator needs `unsafe impl GlobalAlloc`
#![allow(clippy::unwrap_used)] // tests unwrap what must succeed

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use palisade_breaker::{CircuitBreaker, FailureRateConfig, SlidingWindow};
use palisade_core::ManualClock;

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.with(|c| c.get()) {
            ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        }
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_in(f: impl FnOnce()) -> usize {
    ALLOCATIONS.store(0, Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    f();
    COUNTING.with(|c| c.set(false));
    ALLOCATIONS.load(Ordering::Relaxed)
}

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
