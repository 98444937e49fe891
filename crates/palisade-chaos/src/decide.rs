//! The pure rules: whether a call gets a fault and which, from a rate and random samples, and
//! the time-to-live arithmetic. No clock, no runtime, no shared state: the injector reads the
//! clock and the random source and hands the numbers in, so every rule is tested alone.

use std::time::Duration;

use palisade_core::clock::saturating_nanos;

use crate::fault::Fault;

/// What one call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// Wait this long, then run the call.
    Delay(Duration),
    /// Fail without running the call.
    Error,
    /// Refuse without running the call, telling the caller to retry after this long.
    Refuse(Duration),
}

/// Whether a call is faulted, from the rate (0 to 1) and a uniform sample in `[0, 1)`.
/// Rate 0 never faults and rate 1 always does, whatever the sample; a rate or sample that
/// is not a number faults nothing.
pub(crate) fn hits(rate: f64, sample: f64) -> bool {
    if rate.is_nan() || sample.is_nan() || rate <= 0.0 {
        return false;
    }
    rate >= 1.0 || sample < rate
}

/// The delay of a latency fault: `min` plus `sample` (clamped to `[0, 1]`) of the range.
pub(crate) fn pick_latency(min: Duration, max: Duration, sample: f64) -> Duration {
    if max <= min {
        return min;
    }
    let s = if sample.is_finite() {
        sample.clamp(0.0, 1.0)
    } else {
        0.0
    };
    // `s` is in [0, 1], so the product is in [0, max - min]: `mul_f64` cannot overflow.
    min + (max - min).mul_f64(s)
}

/// What a call gets under `fault` at `rate`: `None` (untouched) or the [`Action`].
/// `hit_sample` decides whether the call is faulted, `latency_sample` where in a latency range
/// its delay falls.
pub(crate) fn decide(
    fault: &Fault,
    rate: f64,
    hit_sample: f64,
    latency_sample: f64,
) -> Option<Action> {
    if !hits(rate, hit_sample) {
        return None;
    }
    Some(match *fault {
        Fault::Latency { min, max } => Action::Delay(pick_latency(min, max, latency_sample)),
        Fault::Error => Action::Error,
        Fault::Refuse { retry_after } => Action::Refuse(retry_after),
    })
}

/// A time-to-live on the injector's monotonic clock, in nanoseconds since its origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Lease {
    /// When it was granted.
    pub(crate) start: u64,
    /// When it ends (never 0 for a non-zero ttl, so 0 can mean "off" in an atomic).
    pub(crate) deadline: u64,
}

impl Lease {
    /// A lease of `ttl` granted at `now` (saturating at the end of time).
    pub(crate) fn new(now: u64, ttl: Duration) -> Lease {
        Lease {
            start: now,
            deadline: now.saturating_add(saturating_nanos(ttl)),
        }
    }

    /// Whether the lease has run out at `now`. A clock read before the lease began (a manual
    /// clock set backwards) does not end it.
    pub(crate) fn expired(&self, now: u64) -> bool {
        now >= self.deadline
    }

    /// Time left at `now`: zero once expired.
    pub(crate) fn remaining(&self, now: u64) -> Duration {
        Duration::from_nanos(self.deadline.saturating_sub(now))
    }

    /// The lease's length.
    pub(crate) fn ttl(&self) -> Duration {
        Duration::from_nanos(self.deadline.saturating_sub(self.start))
    }
}

/// Milliseconds, rounded up: a remaining time shows 1 ms until it is really over, and a
/// `retry_after` never tells a caller to come back early.
pub(crate) fn ceil_millis(d: Duration) -> u64 {
    u64::try_from(d.as_nanos().div_ceil(1_000_000)).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn rate_zero_never_rate_one_always() {
        for s in [0.0, 1e-12, 0.25, 0.5, 0.999_999, 1.0] {
            assert!(!hits(0.0, s), "rate 0, sample {s}");
            assert!(hits(1.0, s), "rate 1, sample {s}");
        }
        assert!(hits(0.5, 0.499));
        assert!(!hits(0.5, 0.5));
        assert!(!hits(f64::NAN, 0.1));
        assert!(!hits(0.5, f64::NAN));
        assert!(!hits(-1.0, 0.0));
    }

    #[test]
    fn rate_half_faults_half_of_evenly_spread_samples() {
        let n = 1000;
        let hit = (0..n)
            .filter(|i| hits(0.5, f64::from(*i) / f64::from(n)))
            .count();
        assert_eq!(hit, 500);
    }

    #[test]
    fn latency_falls_in_its_range() {
        assert_eq!(pick_latency(200 * MS, 200 * MS, 0.7), 200 * MS);
        assert_eq!(pick_latency(100 * MS, 500 * MS, 0.0), 100 * MS);
        assert_eq!(pick_latency(100 * MS, 500 * MS, 0.5), 300 * MS);
        assert_eq!(pick_latency(100 * MS, 500 * MS, 1.0), 500 * MS);
        assert_eq!(pick_latency(100 * MS, 500 * MS, 7.0), 500 * MS);
        assert_eq!(pick_latency(100 * MS, 500 * MS, -3.0), 100 * MS);
        assert_eq!(pick_latency(100 * MS, 500 * MS, f64::NAN), 100 * MS);
        // Upside down (never validated so, but never a panic either).
        assert_eq!(pick_latency(500 * MS, 100 * MS, 0.5), 500 * MS);
    }

    #[test]
    fn decisions_follow_the_fault() {
        let latency = Fault::latency_between(100 * MS, 300 * MS);
        assert_eq!(
            decide(&latency, 1.0, 0.3, 0.5),
            Some(Action::Delay(200 * MS))
        );
        assert_eq!(decide(&latency, 0.0, 0.0, 0.5), None);
        assert_eq!(decide(&Fault::Error, 0.5, 0.2, 0.9), Some(Action::Error));
        assert_eq!(decide(&Fault::Error, 0.5, 0.7, 0.9), None);
        assert_eq!(
            decide(&Fault::refuse(1000 * MS), 1.0, 0.99, 0.0),
            Some(Action::Refuse(1000 * MS))
        );
    }

    #[test]
    fn lease_runs_out_at_its_deadline() {
        let start = 5_000_000_000; // 5 s on the clock
        let lease = Lease::new(start, Duration::from_secs(30));
        assert_eq!(lease.ttl(), Duration::from_secs(30));
        assert!(!lease.expired(start));
        assert_eq!(lease.remaining(start), Duration::from_secs(30));
        let almost = start + 30_000_000_000 - 1;
        assert!(!lease.expired(almost));
        assert_eq!(ceil_millis(lease.remaining(almost)), 1);
        assert!(lease.expired(almost + 1));
        assert_eq!(lease.remaining(almost + 1), Duration::ZERO);
        assert_eq!(lease.remaining(u64::MAX), Duration::ZERO);
        // A clock set backwards does not end it.
        assert!(!lease.expired(0));
    }

    #[test]
    fn lease_saturates_at_the_end_of_time() {
        let lease = Lease::new(u64::MAX - 10, Duration::from_secs(1));
        assert_eq!(lease.deadline, u64::MAX);
        assert!(lease.deadline != 0);
        assert!(Lease::new(0, Duration::from_nanos(1)).deadline != 0);
    }

    #[test]
    fn millis_round_up() {
        assert_eq!(ceil_millis(Duration::ZERO), 0);
        assert_eq!(ceil_millis(Duration::from_nanos(1)), 1);
        assert_eq!(ceil_millis(Duration::from_millis(25)), 25);
        assert_eq!(ceil_millis(Duration::MAX), u64::MAX);
    }
}
