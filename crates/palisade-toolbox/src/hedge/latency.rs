//! Latency percentiles over a sliding window: a log-linear histogram (the bucket math is pure)
//! kept in atomics, in two halves of the window that take turns.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};

/// Sub-buckets per power of two: 2^3 = 8, so a bucket is at most 12.5 % wide.
const SUB_BITS: u32 = 3;
const SUB: u64 = 1 << SUB_BITS;
/// Groups of `SUB` buckets: values up to `(2·SUB) << (GROUPS - 2)` µs (about 36 minutes).
const GROUPS: usize = 29;
/// Buckets of the histogram.
pub(crate) const BUCKETS: usize = GROUPS * SUB as usize;

/// The bucket of a latency in microseconds: values below 8 µs have a bucket each; above, each
/// power of two is split in 8. Larger values than the last bucket go to the last bucket.
pub(crate) fn bucket_of(micros: u64) -> usize {
    if micros < SUB {
        return micros as usize;
    }
    let pow = 63 - micros.leading_zeros(); // >= SUB_BITS
    let shift = pow - SUB_BITS;
    let sub = (micros >> shift) - SUB; // 0..SUB
    let index = (shift as usize + 1) * SUB as usize + sub as usize;
    index.min(BUCKETS - 1)
}

/// The largest latency (µs) bucket `index` holds.
pub(crate) fn bucket_max(index: usize) -> u64 {
    let index = index.min(BUCKETS - 1) as u64;
    if index < SUB {
        return index;
    }
    let shift = index / SUB - 1;
    let sub = index % SUB;
    ((SUB + sub + 1) << shift) - 1
}

/// The bucket holding the `percentile`-th latency (the smallest bucket with at least
/// `ceil(percentile% × total)` latencies at or below it), or `None` with no latency.
pub(crate) fn percentile_bucket(counts: &[u64], percentile: f64) -> Option<usize> {
    let total: u64 = counts.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((percentile / 100.0) * total as f64)
        .ceil()
        .clamp(1.0, total as f64) as u64;
    let mut seen = 0u64;
    for (i, &n) in counts.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(i);
        }
    }
    Some(counts.len().saturating_sub(1))
}

struct Half {
    counts: [AtomicU32; BUCKETS],
    total: AtomicU64,
}

impl Half {
    fn new() -> Half {
        Half {
            counts: std::array::from_fn(|_| AtomicU32::new(0)),
            total: AtomicU64::new(0),
        }
    }

    fn clear(&self) {
        for c in &self.counts {
            c.store(0, Ordering::Relaxed);
        }
        self.total.store(0, Ordering::Relaxed);
    }
}

/// Latencies of the last window (between half a window and a window of them), recorded
/// lock-free from any thread.
pub(crate) struct LatencyTracker {
    halves: [Half; 2],
    current: AtomicUsize,
    /// When the current half is retired (nanoseconds of the component's clock).
    rotate_at: AtomicU64,
}

impl LatencyTracker {
    pub(crate) fn new(now: u64, half_window: u64) -> LatencyTracker {
        LatencyTracker {
            halves: [Half::new(), Half::new()],
            current: AtomicUsize::new(0),
            rotate_at: AtomicU64::new(now.saturating_add(half_window)),
        }
    }

    /// Records one latency. Returns whether the percentile is worth recomputing: after a
    /// rotation, for each of the first 64 latencies of a half, then every 32nd.
    pub(crate) fn record(&self, micros: u64, now: u64, half_window: u64) -> bool {
        let rotated = self.rotate_if_due(now, half_window);
        let half = &self.halves[self.current.load(Ordering::Acquire)];
        half.counts[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        let n = half.total.fetch_add(1, Ordering::Relaxed) + 1;
        rotated || n <= 64 || n % 32 == 0
    }

    /// Retires the older half if the current one is over (both, if both are); `true` if it did.
    pub(crate) fn rotate_if_due(&self, now: u64, half_window: u64) -> bool {
        let due = self.rotate_at.load(Ordering::Acquire);
        if now < due {
            return false;
        }
        let next = now.saturating_add(half_window);
        if self
            .rotate_at
            .compare_exchange(due, next, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            return false; // another thread rotates
        }
        let current = self.current.load(Ordering::Acquire);
        let older = 1 - current;
        self.halves[older].clear();
        if now >= due.saturating_add(half_window) {
            self.halves[current].clear(); // nothing recorded for a whole window
        }
        self.current.store(older, Ordering::Release);
        true
    }

    /// The `percentile`-th latency (the upper edge of its bucket, µs) and the number of
    /// latencies it was taken from; `None` with no latency.
    pub(crate) fn percentile(&self, percentile: f64) -> Option<(u64, u64)> {
        let mut counts = [0u64; BUCKETS];
        for half in &self.halves {
            for (sum, c) in counts.iter_mut().zip(&half.counts) {
                *sum += u64::from(c.load(Ordering::Relaxed));
            }
        }
        let samples = counts.iter().sum();
        percentile_bucket(&counts, percentile).map(|b| (bucket_max(b), samples))
    }

    /// Latencies recorded in the current half so far.
    #[inline]
    pub(crate) fn current_samples(&self) -> u64 {
        self.halves[self.current.load(Ordering::Relaxed)]
            .total
            .load(Ordering::Relaxed)
    }

    /// Latencies held now.
    pub(crate) fn samples(&self) -> u64 {
        self.halves
            .iter()
            .map(|h| h.total.load(Ordering::Relaxed))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn buckets_are_contiguous_and_ordered() {
        let mut previous_max = None;
        for i in 0..BUCKETS {
            let max = bucket_max(i);
            if let Some(p) = previous_max {
                assert_eq!(
                    bucket_of(p + 1),
                    i,
                    "the value after bucket {} starts bucket {i}",
                    i - 1
                );
                assert!(max > p);
            }
            assert_eq!(bucket_of(max), i, "bucket {i} holds its max {max}");
            previous_max = Some(max);
        }
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        assert!(
            bucket_max(BUCKETS - 1) > 30 * 60 * 1_000_000,
            "over half an hour"
        );
    }

    #[test]
    fn percentiles_pick_the_ranked_bucket() {
        let mut counts = [0u64; BUCKETS];
        assert_eq!(percentile_bucket(&counts, 95.0), None);
        // 100 latencies: 1..=100 ms.
        for ms in 1..=100u64 {
            counts[bucket_of(ms * 1000)] += 1;
        }
        let p95 = bucket_max(percentile_bucket(&counts, 95.0).unwrap());
        assert!((95_000..=95_000 * 9 / 8).contains(&p95), "{p95}");
        let p50 = bucket_max(percentile_bucket(&counts, 50.0).unwrap());
        assert!((50_000..=50_000 * 9 / 8).contains(&p50), "{p50}");
    }

    #[test]
    fn the_window_forgets_old_latencies() {
        let half = 1_000;
        let t = LatencyTracker::new(0, half);
        for _ in 0..10 {
            t.record(500_000, 0, half);
        }
        assert_eq!(t.samples(), 10);
        t.record(1_000, 1_000, half); // rotates: the first half is kept
        assert_eq!(t.samples(), 11);
        assert!(t.percentile(50.0).unwrap().0 >= 500_000);
        t.record(1_000, 2_000, half); // rotates again: the first half is gone
        assert_eq!(t.samples(), 2);
        assert!(t.percentile(99.0).unwrap().0 < 2_000);
        t.record(1_000, 10_000, half); // idle for a whole window: both halves cleared
        assert_eq!(t.samples(), 1);
    }

    proptest! {
        #[test]
        fn every_value_is_within_its_bucket_and_at_most_an_eighth_below_its_max(v in 0u64..(1 << 30)) {
            let b = bucket_of(v);
            let max = bucket_max(b);
            prop_assert!(v <= max);
            prop_assert!(max - v <= v / 8 + 1, "v {v} max {max}");
            if b > 0 {
                prop_assert!(bucket_max(b - 1) < v);
            }
        }
    }
}
