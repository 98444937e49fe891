//! Counters for hot paths.
//!
//! A single `AtomicU64` incremented by every thread bounces its cache line between cores; on a
//! busy multi-core service that costs more than the rest of a closed circuit breaker's path.
//! [`StripedCounter`] spreads increments over cache-padded stripes picked per thread and sums
//! them on read (reads are rare: snapshots and metrics scrapes).

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

const STRIPES: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A monotonically increasing counter that scales with concurrent writers.
///
/// ```
/// let c = palisade_core::StripedCounter::new();
/// c.add(2);
/// c.incr();
/// assert_eq!(c.get(), 3);
/// ```
#[derive(Debug, Default)]
pub struct StripedCounter {
    stripes: [Padded; STRIPES],
}

fn stripe_index() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static INDEX: Cell<usize> = const { Cell::new(usize::MAX) };
    }
    INDEX.with(|i| {
        let mut v = i.get();
        if v == usize::MAX {
            v = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
            i.set(v);
        }
        v
    })
}

impl StripedCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one.
    #[inline]
    pub fn incr(&self) {
        self.add(1);
    }

    /// Adds `n`.
    #[inline]
    pub fn add(&self, n: u64) {
        self.stripes[stripe_index()]
            .0
            .fetch_add(n, Ordering::Relaxed);
    }

    /// The sum of all increments so far.
    pub fn get(&self) -> u64 {
        self.stripes
            .iter()
            .fold(0u64, |acc, s| acc.wrapping_add(s.0.load(Ordering::Relaxed)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn sums_increments_from_many_threads() {
        let c = Arc::new(StripedCounter::new());
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let c = c.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        c.incr();
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(c.get(), 80_000);
    }
}
