//! A counting global allocator for the allocation tests and benches. A test or bench binary
//! installs it with
//! `#[global_allocator] static A: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;`
//! and then measures with [`allocations_in`] (this thread only, safe with tests running in
//! parallel) or [`allocs_per_call`] (every thread). When nothing is measured, an allocation costs
//! one relaxed load more than `System`'s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Forwards to [`System`], counting allocations while a measurement runs.
#[derive(Debug)]
pub struct CountingAlloc;

/// Set while any measurement runs (the only check on the path when none does).
static ANY: AtomicBool = AtomicBool::new(false);
/// Set while [`allocs_per_call`] counts on every thread.
static ALL_THREADS: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    static THIS_THREAD: Cell<bool> = const { Cell::new(false) };
}

#[inline]
fn count() {
    if ANY.load(Ordering::Relaxed)
        && (ALL_THREADS.load(Ordering::Relaxed) || THIS_THREAD.with(Cell::get))
    {
        ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` unchanged; the only addition is a counter.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Heap allocations made by `f` on this thread.
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    ALLOCS.store(0, Ordering::Relaxed);
    THIS_THREAD.with(|c| c.set(true));
    ANY.store(true, Ordering::SeqCst);
    f();
    ANY.store(false, Ordering::SeqCst);
    THIS_THREAD.with(|c| c.set(false));
    ALLOCS.load(Ordering::Relaxed)
}

/// Heap allocations per call of `f` on any thread, averaged over `n` calls (after one warm-up
/// call).
pub fn allocs_per_call(n: u64, mut f: impl FnMut()) -> f64 {
    f();
    ALLOCS.store(0, Ordering::Relaxed);
    ALL_THREADS.store(true, Ordering::SeqCst);
    ANY.store(true, Ordering::SeqCst);
    for _ in 0..n {
        f();
    }
    ANY.store(false, Ordering::SeqCst);
    ALL_THREADS.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::Relaxed) as f64 / n as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[global_allocator]
    static GLOBAL: CountingAlloc = CountingAlloc;

    #[test]
    fn counts_what_it_measures_and_nothing_else() {
        assert_eq!(
            allocations_in(|| drop(std::hint::black_box(Box::new(7u64)))),
            1
        );
        assert_eq!(
            allocations_in(|| {
                std::hint::black_box(7u64);
            }),
            0
        );
        let per_call = allocs_per_call(10, || {
            drop(std::hint::black_box(vec![1u8; 16]));
        });
        assert_eq!(per_call, 1.0);
    }
}
