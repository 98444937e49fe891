//! [`Latencies`]: how long the calls that waited took, in fixed buckets — cumulative counts
//! a sampler can diff per second (the admin history's p50 and p99).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;

/// Upper bounds of the buckets, in milliseconds (the last bucket has none).
pub const LATENCY_BOUNDS_MS: [u64; 13] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000,
];

/// Cumulative counts of the calls that waited, by bucket.
#[derive(Debug, Default)]
pub(crate) struct Latencies {
    counts: [AtomicU64; LATENCY_BOUNDS_MS.len() + 1],
}

impl Latencies {
    /// Counts one call that took `took` (timed out or not).
    pub(crate) fn record(&self, took: Duration) {
        self.counts[bucket(took)].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> LatencySnapshot {
        LatencySnapshot {
            le_ms: LATENCY_BOUNDS_MS.to_vec(),
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// The bucket of `took`: the first whose bound it does not exceed, else the last.
pub(crate) fn bucket(took: Duration) -> usize {
    let ms = took.as_secs_f64() * 1000.0;
    LATENCY_BOUNDS_MS
        .iter()
        .position(|&bound| ms <= bound as f64)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// Cumulative latency counts of the calls that waited (calls ready at once are not timed):
/// `counts[i]` calls took at most `le_ms[i]` ms (and more than the bound before); the last
/// count is the calls slower than the last bound.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LatencySnapshot {
    /// Upper bounds, in milliseconds.
    pub le_ms: Vec<u64>,
    /// Calls per bucket (one more than `le_ms`).
    pub counts: Vec<u64>,
}

impl LatencySnapshot {
    /// The `q` quantile (0–1) in milliseconds, as the upper bound of its bucket (`None` with no
    /// calls; the last bucket answers its lower bound).
    ///
    /// ```
    /// use palisade_toolbox::timeout::LatencySnapshot;
    ///
    /// let s = LatencySnapshot { le_ms: vec![10, 100], counts: vec![90, 9, 1] };
    /// assert_eq!(s.quantile_ms(0.5), Some(10));
    /// assert_eq!(s.quantile_ms(0.99), Some(100));
    /// assert_eq!(s.quantile_ms(1.0), Some(100));
    /// ```
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total: u64 = self.counts.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return self.le_ms.get(i).or_else(|| self.le_ms.last()).copied();
            }
        }
        self.le_ms.last().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_land_in_the_first_bucket_whose_bound_they_do_not_exceed() {
        assert_eq!(bucket(Duration::ZERO), 0);
        assert_eq!(bucket(Duration::from_millis(1)), 0);
        assert_eq!(bucket(Duration::from_micros(1_001)), 1);
        assert_eq!(bucket(Duration::from_millis(150)), 7);
        assert_eq!(bucket(Duration::from_secs(60)), LATENCY_BOUNDS_MS.len());
    }
}
