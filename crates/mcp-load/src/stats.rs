//! Latency percentiles over every call of a run (exact: the samples are kept and sorted).

use std::time::Duration;

use serde::Serialize;

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// The fastest call.
    pub min: f64,
    /// The mean.
    pub mean: f64,
    /// The median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// The slowest call.
    pub max: f64,
}

impl Percentiles {
    /// The percentiles of `samples` (nearest rank); all zero when there are none.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mcp_load::Percentiles;
    ///
    /// let samples: Vec<Duration> = (1..=1000).map(Duration::from_micros).collect();
    /// let p = Percentiles::of(samples);
    /// assert_eq!((p.p50, p.p99, p.p999, p.max), (500.0, 990.0, 999.0, 1000.0));
    /// ```
    pub fn of(mut samples: Vec<Duration>) -> Percentiles {
        if samples.is_empty() {
            return Percentiles::default();
        }
        samples.sort_unstable();
        let us = |d: Duration| d.as_nanos() as f64 / 1000.0;
        let rank = |q: f64| {
            // Nearest rank: the smallest sample with at least q of the samples at or below it.
            let n = samples.len();
            let idx = ((q * n as f64).ceil() as usize).clamp(1, n) - 1;
            us(samples[idx])
        };
        let total: Duration = samples.iter().sum();
        Percentiles {
            min: us(samples[0]),
            mean: us(total) / samples.len() as f64,
            p50: rank(0.50),
            p90: rank(0.90),
            p99: rank(0.99),
            p999: rank(0.999),
            max: us(samples[samples.len() - 1]),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_on_small_and_empty_sets() {
        assert_eq!(Percentiles::of(Vec::new()), Percentiles::default());
        let one = Percentiles::of(vec![Duration::from_micros(7)]);
        assert_eq!((one.min, one.p50, one.p999, one.max), (7.0, 7.0, 7.0, 7.0));
        let p = Percentiles::of(
            [40, 10, 30, 20]
                .into_iter()
                .map(Duration::from_micros)
                .collect(),
        );
        assert_eq!(
            (p.min, p.p50, p.p90, p.max, p.mean),
            (10.0, 20.0, 40.0, 40.0, 25.0)
        );
    }
}
