//! Exponential backoff with full jitter, pure: the random draw is an argument.

use std::time::Duration;

/// Exponential backoff with a cap and full jitter (AWS's "full jitter"): before retry `n`
/// (0 for the first retry) the wait is drawn uniformly from `[0, min(max, base × multiplierⁿ)]`.
///
/// Full jitter spreads the retries of callers that failed together, so they do not come back
/// together; the cap keeps a long outage from growing waits without end.
///
/// ```
/// use std::time::Duration;
/// use palisade_toolbox::retry::Backoff;
///
/// let backoff = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 };
/// assert_eq!(backoff.ceiling(0), Duration::from_millis(100));
/// assert_eq!(backoff.ceiling(3), Duration::from_millis(800));
/// assert_eq!(backoff.ceiling(4), Duration::from_secs(1), "capped");
/// // The wait is the ceiling scaled by a uniform draw in [0, 1).
/// assert_eq!(backoff.delay(3, 0.5), Duration::from_millis(400));
/// assert_eq!(backoff.delay(3, 0.0), Duration::ZERO);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The ceiling of the first retry's wait.
    pub base: Duration,
    /// The cap of every wait.
    pub max: Duration,
    /// Growth of the ceiling from one retry to the next (1 keeps it at `base`).
    pub multiplier: f64,
}

impl Backoff {
    /// The longest wait before retry `retry` (0-based): `min(max, base × multiplier^retry)`.
    /// Never above either bound, whatever the float rounding.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::retry::Backoff;
    ///
    /// let b = Backoff { base: Duration::from_millis(10), max: Duration::from_secs(60), multiplier: 3.0 };
    /// assert_eq!(b.ceiling(2), Duration::from_millis(90));
    /// assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(60));
    /// ```
    pub fn ceiling(&self, retry: u32) -> Duration {
        let max = nanos(self.max);
        let base = nanos(self.base).min(max);
        let exp = i32::try_from(retry).unwrap_or(i32::MAX);
        let grown = base as f64 * self.multiplier.max(1.0).powi(exp);
        // `as` saturates; a float at or above the cap (or NaN-free infinity) is the cap.
        let ceiling = if grown.is_finite() && grown < max as f64 {
            (grown as u64).min(max)
        } else {
            max
        };
        Duration::from_nanos(ceiling)
    }

    /// The wait before retry `retry` for a uniform draw `unit` in `[0, 1)` (clamped):
    /// `ceiling(retry) × unit`, so always within `[0, ceiling(retry)]`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use palisade_toolbox::retry::Backoff;
    ///
    /// let b = Backoff { base: Duration::from_millis(100), max: Duration::from_secs(1), multiplier: 2.0 };
    /// assert_eq!(b.delay(1, 0.25), Duration::from_millis(50));
    /// assert!(b.delay(1, 7.0) <= b.ceiling(1));
    /// ```
    pub fn delay(&self, retry: u32, unit: f64) -> Duration {
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        let ceiling = nanos(self.ceiling(retry));
        Duration::from_nanos(((ceiling as f64 * unit) as u64).min(ceiling))
    }

    /// A wait for retry `retry` drawn with the thread's fast random generator.
    pub(crate) fn jittered(&self, retry: u32) -> Duration {
        self.delay(retry, fastrand::f64())
    }
}

fn nanos(d: Duration) -> u64 {
    palisade_core::clock::saturating_nanos(d)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zero_base_means_no_wait() {
        let b = Backoff {
            base: Duration::ZERO,
            max: Duration::from_secs(1),
            multiplier: 2.0,
        };
        assert_eq!(b.ceiling(10), Duration::ZERO);
        assert_eq!(b.jittered(3), Duration::ZERO);
    }

    #[test]
    fn powers_of_two_are_exact() {
        let b = Backoff {
            base: Duration::from_millis(100),
            max: Duration::from_secs(3600),
            multiplier: 2.0,
        };
        for n in 0..15 {
            assert_eq!(b.ceiling(n), Duration::from_millis(100 << n), "retry {n}");
        }
    }

    proptest! {
        #[test]
        fn every_wait_is_within_zero_and_the_capped_ceiling(
            base_ms in 0u64..10_000,
            extra_ms in 0u64..100_000,
            multiplier in 1.0f64..10.0,
            retry in 0u32..200,
            unit in 0.0f64..1.0,
        ) {
            let b = Backoff {
                base: Duration::from_millis(base_ms),
                max: Duration::from_millis(base_ms + extra_ms),
                multiplier,
            };
            let exact = (base_ms as f64 * multiplier.powi(retry as i32)).min((base_ms + extra_ms) as f64);
            let ceiling = b.ceiling(retry);
            prop_assert!(ceiling <= b.max);
            prop_assert!(ceiling.as_secs_f64() * 1000.0 <= exact * (1.0 + 1e-12));
            let d = b.delay(retry, unit);
            prop_assert!(d <= ceiling);
            prop_assert!(b.jittered(retry) <= ceiling);
        }
    }
}
