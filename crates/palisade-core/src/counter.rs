//! Counters for hot paths.
//!
//! A single `AtomicU64` incremented by every thread bounces its cache line between cores, and
//! even uncontended, a locked read-modify-write costs as much as the rest of a rate limiter's
//! check. [`StripedCounter`] gives each thread a cache-padded stripe of its own, which only that
//! thread writes, so an increment is a plain load and store; a read (snapshots, metrics
//! scrapes: rare) sums the stripes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Stripes owned by one thread each; threads beyond these share one more stripe (atomically).
const OWNED: usize = 16;

#[derive(Debug, Default)]
#[repr(align(128))]
struct Padded(AtomicU64);

/// A monotonically increasing counter that scales with concurrent writers.
///
/// Each of the first 16 threads that count (at a time: a thread's stripe is handed to a new
/// thread when it exits) writes a stripe no other thread writes, without a locked instruction;
/// other threads add to a shared stripe atomically. Every increment is counted exactly.
///
/// ```
/// let c = palisade_core::StripedCounter::new();
/// c.add(2);
/// c.incr();
/// assert_eq!(c.get(), 3);
/// ```
#[derive(Debug, Default)]
pub struct StripedCounter {
    owned: [Padded; OWNED],
    shared: Padded,
}

/// Stripe indexes given back by threads that exited.
static FREE: Mutex<Vec<usize>> = Mutex::new(Vec::new());
/// The next never-used stripe index.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The calling thread's stripe index (`OWNED`: none, use the shared stripe).
struct Slot(usize);

impl Slot {
    fn acquire() -> Slot {
        let recycled = FREE.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let index = recycled.unwrap_or_else(|| {
            NEXT.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < OWNED).then_some(n + 1)
            })
            .unwrap_or(OWNED)
        });
        Slot(index)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The mutex orders this thread's last stores before the next owner's first load.
        if self.0 < OWNED {
            FREE.lock().unwrap_or_else(|e| e.into_inner()).push(self.0);
        }
    }
}

thread_local! {
    static SLOT: Slot = Slot::acquire();
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
        // `try_with` fails only while the thread's locals are being destroyed.
        match SLOT.try_with(|s| s.0) {
            Ok(i) if i < OWNED => {
                // Only this thread writes this stripe: a load and a store lose nothing.
                let stripe = &self.owned[i].0;
                stripe.store(
                    stripe.load(Ordering::Relaxed).wrapping_add(n),
                    Ordering::Relaxed,
                );
            }
            _ => {
                self.shared.0.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// The sum of all increments so far.
    pub fn get(&self) -> u64 {
        self.owned
            .iter()
            .chain(std::iter::once(&self.shared))
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

    #[test]
    fn more_threads_than_stripes_and_exited_threads_lose_nothing() {
        let c = Arc::new(StripedCounter::new());
        // Three waves of 24 threads: more than the owned stripes at once (the rest share one),
        // and stripes handed on from exited threads to new ones.
        for _ in 0..3 {
            let threads: Vec<_> = (0..24)
                .map(|_| {
                    let c = c.clone();
                    std::thread::spawn(move || {
                        for _ in 0..5_000 {
                            c.add(2);
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
        }
        assert_eq!(c.get(), 3 * 24 * 5_000 * 2);
    }
}
