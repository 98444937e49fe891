//! A counting global allocator for the allocation tests and benches. A test or bench binary
//! installs it with
//! `#[global_allocator] static A: palisade_testkit::alloc::CountingAlloc = palisade_testkit::alloc::CountingAlloc;`
//! and then measures with [`allocations_in`] (this thread only, safe with tests running in
//! parallel) or [`allocs_per_call`] (every thread). When nothing is measured, an allocation costs
//! one relaxed load more than `System`'s.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Forwards to [`System`], counting allocations while a measurement runs.
#[derive(Debug)]
pub struct CountingAlloc;

/// Measurements running now, of either kind (the only check on the path when none does).
static MEASURING: AtomicUsize = AtomicUsize::new(0);
/// [`allocs_per_call`] measurements running now (they count every thread).
static ALL_THREADS: AtomicUsize = AtomicUsize::new(0);
/// Allocations on every thread while an [`allocs_per_call`] runs.
static ALL_ALLOCS: AtomicU64 = AtomicU64::new(0);
thread_local! {
    /// Set while [`allocations_in`] measures on this thread.
    static THIS_THREAD: Cell<bool> = const { Cell::new(false) };
    /// This thread's count for [`allocations_in`]: no other thread, and no other test running
    /// in parallel, can add to it or reset it.
    static THIS_THREAD_ALLOCS: Cell<u64> = const { Cell::new(0) };
}

#[inline]
fn count() {
    if MEASURING.load(Ordering::Relaxed) == 0 {
        return;
    }
    if THIS_THREAD.with(Cell::get) {
        THIS_THREAD_ALLOCS.with(|c| c.set(c.get() + 1));
    }
    if ALL_THREADS.load(Ordering::Relaxed) > 0 {
        ALL_ALLOCS.fetch_add(1, Ordering::Relaxed);
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

/// Heap allocations made by `f` on this thread. Counted per thread, so tests measuring in
/// parallel in one binary neither see nor reset each other's counts.
pub fn allocations_in(f: impl FnOnce()) -> u64 {
    THIS_THREAD_ALLOCS.with(|c| c.set(0));
    THIS_THREAD.with(|c| c.set(true));
    MEASURING.fetch_add(1, Ordering::SeqCst);
    f();
    MEASURING.fetch_sub(1, Ordering::SeqCst);
    THIS_THREAD.with(|c| c.set(false));
    THIS_THREAD_ALLOCS.with(Cell::get)
}

/// Heap allocations per call of `f` on any thread, averaged over `n` calls (after one warm-up
/// call). For benchmarks, which run one at a time: allocations of other threads in the process
/// count too.
pub fn allocs_per_call(n: u64, mut f: impl FnMut()) -> f64 {
    f();
    ALL_ALLOCS.store(0, Ordering::Relaxed);
    ALL_THREADS.fetch_add(1, Ordering::SeqCst);
    MEASURING.fetch_add(1, Ordering::SeqCst);
    for _ in 0..n {
        f();
    }
    MEASURING.fetch_sub(1, Ordering::SeqCst);
    ALL_THREADS.fetch_sub(1, Ordering::SeqCst);
    ALL_ALLOCS.load(Ordering::Relaxed) as f64 / n as f64
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

    /// Two threads measure at the same time, one allocating and one not: each sees exactly its
    /// own count (with one process-wide counter, the idle one saw the other's allocations, and
    /// whichever finished first reset or stopped the other's count).
    #[test]
    fn parallel_measurements_do_not_see_each_other() {
        use std::sync::{Arc, Barrier};
        for _ in 0..50 {
            let barrier = Arc::new(Barrier::new(2));
            let busy = {
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    allocations_in(|| {
                        barrier.wait();
                        for i in 0..200u64 {
                            drop(std::hint::black_box(Box::new(i)));
                        }
                        barrier.wait();
                    })
                })
            };
            let idle = allocations_in(|| {
                barrier.wait();
                barrier.wait();
            });
            assert_eq!(idle, 0);
            assert_eq!(busy.join().unwrap(), 200);
        }
    }
}
