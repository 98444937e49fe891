//! Sliding windows of call outcomes for failure-rate and slow-call-rate tripping.
//!
//! Used only when a [`FailureRateConfig`] is set; the window sits behind a mutex that the
//! consecutive-failure path (the default) never touches.

use std::time::Duration;

use serde::Serialize;

use crate::config::{FailureRateConfig, SlidingWindow};

const FAILED: u8 = 0b01;
const SLOW: u8 = 0b10;
const TIME_BUCKETS: u64 = 10;

/// Aggregates over a window, as shown in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct WindowSnapshot {
    /// Calls currently in the window.
    pub calls: u32,
    /// Failed calls in the window.
    pub failures: u32,
    /// Slow calls in the window.
    pub slow_calls: u32,
    /// Failure percentage, `None` until the window holds `minimum_calls`.
    pub failure_rate: Option<f64>,
    /// Slow-call percentage, `None` until the window holds `minimum_calls` (or slow calls are
    /// not tracked).
    pub slow_call_rate: Option<f64>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    epoch: u64,
    calls: u32,
    failures: u32,
    slow: u32,
}

#[derive(Debug)]
enum Store {
    Count {
        ring: Vec<u8>,
        next: usize,
        len: usize,
    },
    Time {
        bucket_nanos: u64,
        buckets: Vec<Bucket>,
    },
}

/// A sliding window with its rate thresholds.
#[derive(Debug)]
pub(crate) struct Window {
    cfg: FailureRateConfig,
    store: Store,
    calls: u32,
    failures: u32,
    slow: u32,
}

/// Which rate crossed its threshold.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Trip {
    FailureRate(f64),
    SlowCallRate(f64),
}

impl Window {
    pub(crate) fn new(cfg: &FailureRateConfig) -> Self {
        let store = match cfg.window {
            SlidingWindow::Count { size } => Store::Count {
                ring: vec![0; size.max(1) as usize],
                next: 0,
                len: 0,
            },
            SlidingWindow::Time { length } => Store::Time {
                bucket_nanos: bucket_nanos(length),
                buckets: vec![Bucket::default(); TIME_BUCKETS as usize],
            },
        };
        Self {
            cfg: cfg.clone(),
            store,
            calls: 0,
            failures: 0,
            slow: 0,
        }
    }

    pub(crate) fn clear(&mut self) {
        *self = Window::new(&self.cfg);
    }

    /// Records one outcome at `now` (time since the clock's origin) and returns the rate that
    /// crossed its threshold, if any.
    pub(crate) fn record(&mut self, now: Duration, failed: bool, slow: bool) -> Option<Trip> {
        let bits = (failed as u8 * FAILED) | (slow as u8 * SLOW);
        match &mut self.store {
            Store::Count { ring, next, len } => {
                if *len == ring.len() {
                    let old = ring[*next];
                    self.calls -= 1;
                    self.failures -= u32::from(old & FAILED != 0);
                    self.slow -= u32::from(old & SLOW != 0);
                } else {
                    *len += 1;
                }
                ring[*next] = bits;
                *next = (*next + 1) % ring.len();
                self.calls += 1;
                self.failures += u32::from(failed);
                self.slow += u32::from(slow);
            }
            Store::Time {
                bucket_nanos,
                buckets,
            } => {
                let epoch = epoch_of(now, *bucket_nanos);
                let b = &mut buckets[(epoch % TIME_BUCKETS) as usize];
                if b.epoch != epoch {
                    *b = Bucket {
                        epoch,
                        ..Bucket::default()
                    };
                }
                b.calls = b.calls.saturating_add(1);
                b.failures = b.failures.saturating_add(u32::from(failed));
                b.slow = b.slow.saturating_add(u32::from(slow));
                self.recount(epoch);
            }
        }
        self.evaluate()
    }

    fn recount(&mut self, current_epoch: u64) {
        if let Store::Time { buckets, .. } = &self.store {
            let live = buckets
                .iter()
                .filter(|b| b.calls > 0 && current_epoch.saturating_sub(b.epoch) < TIME_BUCKETS);
            let (c, f, s) = live.fold((0u32, 0u32, 0u32), |(c, f, s), b| {
                (
                    c.saturating_add(b.calls),
                    f.saturating_add(b.failures),
                    s.saturating_add(b.slow),
                )
            });
            self.calls = c;
            self.failures = f;
            self.slow = s;
        }
    }

    fn rates(&self) -> (Option<f64>, Option<f64>) {
        if self.calls == 0 || self.calls < self.cfg.minimum_calls {
            return (None, None);
        }
        let pct = |n: u32| f64::from(n) * 100.0 / f64::from(self.calls);
        let slow = self.cfg.slow_call_duration.map(|_| pct(self.slow));
        (Some(pct(self.failures)), slow)
    }

    fn evaluate(&self) -> Option<Trip> {
        let (failure, slow) = self.rates();
        if let Some(f) = failure
            && f >= self.cfg.failure_rate_threshold
        {
            return Some(Trip::FailureRate(f));
        }
        if let Some(s) = slow
            && s >= self.cfg.slow_call_rate_threshold
        {
            return Some(Trip::SlowCallRate(s));
        }
        None
    }

    /// Aggregates as of `now` (time windows drop buckets that have aged out).
    pub(crate) fn snapshot(&mut self, now: Duration) -> WindowSnapshot {
        if let Store::Time { bucket_nanos, .. } = &self.store {
            let epoch = epoch_of(now, *bucket_nanos);
            self.recount(epoch);
        }
        let (failure_rate, slow_call_rate) = self.rates();
        WindowSnapshot {
            calls: self.calls,
            failures: self.failures,
            slow_calls: self.slow,
            failure_rate,
            slow_call_rate,
        }
    }
}

fn bucket_nanos(length: Duration) -> u64 {
    (palisade_core::clock::saturating_nanos(length) / TIME_BUCKETS).max(1)
}

fn epoch_of(now: Duration, bucket_nanos: u64) -> u64 {
    palisade_core::clock::saturating_nanos(now) / bucket_nanos
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(size: u32, min: u32) -> Window {
        Window::new(&FailureRateConfig {
            window: SlidingWindow::Count { size },
            minimum_calls: min,
            failure_rate_threshold: 50.0,
            slow_call_duration: Some(Duration::from_secs(1)),
            slow_call_rate_threshold: 100.0,
        })
    }

    #[test]
    fn count_window_evicts_oldest() {
        let mut w = count(4, 4);
        let t = Duration::ZERO;
        assert_eq!(w.record(t, true, false), None); // 1 call: below minimum
        assert_eq!(w.record(t, false, false), None);
        assert_eq!(w.record(t, false, false), None);
        // 4 calls, 1 failure: 25 %.
        assert_eq!(w.record(t, false, false), None);
        // The failure is evicted; another failure: still 25 %.
        assert_eq!(w.record(t, true, false), None);
        // Second failure in the window: 50 % trips.
        assert_eq!(w.record(t, true, false), Some(Trip::FailureRate(50.0)));
        let s = w.snapshot(t);
        assert_eq!((s.calls, s.failures), (4, 2));
    }

    #[test]
    fn slow_calls_trip_on_their_own_rate() {
        let mut w = count(2, 2);
        assert_eq!(w.record(Duration::ZERO, false, true), None);
        assert_eq!(
            w.record(Duration::ZERO, false, true),
            Some(Trip::SlowCallRate(100.0))
        );
    }

    #[test]
    fn time_window_ages_out_buckets() {
        let mut w = Window::new(&FailureRateConfig {
            window: SlidingWindow::Time {
                length: Duration::from_secs(10),
            },
            minimum_calls: 3,
            ..Default::default()
        });
        let s = Duration::from_secs;
        assert_eq!(w.record(s(0), true, false), None);
        assert_eq!(w.record(s(1), false, false), None);
        assert_eq!(w.record(s(2), false, false), None); // 1 of 3 failed
        assert_eq!(w.snapshot(s(2)).calls, 3);
        // At t=10.5 s the bucket of t=0 has aged out.
        let snap = w.snapshot(Duration::from_millis(10_500));
        assert_eq!((snap.calls, snap.failures), (2, 0));
        assert_eq!(snap.failure_rate, None);
        assert_eq!(w.record(Duration::from_millis(10_500), true, false), None); // 1 of 3
        assert_eq!(
            w.record(Duration::from_millis(10_600), true, false),
            Some(Trip::FailureRate(50.0))
        );
        // Everything ages out after a full window of silence.
        assert_eq!(w.snapshot(s(30)).calls, 0);
    }
}
